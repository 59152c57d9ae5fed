/*
 * Socket writes on the reactor thread (reactor.c). A proxy's answer to a small request is one
 * write(2), and on loopback or a fast LAN that call is the costliest thing the JS thread does
 * for it: the kernel runs the whole TCP transmit path, and the receiver's side of it, in the
 * caller. Here JS copies the bytes into a queue and returns; the reactor thread writes them.
 *
 * writerOpen(owner, fd): the writer works on its own duplicate of fd (F_DUPFD_CLOEXEC), so the
 * caller may close fd whenever it likes (a reused descriptor number can never receive these
 * bytes); the socket stays open until the writer's duplicate is closed too. The caller must
 * write to the socket only through the writer from then on. Then:
 * - writerSend(owner, data, encoding): queues a copy of a Buffer (encoding 0) or a string
 *   (1 latin1, 2 utf8); returns the bytes queued and not yet written. Bytes go out in order.
 * - writerDrained(owner): true if nothing is queued; else false, and owner.onWriterDrain() is
 *   called once the queue has emptied (or the socket failed: the rest is dropped). Until then the
 *   owner is referenced strongly and the loop kept alive (as a pending write keeps a Node socket
 *   and the process): an owner only the callback's own closure refers to would otherwise be
 *   collected, its finaliser would let go of the writer, and the news would never come.
 * - writerEnd(owner): shutdown(SHUT_WR) once the queue is written.
 * - writerError(owner): the errno of the first failed write, or 0.
 * - writerClose(owner): lets go of the owner; the duplicate is closed once the queue is written
 *   (or at once if it is empty).
 * - writerWritten(owner): bytes written to the socket so far.
 * A write error (the peer reset) drops what is queued and every later send: the caller learns
 * of it from its own reads, as with any socket.
 *
 * The queue is written with sendmsg (MSG_NOSIGNAL | MSG_DONTWAIT), up to IOV chunks per call;
 * on EAGAIN the duplicate is watched for EPOLLOUT (edge-triggered) until the queue is written.
 * A writer's state is guarded by its own lock; it is freed (through the reactor) once the JS
 * side let go and the reactor thread has nothing of it left (no command, watch or post).
 */
#define _GNU_SOURCE
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Chunks per sendmsg. */
#define IOV 16

typedef struct chunk {
  struct chunk *next;
  size_t len, off;
  uint8_t data[];
} chunk_t;

typedef struct {
  reactor_item_t item; /* first: the reactor's lists */
  reactor_t *r;
  pthread_mutex_t mu;
  int fd;          /* the duplicate; -1 once closed */
  uint32_t events; /* EPOLLOUT | EPOLLET while waiting */
  chunk_t *head, *tail;
  uint64_t queued;  /* bytes queued, not yet written */
  uint64_t written; /* bytes written */
  int err;          /* the first write error: later sends are dropped */
  bool scheduled;   /* in the reactor's command list */
  bool waiting;     /* EAGAIN: watched for EPOLLOUT */
  bool posted;      /* in the reactor's done list */
  bool drain_wanted, shut_req, shut_done, close_req, retired;
  bool js_ref;
  bool drain_held; /* JS thread only: a drain callback is due: owner referenced, loop held */
  napi_env env;
  napi_ref owner;
} writer_t;

static void on_command(reactor_t *r, reactor_item_t *it);
static void on_event(reactor_item_t *it, int side, uint32_t ev);
static void on_done(napi_env env, reactor_item_t *it);
static const reactor_ops_t ops = {on_command, on_event, on_done};

static void drop_queue(writer_t *w) {
  chunk_t *c = w->head;
  while (c) {
    chunk_t *n = c->next;
    free(c);
    c = n;
  }
  w->head = w->tail = NULL;
  w->queued = 0;
}

/* Under w->mu: true (once) when neither thread refers to w any more; the caller retires it. */
static bool unreferenced(writer_t *w) {
  if (w->retired || w->js_ref || w->scheduled || w->waiting || w->posted || w->fd >= 0) return false;
  w->retired = true;
  return true;
}

