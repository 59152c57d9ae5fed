/*
 * The JS thread's half of the listener (accept.c has the reactor thread's): acceptStart,
 * acceptUnpoll, acceptStop, acceptAbort, and listener_done / listener_adopt, which hand the
 * reactor thread's records and announced tunnels to the listener's JS owner.
 */
#include "accept.h" /* first: _GNU_SOURCE */

#include <uv.h>

static napi_value addr_string(napi_env env, const struct sockaddr_storage *ss, int *port) {
  char buf[INET6_ADDRSTRLEN] = "";
  napi_value v;
  *port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    *port = ntohs(a->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    *port = ntohs(a->sin6_port);
  }
  if (napi_create_string_latin1(env, buf, NAPI_AUTO_LENGTH, &v) != napi_ok) return NULL;
  return v;
}

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family) return false;
  if (a->ss_family == AF_INET)
    return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
  if (a->ss_family == AF_INET6)
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
  return false;
}

static void call(napi_env env, napi_value owner, const char *name, size_t argc, napi_value *argv, napi_value *out) {
  napi_value fn, ignored;
  if (out) *out = NULL;
  if (napi_get_named_property(env, owner, name, &fn) != napi_ok) return;
  if (napi_make_callback(env, NULL, owner, fn, argc, argv, out ? out : &ignored) == napi_pending_exception) {
    napi_value e;
    if (out) *out = NULL;
    if (napi_get_and_clear_last_exception(env, &e) == napi_ok) napi_fatal_exception(env, e);
  }
}

/* Builds a string array of the records' hosts (`local`: the local addresses), reusing a string
 * while the host repeats (loopback benchmarks, a few busy clients). */
static napi_value hosts_of(napi_env env, rec_t *recs, size_t n, bool local, double *nums) {
  napi_value arr, prev = NULL;
  const struct sockaddr_storage *prev_ss = NULL;
  if (napi_create_array_with_length(env, n, &arr) != napi_ok) return NULL;
  for (size_t i = 0; i < n; i++) {
    const struct sockaddr_storage *ss = local ? &recs[i].local : &recs[i].peer;
    int port = 0;
    napi_value v = prev;
    if (prev_ss && same_host(prev_ss, ss)) {
      port = ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                            : ((const struct sockaddr_in6 *)ss)->sin6_port);
    } else {
      v = addr_string(env, ss, &port);
      if (!v) return NULL;
    }
    prev = v;
    prev_ss = ss;
    nums[i * REC_FIELDS + (local ? 9 : 8)] = port;
    if (napi_set_element(env, arr, (uint32_t)i, v) != napi_ok) return NULL;
  }
  return arr;
}

/* The records' numbers (REC_FIELDS each), in a new Float64Array. */
static napi_value record_numbers(napi_env env, rec_t *recs, size_t n, double **out) {
  napi_value ab, nums;
  double *d = NULL;
  if (napi_create_arraybuffer(env, n * REC_FIELDS * sizeof(double) + 8, (void **)&d, &ab) != napi_ok ||
      napi_create_typedarray(env, napi_float64_array, n * REC_FIELDS, ab, 0, &nums) != napi_ok)
    return NULL;
  int64_t now = now_ns();
  for (size_t i = 0; i < n; i++) {
    rec_t *rc = &recs[i];
    double *f = d + i * REC_FIELDS;
    f[0] = rc->kind;
    f[1] = rc->b01;
    f[2] = rc->b10;
    f[3] = rc->err;
    f[4] = rc->side;
    f[5] = rc->connect_ms;
    f[6] = (double)(now - rc->accepted_ns) / 1e6;
    f[7] = (double)(now - rc->ended_ns) / 1e6;
    f[10] = rc->id;
    f[11] = rc->fd;
  }
  *out = d;
  return nums;
}

