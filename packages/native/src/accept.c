/*
 * Accepting on the reactor thread: for a `tcp` endpoint whose every connection goes whole to a
 * fixed address (no hook needs JS per connection), the reactor thread accepts (accept4, up to
 * ACCEPT_BATCH per readiness), connects upstream and carries the bytes as a tunnelStart tunnel
 * does (splice.c); JS hears of a connection only at its end, as one record of a batch (one
 * wake-up and one call for all the connections that ended meanwhile), or, for one that runs
 * longer than ANNOUNCE_MS after its connect, when it is announced: JS then adopts it (wraps it
 * into an owner of its own, as tunnelStart's) for the idle sweep, the lifetime and a drain.
 *
 * The listening socket stays the caller's: the listener works on a duplicate (F_DUPFD_CLOEXEC)
 * and `acceptUnpoll` takes the original out of libuv's epoll set (libuv would otherwise wake
 * the JS thread for the same connections; one it still accepts is served by JS as before).
 * Stopping (`acceptStop`: the caller closes its listening handle) takes the duplicate out of the
 * set and closes it; the tunnels JS has not heard of yet run on, counted (`live`), and end by
 * themselves or at `acceptAbort` (a drain's deadline: kind END_ABORT).
 *
 * Threads and locks: the live list and the descriptor are the reactor thread's; the batch of
 * records, the counters and the flags are guarded by the listener's mutex, which is taken
 * after a splicer's (never the other way round). A listener is never freed (one per endpoint
 * start, a few hundred bytes): tunnels it accepted may refer to it until their end.
 *
 * Records are held back up to RECORD_DELAY_MS (RECORD_BATCH at most) so that one wake-up of the
 * JS thread serves many connections (listener_tick, from the reactor's tick).
 *
 * Connect mode (accept-head.c, acceptConnectStart): for an `http` endpoint the reactor thread
 * reads each connection's request head instead, hands CONNECT heads to JS for the policy and the
 * rest back to JS to serve; a tunnel JS starts for a head (acceptConnect) is linked here as
 * start_one's are, and its record carries JS's id (a failed connect: the client's descriptor).
 *
 * JS side (the owner the listener is wrapped into):
 *   owner.onRecords(numbers: Float64Array, peers: string[], locals: string[] | null, live, stopped)
 *     REC_FIELDS numbers per record: kind (END_*), bytes client→upstream, upstream→client, errno,
 *     side, connect ms (-1: not connected), ms since the accept, ms since the end, peer port,
 *     local port. `locals` only when the listening address is a wildcard.
 *   owner.onTunnel(peer, peerPort, local, localPort, msSinceAccept): returns the adopted tunnel's
 *     owner (onSpliceConnected, onSpliceEnd as tunnelStart's).
 */
#include "accept.h"

static void on_command(reactor_t *r, reactor_item_t *it);
static void on_ready(reactor_item_t *it, int side, uint32_t ev);
const reactor_ops_t listener_ops = {on_command, on_ready, listener_done};

/* ---- reactor thread ---- */

static void live_unlink(splicer_t *s) {
  listener_t *l = s->lst;
  if (s->lprev) s->lprev->lnext = s->lnext;
  else if (l->live_head == s) l->live_head = s->lnext;
  if (s->lnext) s->lnext->lprev = s->lprev;
  s->lprev = s->lnext = NULL;
}

void listener_post(listener_t *l) {
  if (l->queued) return;
  l->queued = true;
  reactor_post(l->r, &l->item);
}
#define post listener_post

/* The reactor thread's listeners holding records back (listener_tick posts them when due). */
static __thread listener_t *due_head;

int listener_tick(int64_t now) {
  int64_t next = INT64_MAX;
  for (listener_t **p = &due_head; *p;) {
    listener_t *l = *p;
    if (l->due_at <= now) {
      pthread_mutex_lock(&l->mu);
      if (l->nrec > 0) post(l);
      pthread_mutex_unlock(&l->mu);
      *p = l->due_next;
      l->due_linked = false;
      continue;
    }
    if (l->due_at < next) next = l->due_at;
    p = &l->due_next;
  }
  int heads = heads_tick(now);
  if (heads >= 0 && (next == INT64_MAX || heads < next - now)) return heads;
  return next == INT64_MAX ? -1 : (int)(next - now);
}

void listener_ended(splicer_t *s) {
  listener_t *l = s->lst;
  live_unlink(s);
  /* A client waiting for its answer to a failed connect is not held back with the others. */
  bool urgent = s->kept_fd >= 0;
  pthread_mutex_lock(&l->mu);
  if (l->nrec == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    rec_t *n = realloc(l->recs, cap * sizeof *n);
    if (n) {
      l->recs = n;
      l->cap = cap;
    }
  }
  if (l->nrec < l->cap) {
    rec_t *rc = &l->recs[l->nrec++];
    rc->kind = s->end_kind;
    rc->err = s->end_err;
    rc->side = s->end_side;
    rc->b01 = (double)s->dir[0].bytes;
    rc->b10 = (double)s->dir[1].bytes;
    rc->connect_ms = s->connected ? s->connect_ms : -1;
    rc->accepted_ns = s->accepted_ns;
    rc->ended_ns = now_ns();
    rc->peer = s->peer;
    rc->local = s->local;
    rc->id = s->lst_id;
    rc->fd = s->kept_fd;
    s->kept_fd = -1;
  }
  l->live--;
  if (s->kept_fd >= 0) close(s->kept_fd); /* no room for its record: nobody can answer it */
  s->kept_fd = -1;
  bool now = l->stopping || urgent || l->nrec >= RECORD_BATCH;
  if (now) post(l);
  pthread_mutex_unlock(&l->mu);
  if (!now && !l->due_linked) {
    l->due_at = splicer_now_ms() + RECORD_DELAY_MS;
    l->due_next = due_head;
    due_head = l;
    l->due_linked = true;
  }
}