/* Under w->mu, with nothing queued: the end and the close asked for, and the drain news. Either
 * thread (the JS thread only when the reactor thread has nothing of w). */
static void settle(writer_t *w, bool on_thread) {
  if (w->shut_req && !w->shut_done && w->fd >= 0 && w->err == 0) {
    w->shut_done = true;
    if (shutdown(w->fd, SHUT_WR) < 0 && errno != ENOTCONN) w->err = errno;
  }
  if (w->close_req && w->fd >= 0) {
    close(w->fd);
    w->fd = -1;
  }
  if (on_thread && w->drain_wanted && !w->posted) {
    w->drain_wanted = false;
    w->posted = true;
    reactor_post(w->r, &w->item);
  }
}

/* Reactor thread, under w->mu: writes what is queued, until EAGAIN or an error. */
static void flush(writer_t *w) {
  while (w->head && w->err == 0) {
    struct iovec iov[IOV];
    int n = 0;
    for (chunk_t *c = w->head; c && n < IOV; c = c->next, n++) {
      iov[n].iov_base = c->data + c->off;
      iov[n].iov_len = c->len - c->off;
    }
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
    ssize_t sent = sendmsg(w->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (!w->waiting) {
          int e = reactor_watch(w->r, w->fd, &w->events, EPOLLOUT | EPOLLET, &w->item, 0);
          if (e != 0) {
            w->err = e;
            break;
          }
          w->waiting = true;
        }
        return;
      }
      w->err = errno;
      break;
    }
    size_t left = (size_t)sent;
    __atomic_store_n(&w->written, w->written + (uint64_t)sent, __ATOMIC_RELAXED);
    w->queued -= (uint64_t)sent;
    while (left > 0 && w->head) {
      chunk_t *c = w->head;
      size_t rest = c->len - c->off;
      if (left < rest) {
        c->off += left;
        left = 0;
        break;
      }
      left -= rest;
      w->head = c->next;
      if (!w->head) w->tail = NULL;
      free(c);
    }
  }
  if (w->err != 0) drop_queue(w);
  if (w->waiting) {
    reactor_watch(w->r, w->fd, &w->events, 0, &w->item, 0);
    w->waiting = false;
  }
  settle(w, true);
}

static void on_command(reactor_t *r, reactor_item_t *it) {
  (void)r;
  writer_t *w = (writer_t *)it;
  pthread_mutex_lock(&w->mu);
  w->scheduled = false;
  if (!w->waiting) flush(w);
  bool gone = unreferenced(w);
  pthread_mutex_unlock(&w->mu);
  if (gone) reactor_retire(w->r, &w->item);
}

static void on_event(reactor_item_t *it, int side, uint32_t ev) {
  (void)side;
  (void)ev;
  writer_t *w = (writer_t *)it;
  pthread_mutex_lock(&w->mu);
  if (w->waiting) flush(w);
  bool gone = unreferenced(w);
  pthread_mutex_unlock(&w->mu);
  if (gone) reactor_retire(w->r, &w->item);
}

/* JS thread: a drain callback is due (writerDrained said false): the owner must outlive it. */
static void hold_owner(napi_env env, writer_t *w) {
  uint32_t refs;
  if (w->drain_held || napi_reference_ref(env, w->owner, &refs) != napi_ok) return;
  w->drain_held = true;
  reactor_hold(w->r, 1);
}

/* JS thread: the drain callback came, or the owner let go: the owner is weak again. */
static void release_owner(napi_env env, writer_t *w) {
  uint32_t refs;
  if (!w->drain_held) return;
  w->drain_held = false;
  if (w->owner) napi_reference_unref(env, w->owner, &refs);
  reactor_hold(w->r, -1);
}

