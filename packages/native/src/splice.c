/*
 * Kernel splicing of two connected stream sockets: bytes move socket → pipe → socket with
 * splice(2) and never enter user space (nor JS). Driven by the event loop.
 *
 * The caller hands over two socket descriptors it keeps owning (Node's net.Socket handles);
 * the splicer works on its own duplicates (F_DUPFD_CLOEXEC), so the caller may close its
 * descriptors once the splice runs (the sockets stay open through the duplicates; closing a
 * duplicate sends nothing to the peer). The caller must have stopped reading the originals
 * (and must not write to them) for as long as the splice runs.
 *
 * Each direction has its own pipe, taken on the first byte (an idle tunnel costs no pipe) at the
 * kernel's default size and grown to the asked size after the first MiB (short tunnels never pay).
 * Pipes come from a small pool per thread: a pipe that ended empty and was never grown goes back
 * to it, so a short tunnel makes and closes no pipe (pipe2 and two closes per direction saved);
 * a process that ends just lets the pooled pipes go.
 * Per direction: read src → pipe; drain pipe → dst; when dst is full, stop reading src and
 * wait for dst to be writable; on EOF from src (once the pipe is empty) shutdown(dst, SHUT_WR),
 * so half-close is carried across. The splice ends when both directions have shut (kind 0) or
 * at the first error (kind 1, with the errno and the side whose descriptor raised it).
 *
 * Readiness comes from the reactor (reactor.c: one epoll set per event loop): a splicer is a
 * small struct with no libuv handle of its own; an idle tunnel costs ~150 bytes here. Each
 * descriptor is registered once, edge-triggered for input, output and peer hang-up (WATCH), and
 * not modified while the tunnel runs; it is removed explicitly before it is closed (a duplicate
 * of the socket may outlive ours, and with it a registration pointing at a freed splicer).
 * Edge-triggered: the splicer remembers what each side is ready for (set by events, cleared
 * only by EAGAIN) and a direction runs until EAGAIN. One that used up its round (ROUND_BYTES)
 * is re-armed (its registration renewed, which reports what is ready again), so it continues
 * on the next loop turn after the other tunnels had theirs.
 *
 * The descriptors must be non-blocking; the duplicates share O_NONBLOCK with the caller's
 * (Node's sockets have it): it is checked once per descriptor and set only if missing.
 *
 * The JS side is an owner object the splicer is wrapped into (napi_wrap; no external, no
 * closure, no async resource per splice). At the end the addon calls
 * owner.onSpliceEnd(kind, bytes0to1, bytes1to0, errno, side) once; by then the splicer has
 * closed its duplicates and pipes and let go of the owner. spliceBytes(owner) reads the
 * counters; spliceStop(owner) ends it without a callback.
 *
 * Lifetime: while running, the owner is held strongly (a tunnel nobody else references still
 * runs to its end). At the end (or stop) the wrap is removed and the reference deleted, and the
 * struct is freed (after the current batch, if one is being dispatched).
 */
#define _GNU_SOURCE
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes moved per direction per wakeup before yielding to the loop (fairness between tunnels).
 * OXY_SPLICE_ROUND_BYTES (read once, at least 4096) overrides it: tests use small rounds. */
#define ROUND_BYTES (4u << 20)
static size_t round_bytes = 0;
/* Bytes a direction moves at the kernel's default pipe size before its pipe is grown. */
#define GROW_AFTER (1u << 20)
/* The kernel's default pipe capacity; only pipes still at it go back to the pool. */
#define PIPE_DEFAULT 65536u
/* Most empty pipes a thread keeps (fewer when the descriptor limit is low: 1/16 of it). */
#define POOL_MAX 256
/* How each descriptor is registered, once. */
#define WATCH (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

typedef struct {
  int src, dst;    /* side indices */
  int pr, pw;      /* pipe ends, -1 until the first byte */
  size_t inpipe;   /* bytes read into the pipe, not yet written out */
  size_t cap;      /* the pipe's capacity */
  uint64_t bytes;  /* bytes read from src */
  bool eof, shut;
} dir_t;

