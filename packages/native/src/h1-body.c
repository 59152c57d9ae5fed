/*
 * The native HTTP/1.1 engine's response body filter: the app's `getResponseBodyFilter` and its
 * filter's chunks, without taking the exchange off the engine (before, any body hook kept every
 * request on the JS engine, which spends three times the CPU per byte).
 *
 * - The response head is in: JS is shown it (EV_HEAD, in the loop turn's batch) and chooses
 *   (h1Filter): no filter (the body is relayed as without hooks), a filter that observes (the
 *   upstream's framing kept), one that rewrites (sent chunked, without the Content-Length), or a
 *   refusal (the chooser failed: JS answers it). The upstream is not read meanwhile.
 * - Each read of the body is taken apart from its framing (Content-Length, chunked or the close)
 *   into a Buffer of its own (one per body, reused, for a filter that takes its chunks lent), and
 *   the filter callback is called with it on the spot: cb(id, n, buffer, headSent), n the
 *   payload's length, -1 for the end. It returns what
 *   goes to the client: `undefined` the payload as read, a Buffer instead, `null` nothing,
 *   FILTER_PENDING (a promise: the connection waits for h1Resume) or FILTER_STOPPED (JS records
 *   the stop; it answers it while the head is still held, else the connection is cut).
 * - The response head is held back until the first bytes go out (or the end), so that a filter
 *   that stops at its first chunk is answered with its status, as the JS engine does.
 *
 * Ordering rules: one call at a time per body, in order; the upstream is read only when the
 * client took what came before and no call is in flight (h1_up_poll). The callback never calls
 * the engine (it cannot close a connection under these frames); what it defers runs from the
 * next batch, which `want_tick` makes due so that the promise's microtasks run. Each read gets
 * new memory, so a chunk stays the filter's to keep as Node's own streams give theirs, unless the
 * filter said it keeps none (`BodyFilter.chunks: 'lent'`): then its body's reads share one
 * Buffer, and no allocation (and none of the garbage collection it brings) is made per chunk.
 */
#define _GNU_SOURCE
#include "h1.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static void filter_finish(h1_conn_t *c);

void h1_filter_reset(h1_conn_t *c) {
  if (c->ab) napi_delete_reference(c->e->env, c->ab);
  c->ab = NULL;
  c->ab_data = NULL;
  free(c->held.data);
  memset(&c->held, 0, sizeof c->held);
  free(c->trailers.data);
  memset(&c->trailers, 0, sizeof c->trailers);
  c->filter = FILTER_NONE;
  c->filter_wait = c->head_held = c->filter_lends = false;
  c->filter_end = 0;
  c->rest_off = c->rest_len = 0;
}

void h1_filter_ask(h1_conn_t *c) {
  h1_event_t *ev = h1_event_new(c, EV_HEAD);
  char *head = malloc(c->res.head_len);
  if (!ev || !head) {
    free(ev);
    free(head);
    h1_conn_close(c, true);
    return;
  }
  memcpy(head, c->rhead, c->res.head_len);
  ev->bytes = head;
  ev->nbytes = c->res.head_len;
  ev->status = c->res.status;
  ev->bytes_up = c->bytes_up;
  memcpy(ev->method, c->method, sizeof ev->method);
  h1_push(c->e, ev);
  c->filter = FILTER_ASK;
  c->routed = true; /* JS holds the request's record from here: its end is told, never counted */
  if (c->up) h1_up_poll(c->up);
}

/* The next read's memory, made on demand (the last one went to the filter with its bytes). */
static bool ensure_ab(h1_conn_t *c) {
  if (c->ab) return true;
  napi_env env = c->e->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return false;
  napi_value buf;
  void *data = NULL;
  bool ok = napi_create_buffer(env, FILTER_READ, &data, &buf) == napi_ok &&
            napi_create_reference(env, buf, 1, &c->ab) == napi_ok;
  napi_close_handle_scope(env, scope);
  c->ab_data = ok ? data : NULL;
  return ok;
}

/* Bytes for the client in the response's framing, after the held head. */
static bool filter_out(h1_conn_t *c, const char *p, size_t n) {
  bool ok = true;
  if (c->head_held) {
    ok = h1_buf_add(&c->out, c->held.data, c->held.len);
    c->head_held = false;
  }
  if (ok && n > 0) ok = c->encode ? h1_buf_add_chunk(&c->out, p, n) : h1_buf_add(&c->out, p, n);
  if (!ok) h1_conn_close(c, true);
  return ok;
}

/* The filter stopped the body (JS records it): answered by JS while the head is held, else cut. */
static void filter_stopped(h1_conn_t *c) {
  bool held = c->head_held;
  h1_filter_reset(c);
  if (c->up) h1_up_close(c->up);
  if (!held) {
    h1_conn_close(c, true);
    return;
  }
  h1_set_state(c, ST_ANSWER);
  h1_client_poll(c);
}