/* JS thread: the queue emptied; tell the owner if it still listens. */
static void on_done(napi_env env, reactor_item_t *it) {
  writer_t *w = (writer_t *)it;
  pthread_mutex_lock(&w->mu);
  w->posted = false;
  /* A drain asked for again after this post, with bytes queued since, is not over: its news
   * comes with a later post (those bytes are the reactor thread's, which posts once they are
   * written). Telling the owner now would release its writes early. */
  bool mine = w->js_ref && w->owner != NULL && !(w->drain_wanted && w->head != NULL);
  if (mine) w->drain_wanted = false; /* asked again and emptied again: this post answers both */
  bool gone = unreferenced(w);
  pthread_mutex_unlock(&w->mu);
  if (mine) {
    napi_handle_scope scope;
    napi_value owner, fn, ignored;
    if (napi_open_handle_scope(env, &scope) == napi_ok) {
      bool got = napi_get_reference_value(env, w->owner, &owner) == napi_ok && owner;
      release_owner(env, w); /* the scope holds the owner through the call */
      if (got && napi_get_named_property(env, owner, "onWriterDrain", &fn) == napi_ok &&
          napi_make_callback(env, NULL, owner, fn, 0, NULL, &ignored) == napi_pending_exception) {
        napi_value e;
        if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
      }
      napi_close_handle_scope(env, scope);
    }
  }
  if (gone) reactor_retire(w->r, &w->item);
}

/* JS thread, under w->mu: hands w to the reactor thread unless it is there already. */
static bool schedule(writer_t *w) {
  if (w->scheduled || w->waiting) return false;
  w->scheduled = true;
  return true;
}

/* JS thread: lets go of w (close, or its owner collected). */
static void let_go(writer_t *w) {
  pthread_mutex_lock(&w->mu);
  w->js_ref = false;
  w->close_req = true;
  w->drain_wanted = false;
  /* Nothing of w on the reactor thread: close here; else it closes once the queue is written. */
  if (!w->scheduled && !w->waiting && w->head == NULL) settle(w, false);
  bool gone = unreferenced(w);
  pthread_mutex_unlock(&w->mu);
  if (gone) reactor_retire(w->r, &w->item);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  writer_t *w = data;
  napi_ref owner = w->owner;
  w->owner = NULL;       /* the reference being finalised is not unref'ed, only deleted */
  release_owner(env, w); /* held (a drain due), the owner goes only with the env */
  if (owner) napi_delete_reference(env, owner);
  let_go(w);
}

static writer_t *get_writer(napi_env env, napi_value owner) {
  return unwrap_owner(env, owner, "no writer is open for this owner");
}

/* writerOpen(owner, fd) */
static napi_value writer_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  napi_valuetype t;
  int32_t fd;
  if (!get_args(env, info, 2, argv, NULL) || !arg_int32(env, argv[1], &fd)) return NULL;
  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_object) {
    throw_type(env, "the writer owner must be an object");
    return NULL;
  }
  if (fd < 0) {
    throw_type(env, "invalid descriptor");
    return NULL;
  }
  reactor_t *r = reactor_for(env);
  if (!r) return NULL;
  writer_t *w = calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  w->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (w->fd < 0) {
    int e = errno;
    free(w);
    throw_errno(env, e, "fcntl", "duplicating a socket descriptor to write to it");
    return NULL;
  }
  w->item.ops = &ops;
  w->r = r;
  w->env = env;
  pthread_mutex_init(&w->mu, NULL);
  if (napi_wrap(env, argv[0], w, finalize, NULL, &w->owner) != napi_ok) {
    close(w->fd);
    free(w);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_type(env, "this owner already has a writer");
    return NULL;
  }
  w->js_ref = true;
  return make_undefined(env);
}

