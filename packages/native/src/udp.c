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
 *   handle; it is started again)
 * - udpSend(h, data, offset, length, to: ip | Int32Array target | null, port, header | null): 0 sent,
 *   1 queued, 2 dropped (queue full), -errno (this datagram failed)
 * - udpSendMany(h, data, meta, count, to: Int32Array | null, header | null): datagrams sent or
 *   queued; `to` ([port, family, a0..a3]) overrides every datagram's address. A datagram that fails is
 *   counted and skipped; then the result is [accepted, errno of the first failure].
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
 */
#define _GNU_SOURCE
#include "native.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define MAX_BATCH 64
#define META 8
enum { CB_BATCH = 0, CB_ERROR = 1, CB_FATAL = 2, CB_SOCKET_ERROR = 3 };
enum { ST_RECV, ST_RECV_BYTES, ST_TRUNC, ST_SENT, ST_SENT_BYTES, ST_QUEUED, ST_DROPPED, ST_SEND_ERR, ST_RECV_ERR,
       ST_BATCHES, ST_COUNT };

typedef struct qitem {
  struct qitem *next;
  struct sockaddr_in6 sa;
  socklen_t salen;
  size_t len;
  uint8_t data[];
} qitem_t;

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref cb, scratch_ref, meta_ref;
  napi_async_context actx;
  uint8_t *scratch;
  int32_t *meta;
  size_t stride, max_size;
  int fd, family, batch, rounds;
  bool connected, closing, uv_closed, finalized, reading, want_write;
  int err_spins; /* EPOLLERR with no socket error, in a row */
  qitem_t *qhead, *qtail;
  uint32_t qlen, qmax;
  double stats[ST_COUNT];
} udp_t;

/* ---- addresses ---- */

/* Parses ip into sa for a socket of `family` (an IPv4 address on an IPv6 socket becomes
 * v4-mapped). Returns the length, or 0 when ip is not an address of a usable family. */
static socklen_t parse_addr(const char *ip, int port, int family, struct sockaddr_in6 *out) {
  memset(out, 0, sizeof *out);
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, ip, &a4) == 1) {
    if (family == AF_INET) {
      struct sockaddr_in *s = (struct sockaddr_in *)out;
      s->sin_family = AF_INET;
      s->sin_port = htons((uint16_t)port);
      s->sin_addr = a4;
      return sizeof *s;
    }
    out->sin6_family = AF_INET6;
    out->sin6_port = htons((uint16_t)port);
    out->sin6_addr.s6_addr[10] = 0xff;
    out->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&out->sin6_addr.s6_addr[12], &a4, 4);
    return sizeof *out;
  }
  if (family == AF_INET6 && inet_pton(AF_INET6, ip, &a6) == 1) {
    out->sin6_family = AF_INET6;
    out->sin6_port = htons((uint16_t)port);
    out->sin6_addr = a6;
    return sizeof *out;
  }
  return 0;
}

/* Fills 6 ints [port, family, a0..a3] from a socket address. */
static void addr_to_ints(const struct sockaddr_in6 *sa, int32_t *m) {
  if (sa->sin6_family == AF_INET) {
    const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
    m[0] = ntohs(s->sin_port);
    m[1] = 4;
    m[2] = (int32_t)ntohl(s->sin_addr.s_addr);
    m[3] = m[4] = m[5] = 0;
    return;
  }
  uint32_t w[4];
  memcpy(w, &sa->sin6_addr, 16);
  m[0] = ntohs(sa->sin6_port);
  m[1] = 6;
  for (int i = 0; i < 4; i++) m[2 + i] = (int32_t)ntohl(w[i]);
}

