/*
 * The native HTTP/1.1 forward engine, client side (h1-up.c has the upstream side): serves the
 * common subset of forwarded HTTP/1.1 requests of a plain TCP client connection on the JS thread, driven by uv_poll (as udp.c): no reactor
 * thread, no cross-thread wake-up. Per request it parses the head (h1-parse.c), rewrites it as
 * the JS engine does, sends it on a keep-alive upstream connection from its own pool, parses the
 * response head and relays the body in its framing, with backpressure both ways (the upstream
 * is read only once what went to the client was written; the client only while its bytes have
 * somewhere to go). JS is called once per loop turn (uv_check) with the batch of what happened
 * (h1-js.c): a request that needs a new upstream connection (JS runs the egress pipeline and
 * connects), finished requests (JS writes the metrics, the request-end hook and the audit
 * record; in quiet mode, when nothing reads a record, one that ended well is only counted),
 * failures (JS answers them as the JS engine would), hand-backs and closes.
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

static double ms_since(uint64_t t_ns, uint64_t now_ns) { return t_ns == 0 ? -1 : (double)(now_ns - t_ns) / 1e6; }

/* ---- events to JS ---- */

void h1_push(h1_engine_t *e, h1_event_t *ev) {
  ev->next = NULL;
  if (e->ev_tail) e->ev_tail->next = ev;
  else e->ev_head = ev;
  e->ev_tail = ev;
}

h1_event_t *h1_event_new(h1_conn_t *c, int type) {
  h1_event_t *ev = calloc(1, sizeof *ev);
  if (!ev) return NULL;
  ev->type = type;
  ev->id = c->id;
  return ev;
}

/* The request's record (EV_DONE or EV_FAIL), its figures as they stand. */
void h1_record(h1_conn_t *c, int type, int kind) {
  h1_event_t *ev = h1_event_new(c, type);
  if (!ev) return;
  uint64_t now = uv_hrtime();
  ev->kind = kind;
  /* EV_FAIL: whether the answer must close the connection (the JS engine's closeAfter) */
  ev->status = type == EV_FAIL ? c->close_after : c->status;
  ev->responded = h1_responded(c);
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

/* ---- polling ---- */

static void on_client(uv_poll_t *h, int status, int events);

void h1_client_poll(h1_conn_t *c) {
  if (c->closing) return;
  int ev = 0;
  bool room = c->in_len < c->in_cap;
  if (!c->client_eof && room) ev |= UV_READABLE;
  /* while a request body goes up, the client is read only as fast as the upstream takes it */
  if (c->state == ST_UP && c->body_left > 0 && h1_buf_pending(&c->up_out) >= UP_OUT_HIGH) ev &= ~UV_READABLE;
  if (h1_buf_pending(&c->out) > 0) ev |= UV_WRITABLE;
  if (ev == c->events) return;
  c->events = ev;
  if (ev) uv_poll_start(&c->poll, ev, on_client);
  else uv_poll_stop(&c->poll);
}


/* ---- upstream connections ---- */

/* ---- the client connection ---- */

static void try_head(h1_conn_t *c);

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
  h1_set_state(c, ST_GONE);
  h1_filter_reset(c);
  if (c->up) h1_up_close(c->up);
  conn_unlink(c);
  /* the descriptor is the JS socket's: it closes it (after this poll left the loop's set) */
  uv_poll_stop(&c->poll);
  c->e->handles++;
  uv_close((uv_handle_t *)&c->poll, conn_closed);
}

/* Ends the connection; `tell`: JS destroys its socket (EV_CLOSED). */
void h1_conn_close(h1_conn_t *c, bool tell) {
  if (c->closing) return;
  h1_engine_t *e = c->e;
  int id = c->id, quiet = c->quiet;
  double rx = c->rx, tx = c->tx;
  conn_stop(c);
  if (!tell) return;
  h1_event_t *ev = calloc(1, sizeof *ev);
  if (!ev) return;
  ev->type = EV_CLOSED;
  ev->id = id;
  ev->status = quiet;
  ev->bytes_up = rx;
  ev->bytes_down = tx;
  h1_push(e, ev);
}