/* writerSend(owner, data, encoding): bytes queued after this one. */
static napi_value writer_send(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t enc;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[2], &enc)) return NULL;
  writer_t *w = get_writer(env, argv[0]);
  if (!w) return NULL;
  chunk_t *c = NULL;
  size_t n = 0;
  if (enc == 0) {
    void *data;
    if (!arg_buffer(env, argv[1], &data, &n)) return NULL;
    c = malloc(sizeof *c + (n ? n : 1));
    if (c) memcpy(c->data, data, n);
  } else if (enc == 1 || enc == 2) {
    size_t len;
    napi_status st = enc == 1 ? napi_get_value_string_latin1(env, argv[1], NULL, 0, &len)
                              : napi_get_value_string_utf8(env, argv[1], NULL, 0, &len);
    if (st != napi_ok) {
      throw_type(env, "the data must be a string");
      return NULL;
    }
    c = malloc(sizeof *c + len + 1); /* the copy writes a NUL after the bytes */
    if (c) {
      if (enc == 1) napi_get_value_string_latin1(env, argv[1], (char *)c->data, len + 1, &n);
      else napi_get_value_string_utf8(env, argv[1], (char *)c->data, len + 1, &n);
    }
  } else {
    throw_type(env, "unknown encoding");
    return NULL;
  }
  if (!c) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  c->next = NULL;
  c->len = n;
  c->off = 0;
  pthread_mutex_lock(&w->mu);
  bool go = false;
  if (n == 0 || w->err != 0 || w->close_req || w->fd < 0) {
    free(c); /* nothing to send, or the socket failed: dropped, as a failed socket drops writes */
  } else {
    if (w->tail) w->tail->next = c;
    else w->head = c;
    w->tail = c;
    w->queued += n;
    go = schedule(w);
  }
  double queued = (double)w->queued;
  pthread_mutex_unlock(&w->mu);
  /* Now, not at the turn's end: a write's latency is the forwarded response's. */
  if (go && !reactor_command(w->r, &w->item, false)) {
    pthread_mutex_lock(&w->mu);
    w->scheduled = false;
    drop_queue(w);
    pthread_mutex_unlock(&w->mu);
    queued = 0;
  }
  napi_value out;
  napi_create_double(env, queued, &out);
  return out;
}

/* writerDrained(owner): true if nothing is queued; else onWriterDrain() comes once it is. */
static napi_value writer_drained(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  writer_t *w = get_writer(env, argv[0]);
  if (!w) return NULL;
  pthread_mutex_lock(&w->mu);
  bool empty = w->head == NULL;
  if (!empty) w->drain_wanted = true;
  pthread_mutex_unlock(&w->mu);
  if (!empty) hold_owner(env, w);
  napi_get_boolean(env, empty, &out);
  return out;
}

/* writerEnd(owner): shutdown(SHUT_WR) once the queue is written. */
static napi_value writer_end(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  writer_t *w = get_writer(env, argv[0]);
  if (!w) return NULL;
  pthread_mutex_lock(&w->mu);
  w->shut_req = true;
  if (!w->scheduled && !w->waiting && w->head == NULL) settle(w, false);
  pthread_mutex_unlock(&w->mu);
  return make_undefined(env);
}

/* writerWritten(owner): bytes written so far. */
static napi_value writer_written(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  writer_t *w = get_writer(env, argv[0]);
  if (!w) return NULL;
  napi_create_double(env, (double)__atomic_load_n(&w->written, __ATOMIC_RELAXED), &out);
  return out;
}

/* writerError(owner): the first write error's errno (the peer reset, a broken pipe), or 0. */
static napi_value writer_error(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  writer_t *w = get_writer(env, argv[0]);
  if (!w) return NULL;
  pthread_mutex_lock(&w->mu);
  int err = w->err;
  pthread_mutex_unlock(&w->mu);
  napi_create_int32(env, err, &out);
  return out;
}

/* writerClose(owner): lets go; the duplicate is closed once the queue is written. */
static napi_value writer_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  void *ignored;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  writer_t *w = get_writer(env, argv[0]);
  if (!w) return NULL;
  napi_remove_wrap(env, argv[0], &ignored);
  release_owner(env, w);
  napi_delete_reference(env, w->owner);
  w->owner = NULL;
  let_go(w);
  return make_undefined(env);
}

