/*
 * The native HTTP/1.1 forward engine: serves the common subset of forwarded HTTP/1.1 requests
 * of a plain TCP client connection on the JS thread, driven by uv_poll (as udp.c): no reactor
 * thread, no cross-thread wake-up. Per request it parses the head (h1-parse.c), rewrites it as
 * the JS engine does, sends it on a keep-alive upstream connection from its own pool, parses the
 * response head and relays the body in its framing, with backpressure both ways (the upstream
 * is read only once what went to the client was written; the client only while its bytes have
 * somewhere to go). JS is called once per loop turn (uv_check) with the batch of what happened
 * (h1-js.c): a request that needs a new upstream connection (JS runs the egress pipeline and
 * connects), finished requests (JS writes the metrics, the request-end hook and the audit
 * record), failures (JS answers them as the JS engine would), hand-backs and closes.
 *
 * Ordering rules: one request at a time per connection, responses in order; a request is
 * handed back to JS (with the connection, for good) only before anything of it was acted on;
 * a failure before the response head left is answered by JS (the connection waits in
 * ST_ANSWER), after it the client connection is cut. The client descriptor stays the JS
 * socket's (Node stops polling it while the engine does): the socket closes it when told the
 * connection ended, and tells the engine to stop (h1_drop) before it closes it otherwise.
 */
#define _GNU_SOURCE
#include "h1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536
#define UP_OUT_HIGH 65536

uint64_t h1_now(void) { return uv_hrtime() / 1000000; }

static double ms_since(uint64_t t_ns, uint64_t now_ns) { return t_ns == 0 ? -1 : (double)(now_ns - t_ns) / 1e6; }

/* ---- buffers ---- */