typedef struct splicer splicer_t;

struct splicer {
  reactor_t *r;
  int fd[2];
  uint32_t events[2]; /* epoll interest registered per side (WATCH); 0: not in the set */
  bool can_read[2];   /* side i may have bytes (or EOF) to read: set by events, cleared by EAGAIN */
  bool can_write[2];  /* side i may take bytes: likewise */
  dir_t dir[2];       /* dir[i]: side i → side 1-i */
  napi_env env;
  napi_ref owner;     /* napi_wrap's reference, strong while running; NULL once let go */
  int pipe_size;
  bool closing, finalized;
};

/* Empty pipes at the kernel's default size, for the next directions of this thread's splices. */
typedef struct {
  int n, max;
  int ends[POOL_MAX][2]; /* [read end, write end] */
} pipe_pool_t;

static __thread pipe_pool_t *pool; /* one per JS thread (each has its own env and loop) */

/* The env is going away (a worker thread ends; runs on its thread): close the pooled pipes and
 * pool no more (pipes given back later, by finalisers at teardown, are closed). */
static void pool_cleanup(void *arg) {
  pipe_pool_t *p = arg;
  while (p->n > 0) {
    p->n--;
    close(p->ends[p->n][0]);
    close(p->ends[p->n][1]);
  }
  if (pool == p) pool = NULL;
  free(p);
}

/* Makes this thread's pool on first use; without one (no memory) pipes are simply not pooled. */
static void pool_init(napi_env env) {
  struct rlimit lim;
  if (round_bytes == 0) {
    const char *v = getenv("OXY_SPLICE_ROUND_BYTES");
    long n = v ? strtol(v, NULL, 10) : 0;
    round_bytes = n >= 4096 ? (size_t)n : ROUND_BYTES;
  }
  if (pool) return;
  pool = calloc(1, sizeof *pool);
  if (!pool) return;
  pool->max = POOL_MAX;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur / 16 < POOL_MAX)
    pool->max = (int)(lim.rlim_cur / 16);
  napi_add_env_cleanup_hook(env, pool_cleanup, pool);
}

/* A pipe for direction d: a pooled one, or a new one at the kernel's default size. */
static int pipe_take(dir_t *d) {
  if (pool && pool->n > 0) {
    pool->n--;
    d->pr = pool->ends[pool->n][0];
    d->pw = pool->ends[pool->n][1];
  } else {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return errno;
    d->pr = p[0];
    d->pw = p[1];
  }
  d->cap = PIPE_DEFAULT;
  return 0;
}

/* Direction d's pipe back to the pool if it ended empty and was never grown; else closed. */
static void pipe_give(dir_t *d) {
  if (d->pr < 0) return;
  if (d->inpipe == 0 && d->cap == PIPE_DEFAULT && pool && pool->n < pool->max) {
    pool->ends[pool->n][0] = d->pr;
    pool->ends[pool->n][1] = d->pw;
    pool->n++;
  } else {
    close(d->pr);
    close(d->pw);
  }
  d->pr = d->pw = -1;
}

static void free_if_done(splicer_t *s) {
  if (s->finalized && s->closing) reactor_free_later(s->r, s);
}

/* Stops watching, closes duplicates, pools or closes pipes. Idempotent. */
static void splicer_close(splicer_t *s) {
  if (s->closing) return;
  s->closing = true;
  reactor_hold(s->r, -1);
  for (int i = 0; i < 2; i++) {
    /* Out of the set before the close: another duplicate may keep the socket (and the entry). */
    reactor_watch(s->r, s->fd[i], &s->events[i], 0, NULL);
    s->events[i] = 0;
    close(s->fd[i]);
    pipe_give(&s->dir[i]);
  }
}

