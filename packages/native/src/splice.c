/*
 * Kernel splicing of two connected stream sockets: bytes move socket → pipe → socket with
 * splice(2) and never enter user space (nor JS). Driven by the reactor (reactor.c): its own
 * epoll set and thread, so the system calls that move a tunnel's bytes run off the JS thread.
 *
 * Three ways in:
 * - spliceStart(fd0, fd1, pipeSize, owner): two connected sockets the caller keeps owning; the
 *   splicer works on its own duplicates (F_DUPFD_CLOEXEC), so the caller may close its
 *   descriptors once the splice runs (the sockets stay open through the duplicates; closing a
 *   duplicate sends nothing to the peer).
 * - tunnelStart(owner, clientFd, ip, port, sourceIp, head, early, timeoutMs, pipeSize): the
 *   whole of an unhooked CONNECT tunnel once its policy ran in JS. On the reactor thread: a
 *   non-blocking socket to ip:port (TCP_NODELAY, bound to sourceIp if given), the connect
 *   awaited until its deadline; then `head` (the 2xx answer) written to the client and `early`
 *   (bytes that came after the CONNECT head) to the upstream, then the splice. The JS thread
 *   hears owner.onSpliceConnected(connectMs) once connected (it may then close its own handle
 *   of the client: the splicer has a duplicate), ANNOUNCE_MS after the connect, or with the end
 *   if that comes first: a short tunnel wakes the JS thread once, not twice. If the connect
 *   fails or times out, onSpliceEnd comes with kind 2 and the errno, nothing was written to the
 *   client, and JS answers 502 or 504.
 * - a client accepted on the reactor thread (accept.c): a tunnel as tunnelStart's, its client
 *   descriptor the splicer's own; its end goes to the listener's batch unless it was announced.
 * The caller must have stopped reading the sockets (and must not write to them) meanwhile.
 *
 * A direction's first COPY_BYTES are copied (recv into the reactor thread's buffer, send), not
 * spliced (splice-copy.c); a copying direction reads only while its destination takes bytes.
 * A tunnel with nothing of its own to write first (a `tcp` endpoint's) reads its client's first
 * bytes as the connect starts and sends them at once (early_copy): a connect to this host is
 * done by then, and the upstream finds the connection and its first bytes together.
 * After that each direction has its own pipe, taken then (an idle tunnel costs no pipe) at the
 * kernel's default size, grown to 256 KiB (at most the asked size) after the first MiB (short
 * tunnels never pay) and to the asked size after 16 MiB (a long transfer: with 1 MiB a GiB
 * takes a third less of the reactor thread's CPU than with 256 KiB; see GROW_BULK_AFTER).
 * Pipes come from a pool on the reactor thread: a pipe that ended empty and was never grown goes
 * back to it, so a short tunnel makes and closes no pipe.
 * Per direction: read src → pipe; drain pipe → dst; when dst is full, stop reading src and
 * wait for dst to be writable; on EOF from src (once the pipe is empty) shutdown(dst, SHUT_WR),
 * so half-close is carried across (not for a tunnel's last direction when dst is a descriptor
 * no one else holds: the close that follows sends the FIN). The splice ends when both directions have shut (kind 0),
 * when the upstream's direction has with `end_on_up_eof` (up_end_ends), or at the first error (kind 1, with the
 * errno and the side whose descriptor raised it).
 *
 * Each descriptor is registered once, edge-triggered for input, output and peer hang-up (WATCH),
 * and removed before it is closed (a duplicate of the socket may outlive ours, and with it a
 * registration pointing at a freed splicer), except a tunnel's upstream socket: the reactor
 * made it and nobody duplicates it, so its close removes it. The splicer remembers what each side is ready for
 * (set by events, cleared only by EAGAIN) and a direction runs until EAGAIN. One that used up its
 * round (ROUND_BYTES) is re-armed (its registration renewed, which reports what is ready again),
 * so it continues after the other tunnels of the batch had theirs.
 *
 * The descriptors must be non-blocking; duplicates share O_NONBLOCK with the caller's (Node's
 * sockets have it): spliceStart checks it once per descriptor and sets it only if missing;
 * tunnelStart's client is a Node socket and its upstream the reactor's own, both non-blocking.
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
#include "splice.h"
#include <linux/sockios.h>
#include <sys/ioctl.h>

size_t round_bytes = 0;
size_t copy_bytes = (size_t)-1; /* unset: read from the environment by splicer_config */
bool early_on = true;

