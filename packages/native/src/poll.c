/*
 * Event-loop driven I/O on a descriptor (uv_poll), never the thread pool.
 *
 * A poller watches one non-blocking fd in one of three modes:
 *  - READ: on readability, read up to `batch` whole packets/messages in a C loop and hand them to
 *    JS in one call as an array of Buffers (one Buffer per read); or, with a slab (a Buffer and an
 *    Int32Array of lengths given by JS, kept for the poller's life), read them straight into the
 *    slab one after another and hand JS only their count: no copy, no Buffer per packet, and the
 *    next batch reuses the slab;
 *  - ACCEPT: on readability, accept up to `batch` connections (non-blocking, close-on-exec) and
 *    hand JS an array of fds;
 *  - NOTIFY: tell JS the fd is readable; JS reads (used for SCM_RIGHTS messages).
 * Writability is reported when asked for (after a write found the fd full).
 *
 * JS callback: cb(kind, value) with kind 0 data (Buffer[]), 1 writable, 2 error (errno),
 * 3 accepted (number[]), 4 readable, 5 end of stream, 6 data in the slab (count).
 *
 * Lifetime: the struct is freed only when both the uv handle has closed and the JS external has
 * been finalised, so neither side can touch freed memory. The poller owns the fd and closes it.
 */
#define _GNU_SOURCE
#include "native.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

enum { MODE_READ = 0, MODE_ACCEPT = 1, MODE_NOTIFY = 2 };
enum { CB_DATA = 0, CB_WRITABLE = 1, CB_ERROR = 2, CB_ACCEPTED = 3, CB_READABLE = 4, CB_END = 5, CB_SLAB = 6 };

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref cb;
  napi_async_context actx;
  int fd, mode, batch, events;
  bool is_socket, closing, uv_closed, finalized, reading;
  size_t max_size;
  char *buf;
  /* Slab reads: JS's Buffer and lengths array, referenced so their memory stays put. */
  char *slab;
  size_t slab_size;
  int32_t *lens;
  napi_ref slab_ref, lens_ref;
} poller_t;

static void on_uv_close(uv_handle_t *h) {
  poller_t *p = h->data;
  p->uv_closed = true;
  if (p->finalized) {
    free(p->buf);
    free(p);
  }
}

static void poller_close(poller_t *p) {
  if (p->closing) return;
  p->closing = true;
  uv_poll_stop(&p->poll); /* removes the fd from epoll, so closing it next is safe */
  uv_close((uv_handle_t *)&p->poll, on_uv_close);
  close(p->fd);
  if (p->cb) napi_delete_reference(p->env, p->cb);
  p->cb = NULL;
  if (p->actx) napi_async_destroy(p->env, p->actx);
  p->actx = NULL;
  if (p->slab_ref) napi_delete_reference(p->env, p->slab_ref);
  if (p->lens_ref) napi_delete_reference(p->env, p->lens_ref);
  p->slab_ref = p->lens_ref = NULL;
  p->slab = NULL;
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  poller_t *p = data;
  p->finalized = true;
  poller_close(p);
  if (p->uv_closed) {
    free(p->buf);
    free(p);
  }
}