/* The owner was collected (or the env torn down) while still wrapped. */
static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  splicer_t *s = data;
  splicer_close(s);
  if (s->owner) napi_delete_reference(env, s->owner);
  s->owner = NULL;
  s->finalized = true;
  free_if_done(s);
}

/* Lets go of the owner: unwraps it and deletes the reference. Returns the owner (or NULL). */
static napi_value release_owner(splicer_t *s) {
  napi_value owner = NULL;
  void *ignored;
  if (!s->owner) return NULL;
  if (napi_get_reference_value(s->env, s->owner, &owner) != napi_ok) owner = NULL;
  if (owner) napi_remove_wrap(s->env, owner, &ignored);
  napi_delete_reference(s->env, s->owner);
  s->owner = NULL;
  s->finalized = true; /* the wrap is gone: no finaliser will come */
  return owner;
}

/* Ends the splice and tells the owner: kind 0 done, 1 error. */
static void finish(splicer_t *s, int kind, int err, int side) {
  napi_env env = s->env;
  napi_handle_scope scope;
  napi_value owner, fn, argv[5], ignored;
  splicer_close(s);
  if (!s->owner || napi_open_handle_scope(env, &scope) != napi_ok) return;
  owner = release_owner(s);
  if (owner && napi_get_named_property(env, owner, "onSpliceEnd", &fn) == napi_ok &&
      napi_create_int32(env, kind, &argv[0]) == napi_ok &&
      napi_create_double(env, (double)s->dir[0].bytes, &argv[1]) == napi_ok &&
      napi_create_double(env, (double)s->dir[1].bytes, &argv[2]) == napi_ok &&
      napi_create_int32(env, err, &argv[3]) == napi_ok && napi_create_int32(env, side, &argv[4]) == napi_ok) {
    /* No async context: the owner settles a promise, whose reactions keep their own context. */
    if (napi_make_callback(env, NULL, owner, fn, 5, argv, &ignored) == napi_pending_exception) {
      napi_value e;
      if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
    }
  }
  napi_close_handle_scope(env, scope);
  free_if_done(s);
}

/* Side i's registration: WATCH, tagged with the splicer and the side in its low bit. */
static int watch(splicer_t *s, int i) {
  return reactor_watch(s->r, s->fd[i], &s->events[i], WATCH, (void *)((uintptr_t)s | (uintptr_t)i));
}

/* Moves what it can in direction d: until EAGAIN (which clears the side's readiness), EOF or the
 * round's budget. Returns 0, or an errno with *side set to the side at fault. */
static int pump(splicer_t *s, dir_t *d, int *side) {
  size_t moved = 0;
  for (;;) {
    while (d->inpipe > 0) {
      if (!s->can_write[d->dst]) return 0;
      ssize_t n = splice(d->pr, NULL, s->fd[d->dst], NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          s->can_write[d->dst] = false; /* until the next EPOLLOUT edge */
          return 0;
        }
        *side = d->dst;
        return errno;
      }
      d->inpipe -= (size_t)n;
    }
    if (d->eof) {
      if (!d->shut) {
        d->shut = true;
        if (shutdown(s->fd[d->dst], SHUT_WR) < 0 && errno != ENOTCONN) {
          *side = d->dst;
          return errno;
        }
      }
      return 0;
    }
    if (!s->can_read[d->src] || moved >= round_bytes) return 0; /* the budget: see on_event */
    if (d->pr < 0) {
      int e = pipe_take(d);
      if (e != 0) {
        *side = -1;
        return e;
      }
    }
    /* Grow the pipe once a direction proves to be a bulk transfer; short tunnels never pay. */
    if (d->cap < (size_t)s->pipe_size && d->bytes >= GROW_AFTER) {
      int c = fcntl(d->pw, F_SETPIPE_SZ, s->pipe_size); /* best effort */
      d->cap = c > 0 ? (size_t)c : (size_t)s->pipe_size;
    }
    ssize_t n = splice(s->fd[d->src], NULL, d->pw, NULL, d->cap, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        s->can_read[d->src] = false; /* until the next EPOLLIN edge */
        return 0;
      }
      *side = d->src;
      return errno;
    }
    if (n == 0) {
      d->eof = true;
      continue;
    }
    d->inpipe = (size_t)n;
    d->bytes += (uint64_t)n;
    moved += (size_t)n;
  }
}