/* Calls the filter with the payload in c->ab (n bytes), or the end (n < 0); acts on its answer. */
static int filter_call(h1_conn_t *c, ssize_t n) {
  h1_engine_t *e = c->e;
  napi_env env = e->env;
  napi_handle_scope scope;
  if (!e->filter_cb || napi_open_handle_scope(env, &scope) != napi_ok) {
    h1_conn_close(c, true);
    return FILTER_STOPPED;
  }
  napi_value args[4], cb, recv, ret = NULL;
  napi_create_int32(env, c->id, &args[0]);
  napi_create_int64(env, n, &args[1]);
  if (n < 0 || !c->ab || napi_get_reference_value(env, c->ab, &args[2]) != napi_ok) napi_get_undefined(env, &args[2]);
  napi_get_boolean(env, !c->head_held, &args[3]);
  int r = FILTER_PASS;
  if (napi_get_reference_value(env, e->filter_cb, &cb) != napi_ok || napi_get_global(env, &recv) != napi_ok ||
      napi_call_function(env, recv, cb, 4, args, &ret) != napi_ok) {
    napi_value err;
    if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
    ret = NULL;
    r = FILTER_STOPPED;
  }
  if (c->closing || c->state != ST_UP) { /* the connection went while JS ran */
    napi_close_handle_scope(env, scope);
    return FILTER_STOPPED;
  }
  napi_valuetype t = napi_undefined;
  if (ret) napi_typeof(env, ret, &t);
  void *data = NULL;
  size_t len = 0;
  bool is_buffer = false;
  if (t == napi_undefined && r == FILTER_PASS) {
    if (n > 0 && !filter_out(c, c->ab_data, (size_t)n)) r = FILTER_STOPPED;
  } else if (t == napi_number) {
    int32_t code = 0;
    napi_get_value_int32(env, ret, &code);
    r = code == FILTER_PENDING ? FILTER_PENDING : FILTER_STOPPED;
  } else if (t == napi_object && napi_is_buffer(env, ret, &is_buffer) == napi_ok && is_buffer &&
             napi_get_buffer_info(env, ret, &data, &len) == napi_ok) {
    if (len > 0 && !filter_out(c, data, len)) r = FILTER_STOPPED;
  } else if (t != napi_null) {
    r = FILTER_STOPPED;
  }
  /* the payload's memory is the filter's now (unless it is only lent): the next read gets new memory */
  if (n > 0 && c->ab && !c->filter_lends) {
    napi_delete_reference(env, c->ab);
    c->ab = NULL;
    c->ab_data = NULL;
  }
  napi_close_handle_scope(env, scope);
  if (r == FILTER_PENDING) {
    c->filter_wait = true;
    e->want_tick = true;
  } else if (r == FILTER_STOPPED && !c->closing) {
    e->want_tick = true; /* JS answers it from a microtask */
    filter_stopped(c);
  }
  return r;
}

/* Raw bytes of the body from the upstream (at p, which may be c->ab_data): the payload goes to
 * the filter. */
static void filter_input(h1_conn_t *c, const char *p, size_t n) {
  char *dst = c->ab_data;
  size_t take = n, payload = 0;
  bool done = false;
  if (c->framing == 1) {
    if ((int64_t)take > c->res_left) take = (size_t)c->res_left;
    c->res_left -= (int64_t)take;
    done = c->res_left == 0;
    if (p != dst) memcpy(dst, p, take);
    payload = take;
  } else if (c->framing == 2) {
    /* the trailer section goes to the client after the filtered body, as the JS engine sends it */
    size_t tlen = 0;
    ssize_t k = h1_chunks_decode(&c->chunks, p, n, &done, dst, &payload, c->e->scratch, &tlen);
    if (k < 0 || (tlen > 0 && !h1_buf_add(&c->trailers, c->e->scratch, tlen)) ||
        h1_buf_pending(&c->trailers) > c->e->max_response_header) {
      h1_fail(c, F_BAD_RESPONSE);
      return;
    }
    take = (size_t)k;
  } else {
    if (p != dst) memcpy(dst, p, n);
    payload = n;
  }
  c->bytes_down += (double)payload;
  c->progress = h1_now(c->e);
  if (take < n) c->upstream_reusable = false; /* bytes after the response: not reused */
  if (done) c->filter_end = 1;
  if (payload > 0) filter_call(c, (ssize_t)payload);
}

