/*
 * UDP sockets driven by the event loop, with batched system calls (recvmmsg, sendmmsg).
 *
 * Why not Node's dgram: it cannot adopt a descriptor (so a listening UDP socket cannot be handed
 * to the next process on a graceful restart, nor taken from systemd), and it makes one JS call
 * and one Buffer per datagram. Here one readiness wake-up reads up to `batch` datagrams per
 * recvmmsg call (at most `rounds` calls, so one busy socket cannot starve the loop) and hands each
 * call's datagrams to JS in one callback that allocates nothing: the payloads are in a scratch
 * ArrayBuffer and their offsets, lengths and addresses in an Int32Array, both made by the caller
 * once and shared by every socket of the thread (a callback's views are valid until it returns).
 *
 * Readiness comes from uv_poll on the JS thread, not from the reactor thread: JS must see every
 * datagram anyway, so reading on the reactor would add a cross-thread wake-up (eventfd and
 * uv_async) per batch and put the two threads on one core's run queue on a small VM.
 *
 * Metadata, 8 int32 per datagram: [offset, length, port, family (4, 6; 0 for none), a0..a3], the
 * address in host-order 32-bit words (IPv4: a0; IPv6: a0..a3, v4-mapped as the kernel gives it).
 * Sends take the same layout, so a received batch can be sent back (an echo) or on (a relay)
 * without JS touching a byte; a `header` is sent before each payload (a second iovec: a PROXY
 * protocol or SPP header on replies costs no copy).
 *
 * Functions (the fd belongs to the socket once udpStart returns; before that, and when it
 * throws, to the caller):
 * - udpSocket(family, reuseAddr, reusePort, v6Only (-1 default, 0, 1), rcvbuf, sndbuf): fd
 * - udpAdopt(fd): family (4 or 6), after checking it is a datagram socket; made non-blocking and
 *   close-on-exec
 * - udpBind(fd, ip, port), udpConnect(fd, ip, port), udpAddress(fd, peer): [ip, port] | null
 * - udpStart(fd, scratch: ArrayBuffer, meta: Int32Array, batch, maxSize, rounds, maxQueue, cb):
 *   a handle; cb(kind, value): 0 batch (count), 1 error (errno; reading continues: an ICMP error
 *   on a connected socket, ECONNREFUSED and the like), 2 fatal error (errno; reading stopped),
 *   3 a pending socket error read with SO_ERROR (libuv reports EPOLLERR as EBADF and stops the
 *   handle; it is started again), 4 truncated (how many datagrams of one recvmmsg call were longer
 *   than maxSize and dropped; made only when there are some, before that call's batch)
 * - udpSend(h, data, offset, length, to: ip | Int32Array target | null, port, header | null): 0 sent,
 *   1 queued, 2 dropped (queue full), -errno (this datagram failed)
 * - udpSendMany(h, data, meta, first, count, to: Int32Array | null, header | null, skip): datagrams
 *   first..first+count-1 of meta, each without its first `skip` bytes, sent or queued; `to` ([port,
 *   family, a0..a3]) overrides every datagram's address. A datagram that fails is counted and
 *   skipped; then the result is [accepted, errno of the first failure]. Runs of datagrams of one
 *   size to one destination go as one message with UDP segmentation offload (udp-send.c).
 * - udpControl(h, op, flag): 0 close, 1 reading on/off, 2 ref/unref
 * - udpStats(h): [received, receivedBytes, truncated, sent, sentBytes, queued, dropped,
 *   sendErrors, receiveErrors, batches]
 * - udpPackAddress(ip, port): Int32Array [port, family, a0..a3], for udpSendMany's `to`
 *
 * EAGAIN on send: the datagram is copied into a queue (bounded by maxQueue, beyond which it is
 * dropped and counted, as the kernel drops on a full buffer) and the queue is written, in order,
 * when the socket is writable. A datagram longer than maxSize is never delivered cut: it is
 * dropped and counted as truncated.
 *
 * Lifetime as in poll.c: the struct is freed once the uv handle has closed and the JS external
 * has been finalised.
 *
 * Files: this one drives the socket on the loop and reads; udp-send.c sends and keeps the write
 * queue; udp-sock.c makes, adopts, binds and connects descriptors (shared declarations: udp.h).
 */