void listener_done(napi_env env, reactor_item_t *it) {
  listener_t *l = (listener_t *)it;
  pthread_mutex_lock(&l->mu);
  rec_t *recs = l->recs;
  size_t n = l->nrec;
  l->recs = NULL;
  l->nrec = l->cap = 0;
  head_t *heads = l->posted;
  l->posted = l->posted_tail = NULL;
  l->queued = false;
  bool stopped = l->stopped;
  pthread_mutex_unlock(&l->mu);
  napi_handle_scope scope;
  napi_value owner = NULL;
  int told = -1; /* the count of live tunnels JS was given with the records; -1: JS was not called */
  if (l->owner && napi_open_handle_scope(env, &scope) == napi_ok) {
    if (napi_get_reference_value(env, l->owner, &owner) != napi_ok) owner = NULL;
    /* Heads first: a record can only be of a head JS already had. */
    if (l->connect_mode) heads_deliver(env, l, owner, heads);
    heads = NULL;
    pthread_mutex_lock(&l->mu);
    int live = l->live; /* after the heads: JS may have let go of some */
    pthread_mutex_unlock(&l->mu);
    double *d = NULL;
    napi_value argv[5];
    if (owner && (n > 0 || stopped || !l->connect_mode) && (argv[0] = record_numbers(env, recs, n, &d)) != NULL) {
      bool ok;
      if (l->connect_mode) {
        ok = napi_create_int32(env, live, &argv[1]) == napi_ok && napi_get_boolean(env, stopped, &argv[2]) == napi_ok;
        if (ok) call(env, owner, "onConnectRecords", 3, argv, NULL);
        if (ok) told = live;
      } else {
        argv[1] = hosts_of(env, recs, n, false, d);
        argv[2] = NULL;
        if (l->wildcard) argv[2] = hosts_of(env, recs, n, true, d);
        else napi_get_null(env, &argv[2]);
        ok = argv[1] && argv[2] && napi_create_int32(env, live, &argv[3]) == napi_ok &&
             napi_get_boolean(env, stopped, &argv[4]) == napi_ok;
        if (ok) call(env, owner, "onRecords", 5, argv, NULL);
        if (ok) told = live;
      }
    }
    napi_close_handle_scope(env, scope);
  }
  if (heads) heads_deliver(env, l, NULL, heads);
  /* Descriptors of failed connects nobody took: closed. */
  for (size_t i = 0; told < 0 && i < n; i++)
    if (recs[i].fd >= 0) close(recs[i].fd);
  free(recs);
  pthread_mutex_lock(&l->mu);
  int live = l->live;
  pthread_mutex_unlock(&l->mu);
  /* Let go once JS was told that nothing is left. A count that fell to 0 after JS was told
   * otherwise posted the listener again (this delivery had cleared `queued`): the next one. */
  if (stopped && live == 0 && told <= 0 && l->held) {
    l->held = false;
    reactor_hold(l->r, -1);
    if (l->owner) {
      napi_delete_reference(env, l->owner);
      l->owner = NULL;
    }
  }
}

