/*
 * Kernel splicing of two connected stream sockets: bytes move socket → pipe → socket with
 * splice(2) and never enter user space (nor JS). Driven by the reactor (reactor.c): its own
 * epoll set and thread, so the system calls that move a tunnel's bytes run off the JS thread.
 *
 * Two ways in:
 * - spliceStart(fd0, fd1, pipeSize, owner): two connected sockets the caller keeps owning; the
 *   splicer works on its own duplicates (F_DUPFD_CLOEXEC), so the caller may close its
 *   descriptors once the splice runs (the sockets stay open through the duplicates; closing a
 *   duplicate sends nothing to the peer).
 * - tunnelStart(owner, clientFd, ip, port, sourceIp, head, early, timeoutMs, pipeSize): the
 *   whole of an unhooked CONNECT tunnel once its policy ran in JS. On the reactor thread: a
 *   non-blocking socket to ip:port (TCP_NODELAY, bound to sourceIp if given), the connect
 *   awaited until its deadline; then `head` (the 2xx answer) written to the client and `early`
 *   (bytes that came after the CONNECT head) to the upstream, then the splice. The JS thread
 *   hears owner.onSpliceConnected() once connected (it may then close its own handle of the
 *   client: the splicer has a duplicate); if the connect fails or times out, onSpliceEnd comes
 *   with kind 2 and the errno, nothing was written to the client, and JS answers 502 or 504.
 * The caller must have stopped reading the sockets (and must not write to them) meanwhile.
 *
 * Each direction has its own pipe, taken on the first byte (an idle tunnel costs no pipe) at the
 * kernel's default size and grown to the asked size after the first MiB (short tunnels never pay).
 * Pipes come from a pool on the reactor thread: a pipe that ended empty and was never grown goes
 * back to it, so a short tunnel makes and closes no pipe.
 * Per direction: read src → pipe; drain pipe → dst; when dst is full, stop reading src and
 * wait for dst to be writable; on EOF from src (once the pipe is empty) shutdown(dst, SHUT_WR),
 * so half-close is carried across. The splice ends when both directions have shut (kind 0) or
 * at the first error (kind 1, with the errno and the side whose descriptor raised it).
 *
 * Each descriptor is registered once, edge-triggered for input, output and peer hang-up (WATCH),
 * and removed before it is closed (a duplicate of the socket may outlive ours, and with it a
 * registration pointing at a freed splicer). The splicer remembers what each side is ready for
 * (set by events, cleared only by EAGAIN) and a direction runs until EAGAIN. One that used up its
 * round (ROUND_BYTES) is re-armed (its registration renewed, which reports what is ready again),
 * so it continues after the other tunnels of the batch had theirs.
 *
 * The descriptors must be non-blocking; duplicates share O_NONBLOCK with the caller's (Node's
 * sockets have it): it is checked once per descriptor and set only if missing.
 *
 * Threads: a splicer's state is guarded by its own mutex (the reactor thread holds it while it
 * moves the splicer's bytes; the JS thread while it reads counters or stops it). It is freed
 * (retired through the reactor) once neither thread refers to it: the JS owner let go, the
 * reactor thread done with it (out of the set, no command or connect deadline pending), and no
 * post on its way to JS.
 *
 * The JS side is an owner object the splicer is wrapped into (napi_wrap; no external, no
 * closure, no async resource per splice). At the end the addon calls
 * owner.onSpliceEnd(kind, bytes0to1, bytes1to0, errno, side) once; by then the splicer has
 * closed its duplicates and pipes and let go of the owner. spliceBytes(owner) reads the
 * counters; spliceStop(owner) ends it without a callback.
 */
#define _GNU_SOURCE
#include "native.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes moved per direction per wakeup before yielding to the others (fairness between tunnels).
 * OXY_SPLICE_ROUND_BYTES (read once, at least 4096) overrides it: tests use small rounds. */