static bool buf_add(h1_buf_t *b, const char *p, size_t n) {
  if (b->off > 0 && b->off == b->len) b->off = b->len = 0;
  if (b->len + n > b->cap) {
    if (b->off > 0) {
      memmove(b->data, b->data + b->off, b->len - b->off);
      b->len -= b->off;
      b->off = 0;
    }
    if (b->len + n > b->cap) {
      size_t cap = b->cap ? b->cap : 4096;
      while (cap < b->len + n) cap *= 2;
      char *d = realloc(b->data, cap);
      if (!d) return false;
      b->data = d;
      b->cap = cap;
    }
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return true;
}

static size_t buf_pending(const h1_buf_t *b) { return b->len - b->off; }

/* Writes what is pending; 0, or an errno (EAGAIN: the rest waits for writability). */
static int buf_flush(h1_buf_t *b, int fd) {
  while (b->off < b->len) {
    ssize_t w = send(fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    b->off += (size_t)w;
  }
  b->off = b->len = 0;
  if (b->cap > 262144) { /* a large body went through: give the memory back */
    free(b->data);
    b->data = NULL;
    b->cap = 0;
  }
  return 0;
}

/* ---- events to JS ---- */

void h1_push(h1_engine_t *e, h1_event_t *ev) {
  ev->next = NULL;
  if (e->ev_tail) e->ev_tail->next = ev;
  else e->ev_head = ev;
  e->ev_tail = ev;
}

static h1_event_t *event(h1_conn_t *c, int type) {
  h1_event_t *ev = calloc(1, sizeof *ev);
  if (!ev) return NULL;
  ev->type = type;
  ev->id = c->id;
  return ev;
}

/* The request's record (EV_DONE or EV_FAIL), its figures as they stand. */
static void record(h1_conn_t *c, int type, int kind) {
  h1_event_t *ev = event(c, type);
  if (!ev) return;
  uint64_t now = uv_hrtime();
  ev->kind = kind;
  /* EV_FAIL: whether the answer must close the connection (the JS engine's closeAfter) */
  ev->status = type == EV_FAIL ? c->close_after : c->status;
  ev->responded = c->head_parsed;
  ev->reused = c->reused;
  ev->body_unread = c->body_left > 0;
  ev->bytes_up = c->bytes_up;
  ev->bytes_down = c->bytes_down;
  ev->t_total = ms_since(c->t_start, now);
  ev->t_connect = ms_since(c->t_connect, now);
  ev->t_head = ms_since(c->t_head, now);
  memcpy(ev->method, c->method, sizeof ev->method);
  memcpy(ev->host, c->req.host, sizeof ev->host);
  ev->port = c->req.port;
  if (c->up) memcpy(ev->upstream, c->up->upstream, sizeof ev->upstream);
  h1_push(c->e, ev);
}

static void conn_closed(uv_handle_t *h);
static void up_closed(uv_handle_t *h);

/* ---- polling ---- */

static void on_client(uv_poll_t *h, int status, int events);
static void on_up(uv_poll_t *h, int status, int events);

static void client_poll(h1_conn_t *c) {
  if (c->closing) return;
  int ev = 0;
  bool room = c->in_len < c->in_cap;
  if (!c->client_eof && room) ev |= UV_READABLE;
  /* while a request body goes up, the client is read only as fast as the upstream takes it */
  if (c->state == ST_UP && c->body_left > 0 && buf_pending(&c->up_out) >= UP_OUT_HIGH) ev &= ~UV_READABLE;
  if (buf_pending(&c->out) > 0) ev |= UV_WRITABLE;
  if (ev == c->events) return;
  c->events = ev;
  if (ev) uv_poll_start(&c->poll, ev, on_client);
  else uv_poll_stop(&c->poll);
}

static void up_poll(h1_up_t *u) {
  if (u->closing) return;
  int ev = UV_READABLE;
  h1_conn_t *c = u->conn;
  if (c) {
    if (buf_pending(&c->up_out) > 0) ev |= UV_WRITABLE;
    /* backpressure: the upstream is read once the client took what came before */
    if (c->head_parsed && buf_pending(&c->out) > 0) ev &= ~UV_READABLE;
  }
  if (ev == u->events) return;
  u->events = ev;
  if (ev) uv_poll_start(&u->poll, ev, on_up);
  else uv_poll_stop(&u->poll);
}

/* ---- upstream connections ---- */

static void up_close(h1_up_t *u) {
  if (u->closing) return;
  u->closing = true;
  h1_engine_t *e = u->e;
  for (h1_up_t **p = &e->idle; *p; p = &(*p)->next)
    if (*p == u) {
      *p = u->next;
      break;
    }
  if (u->conn && u->conn->up == u) u->conn->up = NULL;
  u->conn = NULL;
  uv_poll_stop(&u->poll);
  close(u->fd);
  e->handles++;
  uv_close((uv_handle_t *)&u->poll, up_closed);
}

static void up_release(h1_engine_t *e, h1_up_t *u) {
  u->conn = NULL;
  int same = 0;
  for (h1_up_t *x = e->idle; x; x = x->next)
    if (strcmp(x->key, u->key) == 0) same++;
  if (e->closed || same >= e->pool_max_idle) {
    up_close(u);
    return;
  }
  u->idle_since = h1_now();
  u->next = e->idle;
  e->idle = u;
  up_poll(u); /* an idle connection is read only to see it close */
  uv_unref((uv_handle_t *)&u->poll);
}

static h1_up_t *up_take(h1_engine_t *e, const char *key) {
  for (h1_up_t **p = &e->idle; *p; p = &(*p)->next) {
    h1_up_t *u = *p;
    if (strcmp(u->key, key) != 0) continue;
    *p = u->next;
    u->next = NULL;
    uv_ref((uv_handle_t *)&u->poll);
    return u;
  }
  return NULL;
}

/* ---- the client connection ---- */

static void conn_close(h1_conn_t *c, bool tell);
static void try_head(h1_conn_t *c);
static void send_request(h1_conn_t *c);
static void fail(h1_conn_t *c, int kind);

static void conn_unlink(h1_conn_t *c) {
  h1_engine_t *e = c->e;
  if (c->prev) c->prev->next = c->next;
  else if (e->conns == c) e->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = c->prev = NULL;
}

/* Stops driving the client: the poll, the duplicate descriptor, the upstream in use. */
static void conn_stop(h1_conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  c->state = ST_GONE;
  if (c->up) up_close(c->up);
  conn_unlink(c);
  /* the descriptor is the JS socket's: it closes it (after this poll left the loop's set) */
  uv_poll_stop(&c->poll);
  c->e->handles++;
  uv_close((uv_handle_t *)&c->poll, conn_closed);
}

/* Ends the connection; `tell`: JS destroys its socket (EV_CLOSED). */
static void conn_close(h1_conn_t *c, bool tell) {
  if (c->closing) return;
  h1_engine_t *e = c->e;
  int id = c->id;
  double rx = c->rx, tx = c->tx;
  conn_stop(c);
  if (!tell) return;
  h1_event_t *ev = calloc(1, sizeof *ev);
  if (!ev) return;
  ev->type = EV_CLOSED;
  ev->id = id;
  ev->bytes_up = rx;
  ev->bytes_down = tx;
  h1_push(e, ev);
}

/* The connection goes back to JS with what was read and not acted on (EV_HANDBACK or EV_EXPIRE). */
static void hand_back(h1_conn_t *c, int type, int phase) {
  h1_event_t *ev = event(c, type);
  if (!ev) {
    conn_close(c, true);
    return;
  }
  ev->kind = type == EV_HANDBACK ? c->served : phase;
  ev->bytes_up = c->rx;
  ev->bytes_down = c->tx;
  if (c->in_len > 0) {
    ev->bytes = malloc(c->in_len);
    if (ev->bytes) {
      memcpy(ev->bytes, c->in, c->in_len);
      ev->nbytes = c->in_len;
    }
  }
  conn_stop(c);
  h1_push(c->e, ev);
}

h1_conn_t *h1_conn_find(h1_engine_t *e, int id) {
  for (h1_conn_t *c = e->conns; c; c = c->next)
    if (c->id == id) return c;
  return NULL;
}

h1_conn_t *h1_conn_start(h1_engine_t *e, int fd, int id, const char *bytes, size_t n) {
  h1_conn_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->in_cap = e->max_header + READ_SIZE;
  c->in = malloc(c->in_cap);
  if (!c->in || n > c->in_cap || uv_poll_init_socket(e->loop, &c->poll, fd) != 0) {
    free(c->in);
    free(c);
    return NULL;
  }
  c->poll.data = c;
  c->e = e;
  c->fd = fd;
  c->id = id;
  c->state = ST_SILENT;
  c->since = h1_now();
  c->events = -1;
  c->next = e->conns;
  if (e->conns) e->conns->prev = c;
  e->conns = c;
  if (n > 0) {
    memcpy(c->in, bytes, n);
    c->in_len = n;
    try_head(c);
  }
  if (!c->closing) client_poll(c);
  return c;
}

static void engine_maybe_free(h1_engine_t *e) {
  if (e->finalized && e->closed && e->handles == 0) {
    free(e->scratch);
    free(e);
  }
}

static void conn_closed(uv_handle_t *h) {
  h1_conn_t *c = h->data;
  h1_engine_t *e = c->e;
  free(c->in);
  free(c->up_out.data);
  free(c->out.data);
  free(c->rhead);
  free(c);
  e->handles--;
  engine_maybe_free(e);
}

static void up_closed(uv_handle_t *h) {
  h1_up_t *u = h->data;
  h1_engine_t *e = u->e;
  free(u);
  e->handles--;
  engine_maybe_free(e);
}

void h1_engine_release(h1_engine_t *e) {
  e->finalized = true;
  engine_maybe_free(e);
}

void h1_handle_closed(uv_handle_t *h) {
  /* engine handles (check, sweep): counted the same way */
  h1_engine_t *e = h->data;
  e->handles--;
  engine_maybe_free(e);
}

/* ---- requests ---- */

static void format_key(char *key, size_t cap, const char *host, int port) {
  if (strchr(host, ':')) snprintf(key, cap, "[%s]:%d", host, port);
  else snprintf(key, cap, "%s:%d", host, port);
}

/* Takes the head at the start of `in` (parsed into c->req): rewrites it, takes the body bytes
 * that came with it, and sends it on an idle upstream connection, or asks JS for one. */
static void start_request(h1_conn_t *c) {
  h1_req_t *r = &c->req;
  size_t cap = r->head_len + 320;
  c->up_out.off = c->up_out.len = 0;
  if (c->up_out.cap < cap) {
    char *d = realloc(c->up_out.data, cap);
    if (!d) {
      conn_close(c, true);
      return;
    }
    c->up_out.data = d;
    c->up_out.cap = cap;
  }
  size_t n = h1_rewrite_request(c->in, r, c->up_out.data, c->up_out.cap);
  if (n == 0) {
    hand_back(c, EV_HANDBACK, 0);
    return;
  }
  c->up_out.len = n;
  c->req_len = n;
  memcpy(c->method, c->in, r->method_len);
  c->method[r->method_len] = 0;
  format_key(c->key, sizeof c->key, r->host, r->port);
  /* the head is acted on from here: consume it, and the body bytes that came with it */
  size_t used = r->head_len;
  c->body_left = r->content_length > 0 ? r->content_length : 0;
  size_t body = c->in_len - used;
  if ((int64_t)body > c->body_left) body = (size_t)c->body_left;
  if (body > 0 && !buf_add(&c->up_out, c->in + used, body)) {
    conn_close(c, true);
    return;
  }
  c->body_left -= (int64_t)body;
  c->bytes_up = (double)body;
  used += body;
  memmove(c->in, c->in + used, c->in_len - used);
  c->in_len -= used;
  c->served++;
  c->t_start = uv_hrtime();
  c->t_connect = c->t_head = 0;
  c->status = 0;
  c->bytes_down = 0;
  c->reused = c->retried = c->sent = c->got_bytes = c->head_parsed = false;
  c->close_after = !r->keep_alive || c->client_eof || c->e->draining;
  c->rhead_len = 0;
  c->framing = 0;
  memset(&c->chunks, 0, sizeof c->chunks);
  c->progress = h1_now();
  h1_up_t *u = up_take(c->e, c->key);
  if (u) {
    c->reused = true;
    c->up = u;
    u->conn = c;
    c->t_connect = uv_hrtime();
    c->state = ST_UP;
    send_request(c);
    return;
  }
  c->state = ST_ROUTE;
  h1_event_t *ev = event(c, EV_ROUTE);
  if (!ev) {
    conn_close(c, true);
    return;
  }
  memcpy(ev->host, r->host, sizeof ev->host);
  ev->port = r->port;
  memcpy(ev->method, c->method, sizeof ev->method);
  h1_push(c->e, ev);
}

/* Looks for a whole head in what was read: serves it, hands the connection back, or waits. */
static void try_head(h1_conn_t *c) {
  /* empty lines before a request line are ignored (RFC 9112 §2.2), and do not start a head */
  if (c->state != ST_HEAD) {
    size_t k = 0;
    while (k + 1 < c->in_len && c->in[k] == '\r' && c->in[k + 1] == '\n') k += 2;
    if (k > 0) {
      memmove(c->in, c->in + k, c->in_len - k);
      c->in_len -= k;
    }
    if (c->in_len == 1 && c->in[0] == '\r') return;
  }
  if (c->in_len == 0) return;
  int r = h1_parse_request(c->in, c->in_len, c->e->max_header, &c->req);
  if (r == H1_INCOMPLETE) {
    if (c->state != ST_HEAD) {
      c->state = ST_HEAD;
      c->since = h1_now();
    }
    return;
  }
  if (r == H1_HANDBACK) {
    hand_back(c, EV_HANDBACK, 0);
    return;
  }
  start_request(c);
}

/* Writes to the upstream what is pending; the request is sent once the head and body left. */
static void flush_up(h1_conn_t *c) {
  h1_up_t *u = c->up;
  if (!u) return;
  int err = buf_flush(&c->up_out, u->fd);
  if (err && err != EAGAIN) {
    fail(c, F_CLOSED);
    return;
  }
  if (!c->sent && buf_pending(&c->up_out) == 0 && c->body_left == 0) {
    c->sent = true;
    c->t_sent = h1_now();
  }
  up_poll(u);
  client_poll(c);
}

static void move_body(h1_conn_t *c);

static void send_request(h1_conn_t *c) {
  c->progress_up = h1_now();
  up_poll(c->up);
  if (c->body_left > 0 && c->in_len > 0) move_body(c);
  else flush_up(c);
}

void h1_adopt(h1_conn_t *c, int fd, const char *upstream) {
  h1_up_t *u = calloc(1, sizeof *u);
  if (!u || uv_poll_init_socket(c->e->loop, &u->poll, fd) != 0) {
    free(u);
    close(fd);
    fail(c, F_CLOSED);
    return;
  }
  u->poll.data = u;
  u->e = c->e;
  u->fd = fd;
  u->events = -1;
  snprintf(u->key, sizeof u->key, "%s", c->key);
  snprintf(u->upstream, sizeof u->upstream, "%s", upstream);
  u->conn = c;
  c->up = u;
  c->t_connect = uv_hrtime();
  c->state = ST_UP;
  send_request(c);
}

/* Flushes the client side; on a write error the client is gone (the exchange ends with it). */
static bool flush_client(h1_conn_t *c) {
  size_t before = buf_pending(&c->out);
  int err = buf_flush(&c->out, c->fd);
  c->tx += (double)(before - buf_pending(&c->out));
  if (err && err != EAGAIN) {
    if (c->state == ST_UP) record(c, EV_DONE, F_CLIENT_CLOSED);
    conn_close(c, true);
    return false;
  }
  client_poll(c);
  if (c->up) up_poll(c->up);
  return true;
}

/* The response ended: the record, the upstream back to the pool, the next request. */
static void complete(h1_conn_t *c) {
  if (c->encode && c->framing != 0 && !buf_add(&c->out, "0\r\n\r\n", 5)) {
    conn_close(c, true);
    return;
  }
  record(c, EV_DONE, 0);
  /* the response ended before the request body did: the rest is not read, the connection closes */
  if (c->body_left > 0) c->close_after = true;
  h1_up_t *u = c->up;
  c->up = NULL;
  if (u) {
    if (c->upstream_reusable && c->sent) up_release(c->e, u);
    else up_close(u);
  }
  c->state = ST_IDLE;
  c->since = h1_now();
  if (!flush_client(c)) return;
  if (c->close_after) {
    if (buf_pending(&c->out) == 0) {
      shutdown(c->fd, SHUT_WR);
      conn_close(c, true);
    }
    /* else closed once flushed (on_client) */
    return;
  }
  try_head(c);
  if (!c->closing) client_poll(c);
}

/* Relays a piece of response body in its framing; false when the exchange ended badly. */
static bool relay(h1_conn_t *c, const char *p, size_t n) {
  size_t take = n;
  bool done = false;
  if (c->framing == 1) {
    if ((int64_t)take > c->res_left) take = (size_t)c->res_left;
    c->res_left -= (int64_t)take;
    c->bytes_down += (double)take;
    done = c->res_left == 0;
  } else if (c->framing == 2) {
    uint64_t before = c->chunks.data;
    ssize_t k = h1_chunks_feed(&c->chunks, p, n, &done);
    if (k < 0) {
      fail(c, F_BAD_RESPONSE);
      return false;
    }
    take = (size_t)k;
    c->bytes_down += (double)(c->chunks.data - before);
  } else {
    c->bytes_down += (double)take;
  }
  if (take > 0) {
    bool ok = true;
    if (c->encode) {
      char line[24];
      int k = snprintf(line, sizeof line, "%zx\r\n", take);
      ok = buf_add(&c->out, line, (size_t)k) && buf_add(&c->out, p, take) && buf_add(&c->out, "\r\n", 2);
    } else {
      ok = buf_add(&c->out, p, take);
    }
    if (!ok) {
      conn_close(c, true);
      return false;
    }
  }
  c->progress = h1_now();
  if (take < n) c->upstream_reusable = false; /* bytes after the response: not reused */
  if (done) complete(c);
  return true;
}

/* The response head at the start of rhead: relays it (1xx) or starts the response. */
static bool on_head(h1_conn_t *c) {
  h1_res_t *res = &c->res;
  for (;;) {
    int r = h1_parse_response(c->rhead, c->rhead_len, c->e->max_response_header, res);
    if (r == H1_INCOMPLETE) return true;
    if (r == H1_BAD || res->status == 101) {
      fail(c, F_BAD_RESPONSE);
      return false;
    }
    if (res->status >= 200) break;
    /* 1xx: a 100 goes nowhere (no client here waits for one); others are relayed */
    if (res->status != 100) {
      char line[40];
      const char *text = res->status == 102 ? "Processing" : res->status == 103 ? "Early Hints" : "";
      int k = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", res->status, text);
      char *tmp = malloc(res->head_len + 64);
      bool dummy;
      if (!tmp) return false;
      size_t o = h1_rewrite_response(c->rhead, res, true, false, &dummy, tmp, res->head_len + 64);
      /* the status line is the JS engine's own (STATUS_CODES), the fields as relayed */
      const char *fields = o ? memchr(tmp, '\n', o) : NULL;
      if (fields) {
        buf_add(&c->out, line, (size_t)k);
        buf_add(&c->out, fields + 1, o - (size_t)(fields + 1 - tmp));
      }
      free(tmp);
    }
    memmove(c->rhead, c->rhead + res->head_len, c->rhead_len - res->head_len);
    c->rhead_len -= res->head_len;
  }
  c->head_parsed = true;
  c->t_head = uv_hrtime();
  c->stall_check_at = h1_now() + c->e->response_timeout;
  c->bytes_at_check = -1;
  c->status = res->status;
  bool bodiless = c->req.is_head || res->status == 204 || res->status == 304;
  char *head = malloc(res->head_len + 96);
  if (!head) return false;
  bool chunked;
  size_t o = h1_rewrite_response(c->rhead, res, bodiless, c->close_after, &chunked, head, res->head_len + 96);
  bool ok = o > 0 && buf_add(&c->out, head, o);
  free(head);
  if (!ok) {
    conn_close(c, true);
    return false;
  }
  c->upstream_reusable = res->keep_alive;
  if (bodiless) c->framing = 0;
  else if (res->chunked) c->framing = 2;
  else if (res->content_length >= 0) {
    c->framing = 1;
    c->res_left = res->content_length;
  } else {
    c->framing = 3;
    c->upstream_reusable = false;
  }
  c->encode = chunked && c->framing != 2;
  size_t rest = c->rhead_len - res->head_len;
  const char *p = c->rhead + res->head_len;
  c->rhead_len = 0;
  if (c->framing == 0 || (c->framing == 1 && c->res_left == 0)) {
    if (rest > 0) c->upstream_reusable = false;
    c->framing = c->framing == 1 ? 1 : 0;
    c->encode = c->encode && c->framing != 0;
    complete(c);
    return false;
  }
  if (rest > 0) return relay(c, p, rest);
  return true;
}

/* Moves request body bytes that arrived from the client to the upstream's queue, as far as the
 * queue has room, and writes them. */
static void move_body(h1_conn_t *c) {
  for (;;) {
    size_t pending = buf_pending(&c->up_out);
    size_t room = pending >= 2 * UP_OUT_HIGH ? 0 : 2 * UP_OUT_HIGH - pending;
    size_t take = c->in_len;
    if ((int64_t)take > c->body_left) take = (size_t)c->body_left;
    if (take > room) take = room;
    if (take > 0) {
      if (!buf_add(&c->up_out, c->in, take)) {
        conn_close(c, true);
        return;
      }
      memmove(c->in, c->in + take, c->in_len - take);
      c->in_len -= take;
      c->body_left -= (int64_t)take;
      c->bytes_up += (double)take;
      c->progress_up = h1_now();
    }
    h1_up_t *u = c->up;
    flush_up(c);
    /* more to move only if the queue emptied and the same exchange goes on */
    if (take == 0 || c->up != u || !u || c->state != ST_UP || buf_pending(&c->up_out) > 0 || c->in_len == 0 ||
        c->body_left == 0)
      return;
  }
}

/* The request fails: before the response head, JS answers it (the connection waits in
 * ST_ANSWER); after it, the client connection is cut. */
static void fail(h1_conn_t *c, int kind) {
  if (c->state != ST_UP && c->state != ST_ROUTE) return;
  record(c, EV_FAIL, kind);
  if (c->up) up_close(c->up);
  if (c->head_parsed) {
    conn_close(c, true);
    return;
  }
  c->state = ST_ANSWER;
  client_poll(c);
}

void h1_answer(h1_conn_t *c, const char *bytes, size_t n, bool close) {
  if (c->state != ST_ANSWER && c->state != ST_ROUTE) return;
  if (!buf_add(&c->out, bytes, n)) {
    conn_close(c, true);
    return;
  }
  c->close_after = c->close_after || close || c->body_left > 0;
  c->state = ST_IDLE;
  c->since = h1_now();
  if (!flush_client(c)) return;
  if (c->close_after) {
    if (buf_pending(&c->out) == 0) {
      shutdown(c->fd, SHUT_WR);
      conn_close(c, true);
    }
    return;
  }
  try_head(c);
  if (!c->closing) client_poll(c);
}

/* The upstream closed or failed with the response still to come. */
static void upstream_gone(h1_conn_t *c, bool eof) {
  if (c->head_parsed) {
    if (c->framing == 3 && eof) complete(c); /* a close-delimited body ends with a clean close only */
    else fail(c, F_CLOSED);
    return;
  }
  if (c->reused && c->req.retriable && !c->got_bytes && !c->retried) {
    /* the pooled connection had closed while idle: once more, on a new connection */
    if (c->up) up_close(c->up);
    c->retried = true;
    c->reused = false;
    c->sent = false;
    c->t_connect = 0;
    c->up_out.off = 0;
    c->up_out.len = c->req_len;
    c->state = ST_ROUTE;
    h1_event_t *ev = event(c, EV_ROUTE);
    if (!ev) {
      conn_close(c, true);
      return;
    }
    memcpy(ev->host, c->req.host, sizeof ev->host);
    ev->port = c->req.port;
    memcpy(ev->method, c->method, sizeof ev->method);
    h1_push(c->e, ev);
    return;
  }
  fail(c, F_CLOSED);
}

static void on_up(uv_poll_t *h, int status, int events) {
  h1_up_t *u = h->data;
  h1_conn_t *c = u->conn;
  if (u->closing) return;
  if (!c) { /* idle: anything (bytes, the close, an error) ends it */
    char b[64];
    ssize_t n = recv(u->fd, b, sizeof b, MSG_DONTWAIT);
    if (status < 0 || n >= 0 || (errno != EAGAIN && errno != EINTR)) up_close(u);
    return;
  }
  if (status < 0) {
    upstream_gone(c, false);
    return;
  }
  if (events & UV_WRITABLE) {
    if (c->body_left > 0 && c->in_len > 0) move_body(c);
    else flush_up(c);
    if (c->up != u || u->closing) return;
  }
  if (!(events & UV_READABLE)) return;
  if (!c->head_parsed) {
    size_t cap = c->e->max_response_header + READ_SIZE;
    if (!c->rhead) c->rhead = malloc(cap);
    if (!c->rhead) {
      conn_close(c, true);
      return;
    }
    ssize_t n = recv(u->fd, c->rhead + c->rhead_len, cap - c->rhead_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      upstream_gone(c, n == 0);
      return;
    }
    c->got_bytes = true;
    c->rhead_len += (size_t)n;
    if (!on_head(c)) return;
  } else {
    if (buf_pending(&c->out) > 0) return;
    ssize_t n = recv(u->fd, c->e->scratch, READ_SIZE, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      upstream_gone(c, n == 0);
      return;
    }
    if (!relay(c, c->e->scratch, (size_t)n)) return;
  }
  if (!c->closing && c->state == ST_UP) flush_client(c);
}

static void client_gone(h1_conn_t *c) {
  if (c->state == ST_UP || c->state == ST_ROUTE) record(c, EV_DONE, F_CLIENT_CLOSED);
  conn_close(c, true);
}

static void on_client(uv_poll_t *h, int status, int events) {
  h1_conn_t *c = h->data;
  if (c->closing) return;
  if (status < 0) {
    client_gone(c);
    return;
  }
  if (events & UV_WRITABLE) {
    if (!flush_client(c)) return;
    if (c->close_after && c->state == ST_IDLE && buf_pending(&c->out) == 0) {
      shutdown(c->fd, SHUT_WR);
      conn_close(c, true);
      return;
    }
  }
  if (!(events & UV_READABLE) || c->in_len >= c->in_cap) return;
  ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n < 0) {
    client_gone(c);
    return;
  }
  if (n == 0) {
    c->client_eof = true;
    switch (c->state) {
    case ST_SILENT:
    case ST_IDLE:
      if (c->in_len == 0 && buf_pending(&c->out) == 0) {
        shutdown(c->fd, SHUT_WR);
        conn_close(c, true);
        return;
      }
      break;
    case ST_HEAD:
      hand_back(c, EV_HANDBACK, 0); /* JS reads the EOF itself and answers the cut head */
      return;
    case ST_UP:
    case ST_ROUTE:
      c->close_after = true;
      if (c->body_left > 0) {
        fail(c, F_BODY_CUT);
        return;
      }
      break;
    default:
      c->close_after = true;
    }
    client_poll(c);
    return;
  }
  c->in_len += (size_t)n;
  c->rx += (double)n;
  switch (c->state) {
  case ST_SILENT:
  case ST_HEAD:
  case ST_IDLE:
    try_head(c);
    break;
  case ST_UP:
    if (c->body_left > 0) move_body(c);
    break;
  default:
    break;
  }
  if (!c->closing) client_poll(c);
}

void h1_sweep(h1_engine_t *e) {
  uint64_t now = h1_now();
  h1_conn_t *next;
  for (h1_conn_t *c = e->conns; c; c = next) {
    next = c->next;
    switch (c->state) {
    case ST_SILENT:
    case ST_HEAD:
      if (e->header_timeout > 0 && now - c->since >= e->header_timeout)
        hand_back(c, EV_EXPIRE, c->state == ST_HEAD ? 3 : 1);
      break;
    case ST_IDLE:
      if (e->idle_timeout > 0 && now - c->since >= e->idle_timeout && buf_pending(&c->out) == 0) conn_close(c, true);
      break;
    case ST_UP:
      if (e->response_timeout > 0 && c->sent && !c->head_parsed && now - c->t_sent >= e->response_timeout)
        fail(c, F_TIMEOUT);
      else if (e->response_timeout > 0 && c->head_parsed && now >= c->stall_check_at) {
        /* as the JS engine's stall check: cut once a whole period passed without a byte */
        if (c->bytes_down != c->bytes_at_check) {
          c->bytes_at_check = c->bytes_down;
          c->stall_check_at = now + e->response_timeout;
        } else {
          fail(c, F_TIMEOUT);
        }
      }
      else if (e->body_timeout > 0 && c->body_left > 0 && now - c->progress_up >= e->body_timeout)
        fail(c, F_BODY_TIMEOUT);
      break;
    default:
      break;
    }
  }
  h1_up_t *un;
  for (h1_up_t *u = e->idle; u; u = un) {
    un = u->next;
    if (e->pool_idle_timeout > 0 && now - u->idle_since >= e->pool_idle_timeout) up_close(u);
  }
}

void h1_drop(h1_conn_t *c) {
  if (c->state == ST_UP || c->state == ST_ROUTE) record(c, EV_DONE, F_CLIENT_CLOSED);
  conn_close(c, false);
}

bool h1_busy(h1_conn_t *c) {
  return (c->state != ST_IDLE && c->state != ST_SILENT && c->state != ST_HEAD) || buf_pending(&c->out) > 0;
}

void h1_drain(h1_engine_t *e) {
  e->draining = true;
  /* responses whose head has not left yet say Connection: close; idle connections are the
   * drain loop's to end (as for the JS on-ramp) */
  for (h1_conn_t *c = e->conns; c; c = c->next)
    if ((c->state == ST_ROUTE || c->state == ST_UP || c->state == ST_ANSWER) && !c->head_parsed) c->close_after = true;
}

void h1_engine_close(h1_engine_t *e) {
  if (e->closed) return;
  e->closed = true;
  while (e->idle) up_close(e->idle);
  uv_timer_stop(&e->sweep);
  uv_check_stop(&e->check);
  e->handles += 2;
  uv_close((uv_handle_t *)&e->sweep, h1_handle_closed);
  uv_close((uv_handle_t *)&e->check, h1_handle_closed);
}

