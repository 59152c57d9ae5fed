/*
 * The JS surface of the native HTTP/1.1 forward engine (h1.c): making an engine, giving it a
 * client connection, answering its questions, and the once-per-loop-turn batch of what happened
 * (uv_check, and a uv_idle while events wait so that the loop does not sleep on them; quiet
 * counts alone within a millisecond, uv_timer). Also the
 * codecs (h1-parse.c) as pure functions, for tests.
 *
 * - h1Engine(settings: number[9], cb): an engine; settings are [maxHeader, maxResponseHeader,
 *   headerTimeoutMs, idleTimeoutMs, responseTimeoutMs, bodyTimeoutMs, poolIdleTimeoutMs,
 *   poolMaxIdle, sweepMs]; cb(events, quiet) gets an array of events, each an array:
 *   [type, id, kind, status, responded, reused, bodyUnread, bytesUp, bytesDown, msTotal,
 *   msConnect, msHead, method, host, port, upstream, bytes | null] (see h1.h for the types),
 *   and the number of requests that ended well since the last batch without an event of their
 *   own (quiet mode); a connection's own such count comes in the `status` of its EV_CLOSED,
 *   EV_HANDBACK or EV_EXPIRE.
 * - h1Serve(engine, fd, id, bytes | null): true when the engine serves fd (false too for a
 *   connection whose first bytes, read or waiting, are CONNECT or the HTTP/2 preface; fd non-blocking, still
 *   the caller's to close, after h1Drop or the connection's EV_CLOSED or EV_HANDBACK; the
 *   caller's own event loop registration of fd must be inactive meanwhile).
 * - h1Adopt(engine, id, fd, upstream): the upstream connection for a request in EV_ROUTE (a
 *   duplicate of fd is taken); false when the client connection is gone.
 * - h1Answer(engine, id, bytes, close): JS's answer to a failed request (EV_FAIL, not responded).
 * - h1Control(engine, op, flag): 0 close (returns the quiet count not yet told), 1 draining, 2 quiet (flag): a request that ends well
 *   and did not ask for a route is counted instead of told (nothing observes its record).
 * - h1FilterBodies(engine, cb), h1Filter(engine, id, mode), h1Resume(engine, id, bytes, stop):
 *   response body filters (h1-body.c says how): each response head with a body comes as an
 *   EV_HEAD event (status, and its bytes as received), JS chooses, and cb gets the chunks.
 * - h1Drop(engine, id): stops serving a connection at once; returns its quiet count (as its
 *   EV_CLOSED would have); h1Busy(engine, id): a request under way or a response still being
 *   written.
 * - h1ParseRequest(buf, max), h1ParseResponse(buf, max): a number (H1_*) or an object with
 *   the head's length and what was read, and the head rewritten as the engine sends it.
 * - h1Chunks(buf): [consumed, done, dataBytes] or -1 (malformed).
 */
#define _GNU_SOURCE
#include "h1.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
  h1_engine_t e;
  uv_idle_t idle;
  uv_timer_t flush; /* quiet counts alone wait for it (QUIET_WAIT_MS) */
} engine_box_t;

/* Quiet counts with no event to ride on are told at most every QUIET_WAIT_MS, or once
 * QUIET_BATCH of them wait: when the loop turns once or twice per request (a proxy with a core to
 * itself), a call into JS per turn for a count was the largest cost left in the batch. */
#define QUIET_WAIT_MS 1
#define QUIET_BATCH 64

static void on_idle(uv_idle_t *h) { (void)h; }

static void set_num(napi_env env, napi_value arr, uint32_t i, double v) {
  napi_value x;
  if (napi_create_double(env, v, &x) == napi_ok) napi_set_element(env, arr, i, x);
}

static void set_str(napi_env env, napi_value arr, uint32_t i, const char *s) {
  napi_value x;
  if (napi_create_string_latin1(env, s, NAPI_AUTO_LENGTH, &x) == napi_ok) napi_set_element(env, arr, i, x);
}