#define ROUND_BYTES (4u << 20)
static size_t round_bytes = 0;
/* Bytes a direction moves at the kernel's default pipe size before its pipe is grown. */
#define GROW_AFTER (1u << 20)
/* The kernel's default pipe capacity; only pipes still at it go back to the pool. */
#define PIPE_DEFAULT 65536u
/* Most empty pipes a reactor thread keeps (fewer when the descriptor limit is low: 1/16 of it). */
#define POOL_MAX 256
/* How each descriptor is registered, once. */
#define WATCH (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

/* What the JS thread is to hear (posted, then taken under the lock). */
#define NOTE_CONNECTED 1
#define NOTE_END 2

/* End kinds. */
#define END_DONE 0
#define END_ERROR 1
#define END_CONNECT 2

typedef struct {
  int src, dst;    /* side indices */
  int pr, pw;      /* pipe ends, -1 until the first byte */
  size_t inpipe;   /* bytes read into the pipe, not yet written out */
  size_t cap;      /* the pipe's capacity */
  uint64_t bytes;  /* bytes read from src */
  bool eof, shut;
} dir_t;

typedef struct splicer splicer_t;

/* A tunnel's connect phase (tunnelStart): freed once connected and its bytes written. */
typedef struct {
  struct sockaddr_storage addr, src;
  socklen_t addrlen, srclen;
  int64_t deadline;       /* CLOCK_MONOTONIC ms; 0: none */
  splicer_t *prev, *next; /* the reactor thread's list of connects with a deadline */
  bool linked;
  /* pre[i]: bytes to write to side i before any spliced byte (the 2xx head; early data). */
  uint8_t *pre[2];
  size_t pre_len[2], pre_off[2];
} connect_t;

struct splicer {
  reactor_item_t item; /* first: the reactor's lists */
  reactor_t *r;
  pthread_mutex_t mu;
  int fd[2];
  uint32_t events[2]; /* epoll interest registered per side (WATCH); 0: not in the set */
  bool can_read[2];   /* side i may have bytes (or EOF) to read: set by events, cleared by EAGAIN */
  bool can_write[2];  /* side i may take bytes: likewise */
  dir_t dir[2];       /* dir[i]: side i → side 1-i */
  connect_t *cx;      /* tunnelStart, until connected and its bytes written */
  int pipe_size;
  bool connecting;    /* waiting for the upstream connect */
  bool tunnel;        /* tunnelStart */
  bool connected;     /* tunnelStart: connected (its head may have been written) */
  bool closing;       /* out of the set, descriptors closed */
  /* Who refers to it; freed when none does. */
  bool js_ref, thread_ref, queued;
  bool cmd_pending;   /* posted to the reactor thread, not yet run there */
  bool retired;
  int notes;          /* NOTE_* posted, not yet taken */
  int end_kind, end_err, end_side;
  napi_env env;
  napi_ref owner;     /* napi_wrap's reference, strong while running; NULL once let go */
};

static void on_ready(reactor_item_t *it, int side, uint32_t ev);
static void on_command(reactor_t *r, reactor_item_t *it);
static void on_done(napi_env env, reactor_item_t *it);
static int on_tick(reactor_t *r);
static const reactor_ops_t ops = {on_command, on_ready, on_done};

/* ---- pipe pool (reactor thread only) ---- */

typedef struct {
  int n, max;
  int ends[POOL_MAX][2]; /* [read end, write end] */
} pipe_pool_t;

static __thread pipe_pool_t *pool;
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* The reactor thread ends (its env is going away): close the pooled pipes. */
static void pool_free(void *arg) {
  pipe_pool_t *p = arg;
  while (p->n > 0) {
    p->n--;
    close(p->ends[p->n][0]);
    close(p->ends[p->n][1]);
  }
  free(p);
}

static void pool_key_make(void) {
  pthread_key_create(&pool_key, pool_free);
}

/* Makes this thread's pool on first use; without one (no memory) pipes are simply not pooled. */
static void pool_init(void) {
  struct rlimit lim;
  if (pool) return;
  pthread_once(&pool_once, pool_key_make);
  pool = calloc(1, sizeof *pool);
  if (!pool) return;
  pool->max = POOL_MAX;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur / 16 < POOL_MAX)
    pool->max = (int)(lim.rlim_cur / 16);
  pthread_setspecific(pool_key, pool);
}