/* The reverse of addr_to_ints for a socket of `family`; 0 when the ints name no usable address. */
static socklen_t ints_to_addr(const int32_t *m, int family, struct sockaddr_in6 *out) {
  memset(out, 0, sizeof *out);
  if (m[0] < 0 || m[0] > 65535) return 0;
  if (m[1] == 4 && family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)out;
    s->sin_family = AF_INET;
    s->sin_port = htons((uint16_t)m[0]);
    s->sin_addr.s_addr = htonl((uint32_t)m[2]);
    return sizeof *s;
  }
  if (family != AF_INET6 || (m[1] != 4 && m[1] != 6)) return 0;
  out->sin6_family = AF_INET6;
  out->sin6_port = htons((uint16_t)m[0]);
  uint32_t w[4] = {0, 0, htonl(0xffff), htonl((uint32_t)m[2])};
  if (m[1] == 6)
    for (int i = 0; i < 4; i++) w[i] = htonl((uint32_t)m[2 + i]);
  memcpy(&out->sin6_addr, w, 16);
  return sizeof *out;
}

/* ---- descriptors ---- */

/* udpSocket(family, reuseAddr, reusePort, v6Only, rcvbuf, sndbuf): fd */
static napi_value udp_socket(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int32_t family, v6only, rcvbuf, sndbuf;
  bool reuse_addr, reuse_port;
  if (!get_args(env, info, 6, argv, NULL) || !arg_int32(env, argv[0], &family) ||
      !arg_bool(env, argv[1], &reuse_addr) || !arg_bool(env, argv[2], &reuse_port) ||
      !arg_int32(env, argv[3], &v6only) || !arg_int32(env, argv[4], &rcvbuf) || !arg_int32(env, argv[5], &sndbuf))
    return NULL;
  if ((family != 4 && family != 6) || rcvbuf < 0 || sndbuf < 0) {
    throw_type(env, "family must be 4 or 6 and buffer sizes non-negative");
    return NULL;
  }
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", "creating a UDP socket");
    return NULL;
  }
  int one = 1;
  const char *call = NULL;
  if (reuse_addr && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) call = "setsockopt(SO_REUSEADDR)";
  else if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
    call = "setsockopt(SO_REUSEPORT)";
  else if (family == 6 && v6only >= 0 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0)
    call = "setsockopt(IPV6_V6ONLY)";
  else if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0)
    call = "setsockopt(SO_RCVBUF)";
  else if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) < 0)
    call = "setsockopt(SO_SNDBUF)";
  if (call) {
    int e = errno;
    close(fd);
    throw_errno(env, e, call, "setting a UDP socket option");
    return NULL;
  }
  return make_int(env, fd);
}

/* udpAdopt(fd): family. */
static napi_value udp_adopt(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_int32(env, argv[0], &fd)) return NULL;
  int type = 0, domain = 0;
  socklen_t l1 = sizeof type, l2 = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) < 0 || getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l2) < 0) {
    throw_errno(env, errno, "getsockopt(SO_TYPE)", "adopting a UDP socket descriptor");
    return NULL;
  }
  if (type != SOCK_DGRAM || (domain != AF_INET && domain != AF_INET6)) {
    throw_errno(env, EPROTOTYPE, "getsockopt(SO_TYPE)", "adopting a descriptor that is not an IPv4 or IPv6 UDP socket");
    return NULL;
  }
  int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
  if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) {
    throw_errno(env, errno, "fcntl", "adopting a UDP socket descriptor");
    return NULL;
  }
  return make_int(env, domain == AF_INET ? 4 : 6);
}

static int sock_family(int fd) {
  int domain = 0;
  socklen_t l = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) < 0) return -1;
  return domain;
}

/* Shared by bind and connect: (fd, ip, port) into a socket address, or an exception. */
static bool addr_args(napi_env env, napi_callback_info info, int32_t *fd, struct sockaddr_in6 *sa, socklen_t *len,
                      const char *what) {
  napi_value argv[3];
  int32_t port;
  char *ip;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[0], fd) || !arg_int32(env, argv[2], &port) ||
      !arg_string(env, argv[1], &ip, NULL))
    return false;
  int family = sock_family(*fd);
  if (family < 0) {
    free(ip);
    throw_errno(env, errno, "getsockopt(SO_DOMAIN)", what);
    return false;
  }
  *len = port < 0 || port > 65535 ? 0 : parse_addr(ip, port, family, sa);
  free(ip);
  if (*len == 0) {
    throw_type(env, "expected an IP address of the socket's family and a port from 0 to 65535");
    return false;
  }
  return true;
}