/*
 * writerTrySend(owner, data, encoding): as writerSend, but when nothing is queued or on its way
 * the bytes are written here, on the calling (JS) thread, straight from the caller's memory:
 * no copy, no command and no wake-up of the reactor thread. Only what the socket did not take
 * (EAGAIN, a short write) is copied into the queue for the reactor thread; -1 when the socket
 * failed (the bytes dropped: writerError says why). Bytes stay in order:
 * with anything queued, it appends as writerSend does. For small writes, where the hand-over to
 * the other thread costs more than the write (a machine with no spare core pays it twice).
 */
#define TRY_STACK 4096
static napi_value writer_try_send(napi_env env, napi_callback_info info) {
  napi_value argv[3], out;
  int32_t enc;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[2], &enc)) return NULL;
  writer_t *w = get_writer(env, argv[0]);
  if (!w) return NULL;
  uint8_t stack[TRY_STACK];
  uint8_t *data = NULL, *heap = NULL;
  size_t n = 0;
  if (enc == 0) {
    void *d;
    if (!arg_buffer(env, argv[1], &d, &n)) return NULL;
    data = d;
  } else if (enc == 1 || enc == 2) {
    size_t len;
    napi_status st = enc == 1 ? napi_get_value_string_latin1(env, argv[1], NULL, 0, &len)
                              : napi_get_value_string_utf8(env, argv[1], NULL, 0, &len);
    if (st != napi_ok) {
      throw_type(env, "the data must be a string");
      return NULL;
    }
    data = len < TRY_STACK ? stack : (heap = malloc(len + 1));
    if (!data) {
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    if (enc == 1) napi_get_value_string_latin1(env, argv[1], (char *)data, len + 1, &n);
    else napi_get_value_string_utf8(env, argv[1], (char *)data, len + 1, &n);
  } else {
    throw_type(env, "unknown encoding");
    return NULL;
  }
  size_t off = 0;
  bool go = false, oom = false;
  pthread_mutex_lock(&w->mu);
  if (n == 0 || w->err != 0 || w->close_req || w->fd < 0) {
    n = 0; /* nothing to send, or the socket failed: dropped, as writerSend drops it */
  } else if (w->head == NULL && !w->scheduled && !w->waiting) {
    for (;;) {
      ssize_t sent = send(w->fd, data + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent < 0 && errno == EINTR) continue;
      if (sent < 0 && errno != EAGAIN) w->err = errno;
      if (sent > 0) {
        off += (size_t)sent;
        __atomic_store_n(&w->written, w->written + (uint64_t)sent, __ATOMIC_RELAXED);
        if (off < n) continue;
      }
      break;
    }
  }
  if (n > off && w->err == 0) {
    chunk_t *c = malloc(sizeof *c + (n - off));
    if (c) {
      memcpy(c->data, data + off, n - off);
      c->next = NULL;
      c->len = n - off;
      c->off = 0;
      if (w->tail) w->tail->next = c;
      else w->head = c;
      w->tail = c;
      w->queued += n - off;
      go = schedule(w);
    } else oom = true;
  }
  /* -1: dropped, the socket failed (the caller need not ask writerError after each write). */
  double queued = w->err != 0 ? -1 : (double)w->queued;
  pthread_mutex_unlock(&w->mu);
  free(heap);
  if (oom) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (go && !reactor_command(w->r, &w->item, false)) {
    pthread_mutex_lock(&w->mu);
    w->scheduled = false;
    drop_queue(w);
    pthread_mutex_unlock(&w->mu);
    queued = 0;
  }
  napi_create_double(env, queued, &out);
  return out;
}

void register_writer(napi_env env, napi_value exports) {
  set_fn(env, exports, "writerTrySend", writer_try_send);
  set_fn(env, exports, "writerOpen", writer_open);
  set_fn(env, exports, "writerSend", writer_send);
  set_fn(env, exports, "writerDrained", writer_drained);
  set_fn(env, exports, "writerEnd", writer_end);
  set_fn(env, exports, "writerWritten", writer_written);
  set_fn(env, exports, "writerError", writer_error);
  set_fn(env, exports, "writerClose", writer_close);
}