/* A pipe for direction d: a pooled one, or a new one at the kernel's default size. */
static int pipe_take(dir_t *d) {
  pool_init();
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

/* Direction d's pipe back to the pool (if `may_pool`, it ended empty and was never grown); else closed. */
static void pipe_give(dir_t *d, bool may_pool) {
  if (d->pr < 0) return;
  if (may_pool && d->inpipe == 0 && d->cap == PIPE_DEFAULT && pool && pool->n < pool->max) {
    pool->ends[pool->n][0] = d->pr;
    pool->ends[pool->n][1] = d->pw;
    pool->n++;
  } else {
    close(d->pr);
    close(d->pw);
  }
  d->pr = d->pw = -1;
}

/* ---- lifetime ---- */

static void free_connect(connect_t *cx) {
  if (!cx) return;
  free(cx->pre[0]);
  free(cx->pre[1]);
  free(cx);
}

/* Under s->mu: true (once) when nobody refers to s any more: the caller retires it after
 * unlocking. A stale event of the batch in flight may still lock it; it is freed after. */
static bool unreferenced(splicer_t *s) {
  if (s->retired || s->js_ref || s->thread_ref || s->queued) return false;
  s->retired = true;
  return true;
}

static void retire(splicer_t *s) {
  free_connect(s->cx); /* a stale event stops at `closing`, before the connect phase */
  s->cx = NULL;
  reactor_retire(s->r, &s->item);
}

/* Under s->mu: out of the set, descriptors and pipes closed (pooled on the reactor thread). Idempotent. */
static void close_fds(splicer_t *s, bool on_thread) {
  if (s->closing) return;
  s->closing = true;
  for (int i = 0; i < 2; i++) {
    if (s->fd[i] >= 0) {
      /* Out of the set before the close: another duplicate may keep the socket (and the entry). */
      reactor_watch(s->r, s->fd[i], &s->events[i], 0, &s->item, i);
      close(s->fd[i]);
      s->fd[i] = -1;
    }
    s->events[i] = 0;
    pipe_give(&s->dir[i], on_thread);
  }
}

/* Reactor thread, under s->mu: tells the JS thread `note`. */
static void notify(splicer_t *s, int note) {
  s->notes |= note;
  if (s->queued) return;
  s->queued = true;
  reactor_post(s->r, &s->item);
}

/* The reactor thread's connects with a deadline (tunnelStart), checked before each wait. */
static __thread splicer_t *connecting_head;

static void unlink_connecting(splicer_t *s) {
  connect_t *cx = s->cx;
  if (!cx || !cx->linked) return;
  if (cx->prev) cx->prev->cx->next = cx->next;
  else connecting_head = cx->next;
  if (cx->next) cx->next->cx->prev = cx->prev;
  cx->prev = cx->next = NULL;
  cx->linked = false;
}

/* Reactor thread, under s->mu: ends the splice and tells the JS thread. The caller unlocks and
 * retires s if unreferenced. */
static void finish(splicer_t *s, int kind, int err, int side) {
  close_fds(s, true);
  unlink_connecting(s);
  s->connecting = false;
  s->end_kind = kind;
  s->end_err = err;
  s->end_side = side;
  s->thread_ref = false;
  notify(s, NOTE_END);
}

/* ---- moving bytes (reactor thread, under s->mu) ---- */

/* Side i's registration: WATCH. */
static int watch(splicer_t *s, int i) {
  return reactor_watch(s->r, s->fd[i], &s->events[i], WATCH, &s->item, i);
}

/* Writes what is still to be written to side i before the splice (the connect phase's bytes). */
static int write_pre(splicer_t *s, int i, int *side) {
  connect_t *cx = s->cx;
  while (cx && cx->pre_off[i] < cx->pre_len[i]) {
    if (!s->can_write[i]) return 0;
    ssize_t n = send(s->fd[i], cx->pre[i] + cx->pre_off[i], cx->pre_len[i] - cx->pre_off[i], MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        s->can_write[i] = false;
        return 0;
      }
      *side = i;
      return errno;
    }
    cx->pre_off[i] += (size_t)n;
  }
  return 0;
}

