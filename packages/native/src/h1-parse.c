/*
 * The native HTTP/1.1 engine's codecs (sans-IO): strict parsers for request and response heads
 * (RFC 9112 §2–§6, RFC 9110 §5.6 token and field-value rules), the chunked-body tracker that
 * passes a chunked body through verbatim while finding its end, and the head rewriters, which
 * produce byte for byte what the JS engine (`flows/http/exchange.ts`, `socket-response.ts`)
 * sends: the request in origin-form with hop-by-hop and `Connection`-listed fields dropped and
 * `Host` (and the body's `Content-Length`) stated last; the response with the same fields
 * dropped and its own framing and `Connection: close` added.
 *
 * The request parser never answers bad input: anything outside the engine's subset (malformed,
 * oversized, HTTP/1.0, CONNECT, Upgrade, Expect, Transfer-Encoding, a target other than
 * absolute-form http://, obs-fold, a Host count other than one) is H1_HANDBACK, and the JS
 * engine, with llhttp, answers it as it always has.
 */
#define _GNU_SOURCE
#include "h1.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static bool is_tchar(unsigned char c) {
  if (c >= 'a' && c <= 'z') return true;
  if (c >= 'A' && c <= 'Z') return true;
  if (c >= '0' && c <= '9') return true;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A field-value byte (VCHAR, obs-text, SP, HTAB). */
static bool is_vbyte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static bool eq_lower(const char *a, size_t alen, const char *lower) {
  size_t n = strlen(lower);
  if (alen != n) return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)a[i];
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
    if (c != (unsigned char)lower[i]) return false;
  }
  return true;
}

/* Fields that never cross the proxy (headers.ts HOP_BY_HOP). */
static bool hop_by_hop(const char *n, size_t len) {
  static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                                      "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade",
                                      "expect"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (eq_lower(n, len, names[i])) return true;
  return false;
}

/* Adds the tokens of a Connection value; sets *close for "close", *upgrade for "upgrade".
 * False when more are listed than the engine keeps. */
static bool connection_tokens(const char *buf, uint32_t off, uint32_t len, h1_field_t *listed, int *nlisted,
                              bool *close, bool *keep, bool *upgrade) {
  uint32_t i = off, end = off + len;
  while (i < end) {
    while (i < end && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == ',')) i++;
    uint32_t s = i;
    while (i < end && buf[i] != ',') i++;
    uint32_t e = i;
    while (e > s && (buf[e - 1] == ' ' || buf[e - 1] == '\t')) e--;
    if (e == s) continue;
    if (eq_lower(buf + s, e - s, "close")) *close = true;
    else if (eq_lower(buf + s, e - s, "keep-alive")) *keep = true;
    else {
      if (eq_lower(buf + s, e - s, "upgrade")) *upgrade = true;
      if (*nlisted >= H1_MAX_LISTED) return false;
      listed[(*nlisted)++] = (h1_field_t){s, e - s, 0, 0};
    }
  }
  return true;
}

static bool is_listed(const char *buf, const h1_field_t *f, const h1_field_t *listed, int nlisted) {
  for (int i = 0; i < nlisted; i++) {
    if (listed[i].name_len != f->name_len) continue;
    bool same = true;
    for (uint32_t k = 0; k < f->name_len && same; k++) {
      unsigned char a = (unsigned char)buf[f->name + k], b = (unsigned char)buf[listed[i].name + k];
      if (a >= 'A' && a <= 'Z') a = (unsigned char)(a + 32);
      if (b >= 'A' && b <= 'Z') b = (unsigned char)(b + 32);
      same = a == b;
    }
    if (same) return true;
  }
  return false;
}

/* Parses the field lines from `p` to the empty line ending at `head_len`; false on any
 * malformed line or too many fields. */