/* udpBind(fd, ip, port) */
static napi_value udp_bind(napi_env env, napi_callback_info info) {
  int32_t fd;
  struct sockaddr_in6 sa;
  socklen_t len;
  if (!addr_args(env, info, &fd, &sa, &len, "binding a UDP socket")) return NULL;
  if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
    throw_errno(env, errno, "bind", "binding a UDP socket");
    return NULL;
  }
  return make_undefined(env);
}

/* udpConnect(fd, ip, port): a UDP connect only sets the default peer; it never waits. */
static napi_value udp_connect(napi_env env, napi_callback_info info) {
  int32_t fd;
  struct sockaddr_in6 sa;
  socklen_t len;
  if (!addr_args(env, info, &fd, &sa, &len, "connecting a UDP socket")) return NULL;
  int rc;
  do rc = connect(fd, (struct sockaddr *)&sa, len);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    throw_errno(env, errno, "connect", "connecting a UDP socket");
    return NULL;
  }
  return make_undefined(env);
}

/* udpAddress(fd, peer): [ip, port], or null for the peer of an unconnected socket. */
static napi_value udp_address(napi_env env, napi_callback_info info) {
  napi_value argv[2], out, ipv;
  int32_t fd;
  bool peer;
  if (!get_args(env, info, 2, argv, NULL) || !arg_int32(env, argv[0], &fd) || !arg_bool(env, argv[1], &peer))
    return NULL;
  struct sockaddr_in6 sa;
  socklen_t len = sizeof sa;
  memset(&sa, 0, sizeof sa);
  int rc = peer ? getpeername(fd, (struct sockaddr *)&sa, &len) : getsockname(fd, (struct sockaddr *)&sa, &len);
  if (rc < 0) {
    if (peer && errno == ENOTCONN) {
      napi_get_null(env, &out);
      return out;
    }
    throw_errno(env, errno, peer ? "getpeername" : "getsockname", "reading a UDP socket's address");
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  int port;
  if (sa.sin6_family == AF_INET) {
    struct sockaddr_in *s = (struct sockaddr_in *)&sa;
    inet_ntop(AF_INET, &s->sin_addr, text, sizeof text);
    port = ntohs(s->sin_port);
  } else {
    inet_ntop(AF_INET6, &sa.sin6_addr, text, sizeof text);
    port = ntohs(sa.sin6_port);
  }
  if (napi_create_array_with_length(env, 2, &out) != napi_ok ||
      napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &ipv) != napi_ok ||
      napi_set_element(env, out, 0, ipv) != napi_ok || napi_set_element(env, out, 1, make_int(env, port)) != napi_ok)
    return NULL;
  return out;
}

/* udpPackAddress(ip, port): Int32Array [port, family, a0..a3] (for udpSendMany's `to`). */
static napi_value udp_pack_address(napi_env env, napi_callback_info info) {
  napi_value argv[2], ab, out;
  int32_t port;
  char *ip;
  void *data;
  if (!get_args(env, info, 2, argv, NULL) || !arg_int32(env, argv[1], &port) || !arg_string(env, argv[0], &ip, NULL))
    return NULL;
  struct sockaddr_in6 sa;
  socklen_t len = port < 0 || port > 65535 ? 0 : parse_addr(ip, port, AF_INET6, &sa);
  bool v4 = len > 0 && IN6_IS_ADDR_V4MAPPED(&sa.sin6_addr) && strchr(ip, ':') == NULL;
  free(ip);
  if (len == 0) {
    throw_type(env, "expected an IP address and a port from 0 to 65535");
    return NULL;
  }
  if (napi_create_arraybuffer(env, 6 * sizeof(int32_t), &data, &ab) != napi_ok ||
      napi_create_typedarray(env, napi_int32_array, 6, ab, 0, &out) != napi_ok)
    return NULL;
  int32_t *m = data;
  addr_to_ints(&sa, m);
  if (v4) m[1] = 4, m[2] = m[5], m[3] = m[4] = m[5] = 0;
  return out;
}

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