/* True when direction i could move now: it stopped for its round's budget, not for EAGAIN. */
static bool has_work(splicer_t *s, int i) {
  dir_t *d = &s->dir[i];
  if (d->shut) return false;
  return d->inpipe > 0 ? s->can_write[d->dst] : d->eof || s->can_read[d->src];
}

/* One readiness event for side i of s: note it, then run both directions as far as they go. */
static void on_event(splicer_t *s, int i, uint32_t ev) {
  int side = i, err = 0;
  if (s->closing) return;
  if (ev & EPOLLERR) {
    /* The socket's own error says what happened. */
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(s->fd[i], SOL_SOCKET, SO_ERROR, &e, &len) < 0 || e == 0) e = EIO;
    finish(s, 1, e, i);
    return;
  }
  /* A hang-up: the splice calls then see EOF or the error. */
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) s->can_read[i] = true;
  if (ev & (EPOLLOUT | EPOLLHUP)) s->can_write[i] = true;
  err = pump(s, &s->dir[0], &side);
  if (!err) err = pump(s, &s->dir[1], &side);
  if (err) {
    finish(s, 1, err, side);
    return;
  }
  if (s->dir[0].shut && s->dir[1].shut) {
    finish(s, 0, 0, -1);
    return;
  }
  /* A round used up (its source not drained: no edge will come for it). Renewing the source's
   * registration (out and in again) reports what is ready anew, at the reactor's next batch:
   * the next loop turn. A source with nothing left reports nothing, and its next byte an edge. */
  for (int k = 0; k < 2; k++) {
    if (!has_work(s, k)) continue;
    reactor_watch(s->r, s->fd[k], &s->events[k], 0, NULL);
    if ((err = watch(s, k)) != 0) {
      finish(s, 1, err, k);
      return;
    }
  }
}

/* The reactor's callback: one ready side of one splicer. */
static void on_ready(void *tag, uint32_t ev) {
  uintptr_t p = (uintptr_t)tag;
  on_event((splicer_t *)(p & ~(uintptr_t)1), (int)(p & 1), ev);
}

/* spliceStart(fd0, fd1, pipeSize, owner): wraps the splicer into owner. The descriptors stay the caller's. */
static napi_value splice_start(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  napi_valuetype t;
  int32_t fd0, fd1, pipe_size;
  if (!get_args(env, info, 4, argv, NULL) || !arg_int32(env, argv[0], &fd0) || !arg_int32(env, argv[1], &fd1) ||
      !arg_int32(env, argv[2], &pipe_size))
    return NULL;
  if (fd0 < 0 || fd1 < 0 || fd0 == fd1 || pipe_size < 0 || pipe_size > (1 << 24)) {
    throw_type(env, "invalid descriptors or pipe size");
    return NULL;
  }
  if (napi_typeof(env, argv[3], &t) != napi_ok || t != napi_object) {
    throw_type(env, "the splice owner must be an object");
    return NULL;
  }
  reactor_t *r = reactor_for(env, on_ready);
  if (!r) return NULL;
  splicer_t *s = calloc(1, sizeof *s);
  if (!s) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  s->r = r;
  s->env = env;
  s->pipe_size = pipe_size;
  s->fd[0] = fcntl(fd0, F_DUPFD_CLOEXEC, 3);
  s->fd[1] = s->fd[0] < 0 ? -1 : fcntl(fd1, F_DUPFD_CLOEXEC, 3);
  if (s->fd[1] < 0) {
    int e = errno;
    if (s->fd[0] >= 0) close(s->fd[0]);
    free(s);
    throw_errno(env, e, "fcntl", "duplicating a socket descriptor to splice it");
    return NULL;
  }
  for (int i = 0; i < 2; i++) {
    s->dir[i].src = i;
    s->dir[i].dst = 1 - i;
    s->dir[i].pr = s->dir[i].pw = -1;
    s->can_write[i] = true; /* until EAGAIN says otherwise */
  }
  pool_init(env);
  reactor_hold(r, 1);
  int err = 0;
  for (int i = 0; i < 2 && err == 0; i++) {
    /* The duplicate shares the socket's flags: only a blocking one costs a second call. */
    int fl = fcntl(s->fd[i], F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(s->fd[i], F_SETFL, fl | O_NONBLOCK) < 0)) err = errno;
    /* Once; the first batch reports what is ready already. */
    else err = watch(s, i);
  }
  if (err != 0) {
    splicer_close(s);
    free(s);
    throw_errno(env, err, "epoll_ctl", "watching a socket to splice it");
    return NULL;
  }
  uint32_t refs;
  if (napi_wrap(env, argv[3], s, finalize, NULL, &s->owner) != napi_ok) {
    /* Already wrapped (a second start on the same owner) or out of memory. */
    splicer_close(s);
    free(s);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_type(env, "this owner already has a splice");
    return NULL;
  }
  if (napi_reference_ref(env, s->owner, &refs) != napi_ok) {
    splicer_close(s);
    release_owner(s);
    free_if_done(s);
    return NULL;
  }
  return make_undefined(env);
}