static void on_ready(reactor_item_t *it, int side, uint32_t ev);
static void on_command(reactor_t *r, reactor_item_t *it);
const reactor_ops_t splicer_ops = {on_command, on_ready, splicer_done};

/* ---- lifetime ---- */

void connect_free(connect_t *cx) {
  if (!cx) return;
  free(cx->pre[0]);
  free(cx->pre[1]);
  free(cx);
}

/* Under s->mu: true (once) when nobody refers to s any more: the caller retires it after
 * unlocking. A stale event of the batch in flight may still lock it; it is freed after. */
bool splicer_unreferenced(splicer_t *s) {
  if (s->retired || s->js_ref || s->thread_ref || s->queued) return false;
  s->retired = true;
  return true;
}

void splicer_retire(splicer_t *s) {
  connect_free(s->cx); /* a stale event stops at `closing`, before the connect phase */
  s->cx = NULL;
  reactor_retire(s->r, &s->item);
}

/* Under s->mu: out of the set, descriptors and pipes closed (pooled on the reactor thread). Idempotent. */
void splicer_close(splicer_t *s, bool on_thread) {
  if (s->closing) return;
  s->closing = true;
  reactor_tunnels(s->r, -1);
  for (int i = 0; i < 2; i++) {
    if (s->fd[i] >= 0) {
      /* Out of the set before the close: another duplicate may keep the socket (and the entry).
       * A tunnel's upstream socket is the reactor's own, never duplicated: its close removes it;
       * so is the client of a tunnel the reactor accepted (accept.c). */
      if (!(s->tunnel && (i == 1 || s->lst))) reactor_watch(s->r, s->fd[i], &s->events[i], 0, &s->item, i);
      close(s->fd[i]);
      s->fd[i] = -1;
    }
    s->events[i] = 0;
    splice_pipe_give(&s->dir[i], on_thread);
    free(s->dir[i].held);
    s->dir[i].held = NULL;
    s->dir[i].held_len = s->dir[i].held_off = 0;
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
 * retires s if splicer_unreferenced. */
static void finish(splicer_t *s, int kind, int err, int side) {
  if (s->lst && kind == END_CONNECT && s->fd[0] >= 0 && s->keep_client) {
    /* An `http` endpoint's client (connect mode): JS answers it 502 or 504, as today's path. */
    reactor_watch(s->r, s->fd[0], &s->events[0], 0, &s->item, 0);
    s->kept_fd = s->fd[0];
    s->fd[0] = -1;
  } else if (s->lst && kind == END_CONNECT && s->fd[0] >= 0) {
    /* A reset tells a raw TCP client at once that nothing was forwarded (as raw-accept.ts). */
    struct linger lg = {1, 0};
    setsockopt(s->fd[0], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  splicer_close(s, true);
  unlink_connecting(s);
  splice_ack_drop(s);
  s->connecting = false;
  s->end_kind = kind;
  s->end_err = err;
  s->end_side = side;
  s->thread_ref = false;
  if (s->lst && !s->announced) {
    listener_ended(s); /* one record of the listener's batch: JS never heard of it */
    return;
  }
  /* A tunnel that ends before it was announced is announced with its end (one wake-up). */
  int note = NOTE_END;
  if (s->connected && !s->announced) {
    s->announced = true;
    note |= NOTE_CONNECTED;
  }
  notify(s, note);
}

/* Reactor thread, under s->mu: links s into the list checked by splicer_tick. */
static void link_connecting(splicer_t *s) {
  connect_t *cx = s->cx;
  if (cx->linked) return;
  cx->next = connecting_head;
  if (connecting_head) connecting_head->cx->prev = s;
  connecting_head = s;
  cx->prev = NULL;
  cx->linked = true;
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
    splice_ack_carried(s, i); /* the segment carried the ACK side i was owed */
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
    if (d->held != NULL) {
      if ((e = splice_write_held(s, d, side)) != 0 || d->held != NULL) return e;
    }
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
        /* The tunnel's last direction, to a descriptor no one else holds (the reactor's own
         * upstream socket, a client it accepted): the close that follows sends the FIN. */
        bool last = s->dir[d->dst].shut && s->tunnel && (d->dst == 1 || s->lst);
        if (!last && shutdown(s->fd[d->dst], SHUT_WR) < 0 && errno != ENOTCONN) {
          *side = d->dst;
          return errno;
        }
      }
      return 0;
    }
    if (!s->can_read[d->src] || moved >= round_bytes) return 0; /* the budget: see on_event */
    if (d->pr < 0 && d->bytes < copy_bytes && splice_copy_buf() != NULL) {
      /* Copy while the direction is young: only once dst takes bytes (no holding ahead). */
      if (!s->can_write[d->dst]) return 0;
      bool stop = false;
      if ((e = splice_copy_once(s, d, &moved, side, &stop)) != 0 || stop) return e;
      continue;
    }
    if (d->pr < 0) {
      e = splice_pipe_take(d);
      if (e != 0) {
        *side = -1;
        return e;
      }
    }
    /* Grow the pipe once a direction proves to be a bulk transfer; short tunnels never pay. */
    if (d->cap < (size_t)s->pipe_size && d->bytes >= GROW_AFTER) splice_pipe_grow(d, (size_t)s->pipe_size);
    ssize_t n = splice(s->fd[d->src], NULL, d->pw, NULL, d->cap, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n <= 0) {
      int e = splice_read_end(s, d, n, side);
      if (e == EAGAIN) return 0;
      if (e != 0 && e != EINTR) return e;
      continue; /* the end of file (then the pipe drains and dst is shut), or EINTR */
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
  if (d->inpipe > 0 || d->held != NULL) return s->can_write[d->dst];
  if (d->eof) return true;
  /* A copying direction reads only once dst takes bytes: its EPOLLOUT edge resumes it. */
  if (d->pr < 0 && d->bytes < copy_bytes && !s->can_write[d->dst]) return false;
  return s->can_read[d->src];
}

/* Whether the upstream's end of stream, just carried to the client, ends the tunnel now
 * (`tunnel_half_close: false`, as nginx stream's default and RFC 9110's CONNECT): decided once,
 * when that direction shuts while the client's is open, and only with nothing left to send to
 * the client and nothing of its unread (a close with unread bytes is a reset, which would drop
 * what is queued). Otherwise the half-close is carried. See bench/analysis-l4.md for the gain. */
static bool up_end_ends(splicer_t *s) {
  if (!s->end_on_up_eof || !s->dir[1].shut || s->dir[0].shut || s->up_end_seen) return false;
  s->up_end_seen = true;
  int unread = 0, unsent = 0;
  return ioctl(s->fd[0], FIONREAD, &unread) == 0 && unread == 0 && ioctl(s->fd[0], SIOCOUTQNSD, &unsent) == 0 &&
         unsent == 0 && s->dir[0].inpipe == 0 && s->dir[0].held == NULL;
}

/* Runs both directions as far as they go; ends the splice when both have shut or on an error. */
static void run_both(splicer_t *s) {
  int side = -1, err = pump(s, &s->dir[0], &side);
  if (!err) err = pump(s, &s->dir[1], &side);
  if (err) {
    finish(s, END_ERROR, err, side);
    return;
  }
  /* The connect phase is kept while the tunnel waits to be announced (its list links are there). */
  if (s->cx && !s->cx->linked && !pre_pending(s, 0) && !pre_pending(s, 1)) {
    connect_free(s->cx);
    s->cx = NULL;
  }
  if ((s->dir[0].shut && s->dir[1].shut) || up_end_ends(s)) {
    finish(s, END_DONE, 0, -1);
    return;
  }
  splice_ack_after_run(s);
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

/* Reactor thread, under s->mu: the upstream connect is done. Announced with the tunnel's end,
 * or by splicer_tick after ANNOUNCE_MS if it runs longer. */
static void became_connected(splicer_t *s) {
  s->connecting = false;
  s->connected = true;
  int64_t now = splicer_now_ms();
  s->connect_ms = (double)(now - s->cx->started);
  s->cx->deadline = now + ANNOUNCE_MS;
  link_connecting(s);
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
      /* Writable without an error or hang-up: connected (a failed connect raises EPOLLERR), so
       * SO_ERROR is read only when there is one to read. */
      int e = (ev & (EPOLLERR | EPOLLHUP)) ? sock_error(s->fd[1], ECONNREFUSED) : 0;
      if (e != 0) {
        finish(s, END_CONNECT, e, 1);
        return;
      }
      became_connected(s);
    } else if (i == 0 && (ev & EPOLLERR)) {
      finish(s, END_ERROR, sock_error(s->fd[0], EIO), 0);
      return;
    }
    if (ev & EPOLLRDHUP) s->rdhup[i] = true;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) s->can_read[i] = true;
    if (ev & (EPOLLOUT | EPOLLHUP)) s->can_write[i] = true;
    if (!s->connecting) run_both(s);
    return;
  }
  if (ev & EPOLLRDHUP) s->rdhup[i] = true;
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
  bool gone = splicer_unreferenced(s);
  pthread_mutex_unlock(&s->mu);
  if (gone) splicer_retire(s);
}

/* Makes fd non-blocking if it is not (a duplicate shares the flag with the caller's descriptor). */
static int ensure_nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)) return errno;
  return 0;
}