/* The connection goes back to JS with what was read and not acted on (EV_HANDBACK or EV_EXPIRE). */
void h1_hand_back(h1_conn_t *c, int type, int phase) {
  h1_event_t *ev = h1_event_new(c, type);
  if (!ev) {
    h1_conn_close(c, true);
    return;
  }
  ev->kind = type == EV_HANDBACK ? c->served : phase;
  ev->status = c->quiet;
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

/*
 * After a read that leaves the request incomplete (its head cut, or its body still to come), the
 * client's ACK goes at once, once per request. With `tcp_smart_accept` the kernel holds it for
 * the answer, and the answer waits on these bytes: a client using Nagle's algorithm would hold
 * its next write 40 ms for that ACK. A request whose head came whole with its body costs nothing.
 */
static void ack_if_waiting(h1_conn_t *c) {
  bool body = (c->state == ST_UP || c->state == ST_ROUTE) && c->body_left > 0;
  if (c->acked || (c->state != ST_HEAD && !body)) return;
  c->acked = true;
  sock_quick_ack(c->fd, 1);
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
  h1_set_state(c, ST_SILENT);
  c->since = h1_now(e);
  c->events = -1;
  c->next = e->conns;
  if (e->conns) e->conns->prev = c;
  e->conns = c;
  if (n > 0) {
    memcpy(c->in, bytes, n);
    c->in_len = n;
    try_head(c);
    if (!c->closing) ack_if_waiting(c);
  }
  if (!c->closing) h1_client_poll(c);
  return c;
}

void h1_engine_maybe_free(h1_engine_t *e) {
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
  h1_engine_maybe_free(e);
}


void h1_engine_release(h1_engine_t *e) {
  e->finalized = true;
  h1_engine_maybe_free(e);
}

void h1_handle_closed(uv_handle_t *h) {
  /* engine handles (check, sweep): counted the same way */
  h1_engine_t *e = h->data;
  e->handles--;
  h1_engine_maybe_free(e);
}

/* ---- requests ---- */

static void format_key(char *key, size_t cap, const char *host, int port) {
  size_t n = strlen(host);
  if (memchr(host, ':', n) || n + 8 > cap) {
    snprintf(key, cap, "[%s]:%d", host, port);
    return;
  }
  /* host:port by hand: snprintf was a visible share of a small request's CPU */
  memcpy(key, host, n);
  key[n++] = ':';
  char digits[8];
  int k = 0;
  unsigned v = (unsigned)port;
  do digits[k++] = (char)('0' + v % 10);
  while ((v /= 10) > 0 && k < 7);
  while (k > 0) key[n++] = digits[--k];
  key[n] = 0;
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
      h1_conn_close(c, true);
      return;
    }
    c->up_out.data = d;
    c->up_out.cap = cap;
  }
  size_t n = h1_rewrite_request(c->in, r, c->up_out.data, c->up_out.cap);
  if (n == 0) {
    h1_hand_back(c, EV_HANDBACK, 0);
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
  if (body > 0 && !h1_buf_add(&c->up_out, c->in + used, body)) {
    h1_conn_close(c, true);
    return;
  }
  c->body_left -= (int64_t)body;
  c->bytes_up = (double)body;
  used += body;
  memmove(c->in, c->in + used, c->in_len - used);
  c->in_len -= used;
  c->served++;
  c->t_start = h1_stamp(c->e);
  c->t_connect = c->t_head = 0;
  c->status = 0;
  c->bytes_down = 0;
  c->reused = c->retried = c->sent = c->got_bytes = c->head_parsed = c->routed = false;
  c->up_write_failed = false;
  c->close_after = !r->keep_alive || c->client_eof || c->e->draining;
  c->rhead_len = 0;
  c->framing = 0;
  memset(&c->chunks, 0, sizeof c->chunks);
  c->progress = h1_now(c->e);
  h1_up_t *u = h1_up_take(c->e, c->key);
  if (u) {
    c->reused = true;
    c->up = u;
    u->conn = c;
    c->t_connect = h1_stamp(c->e);
    h1_set_state(c, ST_UP);
    h1_send_request(c);
    return;
  }
  h1_ask_route(c);
}

