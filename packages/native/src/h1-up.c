/*
 * The native HTTP/1.1 engine's upstream side (h1.c has the client side): its keep-alive pool of
 * upstream connections, sending the rewritten request and its body (with backpressure from the
 * upstream), and the response: its head parsed and rewritten (h1-parse.c), its body relayed in
 * its framing (Content-Length, chunked passed through verbatim with the tracker finding its
 * end, close-delimited chunked to the client), the upstream read only once the client took what
 * came before. A pooled connection that turns out closed before any response byte is replaced
 * once for a bodiless idempotent request, as the JS pool does.
 *
 * Ordering rules: a connection goes back to the pool only after a complete response that may be
 * followed by another, to a request sent whole, with nothing after it; idle ones are polled only
 * to see them close.
 */
#define _GNU_SOURCE
#include "h1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static bool on_head(h1_conn_t *c);
static bool relay(h1_conn_t *c, const char *p, size_t n);
void h1_flush_up(h1_conn_t *c);

/* ---- buffers ---- */

/* Room for n more bytes at data + len; false when out of memory. */
static bool buf_reserve(h1_buf_t *b, size_t n) {
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
  return true;
}

bool h1_buf_add(h1_buf_t *b, const char *p, size_t n) {
  if (!buf_reserve(b, n)) return false;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return true;
}

bool h1_buf_add_chunk(h1_buf_t *b, const char *p, size_t n) {
  char line[24];
  int k = snprintf(line, sizeof line, "%zx\r\n", n);
  return h1_buf_add(b, line, (size_t)k) && h1_buf_add(b, p, n) && h1_buf_add(b, "\r\n", 2);
}

size_t h1_buf_pending(const h1_buf_t *b) { return b->len - b->off; }

/* Writes what is pending; 0, or an errno (EAGAIN: the rest waits for writability). */
int h1_buf_flush(h1_buf_t *b, int fd) {
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

void h1_up_poll(h1_up_t *u) {
  if (u->closing) return;
  int ev = UV_READABLE;
  h1_conn_t *c = u->conn;
  if (c) {
    if (h1_buf_pending(&c->up_out) > 0) ev |= UV_WRITABLE;
    /* backpressure: the upstream is read once the client took what came before */
    if (c->head_parsed && h1_buf_pending(&c->out) > 0) ev &= ~UV_READABLE;
    /* a filtered body: not while JS chooses or a call is in flight, nor before what was read */
    if (c->filter == FILTER_ASK || c->filter_wait || c->rest_len > 0 || c->filter_end) ev &= ~UV_READABLE;
  }
  if (ev == u->events) return;
  u->events = ev;
  if (ev) uv_poll_start(&u->poll, ev, h1_on_up);
  else uv_poll_stop(&u->poll);
}

void h1_up_close(h1_up_t *u) {
  if (u->closing) return;
  u->closing = true;
  h1_engine_t *e = u->e;
  for (h1_up_t **p = &e->idle; *p; p = &(*p)->next)
    if (*p == u) {
      *p = u->next;
      e->nidle--;
      break;
    }
  if (u->conn && u->conn->up == u) u->conn->up = NULL;
  u->conn = NULL;
  uv_poll_stop(&u->poll);
  close(u->fd);
  e->handles++;
  uv_close((uv_handle_t *)&u->poll, h1_up_closed);
}

void h1_up_release(h1_engine_t *e, h1_up_t *u) {
  u->conn = NULL;
  /* fewer idle connections in all than the limit: no need to count this origin's */
  int same = 0;
  if (e->nidle >= e->pool_max_idle)
    for (h1_up_t *x = e->idle; x; x = x->next)
      if (strcmp(x->key, u->key) == 0) same++;
  if (e->closed || same >= e->pool_max_idle) {
    h1_up_close(u);
    return;
  }
  u->idle_since = h1_now(e);
  u->next = e->idle;
  e->idle = u;
  e->nidle++;
  h1_up_poll(u); /* an idle connection is read only to see it close */
  uv_unref((uv_handle_t *)&u->poll);
}

h1_up_t *h1_up_take(h1_engine_t *e, const char *key) {
  for (h1_up_t **p = &e->idle; *p; p = &(*p)->next) {
    h1_up_t *u = *p;
    if (strcmp(u->key, key) != 0) continue;
    *p = u->next;
    u->next = NULL;
    e->nidle--;
    uv_ref((uv_handle_t *)&u->poll);
    return u;
  }
  return NULL;
}

void h1_up_closed(uv_handle_t *h) {
  h1_up_t *u = h->data;
  h1_engine_t *e = u->e;
  free(u);
  e->handles--;
  h1_engine_maybe_free(e);
}

/* Writes to the upstream what is pending; the request is sent once the head and body left. */
void h1_flush_up(h1_conn_t *c) {
  h1_up_t *u = c->up;
  if (!u) return;
  int err = h1_buf_flush(&c->up_out, u->fd);
  if (err && err != EAGAIN) {
    /* An origin may answer an upload early and close (its kernel then resets): the rest of the
     * body is dropped and the answer already received is still read and relayed, as the JS
     * engine does; none is a 502 when the upstream's end is read. Never reused. */
    c->up_write_failed = true;
    c->up_out.off = c->up_out.len = 0;
  }
  if (!c->sent && h1_buf_pending(&c->up_out) == 0 && c->body_left == 0) {
    c->sent = true;
    c->t_sent = h1_now(c->e);
  }
  h1_up_poll(u);
  h1_client_poll(c);
}

/* Writes first and polls after: the upstream's poll then keeps its events (readable) from one
 * request to the next instead of going readable|writable and back, each change an epoll_ctl
 * DEL and ADD in libuv (uv_poll_start), a third of the syscalls of a small request. */
void h1_send_request(h1_conn_t *c) {
  c->progress_up = h1_now(c->e);
  if (c->body_left > 0 && c->in_len > 0) h1_move_body(c);
  else h1_flush_up(c);
}

void h1_adopt(h1_conn_t *c, int fd, const char *upstream) {
  h1_up_t *u = calloc(1, sizeof *u);
  if (!u || uv_poll_init_socket(c->e->loop, &u->poll, fd) != 0) {
    free(u);
    close(fd);
    h1_fail(c, F_CLOSED);
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
  c->t_connect = h1_stamp(c->e);
  h1_set_state(c, ST_UP);
  h1_send_request(c);
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
      h1_fail(c, F_BAD_RESPONSE);
      return false;
    }
    take = (size_t)k;
    c->bytes_down += (double)(c->chunks.data - before);
  } else {
    c->bytes_down += (double)take;
  }
  if (take > 0) {
    bool ok = c->encode ? h1_buf_add_chunk(&c->out, p, take) : h1_buf_add(&c->out, p, take);
    if (!ok) {
      h1_conn_close(c, true);
      return false;
    }
  }
  c->progress = h1_now(c->e);
  if (take < n) c->upstream_reusable = false; /* bytes after the response: not reused */
  if (done) h1_complete(c);
  return true;
}