/* Reactor thread, under s->mu: the upstream socket of a tunnel, its connect started; with
 * `hold_ack`, the handshake's last ACK waits for the first bytes (s->smart_connect). */
static int start_connect(splicer_t *s, bool hold_ack) {
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
  if (hold_ack) sock_quick_ack(fd, 0);
  cx->started = splicer_now_ms();
  if (connect(fd, (struct sockaddr *)&cx->addr, cx->addrlen) < 0 && errno != EINPROGRESS) return errno;
  s->connecting = true;
  return 0;
}

/* Whether to try a tunnel's client's first bytes before its connect is known to be done: a
 * tunnel with no bytes of its own to write first (a `tcp` endpoint's), while it pays (early_t),
 * unless OXY_EARLY=0. */
static __thread early_t early_other; /* tunnels no listener of this thread accepted */

early_t *splicer_early(splicer_t *s) {
  return s->lst ? listener_early(s->lst) : &early_other;
}

static bool early_worth(splicer_t *s) {
  if (!early_on || !s->cx || s->keep_client || pre_pending(s, 0) || pre_pending(s, 1) ||
      copy_bytes == 0 || splice_copy_buf() == NULL)
    return false;
  early_t *e = splicer_early(s);
  if (e->misses < EARLY_MISSES) return true;
  if (++e->skipped < EARLY_RETRY) return false;
  e->skipped = 0;
  return true;
}