bool listener_adopt(napi_env env, splicer_t *s) {
  listener_t *l = s->lst;
  napi_handle_scope scope;
  bool ok = false;
  if (l->owner && napi_open_handle_scope(env, &scope) == napi_ok) {
    napi_value owner, argv[5], tunnel = NULL;
    int pport, lport;
    if (l->connect_mode && napi_get_reference_value(env, l->owner, &owner) == napi_ok && owner) {
      /* JS knows the tunnel by its id (acceptConnect). */
      if (napi_create_double(env, s->lst_id, &argv[0]) == napi_ok) call(env, owner, "onConnectTunnel", 1, argv, &tunnel);
      napi_valuetype t;
      if (tunnel && napi_typeof(env, tunnel, &t) == napi_ok && t == napi_object) ok = splicer_wrap(env, s, tunnel);
    } else if (napi_get_reference_value(env, l->owner, &owner) == napi_ok && owner) {
      argv[0] = addr_string(env, &s->peer, &pport);
      argv[2] = l->wildcard ? addr_string(env, &s->local, &lport) : NULL;
      if (!l->wildcard) {
        lport = 0;
        napi_get_null(env, &argv[2]);
      }
      if (argv[0] && argv[2] && napi_create_int32(env, pport, &argv[1]) == napi_ok &&
          napi_create_int32(env, lport, &argv[3]) == napi_ok &&
          napi_create_double(env, (double)(now_ns() - s->accepted_ns) / 1e6, &argv[4]) == napi_ok)
        call(env, owner, "onTunnel", 5, argv, &tunnel);
      napi_valuetype t;
      if (tunnel && napi_typeof(env, tunnel, &t) == napi_ok && t == napi_object) ok = splicer_wrap(env, s, tunnel);
    }
    napi_close_handle_scope(env, scope);
  }
  if (!ok) reactor_hold(s->r, 1); /* splicer_stop lets go of the hold an adopted tunnel has */
  pthread_mutex_lock(&l->mu);
  l->live--; /* JS has heard of it now (or, not adopted, it is stopped) */
  if (l->stopped && l->live == 0) listener_post(l); /* JS hears that nothing is left */
  pthread_mutex_unlock(&l->mu);
  return ok;
}

/* Asks the reactor thread to look at the flags (once queued, later changes are seen too). */
static void command(listener_t *l) {
  pthread_mutex_lock(&l->mu);
  bool queue = !l->cmd_pending;
  l->cmd_pending = true;
  pthread_mutex_unlock(&l->mu);
  if (queue) reactor_command(l->r, &l->item, false);
}

/* A listener on a duplicate of fd, wrapped into owner and started (JS thread); NULL with an
 * exception pending. `setup` fills in what its mode needs before it starts. */
static listener_t *listener_new(napi_env env, napi_value owner, int fd) {
  reactor_t *r = reactor_for(env);
  if (!r) return NULL;
  listener_t *l = calloc(1, sizeof *l);
  if (!l) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  l->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (l->fd < 0) {
    throw_errno(env, errno, "fcntl", "duplicating the listening descriptor");
    free(l);
    return NULL;
  }
  if (napi_wrap(env, owner, l, NULL, NULL, NULL) != napi_ok) {
    close(l->fd);
    free(l);
    return NULL;
  }
  splicer_config();
  reactor_set_tick(r, splicer_tick);
  pthread_mutex_init(&l->mu, NULL);
  l->item.ops = &listener_ops;
  l->r = r;
  l->env = env;
  return l;
}

static void listener_go(napi_env env, listener_t *l, napi_value owner) {
  napi_create_reference(env, owner, 1, &l->owner);
  l->held = true;
  reactor_hold(l->r, 1);
  command(l);
}

/* acceptStart(owner, listenFd, ip, port, sourceIp, timeoutMs, pipeSize, noDelay, wildcard, smartConnect,
 * endOnUpstreamEnd) */