/* The response head at the start of rhead: relays it (1xx) or starts the response. */
static bool on_head(h1_conn_t *c) {
  h1_res_t *res = &c->res;
  for (;;) {
    int r = h1_parse_response(c->rhead, c->rhead_len, c->e->max_response_header, res);
    if (r == H1_INCOMPLETE) return true;
    if (r == H1_BAD || res->status == 101) {
      h1_fail(c, F_BAD_RESPONSE);
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
        h1_buf_add(&c->out, line, (size_t)k);
        h1_buf_add(&c->out, fields + 1, o - (size_t)(fields + 1 - tmp));
      }
      free(tmp);
    }
    memmove(c->rhead, c->rhead + res->head_len, c->rhead_len - res->head_len);
    c->rhead_len -= res->head_len;
  }
  c->head_parsed = true;
  c->t_head = h1_stamp(c->e);
  c->stall_check_at = h1_now(c->e) + c->e->response_timeout;
  c->bytes_at_check = -1;
  c->status = res->status;
  bool bodiless = c->req.is_head || res->status == 204 || res->status == 304;
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
  if (c->e->filter_bodies && !bodiless) {
    h1_filter_ask(c); /* JS chooses a filter first (h1-body.c) */
    return false;
  }
  return h1_head_relay(c, bodiless);
}

bool h1_head_relay(h1_conn_t *c, bool bodiless) {
  h1_res_t *res = &c->res;
  /* rewritten straight into the client's queue */
  bool chunked;
  size_t cap = res->head_len + 96, o = 0;
  if (buf_reserve(&c->out, cap))
    o = h1_rewrite_response(c->rhead, res, bodiless, c->close_after, &chunked, c->out.data + c->out.len, cap);
  c->out.len += o;
  if (o == 0) {
    h1_conn_close(c, true);
    return false;
  }
  c->encode = chunked && c->framing != 2;
  size_t rest = c->rhead_len - res->head_len;
  const char *p = c->rhead + res->head_len;
  c->rhead_len = 0;
  if (c->framing == 0 || (c->framing == 1 && c->res_left == 0)) {
    if (rest > 0) c->upstream_reusable = false;
    c->encode = c->encode && c->framing != 0;
    h1_complete(c);
    return false;
  }
  if (rest > 0) return relay(c, p, rest);
  return true;
}

/* Moves request body bytes that arrived from the client to the upstream's queue, as far as the
 * queue has room, and writes them. */