static void deliver(h1_engine_t *e) {
  napi_env env = e->env;
  for (int round = 0; round < 8 && (e->ev_head || e->quiet_done > 0 || e->want_tick) && e->cb; round++) {
    h1_event_t *ev = e->ev_head;
    e->want_tick = false;
    e->ev_head = e->ev_tail = NULL;
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value args[2], cb, recv, ignored;
    napi_create_array(env, &args[0]);
    napi_value list = args[0];
    napi_create_double(env, e->quiet_done, &args[1]);
    e->quiet_done = 0;
    uint32_t n = 0;
    while (ev) {
      h1_event_t *next = ev->next;
      napi_value a, x;
      napi_create_array_with_length(env, 17, &a);
      set_num(env, a, 0, ev->type);
      set_num(env, a, 1, ev->id);
      set_num(env, a, 2, ev->kind);
      set_num(env, a, 3, ev->status);
      set_num(env, a, 4, ev->responded);
      set_num(env, a, 5, ev->reused);
      set_num(env, a, 6, ev->body_unread);
      set_num(env, a, 7, ev->bytes_up);
      set_num(env, a, 8, ev->bytes_down);
      set_num(env, a, 9, ev->t_total);
      set_num(env, a, 10, ev->t_connect);
      set_num(env, a, 11, ev->t_head);
      set_str(env, a, 12, ev->method);
      set_str(env, a, 13, ev->host);
      set_num(env, a, 14, ev->port);
      set_str(env, a, 15, ev->upstream);
      if (ev->bytes && napi_create_buffer_copy(env, ev->nbytes, ev->bytes, NULL, &x) == napi_ok)
        napi_set_element(env, a, 16, x);
      else if (napi_get_null(env, &x) == napi_ok)
        napi_set_element(env, a, 16, x);
      napi_set_element(env, list, n++, a);
      free(ev->bytes);
      free(ev);
      ev = next;
    }
    if (napi_get_reference_value(env, e->cb, &cb) == napi_ok && napi_get_global(env, &recv) == napi_ok &&
        napi_make_callback(env, e->actx, recv, cb, 2, args, &ignored) == napi_pending_exception) {
      napi_value err;
      if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
    }
    napi_close_handle_scope(env, scope);
  }
}

static void on_flush(uv_timer_t *h) {
  engine_box_t *b = h->data;
  if (b->e.ev_head || b->e.quiet_done > 0) deliver(&b->e);
}

static void on_check(uv_check_t *h) {
  engine_box_t *b = h->data;
  if (b->e.ev_head || b->e.want_tick || b->e.quiet_done >= QUIET_BATCH) deliver(&b->e);
  else if (b->e.quiet_done > 0 && !uv_is_active((uv_handle_t *)&b->flush))
    uv_timer_start(&b->flush, on_flush, QUIET_WAIT_MS, 0);
  if (!b->e.ev_head && !b->e.want_tick) uv_idle_stop(&b->idle);
}

static void on_sweep(uv_timer_t *h) {
  engine_box_t *b = h->data;
  h1_sweep(&b->e);
  if (b->e.ev_head && !uv_is_active((uv_handle_t *)&b->idle)) uv_idle_start(&b->idle, on_idle);
}

/* Events made outside a poll callback (JS calls, the sweep) must not wait for the next wake-up. */
static void kick(h1_engine_t *e) {
  engine_box_t *b = (engine_box_t *)e;
  if ((e->ev_head || e->want_tick) && !e->closed && !uv_is_active((uv_handle_t *)&b->idle))
    uv_idle_start(&b->idle, on_idle);
}

static void engine_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  engine_box_t *b = data;
  h1_engine_t *e = &b->e;
  if (e->cb) napi_delete_reference(env, e->cb);
  e->cb = NULL;
  if (e->filter_cb) napi_delete_reference(env, e->filter_cb);
  e->filter_cb = NULL;
  if (e->actx) napi_async_destroy(env, e->actx);
  e->actx = NULL;
  if (!e->closed) {
    h1_engine_close(e);
    e->handles++;
    uv_close((uv_handle_t *)&b->idle, h1_handle_closed);
    e->handles++;
    uv_close((uv_handle_t *)&b->flush, h1_handle_closed);
  }
  h1_engine_release(e);
}

static engine_box_t *get_engine(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    throw_type(env, "expected an h1 engine");
    return NULL;
  }
  engine_box_t *b = p;
  if (b->e.closed) {
    throw_errno(env, EBADF, "h1", "engine closed");
    return NULL;
  }
  return b;
}