#define _GNU_SOURCE
#include "native.h"
#include "udp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>


/* ---- the socket on the loop ---- */

static void free_queue(udp_t *u) {
  for (qitem_t *q = u->qhead; q;) {
    qitem_t *n = q->next;
    free(q);
    q = n;
  }
  u->qhead = u->qtail = NULL;
  u->qlen = 0;
}

static void on_uv_close(uv_handle_t *h) {
  udp_t *u = h->data;
  u->uv_closed = true;
  if (u->finalized) free(u);
}

static void udp_close(udp_t *u) {
  if (u->closing) return;
  u->closing = true;
  uv_poll_stop(&u->poll);
  uv_close((uv_handle_t *)&u->poll, on_uv_close);
  if (u->fd >= 0) close(u->fd);
  free_queue(u);
  napi_ref *refs[] = {&u->cb, &u->scratch_ref, &u->meta_ref};
  for (int i = 0; i < 3; i++) {
    if (*refs[i]) napi_delete_reference(u->env, *refs[i]);
    *refs[i] = NULL;
  }
  if (u->actx) napi_async_destroy(u->env, u->actx);
  u->actx = NULL;
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  udp_t *u = data;
  u->finalized = true;
  udp_close(u);
  if (u->uv_closed) free(u);
}

void call_js(udp_t *u, int kind, int32_t value) {
  napi_env env = u->env;
  napi_handle_scope scope;
  napi_value cb, recv, argv[2], ignored;
  if (u->closing || !u->cb) return;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, u->cb, &cb) == napi_ok && napi_get_global(env, &recv) == napi_ok &&
      napi_create_int32(env, kind, &argv[0]) == napi_ok && napi_create_int32(env, value, &argv[1]) == napi_ok &&
      napi_make_callback(env, u->actx, recv, cb, 2, argv, &ignored) == napi_pending_exception) {
    napi_value err;
    if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static void on_poll(uv_poll_t *h, int status, int events);

void restart(udp_t *u) {
  if (u->closing) return;
  int events = (u->reading ? UV_READABLE : 0) | (u->want_write ? UV_WRITABLE : 0);
  if (events) uv_poll_start(&u->poll, events, on_poll);
  else uv_poll_stop(&u->poll);
}

/* Errors a datagram socket reports and goes on working after: ICMP news, a full buffer. */
static bool soft_error(int e) {
  return e != EBADF && e != ENOTSOCK && e != EINVAL && e != EFAULT && e != ENOMEM;
}

static void read_batches(udp_t *u) {
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH];
  struct sockaddr_in6 addrs[MAX_BATCH];
  for (int round = 0; round < u->rounds && u->reading && !u->closing; round++) {
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)u->batch);
    for (int i = 0; i < u->batch; i++) {
      iov[i].iov_base = u->scratch + (size_t)i * u->stride;
      iov[i].iov_len = u->max_size;
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      if (!u->connected) {
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
      }
    }
    int n = recvmmsg(u->fd, msgs, (unsigned)u->batch, MSG_DONTWAIT | MSG_TRUNC, NULL);
    if (n < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN) return;
      u->stats[ST_RECV_ERR]++;
      if (soft_error(e)) {
        call_js(u, CB_ERROR, e);
        continue;
      }
      u->reading = false;
      restart(u);
      call_js(u, CB_FATAL, e);
      return;
    }
    int k = 0, cut = 0;
    for (int i = 0; i < n; i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        cut++; /* never delivered cut */
        continue;
      }
      int32_t *m = u->meta + (size_t)k * META;
      m[0] = (int32_t)((size_t)i * u->stride);
      m[1] = (int32_t)msgs[i].msg_len;
      if (u->connected) m[2] = m[3] = 0;
      else addr_to_ints(&addrs[i], m + 2);
      u->stats[ST_RECV_BYTES] += msgs[i].msg_len;
      k++;
    }
    u->stats[ST_RECV] += k;
    u->err_spins = 0;
    if (cut > 0) {
      u->stats[ST_TRUNC] += cut;
      call_js(u, CB_TRUNCATED, cut);
    }
    if (k > 0) {
      u->stats[ST_BATCHES]++;
      call_js(u, CB_BATCH, k);
    }
    if (n < u->batch) return; /* drained */
  }
}