static void call_js(poller_t *p, int kind, napi_value value) {
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_value cb, recv, argv[2], ignored;
  if (p->closing || !p->cb) return;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  /* napi_make_callback needs an object receiver: the global object. */
  if (napi_get_reference_value(env, p->cb, &cb) == napi_ok && napi_get_global(env, &recv) == napi_ok &&
      napi_create_int32(env, kind, &argv[0]) == napi_ok) {
    if (value) argv[1] = value;
    else napi_get_undefined(env, &argv[1]);
    if (napi_make_callback(env, p->actx, recv, cb, 2, argv, &ignored) == napi_pending_exception) {
      napi_value err;
      if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
    }
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll(uv_poll_t *h, int status, int events);

static void restart(poller_t *p) {
  if (p->closing) return;
  int events = (p->reading ? UV_READABLE : 0) | (p->events & UV_WRITABLE);
  int rc = events ? uv_poll_start(&p->poll, events, on_poll) : uv_poll_stop(&p->poll);
  (void)rc;
}

/* A batch read straight into the slab: each packet after the last, while a whole one still fits. */
static void read_slab(poller_t *p) {
  napi_env env = p->env;
  napi_handle_scope scope;
  uint32_t n = 0;
  size_t off = 0;
  int err = 0;
  bool end = false;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  for (int i = 0; i < p->batch && off + p->max_size <= p->slab_size; i++) {
    ssize_t r = p->is_socket ? recv(p->fd, p->slab + off, p->max_size, MSG_TRUNC | MSG_DONTWAIT)
                             : read(p->fd, p->slab + off, p->max_size);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) err = errno;
      break;
    }
    if (r == 0) {
      end = true;
      break;
    }
    if ((size_t)r > p->max_size) {
      err = EMSGSIZE; /* never deliver a message cut */
      break;
    }
    p->lens[n++] = (int32_t)r;
    off += (size_t)r;
  }
  if (n > 0) call_js(p, CB_SLAB, make_int(env, n));
  if (end || err) {
    p->reading = false;
    restart(p);
  }
  if (end) call_js(p, CB_END, NULL);
  if (err) call_js(p, CB_ERROR, make_int(env, err));
  napi_close_handle_scope(env, scope);
}

static void read_batch(poller_t *p) {
  if (p->slab) {
    read_slab(p);
    return;
  }
  napi_env env = p->env;
  napi_handle_scope scope;
  napi_value arr, buf;
  uint32_t n = 0;
  int err = 0;
  bool end = false;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_create_array(env, &arr) != napi_ok) goto done;
  for (int i = 0; i < p->batch; i++) {
    if (p->mode == MODE_ACCEPT) {
      int c = accept4(p->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != ECONNABORTED) err = errno;
        break;
      }
      if (napi_set_element(env, arr, n++, make_int(env, c)) != napi_ok) {
        close(c);
        break;
      }
      continue;
    }
    ssize_t r = p->is_socket ? recv(p->fd, p->buf, p->max_size, MSG_TRUNC | MSG_DONTWAIT)
                             : read(p->fd, p->buf, p->max_size);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) err = errno;
      break;
    }
    if (r == 0) {
      end = true;
      break;
    }
    if ((size_t)r > p->max_size) {
      err = EMSGSIZE; /* a message larger than the read buffer: never deliver it cut */
      break;
    }
    if (napi_create_buffer_copy(env, (size_t)r, p->buf, NULL, &buf) != napi_ok ||
        napi_set_element(env, arr, n++, buf) != napi_ok)
      break;
  }
  if (n > 0) call_js(p, p->mode == MODE_ACCEPT ? CB_ACCEPTED : CB_DATA, arr);
  if (end || err) {
    p->reading = false;
    restart(p);
  }
  if (end) call_js(p, CB_END, NULL);
  if (err) call_js(p, CB_ERROR, make_int(env, err));
done:
  napi_close_handle_scope(env, scope);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  poller_t *p = h->data;
  if (p->closing) return;
  if (status < 0) {
    napi_handle_scope scope;
    if (napi_open_handle_scope(p->env, &scope) != napi_ok) return;
    p->reading = false;
    p->events = 0;
    restart(p);
    call_js(p, CB_ERROR, make_int(p->env, -status));
    napi_close_handle_scope(p->env, scope);
    return;
  }
  if (events & UV_WRITABLE) {
    p->events &= ~UV_WRITABLE;
    restart(p);
    call_js(p, CB_WRITABLE, NULL);
  }
  if (p->closing || !(events & UV_READABLE) || !p->reading) return;
  if (p->mode == MODE_NOTIFY) call_js(p, CB_READABLE, NULL);
  else read_batch(p);
}

/*
 * pollStart(fd, mode, isSocket, maxSize, batch, cb, slab?, lengths?): external handle. Takes
 * ownership of fd. With `slab` (a Buffer of at least maxSize bytes) and `lengths` (an Int32Array
 * of at least `batch`), READ mode reads into the slab and reports counts (CB_SLAB).
 */
