/*
 * Connect mode of the reactor thread's listener (accept.c): for an `http` endpoint whose only
 * JS work per connection is the CONNECT policy, the reactor thread accepts and reads each
 * request head itself, so a short tunnel costs the JS thread no socket, no read and no notes.
 *
 * Per accepted connection the reactor reads up to HEAD_MAX bytes, until the head's blank line:
 * at once after the accept (a client that spoke first needs no watch), then as it turns readable.
 * A complete `CONNECT ` head with nothing after it goes to JS (HEAD_CONNECT): JS runs the policy
 * and answers with acceptConnect (the reactor connects, writes the 2xx and carries the tunnel,
 * as a `tcp` endpoint's) or takes the descriptor itself (acceptRelease: a refusal JS answers).
 * Anything else goes back to JS to serve as any connection (HEAD_BACK, the descriptor and the
 * bytes read): another method (seen from the first bytes: no waiting for the head), bytes after
 * the head, a head at HEAD_MAX without its end, end of file or an error, the head's deadline
 * (head_timeout_ms after the accept: a silent or slow client is not held here), the listener
 * stopping. The HTTP/2 preface is another method (`PRI`).
 *
 * A head is counted in the listener's `live` from its accept until JS let go of it: through a
 * tunnel (whose end the record says), acceptRelease, or a hand-back (counted out once JS has
 * it). So a drain that waits for `live` waits for heads too, also those on their way to JS.
 *
 * Threads: the reading list and a head's fields are the reactor thread's until it is posted;
 * posted heads are the listener's (its mutex), then the JS thread's, which frees them through
 * the reactor (reactor_retire: a batch in flight may still name one).
 *
 * JS side: owner.onHeads(numbers: Float64Array, bytes: Buffer, peers: string[],
 *   locals: string[] | null): HEAD_FIELDS numbers per head: descriptor, kind (HEAD_*), ms since
 *   the accept, peer port, local port, the head's length in `bytes` (heads one after another).
 *   The descriptors are JS's from then on.
 */
#include "accept.h" /* first: _GNU_SOURCE */

#define HEAD_FIELDS 6
static const char CONNECT_SP[] = "CONNECT ";

static void head_ready(reactor_item_t *it, int side, uint32_t ev);
static const reactor_ops_t head_ops = {NULL, head_ready, NULL};

/* ---- reactor thread ---- */

/* The reactor thread's listeners with heads being read (heads_tick looks at their oldest). */
static __thread listener_t *reading_head;

static void reading_unlink(head_t *h) {
  listener_t *l = h->l;
  if (h->prev) h->prev->next = h->next;
  else l->reading = h->next;
  if (h->next) h->next->prev = h->prev;
  else l->reading_tail = h->prev;
  h->prev = h->next = NULL;
}

/* Out of the set and the reading list, onto the listener's posted list for JS as `kind`. */
static void post_head(head_t *h, int kind) {
  listener_t *l = h->l;
  reactor_watch(l->r, h->fd, &h->events, 0, &h->item, 0);
  reading_unlink(h);
  h->kind = kind;
  pthread_mutex_lock(&l->mu);
  if (l->posted_tail) l->posted_tail->next = h;
  else l->posted = h;
  l->posted_tail = h;
  listener_post(l);
  pthread_mutex_unlock(&l->mu);
}

/* True while the bytes read could still begin `CONNECT `. */
static bool may_be_connect(const head_t *h) {
  size_t k = h->n < sizeof CONNECT_SP - 1 ? h->n : sizeof CONNECT_SP - 1;
  return memcmp(h->buf, CONNECT_SP, k) == 0;
}

/* Reads what the client has sent; true once the head is posted (to JS, either kind). */
static bool read_head(head_t *h) {
  size_t before = h->n;
  ssize_t k = recv(h->fd, h->buf + h->n, HEAD_MAX - h->n, MSG_DONTWAIT);
  if (k < 0 && (errno == EAGAIN || errno == EINTR)) return false;
  if (k <= 0) {
    post_head(h, HEAD_BACK); /* end of file or an error: JS's socket sees it again */
    return true;
  }
  h->n += (size_t)k;
  if (!may_be_connect(h)) {
    post_head(h, HEAD_BACK);
    return true;
  }
  size_t from = before > 3 ? before - 3 : 0;
  const char *e = memmem(h->buf + from, h->n - from, "\r\n\r\n", 4);
  if (e) post_head(h, (size_t)(e - h->buf) + 4 == h->n ? HEAD_CONNECT : HEAD_BACK);
  else if (h->n == HEAD_MAX) post_head(h, HEAD_BACK);
  else return false;
  return true;
}

static void head_ready(reactor_item_t *it, int side, uint32_t ev) {
  (void)side;
  (void)ev;
  head_t *h = (head_t *)it;
  if (h->fd < 0 || h->events == 0) return; /* posted already */
  read_head(h);
}