static napi_value accept_start(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  int32_t fd, port, timeout, pipe_size;
  bool nodelay, wildcard, smart_connect, end_on_up_eof;
  char *ip = NULL, *src = NULL;
  size_t iplen, srclen;
  if (!get_args(env, info, 11, argv, NULL) || !arg_int32(env, argv[1], &fd) || !arg_int32(env, argv[3], &port) ||
      !arg_int32(env, argv[5], &timeout) || !arg_int32(env, argv[6], &pipe_size) || !arg_bool(env, argv[7], &nodelay) ||
      !arg_bool(env, argv[8], &wildcard) || !arg_bool(env, argv[9], &smart_connect) ||
      !arg_bool(env, argv[10], &end_on_up_eof))
    return NULL;
  if (fd < 0 || port <= 0 || port > 65535 || timeout < 0 || pipe_size < 0 || pipe_size > (1 << 24)) {
    throw_type(env, "invalid descriptor, port, timeout or pipe size");
    return NULL;
  }
  struct sockaddr_storage addr, srcaddr;
  socklen_t addrlen = 0, srcaddrlen = 0;
  bool ok = arg_string(env, argv[2], &ip, &iplen) && arg_string(env, argv[4], &src, &srclen);
  if (ok && !splicer_parse_addr(ip, port, &addr, &addrlen)) {
    throw_type(env, "the upstream address must be a literal IP");
    ok = false;
  }
  if (ok && srclen > 0 && !splicer_parse_addr(src, 0, &srcaddr, &srcaddrlen)) {
    throw_type(env, "the source address must be a literal IP");
    ok = false;
  }
  free(ip);
  free(src);
  listener_t *l = ok ? listener_new(env, argv[0], fd) : NULL;
  if (!l) return NULL;
  l->addr = addr;
  l->addrlen = addrlen;
  if (srcaddrlen > 0 && srcaddr.ss_family == addr.ss_family) {
    l->src = srcaddr;
    l->srclen = srcaddrlen;
  }
  l->timeout_ms = timeout;
  l->pipe_size = pipe_size;
  l->nodelay = nodelay;
  l->wildcard = wildcard;
  l->smart_connect = smart_connect;
  l->end_on_up_eof = end_on_up_eof;
  listener_go(env, l, argv[0]);
  return make_undefined(env);
}

/* acceptConnectStart(owner, listenFd, pipeSize, noDelay, wildcard, headTimeoutMs, smartConnect,
 * endOnUpstreamEnd): connect mode (accept-head.c); `smartConnect`: each tunnel's upstream
 * handshake ACK waits for the client's first tunneled bytes (splice-ack.c). */
static napi_value accept_connect_start(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  int32_t fd, pipe_size, head_timeout;
  bool nodelay, wildcard, smart_connect, end_on_up_eof;
  if (!get_args(env, info, 8, argv, NULL) || !arg_int32(env, argv[1], &fd) || !arg_int32(env, argv[2], &pipe_size) ||
      !arg_bool(env, argv[3], &nodelay) || !arg_bool(env, argv[4], &wildcard) ||
      !arg_int32(env, argv[5], &head_timeout) || !arg_bool(env, argv[6], &smart_connect) ||
      !arg_bool(env, argv[7], &end_on_up_eof))
    return NULL;
  if (fd < 0 || pipe_size < 0 || pipe_size > (1 << 24) || head_timeout <= 0) {
    throw_type(env, "invalid descriptor, pipe size or head timeout");
    return NULL;
  }
  listener_t *l = listener_new(env, argv[0], fd);
  if (!l) return NULL;
  l->connect_mode = true;
  l->head_timeout_ms = head_timeout;
  l->pipe_size = pipe_size;
  l->nodelay = nodelay;
  l->wildcard = wildcard;
  l->smart_connect = smart_connect;
  l->end_on_up_eof = end_on_up_eof;
  listener_go(env, l, argv[0]);
  return make_undefined(env);
}

/* acceptConnect(owner, id, fd, ip, port, sourceIp, head, early, timeoutMs): the reactor thread
 * connects to ip:port for the CONNECT head JS had as `fd` (the descriptor is the addon's from
 * now on), writes `head` to the client and `early` upstream, and carries the tunnel as a `tcp`
 * endpoint's; its record (or onConnectTunnel) carries `id`. */