void h1_move_body(h1_conn_t *c) {
  for (;;) {
    size_t pending = h1_buf_pending(&c->up_out);
    size_t room = pending >= 2 * UP_OUT_HIGH ? 0 : 2 * UP_OUT_HIGH - pending;
    size_t take = c->in_len;
    if ((int64_t)take > c->body_left) take = (size_t)c->body_left;
    if (take > room) take = room;
    if (take > 0) {
      if (!c->up_write_failed && !h1_buf_add(&c->up_out, c->in, take)) {
        h1_conn_close(c, true);
        return;
      }
      memmove(c->in, c->in + take, c->in_len - take);
      c->in_len -= take;
      c->body_left -= (int64_t)take;
      c->bytes_up += (double)take;
      c->progress_up = h1_now(c->e);
    }
    h1_up_t *u = c->up;
    h1_flush_up(c);
    /* more to move only if the queue emptied and the same exchange goes on */
    if (take == 0 || c->up != u || !u || c->state != ST_UP || h1_buf_pending(&c->up_out) > 0 || c->in_len == 0 ||
        c->body_left == 0)
      return;
  }
}

/* The upstream closed or failed with the response still to come. */
void h1_upstream_gone(h1_conn_t *c, bool eof) {
  if (c->head_parsed) {
    if (c->filter == FILTER_ON && c->framing == 3 && eof) { /* the end goes through the filter first */
      c->filter_end = 1;
      h1_filter_pump(c);
      return;
    }
    if (c->framing == 3 && eof) h1_complete(c); /* a close-delimited body ends with a clean close only */
    else h1_fail(c, F_CLOSED);
    return;
  }
  if (c->reused && c->req.retriable && !c->got_bytes && !c->retried) {
    /* the pooled connection had closed while idle: once more, on a new connection */
    if (c->up) h1_up_close(c->up);
    c->retried = true;
    c->reused = false;
    c->sent = false;
    c->up_write_failed = false;
    c->t_connect = 0;
    c->up_out.off = 0;
    c->up_out.len = c->req_len;
    h1_ask_route(c);
    return;
  }
  h1_fail(c, F_CLOSED);
}

/* One read of the upstream's answer: false once the exchange ended or failed (nothing more to
 * do in this callback), or when nothing is to be read now. `*more` is set when a read got bytes. */
static bool up_read(h1_conn_t *c, h1_up_t *u, bool *more) {
  *more = false;
  if (c->filter != FILTER_NONE) return h1_filter_read(c, u, more);
  if (!c->head_parsed) {
    size_t cap = c->e->max_response_header + READ_SIZE;
    if (!c->rhead) c->rhead = malloc(cap);
    if (!c->rhead) {
      h1_conn_close(c, true);
      return false;
    }
    ssize_t n = recv(u->fd, c->rhead + c->rhead_len, cap - c->rhead_len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    if (n <= 0) {
      h1_upstream_gone(c, n == 0);
      return false;
    }
    c->got_bytes = true;
    c->rhead_len += (size_t)n;
    *more = true;
    return on_head(c);
  }
  ssize_t n = recv(u->fd, c->e->scratch, READ_SIZE, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) {
    h1_upstream_gone(c, n == 0);
    return false;
  }
  *more = true;
  return relay(c, c->e->scratch, (size_t)n);
}

void h1_on_up(uv_poll_t *h, int status, int events) {
  h1_up_t *u = h->data;
  h1_conn_t *c = u->conn;
  if (u->closing) return;
  if (!c) { /* idle: anything (bytes, the close, an error) ends it */
    char b[64];
    ssize_t n = recv(u->fd, b, sizeof b, MSG_DONTWAIT);
    if (status < 0 || n >= 0 || (errno != EAGAIN && errno != EINTR)) h1_up_close(u);
    return;
  }
  bool more;
  u->e->stirred = true;
  if (status < 0) {
    /* An error (a reset, libuv stopped the poll): what arrived before it is still read (an early
     * answer to an upload), a bounded amount, then the end is the read's error or end of file. */
    for (int i = 0; i < 256; i++)
      if (!up_read(c, u, &more) || !more || c->up != u || u->closing || c->state != ST_UP) break;
    if (c->up == u && !u->closing && c->state == ST_UP) h1_upstream_gone(c, false);
    else if (!c->closing && c->state == ST_UP) h1_flush_client(c);
    return;
  }
  if (events & UV_WRITABLE) {
    if (c->body_left > 0 && c->in_len > 0) h1_move_body(c);
    else h1_flush_up(c);
    if (c->up != u || u->closing) return;
  }
  if (!(events & UV_READABLE)) return;
  if (c->head_parsed && h1_buf_pending(&c->out) > 0) return;
  if (!up_read(c, u, &more)) return;
  if (!c->closing && c->state == ST_UP) h1_flush_client(c);
}