void head_accept(listener_t *l, int cfd, const struct sockaddr_storage *peer) {
  head_t *h = malloc(sizeof *h);
  if (!h) {
    close(cfd);
    return;
  }
  memset(h, 0, offsetof(head_t, buf));
  h->item.ops = &head_ops;
  h->l = l;
  h->fd = cfd;
  h->peer = *peer;
  h->accepted_ns = now_ns();
  h->deadline = h->accepted_ns / 1000000 + l->head_timeout_ms;
  int one = 1;
  if (l->nodelay && !l->nodelay_inherited) setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (l->wildcard) {
    socklen_t len = sizeof h->local;
    getsockname(cfd, (struct sockaddr *)&h->local, &len);
  }
  h->prev = l->reading_tail;
  if (l->reading_tail) l->reading_tail->next = h;
  else l->reading = h;
  l->reading_tail = h;
  pthread_mutex_lock(&l->mu);
  l->live++;
  pthread_mutex_unlock(&l->mu);
  if (!l->reading_linked) {
    l->reading_next = reading_head;
    reading_head = l;
    l->reading_linked = true;
  }
  /* A client that speaks first has usually sent its head by the time it is accepted (under
   * load the accept queue is behind): read it now, and the head costs no watch (an epoll_ctl
   * pair) and no turn of the set. Otherwise level-triggered: a head that arrives in pieces is
   * read piece by piece. A failed watch hands the connection back: JS's socket serves it. */
  if (read_head(h)) return;
  if (reactor_watch(l->r, cfd, &h->events, EPOLLIN | EPOLLRDHUP, &h->item, 0) != 0) post_head(h, HEAD_BACK);
}

void heads_hand_back(listener_t *l) {
  while (l->reading) post_head(l->reading, HEAD_BACK);
}

int heads_tick(int64_t now) {
  int64_t next = INT64_MAX;
  for (listener_t **p = &reading_head; *p;) {
    listener_t *l = *p;
    /* Heads are read in accept order, so their deadlines are in order too. */
    while (l->reading && l->reading->deadline <= now) post_head(l->reading, HEAD_BACK);
    if (!l->reading) {
      *p = l->reading_next;
      l->reading_linked = false;
      continue;
    }
    if (l->reading->deadline < next) next = l->reading->deadline;
    p = &l->reading_next;
  }
  return next == INT64_MAX ? -1 : (int)(next - now);
}

/* ---- JS thread ---- */

static int port_of(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return 0;
}

static napi_value host_of(napi_env env, const struct sockaddr_storage *ss) {
  char buf[INET6_ADDRSTRLEN] = "";
  napi_value v;
  if (ss->ss_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf, sizeof buf);
  else if (ss->ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf, sizeof buf);
  if (napi_create_string_latin1(env, buf, NAPI_AUTO_LENGTH, &v) != napi_ok) return NULL;
  return v;
}

/* The owner's onHeads with the heads of `list` (see the top); false if it could not be called. */
static bool call_on_heads(napi_env env, listener_t *l, napi_value owner, head_t *list) {
  size_t n = 0, total = 0;
  for (head_t *h = list; h; h = h->next) {
    n++;
    total += h->n;
  }
  napi_value ab, nums, buf, peers, locals = NULL, argv[4], fn, ignored;
  double *d;
  uint8_t *bytes;
  if (napi_create_arraybuffer(env, n * HEAD_FIELDS * sizeof(double), (void **)&d, &ab) != napi_ok ||
      napi_create_typedarray(env, napi_float64_array, n * HEAD_FIELDS, ab, 0, &nums) != napi_ok ||
      napi_create_buffer(env, total, (void **)&bytes, &buf) != napi_ok ||
      napi_create_array_with_length(env, n, &peers) != napi_ok)
    return false;
  if (l->wildcard ? napi_create_array_with_length(env, n, &locals) != napi_ok : napi_get_null(env, &locals) != napi_ok)
    return false;
  int64_t now = now_ns();
  size_t i = 0, off = 0;
  napi_value prev = NULL;
  const head_t *prev_h = NULL;
  for (head_t *h = list; h; h = h->next, i++) {
    double *f = d + i * HEAD_FIELDS;
    f[0] = h->fd;
    f[1] = h->kind;
    f[2] = (double)(now - h->accepted_ns) / 1e6;
    f[3] = port_of(&h->peer);
    f[4] = port_of(&h->local);
    f[5] = (double)h->n;
    memcpy(bytes + off, h->buf, h->n);
    off += h->n;
    /* A busy client's host repeats: one string for the run. */
    bool same = prev_h && prev_h->peer.ss_family == h->peer.ss_family &&
                memcmp(&prev_h->peer, &h->peer, sizeof h->peer) == 0;
    napi_value host = same ? prev : host_of(env, &h->peer);
    if (!host || napi_set_element(env, peers, (uint32_t)i, host) != napi_ok) return false;
    prev = host;
    prev_h = h;
    if (l->wildcard) {
      napi_value lh = host_of(env, &h->local);
      if (!lh || napi_set_element(env, locals, (uint32_t)i, lh) != napi_ok) return false;
    }
  }
  argv[0] = nums;
  argv[1] = buf;
  argv[2] = peers;
  argv[3] = locals;
  if (napi_get_named_property(env, owner, "onHeads", &fn) != napi_ok) return false;
  for (head_t *h = list; h; h = h->next) h->fd = -1; /* JS's now */
  if (napi_make_callback(env, NULL, owner, fn, 4, argv, &ignored) == napi_pending_exception) {
    napi_value e;
    if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
  }
  return true;
}

void heads_deliver(napi_env env, listener_t *l, napi_value owner, head_t *list) {
  if (!list) return;
  bool delivered = owner && call_on_heads(env, l, owner, list);
  int gone = 0;
  for (head_t *h = list; h; h = h->next) {
    /* Handed back: JS's connection now. Not delivered: closed, and no longer counted. */
    if (h->kind == HEAD_BACK || !delivered) gone++;
    if (!delivered && h->fd >= 0) close(h->fd);
  }
  pthread_mutex_lock(&l->mu);
  l->live -= gone;
  pthread_mutex_unlock(&l->mu);
  for (head_t *h = list, *n; h; h = n) {
    n = h->next;
    reactor_retire(l->r, &h->item);
  }
}