static bool parse_fields(const char *buf, size_t p, size_t head_len, h1_field_t *fields, int *nfields) {
  *nfields = 0;
  while (p < head_len - 2) {
    size_t s = p;
    while (p < head_len && is_tchar((unsigned char)buf[p])) p++;
    if (p == s || buf[p] != ':') return false; /* no name, whitespace before ':', obs-fold */
    size_t name_end = p++;
    while (buf[p] == ' ' || buf[p] == '\t') p++;
    size_t v = p;
    while (p < head_len && buf[p] != '\r') {
      if (!is_vbyte((unsigned char)buf[p])) return false;
      p++;
    }
    if (p + 1 >= head_len || buf[p + 1] != '\n') return false;
    size_t ve = p;
    while (ve > v && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t')) ve--;
    if (*nfields >= H1_MAX_FIELDS) return false;
    fields[(*nfields)++] = (h1_field_t){(uint32_t)s, (uint32_t)(name_end - s), (uint32_t)v, (uint32_t)(ve - v)};
    p += 2;
  }
  return p == head_len - 2;
}

static bool parse_length(const char *v, uint32_t len, int64_t *out) {
  if (len == 0 || len > 15) return false;
  int64_t n = 0;
  for (uint32_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return false;
    n = n * 10 + (v[i] - '0');
  }
  *out = n;
  return true;
}

/* The authority of an http:// target: host (lower-cased into r->host) and port. */
static bool parse_authority(const char *a, size_t len, h1_req_t *r) {
  size_t host_end, i = 0;
  if (len == 0) return false;
  if (a[0] == '[') {
    const char *close = memchr(a, ']', len);
    if (!close || close - a - 1 <= 0 || close - a - 1 >= 64) return false;
    size_t n = (size_t)(close - a - 1);
    char tmp[64];
    unsigned char bin[16];
    memcpy(tmp, a + 1, n);
    tmp[n] = 0;
    if (inet_pton(AF_INET6, tmp, bin) != 1) return false;
    for (size_t k = 0; k <= n; k++) r->host[k] = (char)((tmp[k] >= 'A' && tmp[k] <= 'F') ? tmp[k] + 32 : tmp[k]);
    i = (size_t)(close - a) + 1;
    if (i < len && a[i] != ':') return false;
    host_end = i;
  } else {
    while (i < len && a[i] != ':') {
      char c = a[i];
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
                c == '_';
      if (!ok || i >= 253) return false;
      r->host[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
      i++;
    }
    if (i == 0) return false;
    r->host[i] = 0;
    host_end = i;
  }
  if (host_end == len) {
    r->port = 80;
    return true;
  }
  /* ":port": 1 to 5 digits, 1..65535 */
  size_t d = host_end + 1;
  if (d == len || len - d > 5) return false;
  int port = 0;
  for (size_t k = d; k < len; k++) {
    if (a[k] < '0' || a[k] > '9') return false;
    port = port * 10 + (a[k] - '0');
  }
  if (port < 1 || port > 65535) return false;
  r->port = port;
  return true;
}

int h1_parse_request(const char *buf, size_t len, size_t max, h1_req_t *r) {
  size_t lim = len < max ? len : max;
  const char *end = memmem(buf, lim, "\r\n\r\n", 4);
  if (!end) {
    /* bytes no head may hold go to llhttp now, not after a timeout: NUL, bare LF, bare CR */
    for (size_t i = 0; i < lim; i++) {
      char ch = buf[i];
      if (ch == 0 || (ch == '\n' && (i == 0 || buf[i - 1] != '\r')) || (ch == '\r' && i + 1 < lim && buf[i + 1] != '\n'))
        return H1_HANDBACK;
    }
    return len >= max ? H1_HANDBACK : H1_INCOMPLETE;
  }
  size_t head_len = (size_t)(end - buf) + 4, p = 0;
  memset(r, 0, offsetof(h1_req_t, fields));
  r->nlisted = 0;
  r->head_len = head_len;
  r->content_length = -1;
  while (p < head_len && is_tchar((unsigned char)buf[p])) p++;
  if (p == 0 || p > 24 || buf[p] != ' ') return H1_HANDBACK;
  r->method_len = (uint32_t)p;
  if ((p == 7 && memcmp(buf, "CONNECT", 7) == 0) || (p == 3 && memcmp(buf, "PRI", 3) == 0)) return H1_HANDBACK;
  r->is_head = p == 4 && memcmp(buf, "HEAD", 4) == 0;
  size_t t = ++p;
  while (p < head_len && buf[p] > 0x20 && buf[p] < 0x7f) p++;
  size_t t_end = p;
  if (t_end == t || head_len - p < 12 || memcmp(buf + p, " HTTP/1.1\r\n", 11) != 0) return H1_HANDBACK;
  /* The target: http://authority[path][?query][#fragment], the scheme in any case. */
  if (t_end - t < 8 || !eq_lower(buf + t, 7, "http://")) return H1_HANDBACK;
  size_t a = t + 7, ae = a;
  while (ae < t_end && buf[ae] != '/' && buf[ae] != '?' && buf[ae] != '#') ae++;
  if (!parse_authority(buf + a, ae - a, r)) return H1_HANDBACK;
  r->auth = (uint32_t)a;
  r->auth_len = (uint32_t)(ae - a);
  const char *hash = memchr(buf + ae, '#', t_end - ae);
  size_t pe = hash ? (size_t)(hash - buf) : t_end;
  r->path = (uint32_t)ae;
  r->path_len = (uint32_t)(pe - ae);
  r->path_slash = pe > ae && buf[ae] == '?';
  if (!parse_fields(buf, p + 11, head_len, r->fields, &r->nfields)) return H1_HANDBACK;
  int hosts = 0;
  bool close = false, keep = false, upgrade = false;
  for (int i = 0; i < r->nfields; i++) {
    const h1_field_t *f = &r->fields[i];
    const char *n = buf + f->name;
    switch (f->name_len) {
    case 4:
      if (eq_lower(n, 4, "host")) hosts++;
      break;
    case 6:
      if (eq_lower(n, 6, "expect")) return H1_HANDBACK;
      break;
    case 7:
      if (eq_lower(n, 7, "upgrade")) return H1_HANDBACK;
      break;
    case 10:
      if (eq_lower(n, 10, "connection") &&
          !connection_tokens(buf, f->value, f->value_len, r->listed, &r->nlisted, &close, &keep, &upgrade))
        return H1_HANDBACK;
      break;
    case 14:
      if (eq_lower(n, 14, "content-length")) {
        if (r->content_length >= 0 || !parse_length(buf + f->value, f->value_len, &r->content_length))
          return H1_HANDBACK;
      }
      break;
    case 16:
      if (eq_lower(n, 16, "proxy-connection")) {
        /* llhttp reads it as Connection for keep-alive; it lists nothing (it never crosses). */
        h1_field_t scratch[H1_MAX_LISTED];
        int ns = 0;
        if (!connection_tokens(buf, f->value, f->value_len, scratch, &ns, &close, &keep, &upgrade))
          return H1_HANDBACK;
      }
      break;
    case 17:
      if (eq_lower(n, 17, "transfer-encoding")) return H1_HANDBACK;
      break;
    }
  }
  if (hosts != 1 || upgrade) return H1_HANDBACK;
  r->keep_alive = !close;
  static const char *const idempotent[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
  bool idem = false;
  for (size_t i = 0; i < 6; i++)
    if (strlen(idempotent[i]) == r->method_len && memcmp(buf, idempotent[i], r->method_len) == 0) idem = true;
  r->retriable = idem && r->content_length <= 0;
  return (int)head_len;
}

int h1_parse_response(const char *buf, size_t len, size_t max, h1_res_t *r) {
  size_t lim = len < max ? len : max;
  const char *end = memmem(buf, lim, "\r\n\r\n", 4);
  if (!end) return len >= max ? H1_BAD : H1_INCOMPLETE;
  size_t head_len = (size_t)(end - buf) + 4;
  memset(r, 0, offsetof(h1_res_t, fields));
  r->nlisted = 0;
  r->head_len = head_len;
  r->content_length = -1;
  if (head_len < 16 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ')
    return H1_BAD;
  r->minor = buf[7] - '0';
  for (int i = 9; i < 12; i++)
    if (buf[i] < '0' || buf[i] > '9') return H1_BAD;
  r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
  if (r->status < 100) return H1_BAD;
  size_t p = 12;
  if (buf[p] == ' ') {
    p++;
    r->reason = (uint32_t)p;
    while (buf[p] != '\r') {
      if (!is_vbyte((unsigned char)buf[p])) return H1_BAD;
      p++;
    }
    r->reason_len = (uint32_t)(p - r->reason);
  }
  if (buf[p] != '\r' || buf[p + 1] != '\n') return H1_BAD;
  if (!parse_fields(buf, p + 2, head_len, r->fields, &r->nfields)) return H1_BAD;
  bool close = false, keep = false, upgrade = false, te = false;
  for (int i = 0; i < r->nfields; i++) {
    const h1_field_t *f = &r->fields[i];
    const char *n = buf + f->name;
    if (f->name_len == 10 && eq_lower(n, 10, "connection")) {
      if (!connection_tokens(buf, f->value, f->value_len, r->listed, &r->nlisted, &close, &keep, &upgrade))
        return H1_BAD;
    } else if (f->name_len == 14 && eq_lower(n, 14, "content-length")) {
      if (r->content_length >= 0 || !parse_length(buf + f->value, f->value_len, &r->content_length)) return H1_BAD;
    } else if (f->name_len == 17 && eq_lower(n, 17, "transfer-encoding")) {
      /* chunked when it is the last coding; otherwise the close ends the body */
      const char *v = buf + f->value;
      uint32_t vl = f->value_len;
      te = true;
      r->chunked = vl >= 7 && eq_lower(v + vl - 7, 7, "chunked") && (vl == 7 || v[vl - 8] == ' ' || v[vl - 8] == ',');
    }
  }
  if (te && r->content_length >= 0) return H1_BAD;
  r->keep_alive = r->minor == 1 ? !close : (keep && !close);
  return (int)head_len;
}

static size_t put(char *out, size_t at, size_t cap, const char *s, size_t n) {
  if (at + n > cap) return cap + 1;
  memcpy(out + at, s, n);
  return at + n;
}
#define PUT(s, n)                        \
  do {                                   \
    o = put(out, o, cap, (s), (n));      \
    if (o > cap) return 0;               \
  } while (0)

static size_t put_fields(const char *buf, const h1_field_t *fields, int nfields, const h1_field_t *listed,
                         int nlisted, bool skip_host, bool skip_length, char *out, size_t o, size_t cap) {
  for (int i = 0; i < nfields; i++) {
    const h1_field_t *f = &fields[i];
    const char *n = buf + f->name;
    if (hop_by_hop(n, f->name_len) || is_listed(buf, f, listed, nlisted)) continue;
    if (skip_host && f->name_len == 4 && eq_lower(n, 4, "host")) continue;
    if (skip_length && f->name_len == 14 && eq_lower(n, 14, "content-length")) continue;
    PUT(n, f->name_len);
    PUT(": ", 2);
    PUT(buf + f->value, f->value_len);
    PUT("\r\n", 2);
  }
  return o;
}

static bool same_name(const char *buf, const h1_field_t *a, const h1_field_t *b) {
  if (a->name_len != b->name_len) return false;
  for (uint32_t k = 0; k < a->name_len; k++) {
    unsigned char x = (unsigned char)buf[a->name + k], y = (unsigned char)buf[b->name + k];
    if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
    if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
    if (x != y) return false;
  }
  return true;
}

/* Fields node:http keeps the first of when repeated (headers.ts SINGLE_VALUED). */
static bool single_valued(const char *n, size_t len) {
  static const char *const names[] = {"age", "authorization", "content-length", "content-type", "etag", "expires",
                                      "from", "host", "if-modified-since", "if-unmodified-since", "last-modified",
                                      "location", "max-forwards", "proxy-authorization", "referer", "retry-after",
                                      "server", "user-agent"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (eq_lower(n, len, names[i])) return true;
  return false;
}

/*
 * The fields of a request with a body as the JS engine sends them: it builds the head a body
 * stage sees (`rawToHeaders`: lower-case names, repeats joined with ", " ("; " for cookie),
 * set-cookie kept one per line, the first of a single-valued field) and sends that object's
 * fields, in the order of their first occurrence.
 */
static size_t put_merged(const char *buf, const h1_req_t *r, char *out, size_t o, size_t cap) {
  for (int i = 0; i < r->nfields; i++) {
    const h1_field_t *f = &r->fields[i];
    const char *n = buf + f->name;
    if (hop_by_hop(n, f->name_len) || is_listed(buf, f, r->listed, r->nlisted)) continue;
    if ((f->name_len == 4 && eq_lower(n, 4, "host")) || (f->name_len == 14 && eq_lower(n, 14, "content-length")))
      continue;
    bool seen = false;
    for (int j = 0; j < i && !seen; j++) seen = same_name(buf, f, &r->fields[j]);
    if (seen) continue;
    bool cookie = eq_lower(n, f->name_len, "cookie"), set_cookie = eq_lower(n, f->name_len, "set-cookie");
    bool single = single_valued(n, f->name_len);
    char lower[256];
    if (f->name_len >= sizeof lower) return 0;
    for (uint32_t k = 0; k < f->name_len; k++) lower[k] = (char)((n[k] >= 'A' && n[k] <= 'Z') ? n[k] + 32 : n[k]);
    PUT(lower, f->name_len);
    PUT(": ", 2);
    PUT(buf + f->value, f->value_len);
    for (int k = i + 1; k < r->nfields; k++) {
      const h1_field_t *g = &r->fields[k];
      if (!same_name(buf, f, g)) continue;
      if (set_cookie) {
        PUT("\r\n", 2);
        PUT(lower, f->name_len);
        PUT(": ", 2);
      } else if (single) {
        continue;
      } else {
        PUT(cookie ? "; " : ", ", 2);
      }
      PUT(buf + g->value, g->value_len);
    }
    PUT("\r\n", 2);
  }
  return o;
}

size_t h1_rewrite_request(const char *buf, const h1_req_t *r, char *out, size_t cap) {
  size_t o = 0;
  PUT(buf, r->method_len);
  PUT(" ", 1);
  if (r->path_len == 0 || r->path_slash) PUT("/", 1);
  PUT(buf + r->path, r->path_len);
  PUT(" HTTP/1.1\r\n", 11);
  bool body = r->content_length > 0;
  o = body ? put_merged(buf, r, out, o, cap) : put_fields(buf, r->fields, r->nfields, r->listed, r->nlisted, true, false, out, o, cap);
  if (o == 0) return 0;
  PUT("Host: ", 6);
  PUT(buf + r->auth, r->auth_len);
  PUT("\r\n", 2);
  if (body) {
    char n[40];
    int k = snprintf(n, sizeof n, "Content-Length: %lld\r\n", (long long)r->content_length);
    PUT(n, (size_t)k);
  }
  PUT("\r\n", 2);
  return o;
}

/* The response head as relayed; `unsized`: without the upstream's Content-Length (chunked). */
static size_t rewrite_response(const char *buf, const h1_res_t *r, bool bodiless, bool close, bool unsized,
                               bool *chunked, char *out, size_t cap) {
  size_t o = 0;
  char line[32];
  int k = snprintf(line, sizeof line, "HTTP/1.1 %d ", r->status);
  PUT(line, (size_t)k);
  PUT(buf + r->reason, r->reason_len);
  PUT("\r\n", 2);
  o = put_fields(buf, r->fields, r->nfields, r->listed, r->nlisted, false, unsized, out, o, cap);
  if (o == 0) return 0;
  /* keepsContentLength: a Content-Length that crosses (not listed in Connection) */
  bool keeps = false;
  for (int i = 0; i < r->nfields && !unsized; i++) {
    const h1_field_t *f = &r->fields[i];
    if (f->name_len == 14 && eq_lower(buf + f->name, 14, "content-length")) {
      keeps = !is_listed(buf, f, r->listed, r->nlisted);
      break;
    }
  }
  *chunked = !bodiless && !keeps;
  if (*chunked) PUT("Transfer-Encoding: chunked\r\n", 28);
  if (close) PUT("Connection: close\r\n", 19);
  PUT("\r\n", 2);
  return o;
}

size_t h1_rewrite_response(const char *buf, const h1_res_t *r, bool bodiless, bool close, bool *chunked,
                           char *out, size_t cap) {
  return rewrite_response(buf, r, bodiless, close, false, chunked, out, cap);
}

size_t h1_rewrite_response_unsized(const char *buf, const h1_res_t *r, bool close, char *out, size_t cap) {
  bool chunked;
  return rewrite_response(buf, r, false, close, true, &chunked, out, cap);
}

enum { C_SIZE, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER, C_TRAILER_LF, C_LAST_LF };

ssize_t h1_chunks_feed(h1_chunks_t *c, const char *buf, size_t len, bool *done) {
  return h1_chunks_decode(c, buf, len, done, NULL, NULL, NULL, NULL);
}

ssize_t h1_chunks_decode(h1_chunks_t *c, const char *buf, size_t len, bool *done, char *dst, size_t *payload,
                         char *tdst, size_t *tlen) {
  size_t i = 0;
  *done = false;
  while (i < len) {
    unsigned char ch = (unsigned char)buf[i];
    switch (c->state) {
    case C_SIZE: {
      int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
      if (d >= 0) {
        if (++c->line > 15) return -1;
        c->left = c->left * 16 + (uint64_t)d;
        i++;
        break;
      }
      if (c->line == 0) return -1;
      if (ch == ';' || ch == ' ' || ch == '\t') c->state = C_EXT;
      else if (ch == '\r') c->state = C_SIZE_LF;
      else return -1;
      i++;
      break;
    }
    case C_EXT:
      if (ch == '\r') c->state = C_SIZE_LF;
      else if (ch == '\n' || (ch < 0x20 && ch != '\t') || ch == 0x7f) return -1;
      i++;
      break;
    case C_SIZE_LF:
      if (ch != '\n') return -1;
      i++;
      c->line = 0;
      c->state = c->left == 0 ? C_TRAILER : C_DATA;
      break;
    case C_DATA: {
      size_t n = len - i;
      if ((uint64_t)n > c->left) n = (size_t)c->left;
      if (dst) {
        memmove(dst + *payload, buf + i, n);
        *payload += n;
      }
      c->left -= n;
      c->data += n;
      i += n;
      if (c->left == 0) c->state = C_DATA_CR;
      break;
    }
    case C_DATA_CR:
      if (ch != '\r') return -1;
      c->state = C_DATA_LF;
      i++;
      break;
    case C_DATA_LF:
      if (ch != '\n') return -1;
      c->state = C_SIZE;
      c->line = 0;
      c->left = 0;
      i++;
      break;
    case C_TRAILER: /* a trailer line, or the empty line that ends the body */
      if (tdst) tdst[(*tlen)++] = (char)ch;
      if (ch == '\r') {
        c->state = c->line == 0 ? C_LAST_LF : C_TRAILER_LF;
      } else {
        if (ch == '\n' || (ch < 0x20 && ch != '\t') || ++c->line > 8192) return -1;
      }
      i++;
      break;
    case C_TRAILER_LF:
      if (ch != '\n') return -1;
      if (tdst) tdst[(*tlen)++] = (char)ch;
      c->line = 0;
      c->state = C_TRAILER;
      i++;
      break;
    case C_LAST_LF:
      if (ch != '\n') return -1;
      if (tdst) tdst[(*tlen)++] = (char)ch;
      i++;
      *done = true;
      c->state = C_SIZE;
      c->line = 0;
      c->left = 0;
      return (ssize_t)i;
    }
  }
  return (ssize_t)i;
}