/* Reactor thread, under s->mu, right after the connect started and before the registrations:
 * the client's first bytes go to the upstream now. A connect to this host (loopback, a local
 * address) is done before connect() returns, and a client that speaks first has usually spoken
 * by the time it is accepted: the upstream then finds the connection and its first bytes
 * together (one wake-up, not two), and the tunnel saves a round of events. A send that finds
 * the connect in progress (EAGAIN) holds the bytes for the connect's EPOLLOUT, as a full
 * destination's; one that fails is the connect's failure. Returns 0 or an END_* kind with
 * *err and *side set. */
static int early_copy(splicer_t *s, bool held_ack, int *err, int *side) {
  dir_t *d = &s->dir[0];
  size_t moved = 0;
  bool stop = false;
  s->can_read[0] = s->can_write[1] = true;
  int e = splice_copy_once(s, d, &moved, side, &stop);
  if (e != 0) {
    *err = *side == 1 ? sock_error(s->fd[1], e) : e;
    return *side == 1 ? END_CONNECT : END_ERROR;
  }
  early_t *score = splicer_early(s);
  if (moved > 0 && (d->held == NULL || d->held_len < moved)) {
    became_connected(s); /* the upstream took bytes: connected */
    score->misses = 0;
    score->quiet = 0; /* and they carried the handshake's ACK */
  } else {
    s->can_write[1] = false; /* not known yet: the connect's EPOLLOUT says */
    if (score->misses < EARLY_MISSES) score->misses++;
  }
  /* Bytes held for the connect's EPOLLOUT carry the ACK then; with none, the ACK is held for
   * the client's first bytes, at most ack_hold_ms (splice-ack.c): a server that speaks first
   * must not wait for the kernel's 200 ms to see its connection. */
  if (held_ack && moved == 0) splice_ack_handshake(s);
  return 0;
}

