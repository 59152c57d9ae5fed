/*
 * The JS thread's half of the splicer (splice.c has the reactor thread's): spliceStart and
 * tunnelStart hand a splicer to the reactor thread; its posts come back to splicer_done, which
 * calls the owner; spliceStop, spliceBytes and spliceTotal read or end a running one; and
 * trimMemory. The owner is the JS object the splicer is wrapped into (napi_wrap).
 */
#include "splice.h"

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
void splicer_done(napi_env env, reactor_item_t *it) {
  splicer_t *s = (splicer_t *)it;
  if (s->lst) {
    /* Accepted by the reactor thread and announced: JS adopts it before hearing its news. */
    pthread_mutex_lock(&s->mu);
    bool adopt = s->adopt && s->owner == NULL;
    s->adopt = false;
    pthread_mutex_unlock(&s->mu);
    if (adopt && !listener_adopt(env, s)) {
      pthread_mutex_lock(&s->mu);
      s->queued = false;
      s->notes = 0;
      pthread_mutex_unlock(&s->mu);
      splicer_stop(s);
      return;
    }
  }
  pthread_mutex_lock(&s->mu);
  int notes = s->notes;
  s->notes = 0;
  s->queued = false;
  bool mine = s->js_ref && s->owner != NULL;
  if (mine && (notes & NOTE_END)) s->js_ref = false; /* let go below */
  int kind = s->end_kind, err = s->end_err, side = s->end_side;
  double b0 = (double)s->dir[0].bytes, b1 = (double)s->dir[1].bytes, connect_ms = s->connect_ms;
  bool gone = splicer_unreferenced(s);
  pthread_mutex_unlock(&s->mu);
  if (mine) {
    napi_handle_scope scope;
    if (notes & NOTE_END) reactor_hold(s->r, -1);
    if (napi_open_handle_scope(env, &scope) == napi_ok) {
      napi_value owner = NULL, argv[5];
      if (notes & NOTE_END) owner = release_owner(s);
      else if (napi_get_reference_value(env, s->owner, &owner) != napi_ok) owner = NULL;
      if (owner && (notes & NOTE_CONNECTED) && napi_create_double(env, connect_ms, &argv[0]) == napi_ok)
        call_owner(env, owner, "onSpliceConnected", 1, argv);
      if (owner && (notes & NOTE_END) && napi_create_int32(env, kind, &argv[0]) == napi_ok &&
          napi_create_double(env, b0, &argv[1]) == napi_ok && napi_create_double(env, b1, &argv[2]) == napi_ok &&
          napi_create_int32(env, err, &argv[3]) == napi_ok && napi_create_int32(env, side, &argv[4]) == napi_ok)
        call_owner(env, owner, "onSpliceEnd", 5, argv);
      napi_close_handle_scope(env, scope);
    }
  }
  if (gone) splicer_retire(s);
}

/* JS thread: ends s now (stop, or its owner collected): no callback. True if it had not
 * connected yet (a tunnel: nothing was written to the client). */
bool splicer_stop(splicer_t *s) {
  pthread_mutex_lock(&s->mu);
  bool was_running = s->js_ref;
  bool connecting = s->tunnel && !s->connected;
  splicer_close(s, false);
  /* The reactor thread keeps its reference while its command is pending or a connect deadline
   * or a held ACK names s; otherwise only a batch in flight may (the retirement waits for it). */
  bool pending = splicer_named(s);
  if (s->thread_ref && !pending) s->thread_ref = false;
  s->js_ref = false;
  bool gone = splicer_unreferenced(s);
  pthread_mutex_unlock(&s->mu);
  if (was_running) reactor_hold(s->r, -1);
  if (gone) splicer_retire(s);
  return connecting;
}

/* The owner was collected (or the env torn down) while still wrapped. */
static void finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  splicer_t *s = data;
  if (s->owner) napi_delete_reference(env, s->owner);
  s->owner = NULL;
  splicer_stop(s);
}

/* Reads the splicer's tunables from the environment, once (JS thread). */
void splicer_config(void) {
  if (round_bytes == 0) {
    const char *v = getenv("OXY_SPLICE_ROUND_BYTES");
    long n = v ? strtol(v, NULL, 10) : 0;
    round_bytes = n >= 4096 ? (size_t)n : ROUND_BYTES;
  }
  if (copy_bytes == (size_t)-1) {
    const char *v = getenv("OXY_SPLICE_COPY_BYTES");
    long n = v ? strtol(v, NULL, 10) : -1;
    copy_bytes = n >= 0 ? (size_t)n : COPY_BYTES;
    const char *early = getenv("OXY_EARLY");
    early_on = !(early && strcmp(early, "0") == 0);
    const char *hold = getenv("OXY_ACK_HOLD_MS"), *idle = getenv("OXY_ACK_IDLE_MS");
    if (hold && *hold) ack_hold_ms = strtol(hold, NULL, 10);
    if (idle && *idle) ack_idle_ms = strtol(idle, NULL, 10);
  }
}

splicer_t *splicer_alloc(reactor_t *r, napi_env env, int pipe_size) {
  splicer_t *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  reactor_tunnels(r, 1); /* until splicer_close or splicer_drop */
  reactor_set_tick(r, splicer_tick);
  pthread_mutex_init(&s->mu, NULL);
  s->item.ops = &splicer_ops;
  s->r = r;
  s->env = env;
  s->pipe_size = pipe_size;
  s->fd[0] = s->fd[1] = -1;
  s->kept_fd = -1;
  for (int i = 0; i < 2; i++) {
    s->dir[i].src = i;
    s->dir[i].dst = 1 - i;
    s->dir[i].pr = s->dir[i].pw = -1;
    s->can_write[i] = true; /* until EAGAIN says otherwise */
  }
  return s;
}