void h1_filter_pump(h1_conn_t *c) {
  if (c->filter_pumping) return;
  c->filter_pumping = true;
  while (c->filter == FILTER_ON && !c->filter_wait && !c->closing && c->state == ST_UP) {
    if (c->filter_end == 1) {
      c->filter_end = 2;
      if (filter_call(c, -1) == FILTER_PASS) filter_finish(c);
      break;
    }
    if (c->rest_len == 0) break;
    /* the client takes what came before first (a slow one is waited for: on_client pumps) */
    if (h1_buf_pending(&c->out) > 0 && (!h1_flush_client(c) || h1_buf_pending(&c->out) > 0)) break;
    if (!ensure_ab(c)) {
      h1_conn_close(c, true);
      break;
    }
    size_t n = c->rest_len > FILTER_READ ? FILTER_READ : c->rest_len;
    const char *p = c->rhead + c->rest_off;
    c->rest_off += n;
    c->rest_len -= n;
    filter_input(c, p, n);
  }
  c->filter_pumping = false;
  if (!c->closing && c->state == ST_UP) h1_flush_client(c);
}

bool h1_filter_read(h1_conn_t *c, h1_up_t *u, bool *more) {
  *more = false;
  if (c->filter != FILTER_ON || c->filter_wait || c->rest_len > 0 || c->filter_end) return true;
  if (!ensure_ab(c)) {
    h1_conn_close(c, true);
    return false;
  }
  ssize_t n = recv(u->fd, c->ab_data, FILTER_READ, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) {
    h1_upstream_gone(c, n == 0);
    return false;
  }
  *more = true;
  filter_input(c, c->ab_data, (size_t)n);
  h1_filter_pump(c);
  return !c->closing && c->state == ST_UP;
}

/* The end went through the filter: the held head (an empty body), the last chunk, the record. */
static void filter_finish(h1_conn_t *c) {
  if (!filter_out(c, NULL, 0)) return;
  size_t trailers = h1_buf_pending(&c->trailers);
  if (c->encode && trailers > 2) { /* fields, not only the empty line: the last chunk carries them */
    if (!h1_buf_add(&c->out, "0\r\n", 3) || !h1_buf_add(&c->out, c->trailers.data + c->trailers.off, trailers)) {
      h1_conn_close(c, true);
      return;
    }
    c->encode = false; /* the body's end is written */
  }
  h1_filter_reset(c);
  h1_complete(c);
}

void h1_filter_start(h1_conn_t *c, int mode) {
  if (c->filter != FILTER_ASK || c->state != ST_UP) return;
  bool lend = mode >= 0 && (mode & FILTER_LEND);
  if (mode >= 0) mode &= ~FILTER_LEND;
  h1_res_t *res = &c->res;
  c->filter = FILTER_NONE;
  if (mode < 0) { /* the chooser failed: nothing of the response is read or sent; JS answers */
    c->rhead_len = 0;
    if (c->up) h1_up_close(c->up);
    h1_set_state(c, ST_ANSWER);
    h1_client_poll(c);
    return;
  }
  if (mode == 0) {
    if (h1_head_relay(c, false) && !c->closing && c->state == ST_UP) h1_flush_client(c);
    return;
  }
  size_t cap = res->head_len + 96;
  bool chunked = true;
  c->held.data = malloc(cap);
  size_t o = 0;
  if (c->held.data)
    o = mode == 2 ? h1_rewrite_response_unsized(c->rhead, res, c->close_after, c->held.data, cap)
                  : h1_rewrite_response(c->rhead, res, false, c->close_after, &chunked, c->held.data, cap);
  if (o == 0) {
    h1_conn_close(c, true);
    return;
  }
  c->held.len = o;
  c->head_held = true;
  /* a filtered body is framed here: as the head says, from the payload the filter passed */
  c->encode = chunked;
  c->filter = FILTER_ON;
  c->filter_lends = lend;
  c->rest_off = res->head_len;
  c->rest_len = c->rhead_len - res->head_len;
  c->rhead_len = 0;
  if (c->framing == 1 && c->res_left == 0) {
    c->filter_end = 1;
    if (c->rest_len > 0) c->upstream_reusable = false; /* bytes after the response */
  }
  h1_filter_pump(c);
}

void h1_filter_resume(h1_conn_t *c, const char *bytes, size_t n, bool stop) {
  if (c->filter != FILTER_ON || !c->filter_wait || c->state != ST_UP) return;
  c->filter_wait = false;
  c->stall_check_at = h1_now(c->e) + c->e->response_timeout; /* the wait was the app's, not the upstream's */
  c->bytes_at_check = -1;
  if (stop) {
    filter_stopped(c);
    return;
  }
  if (bytes && !filter_out(c, bytes, n)) return;
  if (c->filter_end == 2) {
    filter_finish(c);
    return;
  }
  h1_filter_pump(c);
}