static napi_value poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[8], out, name;
  size_t argc = 8;
  int32_t fd, mode, max, batch;
  bool is_socket;
  uv_loop_t *loop;
  void *slab = NULL, *lens = NULL;
  size_t slab_size = 0, lens_count = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 6) {
    throw_type(env, "too few arguments");
    return NULL;
  }
  if (!arg_int32(env, argv[0], &fd) || !arg_int32(env, argv[1], &mode) || !arg_bool(env, argv[2], &is_socket) ||
      !arg_int32(env, argv[3], &max) || !arg_int32(env, argv[4], &batch))
    return NULL;
  if (mode < MODE_READ || mode > MODE_NOTIFY || max < 1 || max > (1 << 24) || batch < 1 || batch > 4096) {
    /* Bad arguments are a caller's bug: fd stays the caller's. */
    throw_type(env, "invalid poll mode, size or batch");
    return NULL;
  }
  if (argc >= 8 && mode == MODE_READ) {
    napi_typedarray_type type;
    napi_value ab;
    size_t ab_off;
    if (!arg_buffer(env, argv[6], &slab, &slab_size)) return NULL;
    if (napi_get_typedarray_info(env, argv[7], &type, &lens_count, &lens, &ab, &ab_off) != napi_ok ||
        type != napi_int32_array || lens_count < (size_t)batch || slab_size < (size_t)max) {
      throw_type(env, "a slab must hold one packet of maxSize, and lengths must be an Int32Array of batch");
      return NULL;
    }
  }
  /* From here on the poller owns fd: every failure closes it. */
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    close(fd);
    return NULL;
  }
  poller_t *p = calloc(1, sizeof *p);
  if (!p || (mode == MODE_READ && !slab && !(p->buf = malloc((size_t)max)))) {
    free(p);
    close(fd);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  p->env = env;
  p->fd = fd;
  p->mode = mode;
  p->batch = batch;
  p->max_size = (size_t)max;
  p->is_socket = is_socket;
  p->reading = true;
  int rc = uv_poll_init(loop, &p->poll, fd);
  if (rc < 0) {
    free(p->buf);
    free(p);
    close(fd);
    throw_errno(env, -rc, "uv_poll_init", "watching a descriptor on the event loop");
    return NULL;
  }
  p->poll.data = p;
  if (slab) {
    p->slab = slab;
    p->slab_size = slab_size;
    p->lens = lens;
    if (napi_create_reference(env, argv[6], 1, &p->slab_ref) != napi_ok ||
        napi_create_reference(env, argv[7], 1, &p->lens_ref) != napi_ok) {
      p->finalized = true;
      poller_close(p);
      return NULL;
    }
  }
  if (napi_create_reference(env, argv[5], 1, &p->cb) != napi_ok ||
      napi_create_string_utf8(env, "native:poll", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &p->actx) != napi_ok ||
      napi_create_external(env, p, finalize, NULL, &out) != napi_ok) {
    p->finalized = true;
    poller_close(p); /* frees p in on_uv_close; closes fd as documented */
    return NULL;
  }
  restart(p);
  return out;
}

static poller_t *get_poller(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) throw_type(env, "expected a poll handle");
  return p;
}

/* pollControl(handle, op, flag): op 0 close, 1 want writable, 2 reading on/off, 3 ref/unref. */
static napi_value poll_control(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t op;
  bool flag;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[1], &op) || !arg_bool(env, argv[2], &flag))
    return NULL;
  poller_t *p = get_poller(env, argv[0]);
  if (!p) return NULL;
  if (p->closing) return make_undefined(env);
  switch (op) {
    case 0: poller_close(p); break;
    case 1: p->events = flag ? (p->events | UV_WRITABLE) : (p->events & ~UV_WRITABLE); restart(p); break;
    case 2: p->reading = flag; restart(p); break;
    case 3: if (flag) uv_ref((uv_handle_t *)&p->poll); else uv_unref((uv_handle_t *)&p->poll); break;
    default: throw_type(env, "invalid poll operation"); return NULL;
  }
  return make_undefined(env);
}

void register_poll(napi_env env, napi_value exports) {
  set_fn(env, exports, "pollStart", poll_start);
  set_fn(env, exports, "pollControl", poll_control);
}