static bool pre_pending(splicer_t *s, int i) {
  return s->cx && s->cx->pre_off[i] < s->cx->pre_len[i];
}

/* Moves what it can in direction d: until EAGAIN (which clears the side's readiness), EOF or the
 * round's budget. Returns 0, or an errno with *side set to the side at fault. */
static int pump(splicer_t *s, dir_t *d, int *side) {
  size_t moved = 0;
  int e = write_pre(s, d->dst, side);
  if (e != 0 || pre_pending(s, d->dst)) return e;
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
      e = pipe_take(d);
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
    __atomic_store_n(&d->bytes, d->bytes + (uint64_t)n, __ATOMIC_RELAXED);
    moved += (size_t)n;
  }
}

/* True when direction i could move now: it stopped for its round's budget, not for EAGAIN. */
static bool has_work(splicer_t *s, int i) {
  dir_t *d = &s->dir[i];
  if (d->shut) return false;
  return d->inpipe > 0 ? s->can_write[d->dst] : d->eof || s->can_read[d->src];
}

/* Runs both directions as far as they go; ends the splice when both have shut or on an error. */
static void run_both(splicer_t *s) {
  int side = -1, err = pump(s, &s->dir[0], &side);
  if (!err) err = pump(s, &s->dir[1], &side);
  if (err) {
    finish(s, END_ERROR, err, side);
    return;
  }
  if (s->cx && !pre_pending(s, 0) && !pre_pending(s, 1)) {
    free_connect(s->cx);
    s->cx = NULL;
  }
  if (s->dir[0].shut && s->dir[1].shut) {
    finish(s, END_DONE, 0, -1);
    return;
  }
  /* A round used up (its source not drained: no edge will come for it). Renewing the source's
   * registration (out and in again) reports what is ready anew, in a later batch. A source with
   * nothing left reports nothing, and its next byte an edge. */
  for (int k = 0; k < 2; k++) {
    if (!has_work(s, k)) continue;
    reactor_watch(s->r, s->fd[k], &s->events[k], 0, &s->item, k);
    if ((err = watch(s, k)) != 0) {
      finish(s, END_ERROR, err, k);
      return;
    }
  }
}

/* The socket's pending error (SO_ERROR), or `fallback` when it has none. */
static int sock_error(int fd, int fallback) {
  int e = 0;
  socklen_t len = sizeof e;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0 || e == 0) e = fallback;
  return e;
}

/* One readiness event for side i of s. */
static void on_event(splicer_t *s, int i, uint32_t ev) {
  if (s->closing) return;
  if (s->connecting) {
    if (i == 1 && (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
      int e = sock_error(s->fd[1], (ev & (EPOLLERR | EPOLLHUP)) ? ECONNREFUSED : 0);
      if (e != 0) {
        finish(s, END_CONNECT, e, 1);
        return;
      }
      s->connecting = false;
      s->connected = true;
      unlink_connecting(s);
      notify(s, NOTE_CONNECTED);
    } else if (i == 0 && (ev & EPOLLERR)) {
      finish(s, END_ERROR, sock_error(s->fd[0], EIO), 0);
      return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) s->can_read[i] = true;
    if (ev & (EPOLLOUT | EPOLLHUP)) s->can_write[i] = true;
    if (!s->connecting) run_both(s);
    return;
  }
  if (ev & EPOLLERR) {
    /* The socket's own error says what happened. */
    finish(s, END_ERROR, sock_error(s->fd[i], EIO), i);
    return;
  }
  /* A hang-up: the splice calls then see EOF or the error. */
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) s->can_read[i] = true;
  if (ev & (EPOLLOUT | EPOLLHUP)) s->can_write[i] = true;
  run_both(s);
}