/* The request waits for JS to connect an upstream for it (EV_ROUTE, with its target). */
void h1_ask_route(h1_conn_t *c) {
  h1_set_state(c, ST_ROUTE);
  c->routed = true;
  h1_event_t *ev = h1_event_new(c, EV_ROUTE);
  if (!ev) {
    h1_conn_close(c, true);
    return;
  }
  memcpy(ev->host, c->req.host, sizeof ev->host);
  ev->port = c->req.port;
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
      h1_set_state(c, ST_HEAD);
      c->since = h1_now(c->e);
    }
    return;
  }
  if (r == H1_HANDBACK) {
    h1_hand_back(c, EV_HANDBACK, 0);
    return;
  }
  start_request(c);
}

/* Flushes the client side; on a write error the client is gone (the exchange ends with it). */
bool h1_flush_client(h1_conn_t *c) {
  size_t before = h1_buf_pending(&c->out);
  int err = h1_buf_flush(&c->out, c->fd);
  c->tx += (double)(before - h1_buf_pending(&c->out));
  if (err && err != EAGAIN) {
    if (c->state == ST_UP) h1_record(c, EV_DONE, F_CLIENT_CLOSED);
    h1_conn_close(c, true);
    return false;
  }
  h1_client_poll(c);
  if (c->up) h1_up_poll(c->up);
  return true;
}

/* The connection closes, what was queued for the client written. If the client is still
 * sending the body of the request just answered (an early answer to an upload), a close now
 * would have the kernel reset the connection over the unread bytes, and the client could lose
 * the answer before reading it: the write side is shut, and the rest of that body is read and
 * dropped (linger_read) before the close. */
static void close_written(h1_conn_t *c) {
  shutdown(c->fd, SHUT_WR);
  if (c->body_left > 0 && !c->client_eof && !c->lingering) {
    c->lingering = true;
    c->linger_start = c->since = h1_now(c->e);
    c->in_len = 0;
    h1_client_poll(c);
    return;
  }
  h1_conn_close(c, true);
}

/* Lingering: what the client still sends is read and dropped; its end (or an error) closes. */
static void linger_read(h1_conn_t *c) {
  for (int i = 0; i < 16; i++) {
    ssize_t n = recv(c->fd, c->e->scratch, READ_SIZE, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      h1_conn_close(c, true);
      return;
    }
    c->rx += (double)n;
    c->since = h1_now(c->e);
  }
}

/* An exchange is over (answered or relayed): the connection waits for its next request, or
 * closes once what is queued for the client is written when it must. */
static void next_request(h1_conn_t *c) {
  h1_set_state(c, ST_IDLE);
  c->acked = false; /* the answer went: the kernel holds ACKs again (ack_if_waiting) */
  c->since = h1_now(c->e);
  if (!h1_flush_client(c)) return;
  if (c->close_after) {
    if (h1_buf_pending(&c->out) == 0) close_written(c);
    /* else closed once flushed (on_client) */
    return;
  }
  try_head(c);
  if (!c->closing) h1_client_poll(c);
}

/* The response ended: the h1_record, the upstream back to the pool, the next request. */
void h1_complete(h1_conn_t *c) {
  if (c->encode && c->framing != 0 && !h1_buf_add(&c->out, "0\r\n\r\n", 5)) {
    h1_conn_close(c, true);
    return;
  }
  if (c->e->quiet && !c->routed) {
    c->quiet++;
    c->e->quiet_done++;
  } else {
    h1_record(c, EV_DONE, 0);
  }
  /* the response ended before the request body did: the rest is not read, the connection closes */
  if (c->body_left > 0) c->close_after = true;
  h1_up_t *u = c->up;
  c->up = NULL;
  if (u) {
    if (c->upstream_reusable && c->sent && !c->up_write_failed) h1_up_release(c->e, u);
    else h1_up_close(u);
  }
  next_request(c);
}

/* The request fails: before the response head, JS answers it (the connection waits in
 * ST_ANSWER); after it, the client connection is cut. */