/* The running splicer wrapped into `owner`, or NULL with a TypeError pending. */
static splicer_t *get_splicer(napi_env env, napi_value owner) {
  void *p = NULL;
  if (napi_unwrap(env, owner, &p) != napi_ok || !p) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
    }
    throw_type(env, "no splice is running for this owner");
    return NULL;
  }
  return p;
}

/* spliceBytes(owner): [bytes0to1, bytes1to0]. */
static napi_value splice_bytes(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr, v;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  splicer_t *s = get_splicer(env, argv[0]);
  if (!s || napi_create_array_with_length(env, 2, &arr) != napi_ok) return NULL;
  for (uint32_t i = 0; i < 2; i++) {
    if (napi_create_double(env, (double)s->dir[i].bytes, &v) != napi_ok || napi_set_element(env, arr, i, v) != napi_ok)
      return NULL;
  }
  return arr;
}

/* spliceTotal(owner): bytes moved both ways (one number: the idle check's cheap read). */
static napi_value splice_total(napi_env env, napi_callback_info info) {
  napi_value argv[1], v;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  splicer_t *s = get_splicer(env, argv[0]);
  if (!s || napi_create_double(env, (double)(s->dir[0].bytes + s->dir[1].bytes), &v) != napi_ok) return NULL;
  return v;
}

/* spliceStop(owner): ends the splice now, without a callback. */
static napi_value splice_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  splicer_t *s = get_splicer(env, argv[0]);
  if (!s) return NULL;
  splicer_close(s);
  release_owner(s);
  free_if_done(s);
  return make_undefined(env);
}

/*
 * trimMemory(): malloc_trim(0): gives the pages of free malloc memory back to the kernel.
 * Returns true if any was released. A burst of connections leaves much freed memory (read
 * buffers, handles of spliced sockets) resident between the long-lived allocations.
 */
static napi_value trim_memory(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
#ifdef __GLIBC__
  napi_get_boolean(env, malloc_trim(0) == 1, &out);
#else
  napi_get_boolean(env, false, &out); /* other C libraries have no malloc_trim */
#endif
  return out;
}

void register_splice(napi_env env, napi_value exports) {
  set_fn(env, exports, "trimMemory", trim_memory);
  set_fn(env, exports, "spliceStart", splice_start);
  set_fn(env, exports, "spliceBytes", splice_bytes);
  set_fn(env, exports, "spliceTotal", splice_total);
  set_fn(env, exports, "spliceStop", splice_stop);
}