/* The reactor's callback: one ready side of one splicer. */
static void on_ready(reactor_item_t *it, int side, uint32_t ev) {
  splicer_t *s = (splicer_t *)it;
  pthread_mutex_lock(&s->mu);
  on_event(s, side, ev);
  bool gone = unreferenced(s);
  pthread_mutex_unlock(&s->mu);
  if (gone) retire(s);
}

/* Makes fd non-blocking if it is not (a duplicate shares the flag with the caller's descriptor). */
static int ensure_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) return errno;
  return 0;
}

/* Reactor thread, under s->mu: the upstream socket of a tunnel, its connect started. */
static int start_connect(splicer_t *s) {
  connect_t *cx = s->cx;
  int one = 1;
  int fd = socket(cx->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  s->fd[1] = fd;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as Node's noDelay; best effort */
  if (cx->srclen > 0) {
    /* The port is picked at connect (by the 4-tuple), not at bind: no port used up per source. */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&cx->src, cx->srclen) < 0) return errno;
  }
  if (connect(fd, (struct sockaddr *)&cx->addr, cx->addrlen) < 0 && errno != EINPROGRESS) return errno;
  s->connecting = true;
  return 0;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A command from the JS thread: start watching (and connecting, for a tunnel). */
static void on_command(reactor_t *r, reactor_item_t *it) {
  (void)r;
  splicer_t *s = (splicer_t *)it;
  pthread_mutex_lock(&s->mu);
  s->cmd_pending = false;
  if (s->closing) {
    /* Stopped before it started. */
    s->thread_ref = false;
  } else {
    int err = 0, side = 1;
    if (s->cx) err = start_connect(s);
    if (err != 0) {
      finish(s, END_CONNECT, err, 1);
    } else {
      for (int i = 0; i < 2 && err == 0; i++) {
        side = i;
        /* A tunnel's upstream socket was made non-blocking. */
        if (!(s->cx && i == 1)) err = ensure_nonblocking(s->fd[i]);
        /* Once; what is ready already is reported by the next wait. */
        if (err == 0) err = watch(s, i);
      }
      if (err != 0) {
        finish(s, END_ERROR, err, side);
      } else if (s->connecting && s->cx->deadline > 0) {
        connect_t *cx = s->cx;
        cx->next = connecting_head;
        if (connecting_head) connecting_head->cx->prev = s;
        connecting_head = s;
        cx->prev = NULL;
        cx->linked = true;
      }
    }
  }
  bool gone = unreferenced(s);
  pthread_mutex_unlock(&s->mu);
  if (gone) retire(s);
}

/* Before each wait: connects past their deadline fail with ETIMEDOUT; the next deadline. */
static int on_tick(reactor_t *r) {
  (void)r;
  if (!connecting_head) return -1;
  int64_t now = now_ms(), next = INT64_MAX;
  splicer_t *s = connecting_head;
  while (s) {
    pthread_mutex_lock(&s->mu);
    splicer_t *n = s->cx->next;
    if (s->closing) {
      /* Stopped by the JS thread while connecting: this list held the last reference. */
      unlink_connecting(s);
      s->thread_ref = false;
    } else if (s->cx->deadline <= now) {
      finish(s, END_CONNECT, ETIMEDOUT, 1);
    } else if (s->cx->deadline < next) {
      next = s->cx->deadline;
    }
    bool gone = unreferenced(s);
    pthread_mutex_unlock(&s->mu);
    if (gone) retire(s);
    s = n;
  }
  return next == INT64_MAX ? -1 : (int)(next - now);
}

/* ---- the JS thread ---- */

/* Lets go of the owner: unwraps it and deletes the reference. Returns the owner (or NULL). */
static napi_value release_owner(splicer_t *s) {
  napi_value owner = NULL;
  void *ignored;
  if (!s->owner) return NULL;
  if (napi_get_reference_value(s->env, s->owner, &owner) != napi_ok) owner = NULL;
  if (owner) napi_remove_wrap(s->env, owner, &ignored);
  napi_delete_reference(s->env, s->owner);
  s->owner = NULL;
  return owner;
}