static napi_value h1_engine(napi_env env, napi_callback_info info) {
  napi_value argv[2], out, name;
  if (!get_args(env, info, 2, argv, NULL)) return NULL;
  uint32_t n;
  if (!arg_array(env, argv[0], &n) || n < 9) {
    throw_type(env, "settings: 9 numbers");
    return NULL;
  }
  double s[9];
  for (uint32_t i = 0; i < 9; i++) {
    napi_value x;
    if (napi_get_element(env, argv[0], i, &x) != napi_ok || napi_get_value_double(env, x, &s[i]) != napi_ok) {
      throw_type(env, "settings: 9 numbers");
      return NULL;
    }
  }
  engine_box_t *b = calloc(1, sizeof *b);
  if (!b || !(b->e.scratch = malloc(65536))) {
    free(b);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  h1_engine_t *e = &b->e;
  e->env = env;
  e->max_header = (size_t)s[0];
  e->max_response_header = (size_t)s[1];
  e->header_timeout = (uint64_t)s[2];
  e->idle_timeout = (uint64_t)s[3];
  e->response_timeout = (uint64_t)s[4];
  e->body_timeout = (uint64_t)s[5];
  e->pool_idle_timeout = (uint64_t)s[6];
  e->pool_max_idle = s[7] < 1 ? 1 : (int)s[7];
  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  e->loop = loop;
  uv_check_init(loop, &e->check);
  uv_timer_init(loop, &e->sweep);
  uv_idle_init(loop, &b->idle);
  uv_timer_init(loop, &b->flush);
  e->check.data = e->sweep.data = b->idle.data = b->flush.data = b;
  uv_unref((uv_handle_t *)&b->flush);
  uv_unref((uv_handle_t *)&e->check);
  uv_unref((uv_handle_t *)&e->sweep);
  uv_unref((uv_handle_t *)&b->idle);
  uv_check_start(&e->check, on_check);
  uv_prepare_init(loop, &e->nap_check);
  e->nap_check.data = b;
  uv_unref((uv_handle_t *)&e->nap_check);
  h1_nap_start(e);
  uint64_t every = s[8] < 10 ? 10 : (uint64_t)s[8];
  uv_timer_start(&e->sweep, on_sweep, every, every);
  napi_create_reference(env, argv[1], 1, &e->cb);
  napi_create_string_utf8(env, "oxy.h1", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &e->actx);
  if (napi_create_external(env, b, engine_finalize, NULL, &out) != napi_ok) return NULL;
  return out;
}

static int dup_nonblocking(int fd) {
  int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (d < 0) return -1;
  int fl = fcntl(d, F_GETFL);
  if (fl < 0 || fcntl(d, F_SETFL, fl | O_NONBLOCK) < 0) {
    close(d);
    return -1;
  }
  return d;
}

/* A connection that starts with CONNECT or the HTTP/2 preface is the JS on-ramp's from its first
 * byte: the engine would only read it and hand it back, a round trip of ~100 µs per tunnel. The
 * bytes are those read already, or those waiting in the socket (peeked, not consumed); fewer
 * than 8 decide nothing (the engine takes the connection). */
static bool starts_elsewhere(int fd, const char *data, size_t len) {
  char b[8];
  if (len == 0) {
    ssize_t n = recv(fd, b, sizeof b, MSG_PEEK | MSG_DONTWAIT);
    if (n < (ssize_t)sizeof b) return false;
    data = b;
  } else if (len < sizeof b) {
    return false;
  }
  return memcmp(data, "CONNECT ", 8) == 0 || memcmp(data, "PRI * HT", 8) == 0;
}

static napi_value h1_serve(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd, id;
  void *data = NULL;
  size_t len = 0;
  napi_valuetype t;
  if (!get_args(env, info, 4, argv, NULL)) return NULL;
  engine_box_t *b = get_engine(env, argv[0]);
  if (!b || !arg_int32(env, argv[1], &fd) || !arg_int32(env, argv[2], &id)) return NULL;
  napi_typeof(env, argv[3], &t);
  if (t != napi_null && t != napi_undefined && !arg_buffer(env, argv[3], &data, &len)) return NULL;
  napi_value out;
  bool ok = !starts_elsewhere(fd, data, len) && h1_conn_start(&b->e, fd, id, data, len) != NULL;
  kick(&b->e);
  napi_get_boolean(env, ok, &out);
  return out;
}

static napi_value h1_adopt_js(napi_env env, napi_callback_info info) {
  napi_value argv[4], out;
  int32_t fd, id;
  char *up = NULL;
  if (!get_args(env, info, 4, argv, NULL)) return NULL;
  engine_box_t *b = get_engine(env, argv[0]);
  if (!b || !arg_int32(env, argv[1], &id) || !arg_int32(env, argv[2], &fd) || !arg_string(env, argv[3], &up, NULL))
    return NULL;
  h1_conn_t *c = h1_conn_find(&b->e, id);
  bool ok = false;
  if (c && c->state == ST_ROUTE) {
    int d = dup_nonblocking(fd);
    if (d >= 0) {
      h1_adopt(c, d, up);
      ok = true;
    }
  }
  free(up);
  kick(&b->e);
  napi_get_boolean(env, ok, &out);
  return out;
}

static napi_value h1_answer_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t id;
  void *data;
  size_t len;
  bool close;
  if (!get_args(env, info, 4, argv, NULL)) return NULL;
  engine_box_t *b = get_engine(env, argv[0]);
  if (!b || !arg_int32(env, argv[1], &id) || !arg_buffer(env, argv[2], &data, &len) || !arg_bool(env, argv[3], &close))
    return NULL;
  h1_conn_t *c = h1_conn_find(&b->e, id);
  if (c) h1_answer(c, data, len, close);
  kick(&b->e);
  return make_undefined(env);
}