static splicer_t *splicer_new(napi_env env, int pipe_size) {
  reactor_t *r = reactor_for(env);
  if (!r) return NULL;
  splicer_config();
  splicer_t *s = splicer_alloc(r, env, pipe_size);
  if (!s) napi_throw_error(env, NULL, "out of memory");
  return s;
}

/* Drops a splicer that never reached the reactor thread. */
static void splicer_drop(splicer_t *s) {
  reactor_tunnels(s->r, -1);
  for (int i = 0; i < 2; i++)
    if (s->fd[i] >= 0) close(s->fd[i]);
  connect_free(s->cx);
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
  /* Woken at the end of the loop turn: a burst of accepted tunnels starts on one wake-up. */
  if (!reactor_command(s->r, &s->item, true)) {
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

bool splicer_wrap(napi_env env, splicer_t *s, napi_value owner) {
  uint32_t refs;
  if (napi_wrap(env, owner, s, finalize, NULL, &s->owner) != napi_ok) return false;
  if (napi_reference_ref(env, s->owner, &refs) != napi_ok) {
    void *ignored;
    napi_remove_wrap(env, owner, &ignored);
    napi_delete_reference(env, s->owner);
    s->owner = NULL;
    return false;
  }
  reactor_hold(s->r, 1);
  return true;
}

/* spliceStart(fd0, fd1, pipeSize, owner, endOnUpstreamEnd): wraps the splicer into owner. The
 * descriptors stay the caller's; fd1 is the upstream. */
static napi_value splice_start(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd0, fd1, pipe_size;
  bool end_on_up_eof;
  if (!get_args(env, info, 5, argv, NULL) || !arg_int32(env, argv[0], &fd0) || !arg_int32(env, argv[1], &fd1) ||
      !arg_int32(env, argv[2], &pipe_size) || !arg_bool(env, argv[4], &end_on_up_eof))
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
  s->end_on_up_eof = end_on_up_eof;
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

/* Parses a literal IP (no zone) and port into `ss` (also accept-js.c's). */
bool splicer_parse_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
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

/* Copies a Buffer argument (or null/undefined: none) into pre-bytes (also accept-js.c's). */
bool splicer_arg_pre(napi_env env, napi_value v, uint8_t **out, size_t *len) {
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

/* The connect of a whole tunnel from JS arguments: `ip` and `src` literal IPs (`src` "" for
 * none; of the other family it is left unbound, as Node does), the bytes written to the client
 * and upstream once connected. NULL with a JS exception pending on bad arguments. */
connect_t *splicer_connect_args(napi_env env, napi_value ip_v, int32_t port, napi_value src_v, napi_value head_v,
                                napi_value early_v) {
  char *ip = NULL, *src = NULL;
  size_t iplen, srclen = 0;
  connect_t *cx = calloc(1, sizeof *cx);
  if (!cx) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  bool ok = arg_string(env, ip_v, &ip, &iplen) && arg_string(env, src_v, &src, &srclen);
  if (ok && !splicer_parse_addr(ip, port, &cx->addr, &cx->addrlen)) {
    throw_type(env, "the upstream address must be a literal IP");
    ok = false;
  }
  if (ok && srclen > 0 && !splicer_parse_addr(src, 0, &cx->src, &cx->srclen)) {
    throw_type(env, "the source address must be a literal IP");
    ok = false;
  }
  if (ok && cx->srclen > 0 && cx->src.ss_family != cx->addr.ss_family) cx->srclen = 0;
  free(ip);
  free(src);
  if (ok)
    ok = splicer_arg_pre(env, head_v, &cx->pre[0], &cx->pre_len[0]) &&
         splicer_arg_pre(env, early_v, &cx->pre[1], &cx->pre_len[1]);
  if (!ok) {
    connect_free(cx);
    return NULL;
  }
  return cx;
}

/* tunnelStart(owner, clientFd, ip, port, sourceIp, head, early, timeoutMs, pipeSize, smartConnect,
 * endOnUpstreamEnd): see the top. */
static napi_value tunnel_start(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  int32_t cfd, port, timeout, pipe_size;
  bool smart_connect, end_on_up_eof;
  if (!get_args(env, info, 11, argv, NULL)) return NULL;
  if (!is_object(env, argv[0])) {
    throw_type(env, "the splice owner must be an object");
    return NULL;
  }
  if (!arg_int32(env, argv[1], &cfd) || !arg_int32(env, argv[3], &port) || !arg_int32(env, argv[7], &timeout) ||
      !arg_int32(env, argv[8], &pipe_size) || !arg_bool(env, argv[9], &smart_connect) ||
      !arg_bool(env, argv[10], &end_on_up_eof))
    return NULL;
  if (cfd < 0 || port <= 0 || port > 65535 || timeout < 0 || pipe_size < 0 || pipe_size > (1 << 24)) {
    throw_type(env, "invalid descriptor, port, timeout or pipe size");
    return NULL;
  }
  connect_t *cx = splicer_connect_args(env, argv[2], port, argv[4], argv[5], argv[6]);
  if (!cx) return NULL;
  splicer_t *s = splicer_new(env, pipe_size);
  if (!s) {
    connect_free(cx);
    return NULL;
  }
  s->cx = cx;
  s->tunnel = true;
  s->smart_connect = smart_connect;
  s->end_on_up_eof = end_on_up_eof;
  cx->deadline = timeout > 0 ? splicer_now_ms() + timeout : 0;
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
  return unwrap_owner(env, owner, "no splice is running for this owner");
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
  napi_get_boolean(env, splicer_stop(s), &out);
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