static void call_owner(napi_env env, napi_value owner, const char *name, size_t argc, napi_value *argv) {
  napi_value fn, ignored;
  if (napi_get_named_property(env, owner, name, &fn) != napi_ok) return;
  /* No async context: the owner settles a promise, whose reactions keep their own context. */
  if (napi_make_callback(env, NULL, owner, fn, argc, argv, &ignored) == napi_pending_exception) {
    napi_value e;
    if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
  }
}

/* JS thread: what the reactor thread posted for s. */
static void on_done(napi_env env, reactor_item_t *it) {
  splicer_t *s = (splicer_t *)it;
  pthread_mutex_lock(&s->mu);
  int notes = s->notes;
  s->notes = 0;
  s->queued = false;
  bool mine = s->js_ref && s->owner != NULL;
  if (mine && (notes & NOTE_END)) s->js_ref = false; /* let go below */
  int kind = s->end_kind, err = s->end_err, side = s->end_side;
  double b0 = (double)s->dir[0].bytes, b1 = (double)s->dir[1].bytes;
  bool gone = unreferenced(s);
  pthread_mutex_unlock(&s->mu);
  if (mine) {
    napi_handle_scope scope;
    if (notes & NOTE_END) reactor_hold(s->r, -1);
    if (napi_open_handle_scope(env, &scope) == napi_ok) {
      napi_value owner = NULL, argv[5];
      if (notes & NOTE_END) owner = release_owner(s);
      else if (napi_get_reference_value(env, s->owner, &owner) != napi_ok) owner = NULL;
      if (owner && (notes & NOTE_CONNECTED)) call_owner(env, owner, "onSpliceConnected", 0, NULL);
      if (owner && (notes & NOTE_END) && napi_create_int32(env, kind, &argv[0]) == napi_ok &&
          napi_create_double(env, b0, &argv[1]) == napi_ok && napi_create_double(env, b1, &argv[2]) == napi_ok &&
          napi_create_int32(env, err, &argv[3]) == napi_ok && napi_create_int32(env, side, &argv[4]) == napi_ok)
        call_owner(env, owner, "onSpliceEnd", 5, argv);
      napi_close_handle_scope(env, scope);
    }
  }
  if (gone) retire(s);
}

/* JS thread: ends s now (stop, or its owner collected): no callback. True if it had not
 * connected yet (a tunnel: nothing was written to the client). */
static bool stop(splicer_t *s) {
  pthread_mutex_lock(&s->mu);
  bool was_running = s->js_ref;
  bool connecting = s->tunnel && !s->connected;
  close_fds(s, false);
  /* The reactor thread keeps its reference while its command is pending or a connect deadline
   * names s; otherwise only a batch in flight may (the retirement waits for it). */
  bool pending = s->cmd_pending || (s->cx != NULL && s->cx->linked);
  if (s->thread_ref && !pending) s->thread_ref = false;
  s->js_ref = false;
  bool gone = unreferenced(s);
  pthread_mutex_unlock(&s->mu);
  if (was_running) reactor_hold(s->r, -1);
  if (gone) retire(s);
  return connecting;
}

/* The owner was collected (or the env torn down) while still wrapped. */
static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  splicer_t *s = data;
  if (s->owner) napi_delete_reference(env, s->owner);
  s->owner = NULL;
  stop(s);
}

static splicer_t *splicer_new(napi_env env, int pipe_size) {
  reactor_t *r = reactor_for(env);
  if (!r) return NULL;
  splicer_t *s = calloc(1, sizeof *s);
  if (!s) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (round_bytes == 0) {
    const char *v = getenv("OXY_SPLICE_ROUND_BYTES");
    long n = v ? strtol(v, NULL, 10) : 0;
    round_bytes = n >= 4096 ? (size_t)n : ROUND_BYTES;
  }
  reactor_set_tick(r, on_tick);
  pthread_mutex_init(&s->mu, NULL);
  s->item.ops = &ops;
  s->r = r;
  s->env = env;
  s->pipe_size = pipe_size;
  s->fd[0] = s->fd[1] = -1;
  for (int i = 0; i < 2; i++) {
    s->dir[i].src = i;
    s->dir[i].dst = 1 - i;
    s->dir[i].pr = s->dir[i].pw = -1;
    s->can_write[i] = true; /* until EAGAIN says otherwise */
  }
  return s;
}