static napi_value accept_connect(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int32_t fd, port, timeout;
  double id;
  if (!get_args(env, info, 9, argv, NULL)) return NULL;
  listener_t *l = unwrap_owner(env, argv[0], "no listener for this owner");
  if (!l || napi_get_value_double(env, argv[1], &id) != napi_ok || !arg_int32(env, argv[2], &fd) ||
      !arg_int32(env, argv[4], &port) || !arg_int32(env, argv[8], &timeout))
    return NULL;
  if (!l->connect_mode || fd < 0 || port <= 0 || port > 65535 || timeout < 0) {
    throw_type(env, "not a connect-mode listener, or an invalid descriptor, port or timeout");
    return NULL;
  }
  connect_t *cx = splicer_connect_args(env, argv[3], port, argv[5], argv[6], argv[7]);
  if (!cx) return NULL;
  splicer_t *s = splicer_alloc(l->r, env, l->pipe_size);
  if (!s) {
    napi_throw_error(env, NULL, "out of memory");
    connect_free(cx);
    return NULL;
  }
  s->accepted_ns = now_ns();
  cx->deadline = timeout > 0 ? s->accepted_ns / 1000000 + timeout : 0;
  s->cx = cx;
  s->tunnel = true;
  s->fd[0] = fd;
  s->thread_ref = true;
  s->lst = l;
  s->lst_id = id;
  s->keep_client = true;
  s->smart_connect = l->smart_connect;
  s->end_on_up_eof = l->end_on_up_eof;
  /* Counted in `live` as its head was: nothing to add. Linked on the reactor thread, which is
   * woken once at the end of this loop turn for every tunnel the turn started. */
  pthread_mutex_lock(&l->mu);
  s->lnext = l->starts;
  l->starts = s;
  bool queue = !l->cmd_pending;
  l->cmd_pending = true;
  pthread_mutex_unlock(&l->mu);
  if (queue) reactor_command(l->r, &l->item, true);
  return make_undefined(env);
}

/* acceptRelease(owner): JS keeps a CONNECT head's descriptor (a refusal it answers itself): the
 * head no longer counts as the listener's. */
static napi_value accept_release(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  listener_t *l = unwrap_owner(env, argv[0], "no listener for this owner");
  if (!l) return NULL;
  pthread_mutex_lock(&l->mu);
  l->live--;
  /* A stopped listener's last: JS hears that nothing is left (and the listener lets go). */
  if (l->stopped && l->live == 0) listener_post(l);
  pthread_mutex_unlock(&l->mu);
  return make_undefined(env);
}

/* acceptUnpoll(fd): takes fd out of libuv's epoll set; false if it is not there (yet). */
static napi_value accept_unpoll(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int32_t fd;
  uv_loop_t *loop;
  if (!get_args(env, info, 1, argv, NULL) || !arg_int32(env, argv[0], &fd)) return NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
  struct epoll_event dummy = {0};
  int bfd = uv_backend_fd(loop);
  napi_get_boolean(env, bfd >= 0 && epoll_ctl(bfd, EPOLL_CTL_DEL, fd, &dummy) == 0, &out);
  return out;
}

/* acceptStop(owner): stops accepting (the duplicate is closed on the reactor thread); returns
 * how many tunnels JS has not heard of yet. */
static napi_value accept_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  listener_t *l = unwrap_owner(env, argv[0], "no listener for this owner");
  if (!l) return NULL;
  pthread_mutex_lock(&l->mu);
  l->stopping = true;
  int live = l->live;
  pthread_mutex_unlock(&l->mu);
  command(l);
  return make_int(env, live);
}

/* acceptAbort(owner): ends every tunnel JS has not heard of (their records follow). */
static napi_value accept_abort(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  listener_t *l = unwrap_owner(env, argv[0], "no listener for this owner");
  if (!l) return NULL;
  pthread_mutex_lock(&l->mu);
  l->aborting = true;
  pthread_mutex_unlock(&l->mu);
  command(l);
  return make_undefined(env);
}

void register_accept(napi_env env, napi_value exports) {
  set_fn(env, exports, "acceptStart", accept_start);
  set_fn(env, exports, "acceptConnectStart", accept_connect_start);
  set_fn(env, exports, "acceptConnect", accept_connect);
  set_fn(env, exports, "acceptRelease", accept_release);
  set_fn(env, exports, "acceptUnpoll", accept_unpoll);
  set_fn(env, exports, "acceptStop", accept_stop);
  set_fn(env, exports, "acceptAbort", accept_abort);
}