static napi_value h1_control(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t op;
  bool flag;
  if (!get_args(env, info, 3, argv, NULL)) return NULL;
  engine_box_t *b = get_engine(env, argv[0]);
  if (!b || !arg_int32(env, argv[1], &op) || !arg_bool(env, argv[2], &flag)) return NULL;
  double quiet = 0;
  if (op == 0) {
    /* quiet counts not yet told go back with the call */
    quiet = b->e.quiet_done;
    b->e.quiet_done = 0;
    h1_engine_close(&b->e);
    b->e.handles++;
    uv_close((uv_handle_t *)&b->idle, h1_handle_closed);
    b->e.handles++;
    uv_close((uv_handle_t *)&b->flush, h1_handle_closed);
  } else if (op == 1) {
    h1_drain(&b->e);
    kick(&b->e);
  } else if (op == 2) {
    b->e.quiet = flag;
  }
  return op == 0 ? make_int(env, (int64_t)quiet) : make_undefined(env);
}

static napi_value h1_drop_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t id;
  void *p = NULL;
  if (!get_args(env, info, 2, argv, NULL)) return NULL;
  /* also after h1Control(close): connections it served until then still leave its poll set */
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || !p) {
    throw_type(env, "expected an h1 engine");
    return NULL;
  }
  engine_box_t *b = p;
  if (!arg_int32(env, argv[1], &id)) return NULL;
  h1_conn_t *c = h1_conn_find(&b->e, id);
  int quiet = c ? c->quiet : 0;
  if (c) h1_drop(c);
  return make_int(env, quiet);
}

static napi_value h1_busy_js(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  int32_t id;
  if (!get_args(env, info, 2, argv, NULL)) return NULL;
  engine_box_t *b = get_engine(env, argv[0]);
  if (!b || !arg_int32(env, argv[1], &id)) return NULL;
  h1_conn_t *c = h1_conn_find(&b->e, id);
  napi_get_boolean(env, c != NULL && h1_busy(c), &out);
  return out;
}

/* h1FilterBodies(engine, cb): response heads with a body go to JS first, filtered bodies to cb. */
static napi_value h1_filter_bodies(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  napi_valuetype t;
  if (!get_args(env, info, 2, argv, NULL)) return NULL;
  engine_box_t *b = get_engine(env, argv[0]);
  if (!b) return NULL;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function) {
    throw_type(env, "cb: a function");
    return NULL;
  }
  if (b->e.filter_cb) napi_delete_reference(env, b->e.filter_cb);
  napi_create_reference(env, argv[1], 1, &b->e.filter_cb);
  b->e.filter_bodies = true;
  return make_undefined(env);
}

/* h1Filter(engine, id, mode): JS's choice for the response head of an EV_HEAD. */
static napi_value h1_filter_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t id, mode;
  if (!get_args(env, info, 3, argv, NULL)) return NULL;
  engine_box_t *b = get_engine(env, argv[0]);
  if (!b || !arg_int32(env, argv[1], &id) || !arg_int32(env, argv[2], &mode)) return NULL;
  h1_conn_t *c = h1_conn_find(&b->e, id);
  if (c) h1_filter_start(c, mode);
  kick(&b->e);
  return make_undefined(env);
}

/* h1Resume(engine, id, bytes | null, stop): a filter's promise settled. */
static napi_value h1_resume_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t id;
  bool stop;
  void *data = NULL;
  size_t len = 0;
  napi_valuetype t;
  if (!get_args(env, info, 4, argv, NULL)) return NULL;
  engine_box_t *b = get_engine(env, argv[0]);
  if (!b || !arg_int32(env, argv[1], &id) || !arg_bool(env, argv[3], &stop)) return NULL;
  napi_typeof(env, argv[2], &t);
  if (t != napi_null && t != napi_undefined && !arg_buffer(env, argv[2], &data, &len)) return NULL;
  h1_conn_t *c = h1_conn_find(&b->e, id);
  if (c) h1_filter_resume(c, data, len, stop);
  kick(&b->e);
  napi_value out;
  napi_get_boolean(env, c != NULL && !c->closing && c->state == ST_ANSWER, &out);
  return out;
}