/* Drops a splicer that never reached the reactor thread. */
static void splicer_drop(splicer_t *s) {
  for (int i = 0; i < 2; i++)
    if (s->fd[i] >= 0) close(s->fd[i]);
  free_connect(s->cx);
  free(s);
}

/* Wraps s into owner and hands it to the reactor thread. NULL with an exception pending on failure. */
static napi_value launch(napi_env env, splicer_t *s, napi_value owner) {
  uint32_t refs;
  if (napi_wrap(env, owner, s, finalize, NULL, &s->owner) != napi_ok) {
    /* Already wrapped (a second start on the same owner) or out of memory. */
    splicer_drop(s);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) throw_type(env, "this owner already has a splice");
    return NULL;
  }
  if (napi_reference_ref(env, s->owner, &refs) != napi_ok) {
    void *ignored;
    napi_remove_wrap(env, owner, &ignored);
    napi_delete_reference(env, s->owner);
    splicer_drop(s);
    return NULL;
  }
  s->js_ref = true;
  s->thread_ref = true;
  s->cmd_pending = true;
  reactor_hold(s->r, 1);
  if (!reactor_command(s->r, &s->item)) {
    void *ignored;
    reactor_hold(s->r, -1);
    napi_remove_wrap(env, owner, &ignored);
    napi_delete_reference(env, s->owner);
    splicer_drop(s);
    napi_throw_error(env, NULL, "the addon's reactor is stopping");
    return NULL;
  }
  return make_undefined(env);
}

static bool is_object(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && t == napi_object;
}

/* spliceStart(fd0, fd1, pipeSize, owner): wraps the splicer into owner. The descriptors stay the caller's. */
static napi_value splice_start(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd0, fd1, pipe_size;
  if (!get_args(env, info, 4, argv, NULL) || !arg_int32(env, argv[0], &fd0) || !arg_int32(env, argv[1], &fd1) ||
      !arg_int32(env, argv[2], &pipe_size))
    return NULL;
  if (fd0 < 0 || fd1 < 0 || fd0 == fd1 || pipe_size < 0 || pipe_size > (1 << 24)) {
    throw_type(env, "invalid descriptors or pipe size");
    return NULL;
  }
  if (!is_object(env, argv[3])) {
    throw_type(env, "the splice owner must be an object");
    return NULL;
  }
  splicer_t *s = splicer_new(env, pipe_size);
  if (!s) return NULL;
  s->fd[0] = fcntl(fd0, F_DUPFD_CLOEXEC, 3);
  s->fd[1] = s->fd[0] < 0 ? -1 : fcntl(fd1, F_DUPFD_CLOEXEC, 3);
  if (s->fd[1] < 0) {
    int e = errno;
    splicer_drop(s);
    throw_errno(env, e, "fcntl", "duplicating a socket descriptor to splice it");
    return NULL;
  }
  return launch(env, s, argv[3]);
}

/* Parses a literal IP (no zone) and port into `ss`. */
static bool parse_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    *len = sizeof *v4;
    return true;
  }
  if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    *len = sizeof *v6;
    return true;
  }
  return false;
}

/* Copies a Buffer argument (or null/undefined: none) into pre-bytes. */
static bool arg_pre(napi_env env, napi_value v, uint8_t **out, size_t *len) {
  napi_valuetype t;
  *out = NULL;
  *len = 0;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_null || t == napi_undefined) return true;
  void *data;
  size_t n;
  if (!arg_buffer(env, v, &data, &n)) return false;
  if (n == 0) return true;
  *out = malloc(n);
  if (!*out) {
    napi_throw_error(env, NULL, "out of memory");
    return false;
  }
  memcpy(*out, data, n);
  *len = n;
  return true;
}