void h1_fail(h1_conn_t *c, int kind) {
  if (c->state != ST_UP && c->state != ST_ROUTE) return;
  h1_record(c, EV_FAIL, kind);
  if (c->up) h1_up_close(c->up);
  bool responded = h1_responded(c);
  h1_filter_reset(c);
  if (responded) {
    h1_conn_close(c, true);
    return;
  }
  h1_set_state(c, ST_ANSWER);
  h1_client_poll(c);
}

void h1_answer(h1_conn_t *c, const char *bytes, size_t n, bool close) {
  if (c->state != ST_ANSWER && c->state != ST_ROUTE) return;
  if (!h1_buf_add(&c->out, bytes, n)) {
    h1_conn_close(c, true);
    return;
  }
  c->close_after = c->close_after || close || c->body_left > 0;
  next_request(c);
}

static void client_gone(h1_conn_t *c) {
  if (c->state == ST_UP || c->state == ST_ROUTE) h1_record(c, EV_DONE, F_CLIENT_CLOSED);
  h1_conn_close(c, true);
}

static void on_client(uv_poll_t *h, int status, int events) {
  h1_conn_t *c = h->data;
  if (c->closing) return;
  c->e->stirred = true;
  if (status < 0) {
    client_gone(c);
    return;
  }
  if (c->lingering) {
    if (events & UV_READABLE) linger_read(c);
    return;
  }
  if (events & UV_WRITABLE) {
    if (!h1_flush_client(c)) return;
    if (c->close_after && c->state == ST_IDLE && h1_buf_pending(&c->out) == 0) {
      close_written(c);
      return;
    }
    /* a filtered body's bytes read with its head wait for the client to take what came before */
    if (c->filter == FILTER_ON && c->rest_len > 0 && h1_buf_pending(&c->out) == 0) {
      h1_filter_pump(c);
      if (c->closing) return;
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
      if (c->in_len == 0 && h1_buf_pending(&c->out) == 0) {
        shutdown(c->fd, SHUT_WR);
        h1_conn_close(c, true);
        return;
      }
      break;
    case ST_HEAD:
      h1_hand_back(c, EV_HANDBACK, 0); /* JS reads the EOF itself and answers the cut head */
      return;
    case ST_UP:
    case ST_ROUTE:
      c->close_after = true;
      if (c->body_left > 0) {
        h1_fail(c, F_BODY_CUT);
        return;
      }
      break;
    default:
      c->close_after = true;
    }
    h1_client_poll(c);
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
    if (c->body_left > 0) h1_move_body(c);
    break;
  default:
    break;
  }
  if (c->closing) return;
  ack_if_waiting(c);
  h1_client_poll(c);
}

void h1_drop(h1_conn_t *c) {
  if (c->state == ST_UP || c->state == ST_ROUTE) h1_record(c, EV_DONE, F_CLIENT_CLOSED);
  h1_conn_close(c, false);
}

bool h1_busy(h1_conn_t *c) {
  return (c->state != ST_IDLE && c->state != ST_SILENT && c->state != ST_HEAD) || h1_buf_pending(&c->out) > 0;
}

void h1_drain(h1_engine_t *e) {
  e->draining = true;
  /* responses whose head has not left yet say Connection: close; idle connections are the
   * drain loop's to end (as for the JS on-ramp) */
  for (h1_conn_t *c = e->conns; c; c = c->next)
    if ((c->state == ST_ROUTE || c->state == ST_UP || c->state == ST_ANSWER) && !h1_responded(c)) c->close_after = true;
}

void h1_engine_close(h1_engine_t *e) {
  if (e->closed) return;
  e->closed = true;
  while (e->idle) h1_up_close(e->idle);
  uv_timer_stop(&e->sweep);
  uv_check_stop(&e->check);
  uv_prepare_stop(&e->nap_check);
  e->handles += 3;
  uv_close((uv_handle_t *)&e->sweep, h1_handle_closed);
  uv_close((uv_handle_t *)&e->check, h1_handle_closed);
  uv_close((uv_handle_t *)&e->nap_check, h1_handle_closed);
}