static void call_js(udp_t *u, int kind, int32_t value) {
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

static void restart(udp_t *u) {
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
    int k = 0;
    for (int i = 0; i < n; i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        u->stats[ST_TRUNC]++; /* never delivered cut */
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
    if (k > 0) {
      u->stats[ST_BATCHES]++;
      call_js(u, CB_BATCH, k);
    }
    if (n < u->batch) return; /* drained */
  }
}

/* Copies a datagram (header then data) into the write queue; false when the queue is full (dropped). */
static bool enqueue(udp_t *u, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
                    const struct sockaddr_in6 *sa, socklen_t salen) {
  if (u->qlen >= u->qmax) {
    u->stats[ST_DROPPED]++;
    return false;
  }
  qitem_t *q = malloc(sizeof *q + hlen + len + 1);
  if (!q) {
    u->stats[ST_DROPPED]++;
    return false;
  }
  q->next = NULL;
  q->len = hlen + len;
  q->salen = salen;
  if (salen) memcpy(&q->sa, sa, salen);
  if (hlen) memcpy(q->data, hdr, hlen);
  memcpy(q->data + hlen, data, len);
  if (u->qtail) u->qtail->next = q;
  else u->qhead = q;
  u->qtail = q;
  u->qlen++;
  u->stats[ST_QUEUED] = u->qlen;
  if (!u->want_write) {
    u->want_write = true;
    restart(u);
  }
  return true;
}

/* Writes the queue, in order, until EAGAIN. Failed datagrams are counted and dropped; the first
 * failure's errno is returned (0: none). */
static int flush_queue(udp_t *u) {
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH];
  int first_err = 0;
  while (u->qhead) {
    int n = 0;
    memset(msgs, 0, sizeof msgs);
    for (qitem_t *q = u->qhead; q && n < MAX_BATCH; q = q->next, n++) {
      iov[n].iov_base = q->data;
      iov[n].iov_len = q->len;
      msgs[n].msg_hdr.msg_iov = &iov[n];
      msgs[n].msg_hdr.msg_iovlen = 1;
      if (q->salen) {
        msgs[n].msg_hdr.msg_name = &q->sa;
        msgs[n].msg_hdr.msg_namelen = q->salen;
      }
    }
    int sent = sendmmsg(u->fd, msgs, (unsigned)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    int drop = 0;
    if (sent < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == ENOBUFS) break;
      u->stats[ST_SEND_ERR]++;
      if (!first_err) first_err = e;
      sent = 0;
      drop = 1; /* the datagram at the head failed: drop it and go on */
    }
    for (int i = 0; i < sent + drop; i++) {
      qitem_t *q = u->qhead;
      if (i < sent) {
        u->stats[ST_SENT]++;
        u->stats[ST_SENT_BYTES] += q->len;
      }
      u->qhead = q->next;
      if (!u->qhead) u->qtail = NULL;
      u->qlen--;
      free(q);
    }
  }
  u->stats[ST_QUEUED] = u->qlen;
  if (!u->qhead && u->want_write) {
    u->want_write = false;
    restart(u);
  }
  return first_err;
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

static udp_t *get_udp(napi_env env, napi_value v) {
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
static bool arg_int32_array(napi_env env, napi_value v, int32_t **data, size_t *len) {
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
static bool arg_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
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

/* Sends one datagram (header then data) now, or queues it behind others. 0 sent, 1 queued,
 * 2 dropped, -errno. */
static int send_one(udp_t *u, const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
                    const struct sockaddr_in6 *sa, socklen_t salen) {
  if (u->qhead) return enqueue(u, hdr, hlen, data, len, sa, salen) ? 1 : 2;
  struct iovec iov[2] = {{(void *)hdr, hlen}, {(void *)data, len}};
  struct msghdr msg = {.msg_name = salen ? (void *)sa : NULL,
                       .msg_namelen = salen,
                       .msg_iov = hlen ? iov : iov + 1,
                       .msg_iovlen = hlen ? 2 : 1};
  ssize_t w;
  do w = sendmsg(u->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (w < 0 && errno == EINTR);
  if (w >= 0) {
    u->stats[ST_SENT]++;
    u->stats[ST_SENT_BYTES] += (double)(hlen + len);
    return 0;
  }
  if (errno == EAGAIN || errno == ENOBUFS) return enqueue(u, hdr, hlen, data, len, sa, salen) ? 1 : 2;
  u->stats[ST_SEND_ERR]++;
  return -errno;
}

/* An optional Uint8Array argument (null/undefined: none). */
static bool arg_opt_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  napi_valuetype t;
  *data = NULL;
  *len = 0;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  if (t == napi_null || t == napi_undefined) return true;
  return arg_bytes(env, v, data, len);
}

/* udpSend(h, data, offset, length, to: ip string | Int32Array target | null, port, header | null) */
static napi_value udp_send(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int32_t off, len, port;
  uint8_t *data, *hdr;
  size_t size, hlen;
  napi_valuetype t;
  bool is_target = false;
  if (!get_args(env, info, 7, argv, NULL) || !arg_bytes(env, argv[1], &data, &size) ||
      !arg_int32(env, argv[2], &off) || !arg_int32(env, argv[3], &len) || !arg_int32(env, argv[5], &port) ||
      !arg_opt_bytes(env, argv[6], &hdr, &hlen))
    return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  if (off < 0 || len < 0 || (size_t)off + (size_t)len > size) {
    throw_type(env, "offset and length fall outside the data");
    return NULL;
  }
  struct sockaddr_in6 sa;
  socklen_t salen = 0;
  if (napi_typeof(env, argv[4], &t) != napi_ok || napi_is_typedarray(env, argv[4], &is_target) != napi_ok) return NULL;
  if (is_target) {
    int32_t *to;
    size_t to_len;
    if (!arg_int32_array(env, argv[4], &to, &to_len)) return NULL;
    salen = to_len < 6 ? 0 : ints_to_addr(to, u->family, &sa);
    if (salen == 0) {
      throw_type(env, "the target is not [port, family, a0..a3] of the socket's family");
      return NULL;
    }
  } else if (t != napi_null && t != napi_undefined) {
    char *ip;
    if (!arg_string(env, argv[4], &ip, NULL)) return NULL;
    salen = port < 1 || port > 65535 ? 0 : parse_addr(ip, port, u->family, &sa);
    free(ip);
    if (salen == 0) {
      throw_type(env, "expected an IP address of the socket's family and a port from 1 to 65535");
      return NULL;
    }
  } else if (!u->connected) {
    throw_type(env, "an unconnected UDP socket needs an address and a port to send to");
    return NULL;
  }
  return make_int(env, send_one(u, hdr, hlen, data + off, (size_t)len, &sa, salen));
}

/* udpSendMany(h, data, meta, count, to | null, header | null): datagrams sent or queued. */
static napi_value udp_send_many(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  uint8_t *data, *hdr;
  size_t size, meta_len, to_len = 0, hlen;
  int32_t *meta, *to = NULL, count;
  napi_valuetype t;
  if (!get_args(env, info, 6, argv, NULL) || !arg_bytes(env, argv[1], &data, &size) ||
      !arg_int32_array(env, argv[2], &meta, &meta_len) || !arg_int32(env, argv[3], &count) ||
      napi_typeof(env, argv[4], &t) != napi_ok || !arg_opt_bytes(env, argv[5], &hdr, &hlen))
    return NULL;
  if (t != napi_null && t != napi_undefined && !arg_int32_array(env, argv[4], &to, &to_len)) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  if (count < 0 || (size_t)count * META > meta_len || (to && to_len < 6)) {
    throw_type(env, "count exceeds the metadata, or the address is not [port, family, a0..a3]");
    return NULL;
  }
  for (int32_t i = 0; i < count; i++) {
    int32_t *m = meta + (size_t)i * META;
    if (m[0] < 0 || m[1] < 0 || (size_t)m[0] + (size_t)m[1] > size) {
      throw_type(env, "a datagram's offset and length fall outside the data");
      return NULL;
    }
  }
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH][2];
  struct sockaddr_in6 addrs[MAX_BATCH];
  socklen_t lens[MAX_BATCH];
  int32_t accepted = 0, first_err = 0, i = 0;
  int niov = hlen ? 2 : 1;
  while (i < count) {
    int n = 0;
    memset(msgs, 0, sizeof msgs);
    for (; i + n < count && n < MAX_BATCH; n++) {
      int32_t *m = meta + (size_t)(i + n) * META;
      iov[n][0].iov_base = hdr;
      iov[n][0].iov_len = hlen;
      iov[n][1].iov_base = data + m[0];
      iov[n][1].iov_len = (size_t)m[1];
      msgs[n].msg_hdr.msg_iov = &iov[n][2 - niov];
      msgs[n].msg_hdr.msg_iovlen = (size_t)niov;
      lens[n] = 0;
      if (to || (!u->connected && m[3] != 0)) {
        lens[n] = ints_to_addr(to ? to : m + 2, u->family, &addrs[n]);
        msgs[n].msg_hdr.msg_name = &addrs[n];
        msgs[n].msg_hdr.msg_namelen = lens[n];
      }
    }
    int sent = 0;
    if (!u->qhead) {
      /* A datagram with no usable address stops sendmmsg there with an error: it is dropped. */
      sent = sendmmsg(u->fd, msgs, (unsigned)n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (sent < 0) {
        int e = errno;
        if (e == EINTR) continue;
        sent = 0;
        if (e != EAGAIN && e != ENOBUFS) {
          u->stats[ST_SEND_ERR]++;
          if (!first_err) first_err = e;
          i++; /* the datagram at fault is dropped */
          continue;
        }
      } else {
        for (int k = 0; k < sent; k++) {
          u->stats[ST_SENT]++;
          u->stats[ST_SENT_BYTES] += (double)(hlen + iov[k][1].iov_len);
        }
        accepted += sent;
        i += sent; /* after a short count, the next call reports why it stopped */
        continue;
      }
    }
    /* The socket is full (or others wait before these): queue the rest of this chunk. */
    for (int k = sent; k < n; k++)
      if (enqueue(u, hdr, hlen, iov[k][1].iov_base, iov[k][1].iov_len, &addrs[k], msgs[k].msg_hdr.msg_namelen))
        accepted++;
    i += n - sent;
  }
  if (!first_err) return make_int(env, accepted);
  napi_value out;
  if (napi_create_array_with_length(env, 2, &out) != napi_ok ||
      napi_set_element(env, out, 0, make_int(env, accepted)) != napi_ok ||
      napi_set_element(env, out, 1, make_int(env, first_err)) != napi_ok)
    return NULL;
  return out;
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
  set_fn(env, exports, "udpSocket", udp_socket);
  set_fn(env, exports, "udpAdopt", udp_adopt);
  set_fn(env, exports, "udpBind", udp_bind);
  set_fn(env, exports, "udpConnect", udp_connect);
  set_fn(env, exports, "udpAddress", udp_address);
  set_fn(env, exports, "udpPackAddress", udp_pack_address);
  set_fn(env, exports, "udpStart", udp_start);
  set_fn(env, exports, "udpSend", udp_send);
  set_fn(env, exports, "udpSendMany", udp_send_many);
  set_fn(env, exports, "udpControl", udp_control);
  set_fn(env, exports, "udpStats", udp_stats);
}