void listener_announced(splicer_t *s) {
  live_unlink(s);
  s->adopt = true;
  s->js_ref = true; /* JS adopts it; until then nobody frees it */
  /* Still counted in `live` until JS has adopted it (listener_adopt): a stopped listener whose
   * count reached 0 here would let go of its owner before the adoption, posted after it, came
   * to JS, and the tunnel would end unheard of (no record, a drain waiting for it). */
}

early_t *listener_early(listener_t *l) {
  return &l->early;
}

void listener_start(listener_t *l, splicer_t *s) {
  s->ack_smart[0] = l->acks_held;
  s->lnext = l->live_head;
  if (l->live_head) l->live_head->lprev = s;
  l->live_head = s;
  splicer_ops.command(l->r, &s->item); /* connect and watch, on this thread */
}

/* One accepted client: a tunnel to the listener's target, started as tunnelStart's. */
static void start_one(listener_t *l, int cfd, const struct sockaddr_storage *peer) {
  splicer_t *s = splicer_alloc(l->r, l->env, l->pipe_size);
  connect_t *cx = s ? calloc(1, sizeof *cx) : NULL;
  if (!cx) {
    if (s) reactor_tunnels(l->r, -1);
    free(s);
    close(cfd);
    return;
  }
  int one = 1;
  if (l->nodelay && !l->nodelay_inherited) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  cx->addr = l->addr;
  cx->addrlen = l->addrlen;
  cx->src = l->src;
  cx->srclen = l->srclen;
  s->accepted_ns = now_ns();
  cx->deadline = l->timeout_ms > 0 ? s->accepted_ns / 1000000 + l->timeout_ms : 0;
  s->cx = cx;
  s->tunnel = true;
  s->fd[0] = cfd;
  s->thread_ref = true;
  s->lst = l;
  s->smart_connect = l->smart_connect;
  s->end_on_up_eof = l->end_on_up_eof;
  s->peer = *peer;
  if (l->wildcard) {
    socklen_t len = sizeof s->local;
    getsockname(cfd, (struct sockaddr *)&s->local, &len);
  }
  pthread_mutex_lock(&l->mu);
  l->live++;
  pthread_mutex_unlock(&l->mu);
  listener_start(l, s);
}

static void on_ready(reactor_item_t *it, int side, uint32_t ev) {
  (void)side;
  (void)ev;
  listener_t *l = (listener_t *)it;
  for (int k = 0; k < ACCEPT_BATCH && l->fd >= 0; k++) {
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    int cfd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      break; /* EAGAIN; or out of descriptors: reported again by the next wait */
    }
    if (l->connect_mode) head_accept(l, cfd, &peer);
    else start_one(l, cfd, &peer);
  }
}

static void on_command(reactor_t *r, reactor_item_t *it) {
  listener_t *l = (listener_t *)it;
  pthread_mutex_lock(&l->mu);
  l->cmd_pending = false;
  bool stopping = l->stopping, aborting = l->aborting;
  splicer_t *starts = l->starts;
  l->starts = NULL;
  pthread_mutex_unlock(&l->mu);
  /* Tunnels JS started for heads it decided (acceptConnect), in the order it started them. */
  for (splicer_t *s = starts, *n; s; s = n) {
    n = s->lnext;
    s->lnext = NULL;
    listener_start(l, s);
  }
  if (!stopping && l->fd >= 0 && l->events == 0) {
    /* Accepted sockets inherit TCP_NODELAY from the listening socket: one call, not one per
     * connection. The socket is the caller's too; a connection it accepts itself (before
     * acceptUnpoll) is one of this endpoint's and gets the same option there. */
    int one = 1;
    if (l->nodelay && !l->nodelay_inherited)
      l->nodelay_inherited = setsockopt(l->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0;
    l->acks_held = sock_acks_held(l->fd);
    /* Level-triggered: a batch that leaves connections queued is reported again. */
    if (reactor_watch(r, l->fd, &l->events, EPOLLIN, &l->item, 0) != 0) stopping = true;
  }
  if (stopping && l->fd >= 0) {
    /* Out of the set first: the caller's listening descriptor keeps the socket open. */
    reactor_watch(r, l->fd, &l->events, 0, &l->item, 0);
    close(l->fd);
    l->fd = -1;
    if (l->connect_mode) heads_hand_back(l); /* JS serves them: nothing is held here */
    pthread_mutex_lock(&l->mu);
    l->stopped = true;
    post(l);
    pthread_mutex_unlock(&l->mu);
  }
  if (aborting) {
    for (splicer_t *s = l->live_head, *n; s; s = n) {
      n = s->lnext;
      pthread_mutex_lock(&s->mu);
      splicer_abort(s);
      bool gone = splicer_unreferenced(s);
      pthread_mutex_unlock(&s->mu);
      if (gone) splicer_retire(s);
    }
  }
}