/* libuv stops a poll handle on EPOLLERR and reports UV_EBADF: for a UDP socket that is usually a
 * pending socket error (an ICMP port unreachable on a connected socket). Read and clear it; a
 * real EBADF fails the getsockopt. */
static void on_poll_error(udp_t *u, int status) {
  int err = 0;
  socklen_t len = sizeof err;
  if (status == UV_EBADF && getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && u->err_spins < 64) {
    if (err == 0) u->err_spins++; /* raced with a read that took it; a steady stream of these is fatal */
    else {
      u->err_spins = 0;
      u->stats[ST_RECV_ERR]++;
      call_js(u, CB_SOCKET_ERROR, err);
    }
    restart(u); /* libuv stopped the handle: start it again */
    return;
  }
  u->reading = false;
  u->want_write = false;
  restart(u);
  call_js(u, CB_FATAL, -status);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  udp_t *u = h->data;
  if (u->closing) return;
  if (status < 0) {
    on_poll_error(u, status);
    return;
  }
  if (events & UV_WRITABLE) {
    int e = flush_queue(u);
    if (e) call_js(u, CB_ERROR, e);
  }
  if (!u->closing && (events & UV_READABLE) && u->reading) read_batches(u);
}

udp_t *get_udp(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    throw_type(env, "expected a UDP socket handle");
    return NULL;
  }
  udp_t *u = p;
  if (u->closing) {
    throw_errno(env, EBADF, "udp", "using a closed UDP socket");
    return NULL;
  }
  return u;
}

/* An Int32Array's elements, or a TypeError. */
bool arg_int32_array(napi_env env, napi_value v, int32_t **data, size_t *len) {
  bool is;
  napi_typedarray_type t;
  void *d;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &t, len, &d, NULL, NULL) != napi_ok || t != napi_int32_array) {
    throw_type(env, "expected an Int32Array");
    return false;
  }
  *data = d;
  return true;
}

/* Any ArrayBuffer view's bytes (Buffer, Uint8Array, DataView...), or a TypeError. */
bool arg_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is;
  void *d;
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type t;
    size_t n;
    if (napi_get_typedarray_info(env, v, &t, &n, &d, NULL, NULL) == napi_ok && t == napi_uint8_array) {
      *data = d;
      *len = n;
      return true;
    }
  }
  throw_type(env, "expected a Buffer or Uint8Array");
  return false;
}

/* udpStart(fd, scratch, meta, batch, maxSize, rounds, maxQueue, cb): handle, which owns fd from
 * then on; when it throws, fd stays the caller's. */