static void prop_num(napi_env env, napi_value o, const char *k, double v) {
  napi_value x;
  napi_create_double(env, v, &x);
  napi_set_named_property(env, o, k, x);
}

static void prop_str(napi_env env, napi_value o, const char *k, const char *s, size_t n) {
  napi_value x;
  napi_create_string_latin1(env, s, n, &x);
  napi_set_named_property(env, o, k, x);
}

static napi_value parse_req(napi_env env, napi_callback_info info) {
  napi_value argv[2], o;
  void *data;
  size_t len;
  int32_t max;
  if (!get_args(env, info, 2, argv, NULL) || !arg_buffer(env, argv[0], &data, &len) || !arg_int32(env, argv[1], &max))
    return NULL;
  static h1_req_t r;
  int n = h1_parse_request(data, len, (size_t)max, &r);
  if (n <= 0) return make_int(env, n);
  char *out = malloc(r.head_len + 320);
  size_t k = out ? h1_rewrite_request(data, &r, out, r.head_len + 320) : 0;
  napi_create_object(env, &o);
  prop_num(env, o, "headLength", n);
  prop_str(env, o, "method", data, r.method_len);
  prop_str(env, o, "host", r.host, strlen(r.host));
  prop_num(env, o, "port", r.port);
  prop_num(env, o, "keepAlive", r.keep_alive);
  prop_num(env, o, "contentLength", (double)r.content_length);
  prop_str(env, o, "rewritten", out ? out : "", k);
  free(out);
  return o;
}

static napi_value parse_res(napi_env env, napi_callback_info info) {
  napi_value argv[4], o;
  void *data;
  size_t len;
  int32_t max;
  bool bodiless, close, chunked;
  if (!get_args(env, info, 4, argv, NULL) || !arg_buffer(env, argv[0], &data, &len) || !arg_int32(env, argv[1], &max) ||
      !arg_bool(env, argv[2], &bodiless) || !arg_bool(env, argv[3], &close))
    return NULL;
  static h1_res_t r;
  int n = h1_parse_response(data, len, (size_t)max, &r);
  if (n <= 0) return make_int(env, n);
  char *out = malloc(r.head_len + 96);
  size_t k = out ? h1_rewrite_response(data, &r, bodiless, close, &chunked, out, r.head_len + 96) : 0;
  napi_create_object(env, &o);
  prop_num(env, o, "headLength", n);
  prop_num(env, o, "status", r.status);
  prop_num(env, o, "keepAlive", r.keep_alive);
  prop_num(env, o, "chunked", r.chunked);
  prop_num(env, o, "contentLength", (double)r.content_length);
  prop_str(env, o, "rewritten", out ? out : "", k);
  free(out);
  return o;
}

static napi_value chunks(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr;
  void *data;
  size_t len;
  if (!get_args(env, info, 1, argv, NULL) || !arg_buffer(env, argv[0], &data, &len)) return NULL;
  h1_chunks_t c = {0};
  bool done = false;
  ssize_t n = h1_chunks_feed(&c, data, len, &done);
  if (n < 0) return make_int(env, -1);
  napi_create_array(env, &arr);
  napi_set_element(env, arr, 0, make_int(env, n));
  napi_set_element(env, arr, 1, make_int(env, done));
  napi_set_element(env, arr, 2, make_int(env, (int64_t)c.data));
  return arr;
}

void register_h1(napi_env env, napi_value exports) {
  set_fn(env, exports, "h1Engine", h1_engine);
  set_fn(env, exports, "h1Serve", h1_serve);
  set_fn(env, exports, "h1Adopt", h1_adopt_js);
  set_fn(env, exports, "h1Answer", h1_answer_js);
  set_fn(env, exports, "h1Control", h1_control);
  set_fn(env, exports, "h1Drop", h1_drop_js);
  set_fn(env, exports, "h1Busy", h1_busy_js);
  set_fn(env, exports, "h1FilterBodies", h1_filter_bodies);
  set_fn(env, exports, "h1Filter", h1_filter_js);
  set_fn(env, exports, "h1Resume", h1_resume_js);
  set_fn(env, exports, "h1ParseRequest", parse_req);
  set_fn(env, exports, "h1ParseResponse", parse_res);
  set_fn(env, exports, "h1Chunks", chunks);
}