int64_t splicer_now_ms(void) {
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
    int err = 0, side = 1, kind = END_CONNECT;
    /* A client accepted by JS: its ACKs are held if its listener has smart accept. */
    if (!s->lst && s->fd[0] >= 0) s->ack_smart[0] = sock_acks_held(s->fd[0]);
    bool early = early_worth(s), hold_ack = s->cx && s->smart_connect;
    if (s->cx) err = start_connect(s, hold_ack);
    s->ack_smart[1] = hold_ack;
    if (err == 0 && early) {
      int k = early_copy(s, hold_ack, &err, &side);
      if (err != 0) kind = k; /* the connect's failure, or the client's error */
    } else if (err == 0 && hold_ack) {
      splice_ack_handshake(s); /* for the client's first bytes, when they come */
    }
    if (err != 0) {
      finish(s, kind, err, side);
    } else {
      for (int i = 0; i < 2 && err == 0; i++) {
        side = i;
        /* A tunnel's upstream socket was made non-blocking, and its client is a Node socket
         * (libuv accepts and connects with O_NONBLOCK): no fcntl for either. */
        if (!s->tunnel) err = ensure_nonblocking(s->fd[i]);
        /* Once; what is ready already is reported by the next wait. */
        if (err == 0) err = watch(s, i);
      }
      if (err != 0) {
        finish(s, END_ERROR, err, side);
      } else {
        if (s->connecting && s->cx->deadline > 0) link_connecting(s);
        splice_ack_after_run(s); /* the early copy's bytes owe the client an ACK */
      }
    }
  }
  bool gone = splicer_unreferenced(s);
  pthread_mutex_unlock(&s->mu);
  if (gone) splicer_retire(s);
}

/* Before each wait: connects past their deadline fail with ETIMEDOUT; the next deadline. */
static int connects_tick(int64_t now);

/* The sooner of two waits in ms, -1 being none. */
static int sooner(int a, int b) {
  return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

int splicer_tick(reactor_t *r) {
  (void)r;
  int64_t now = splicer_now_ms();
  /* Connects first: one that times out ends, and its listener holds the record back for a
   * moment; the listeners' tick then counts that moment in the wait (in the other order the
   * record waited for the next connection to wake the thread). */
  int b = connects_tick(now), a = listener_tick(now);
  return sooner(sooner(a, b), splice_ack_tick(now));
}

/* Connects past their deadline fail with ETIMEDOUT, connected tunnels due are announced; the next deadline. */
static int connects_tick(int64_t now) {
  if (!connecting_head) return -1;
  int64_t next = INT64_MAX;
  splicer_t *s = connecting_head;
  while (s) {
    pthread_mutex_lock(&s->mu);
    splicer_t *n = s->cx->next;
    if (s->closing) {
      /* Stopped by the JS thread while connecting: this list may have held the last reference. */
      unlink_connecting(s);
      s->thread_ref = splicer_named(s);
    } else if (s->cx->deadline <= now && s->connected) {
      /* Connected a while ago and still running: announce it. */
      unlink_connecting(s);
      s->announced = true;
      notify(s, NOTE_CONNECTED);
      /* JS adopts it (wraps it into an owner); after the post: the listener's news follows it. */
      if (s->lst) listener_announced(s);
      if (!pre_pending(s, 0) && !pre_pending(s, 1)) {
        connect_free(s->cx);
        s->cx = NULL;
      }
    } else if (s->cx->deadline <= now) {
      finish(s, END_CONNECT, ETIMEDOUT, 1);
    } else if (s->cx->deadline < next) {
      next = s->cx->deadline;
    }
    bool gone = splicer_unreferenced(s);
    pthread_mutex_unlock(&s->mu);
    if (gone) splicer_retire(s);
    s = n;
  }
  return next == INT64_MAX ? -1 : (int)(next - now);
}

void splicer_abort(splicer_t *s) {
  if (!s->closing) finish(s, END_ABORT, 0, -1);
}