static napi_value udp_start(napi_env env, napi_callback_info info) {
  napi_value argv[8], out, name;
  int32_t fd, batch, max, rounds, qmax, *meta;
  size_t meta_len, scratch_len;
  void *scratch;
  bool is;
  uv_loop_t *loop;
  if (!get_args(env, info, 8, argv, NULL) || !arg_int32(env, argv[0], &fd) || !arg_int32(env, argv[3], &batch) ||
      !arg_int32(env, argv[4], &max) || !arg_int32(env, argv[5], &rounds) || !arg_int32(env, argv[6], &qmax) ||
      !arg_int32_array(env, argv[2], &meta, &meta_len))
    return NULL;
  if (napi_is_arraybuffer(env, argv[1], &is) != napi_ok || !is ||
      napi_get_arraybuffer_info(env, argv[1], &scratch, &scratch_len) != napi_ok) {
    throw_type(env, "expected an ArrayBuffer for the scratch area");
    return NULL;
  }
  size_t stride = ((size_t)(max > 0 ? max : 1) + 63) & ~(size_t)63;
  if (batch < 1 || batch > MAX_BATCH || max < 1 || max > 65535 || rounds < 1 || rounds > 1024 || qmax < 0 ||
      stride * (size_t)batch > scratch_len || meta_len < (size_t)batch * META) {
    throw_type(env, "invalid batch (1-64), maxSize (1-65535), rounds, maxQueue, or scratch/meta too small");
    return NULL;
  }
  int family = sock_family(fd);
  if (family < 0) {
    throw_errno(env, errno, "getsockopt(SO_DOMAIN)", "watching a UDP socket");
    return NULL;
  }
  struct sockaddr_in6 peer;
  socklen_t plen = sizeof peer;
  bool connected = getpeername(fd, (struct sockaddr *)&peer, &plen) == 0;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
  udp_t *u = calloc(1, sizeof *u);
  if (!u) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  u->env = env;
  u->fd = fd;
  u->family = family;
  u->connected = connected;
  u->batch = batch;
  u->max_size = (size_t)max;
  u->stride = stride;
  u->rounds = rounds;
  u->qmax = (uint32_t)qmax;
  u->gso_limit = 65536;
  u->scratch = scratch;
  u->meta = meta;
  int rc = uv_poll_init(loop, &u->poll, fd);
  if (rc < 0) {
    free(u);
    throw_errno(env, -rc, "uv_poll_init", "watching a UDP socket on the event loop");
    return NULL;
  }
  u->poll.data = u;
  if (napi_create_reference(env, argv[7], 1, &u->cb) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &u->scratch_ref) != napi_ok ||
      napi_create_reference(env, argv[2], 1, &u->meta_ref) != napi_ok ||
      napi_create_string_utf8(env, "native:udp", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &u->actx) != napi_ok ||
      napi_create_external(env, u, finalize, NULL, &out) != napi_ok) {
    u->finalized = true;
    u->fd = -1; /* on failure the descriptor stays the caller's */
    udp_close(u); /* frees u once the handle has closed */
    return NULL;
  }
  return out; /* reading starts with udpControl(h, 1, true) */
}

/* udpControl(h, op, flag): 0 close, 1 reading, 2 ref. */
static napi_value udp_control(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t op;
  bool flag;
  void *p = NULL;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[1], &op) || !arg_bool(env, argv[2], &flag))
    return NULL;
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || !p) {
    throw_type(env, "expected a UDP socket handle");
    return NULL;
  }
  udp_t *u = p;
  if (u->closing) return make_undefined(env);
  switch (op) {
    case 0: udp_close(u); break;
    case 1: u->reading = flag; restart(u); break;
    case 2: if (flag) uv_ref((uv_handle_t *)&u->poll); else uv_unref((uv_handle_t *)&u->poll); break;
    default: throw_type(env, "invalid UDP socket operation"); return NULL;
  }
  return make_undefined(env);
}

/* udpStats(h): the counters (see the top of this file). */
static napi_value udp_stats(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, v;
  void *p = NULL;
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || !p) {
    throw_type(env, "expected a UDP socket handle");
    return NULL;
  }
  udp_t *u = p;
  if (napi_create_array_with_length(env, ST_COUNT, &out) != napi_ok) return NULL;
  for (int i = 0; i < ST_COUNT; i++)
    if (napi_create_double(env, u->stats[i], &v) != napi_ok || napi_set_element(env, out, (uint32_t)i, v) != napi_ok)
      return NULL;
  return out;
}

void register_udp(napi_env env, napi_value exports) {
  register_udp_sockets(env, exports);
  register_udp_send(env, exports);
  set_fn(env, exports, "udpStart", udp_start);
  set_fn(env, exports, "udpControl", udp_control);
  set_fn(env, exports, "udpStats", udp_stats);
}