/* tunnelStart(owner, clientFd, ip, port, sourceIp, head, early, timeoutMs, pipeSize): see the top. */
static napi_value tunnel_start(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int32_t cfd, port, timeout, pipe_size;
  char *ip = NULL, *src = NULL;
  size_t iplen, srclen;
  if (!get_args(env, info, 9, argv, NULL)) return NULL;
  if (!is_object(env, argv[0])) {
    throw_type(env, "the splice owner must be an object");
    return NULL;
  }
  if (!arg_int32(env, argv[1], &cfd) || !arg_int32(env, argv[3], &port) || !arg_int32(env, argv[7], &timeout) ||
      !arg_int32(env, argv[8], &pipe_size))
    return NULL;
  if (cfd < 0 || port <= 0 || port > 65535 || timeout < 0 || pipe_size < 0 || pipe_size > (1 << 24)) {
    throw_type(env, "invalid descriptor, port, timeout or pipe size");
    return NULL;
  }
  connect_t *cx = calloc(1, sizeof *cx);
  if (!cx) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  bool ok = arg_string(env, argv[2], &ip, &iplen) && arg_string(env, argv[4], &src, &srclen);
  if (ok && !parse_addr(ip, port, &cx->addr, &cx->addrlen)) {
    throw_type(env, "the upstream address must be a literal IP");
    ok = false;
  }
  if (ok && srclen > 0 && !parse_addr(src, 0, &cx->src, &cx->srclen)) {
    throw_type(env, "the source address must be a literal IP");
    ok = false;
  }
  if (ok && cx->srclen > 0 && cx->src.ss_family != cx->addr.ss_family) cx->srclen = 0; /* as Node: other family, unbound */
  free(ip);
  free(src);
  if (ok) ok = arg_pre(env, argv[5], &cx->pre[0], &cx->pre_len[0]) && arg_pre(env, argv[6], &cx->pre[1], &cx->pre_len[1]);
  if (!ok) {
    free_connect(cx);
    return NULL;
  }
  splicer_t *s = splicer_new(env, pipe_size);
  if (!s) {
    free_connect(cx);
    return NULL;
  }
  s->cx = cx;
  s->tunnel = true;
  cx->deadline = timeout > 0 ? now_ms() + timeout : 0;
  s->fd[0] = fcntl(cfd, F_DUPFD_CLOEXEC, 3);
  if (s->fd[0] < 0) {
    int e = errno;
    splicer_drop(s);
    throw_errno(env, e, "fcntl", "duplicating the client's descriptor to splice it");
    return NULL;
  }
  return launch(env, s, argv[0]);
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
    double b = (double)__atomic_load_n(&s->dir[i].bytes, __ATOMIC_RELAXED);
    if (napi_create_double(env, b, &v) != napi_ok || napi_set_element(env, arr, i, v) != napi_ok) return NULL;
  }
  return arr;
}

/* spliceTotal(owner): bytes moved both ways (one number: the idle check's cheap read). */
static napi_value splice_total(napi_env env, napi_callback_info info) {
  napi_value argv[1], v;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  splicer_t *s = get_splicer(env, argv[0]);
  if (!s) return NULL;
  uint64_t t = __atomic_load_n(&s->dir[0].bytes, __ATOMIC_RELAXED) + __atomic_load_n(&s->dir[1].bytes, __ATOMIC_RELAXED);
  if (napi_create_double(env, (double)t, &v) != napi_ok) return NULL;
  return v;
}

/* spliceStop(owner): ends the splice now, without a callback. True if a tunnel had not connected
 * yet (nothing was written to its client). */
static napi_value splice_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  splicer_t *s = get_splicer(env, argv[0]);
  if (!s) return NULL;
  release_owner(s);
  napi_get_boolean(env, stop(s), &out);
  return out;
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
  set_fn(env, exports, "tunnelStart", tunnel_start);
  set_fn(env, exports, "spliceBytes", splice_bytes);
  set_fn(env, exports, "spliceTotal", splice_total);
  set_fn(env, exports, "spliceStop", splice_stop);
}
