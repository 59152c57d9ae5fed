/*
 * Unix sockets Node cannot make: SOCK_SEQPACKET (message boundaries kept), socket pairs of any
 * type, descriptor passing (SCM_RIGHTS), batched writes of whole messages or packets, and
 * execve (to restart the process image with a filter installed before Node starts).
 *
 * Every descriptor made here is non-blocking and close-on-exec unless asked otherwise; child
 * processes receive descriptors through spawn's stdio, which clears close-on-exec on the copy.
 */
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_FDS 64

enum { TYPE_STREAM = 0, TYPE_SEQPACKET = 1, TYPE_DGRAM = 2 };

static int sock_type(int t) {
  return t == TYPE_STREAM ? SOCK_STREAM : t == TYPE_SEQPACKET ? SOCK_SEQPACKET : SOCK_DGRAM;
}

/* Fills a sockaddr_un; a leading '@' names an abstract socket. Returns the length or -1. */
static socklen_t unix_addr(const char *path, size_t len, struct sockaddr_un *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (len == 0 || len >= sizeof sa->sun_path) return 0;
  memcpy(sa->sun_path, path, len);
  if (path[0] == '@') sa->sun_path[0] = 0;
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1));
}

/* unixSocket(type): fd, non-blocking and close-on-exec. */
static napi_value unix_socket(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t type;
  if (!get_args(env, info, 1, argv, NULL) || !arg_int32(env, argv[0], &type)) return NULL;
  int fd = socket(AF_UNIX, sock_type(type) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    throw_errno(env, errno, "socket", "creating a Unix socket");
    return NULL;
  }
  return make_int(env, fd);
}

/* unixBindListen(fd, path, backlog). The caller closes fd on error. */
static napi_value unix_bind_listen(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, backlog;
  char *path, detail[160];
  size_t len;
  struct sockaddr_un sa;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[0], &fd) ||
      !arg_int32(env, argv[2], &backlog) || !arg_string(env, argv[1], &path, &len))
    return NULL;
  socklen_t salen = unix_addr(path, len, &sa);
  snprintf(detail, sizeof detail, "listening on %s", path);
  free(path);
  if (salen == 0) {
    throw_errno(env, ENAMETOOLONG, "bind", detail);
    return NULL;
  }
  if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
    throw_errno(env, errno, "bind", detail);
    return NULL;
  }
  if (listen(fd, backlog) < 0) {
    throw_errno(env, errno, "listen", detail);
    return NULL;
  }
  return make_undefined(env);
}

/* unixConnect(fd, path): true when connected, false when the listener's queue is full (retry). */
static napi_value unix_connect(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  int32_t fd;
  char *path, detail[160];
  size_t len;
  struct sockaddr_un sa;
  if (!get_args(env, info, 2, argv, NULL) || !arg_int32(env, argv[0], &fd) ||
      !arg_string(env, argv[1], &path, &len))
    return NULL;
  socklen_t salen = unix_addr(path, len, &sa);
  snprintf(detail, sizeof detail, "connecting to %s", path);
  free(path);
  if (salen == 0) {
    throw_errno(env, ENAMETOOLONG, "connect", detail);
    return NULL;
  }
  int rc;
  do rc = connect(fd, (struct sockaddr *)&sa, salen);
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno != EAGAIN) {
    throw_errno(env, errno, "connect", detail);
    return NULL;
  }
  napi_get_boolean(env, rc == 0, &out);
  return out;
}

/* socketPair(type, nonBlocking, cloexec): [fd0, fd1]. */
static napi_value socket_pair(napi_env env, napi_callback_info info) {
  napi_value argv[3], out;
  int32_t type;
  bool nonblock, cloexec;
  int sv[2];
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[0], &type) ||
      !arg_bool(env, argv[1], &nonblock) || !arg_bool(env, argv[2], &cloexec))
    return NULL;
  int flags = sock_type(type) | (nonblock ? SOCK_NONBLOCK : 0) | (cloexec ? SOCK_CLOEXEC : 0);
  if (socketpair(AF_UNIX, flags, 0, sv) < 0) {
    throw_errno(env, errno, "socketpair", "creating a Unix socket pair");
    return NULL;
  }
  if (napi_create_array_with_length(env, 2, &out) != napi_ok ||
      napi_set_element(env, out, 0, make_int(env, sv[0])) != napi_ok ||
      napi_set_element(env, out, 1, make_int(env, sv[1])) != napi_ok) {
    close(sv[0]);
    close(sv[1]);
    return NULL;
  }
  return out;
}

/* sendFds(fd, data: Buffer, fds: number[]): bytes sent, or -1 when the socket is full. */
static napi_value send_fds(napi_env env, napi_callback_info info) {
  napi_value argv[3], item;
  int32_t fd, fds[MAX_FDS];
  void *data;
  size_t len;
  uint32_t nfds;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[0], &fd) ||
      !arg_buffer(env, argv[1], &data, &len) || !arg_array(env, argv[2], &nfds))
    return NULL;
  if (nfds > MAX_FDS || len == 0) {
    throw_type(env, "sendFds needs 1+ bytes of data and at most 64 descriptors");
    return NULL;
  }
  for (uint32_t i = 0; i < nfds; i++)
    if (napi_get_element(env, argv[2], i, &item) != napi_ok || !arg_int32(env, item, &fds[i])) return NULL;
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct cmsghdr align;
  } ctrl;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&ctrl, 0, sizeof ctrl);
    msg.msg_control = ctrl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN) {
    throw_errno(env, errno, "sendmsg", "sending descriptors (SCM_RIGHTS)");
    return NULL;
  }
  return make_int(env, n);
}

/* recvFds(fd, maxBytes): { data: Buffer, fds: number[] }, or null when nothing is waiting.
   Received descriptors are close-on-exec. A zero-length data Buffer means the peer closed. */
static napi_value recv_fds(napi_env env, napi_callback_info info) {
  napi_value argv[2], out, data, arr;
  int32_t fd, max;
  if (!get_args(env, info, 2, argv, NULL) || !arg_int32(env, argv[0], &fd) || !arg_int32(env, argv[1], &max))
    return NULL;
  if (max <= 0 || max > (1 << 24)) {
    throw_type(env, "maxBytes must be 1 to 16 MiB");
    return NULL;
  }
  char *buf = malloc((size_t)max);
  if (!buf) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  union {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct cmsghdr align;
  } ctrl;
  struct iovec iov = {.iov_base = buf, .iov_len = (size_t)max};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl.buf, .msg_controllen = sizeof ctrl.buf};
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    free(buf);
    if (err == EAGAIN) {
      napi_get_null(env, &out);
      return out;
    }
    throw_errno(env, err, "recvmsg", "receiving descriptors (SCM_RIGHTS)");
    return NULL;
  }
  int got[MAX_FDS], ngot = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < k && ngot < MAX_FDS; i++) memcpy(&got[ngot++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
  }
  bool ok = napi_create_object(env, &out) == napi_ok && napi_create_array(env, &arr) == napi_ok &&
            napi_create_buffer_copy(env, (size_t)n, buf, NULL, &data) == napi_ok;
  for (int i = 0; ok && i < ngot; i++) ok = napi_set_element(env, arr, (uint32_t)i, make_int(env, got[i])) == napi_ok;
  ok = ok && napi_set_named_property(env, out, "data", data) == napi_ok &&
       napi_set_named_property(env, out, "fds", arr) == napi_ok;
  free(buf);
  if (!ok || (msg.msg_flags & MSG_CTRUNC)) {
    for (int i = 0; i < ngot; i++) close(got[i]);
    if (ok) throw_errno(env, EMSGSIZE, "recvmsg", "more than 64 descriptors in one message");
    return NULL;
  }
  return out;
}

/* writeMany(fd, buffers: Buffer[], isSocket): how many were written whole before the fd
   became full. Each Buffer is one packet or message. */
static napi_value write_many(napi_env env, napi_callback_info info) {
  napi_value argv[3], item;
  int32_t fd;
  uint32_t n, i;
  bool is_socket;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[0], &fd) || !arg_array(env, argv[1], &n) ||
      !arg_bool(env, argv[2], &is_socket))
    return NULL;
  for (i = 0; i < n; i++) {
    void *data;
    size_t len;
    if (napi_get_element(env, argv[1], i, &item) != napi_ok || !arg_buffer(env, item, &data, &len)) return NULL;
    ssize_t w;
    do w = is_socket ? send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT) : write(fd, data, len);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
      /* Report what was written; the next call raises the error on the message at fault. */
      if (errno == EAGAIN || errno == ENOBUFS || i > 0) break;
      throw_errno(env, errno, is_socket ? "send" : "write", is_socket ? "sending a message" : "writing a packet");
      return NULL;
    }
  }
  return make_int(env, i);
}

/* execve(path, argv: string[], env: string[], keep: number[]): only returns by throwing.
   Descriptors in `keep` lose close-on-exec (libuv sets it on stdio it has wrapped), and stdio
   (0-2) is made blocking again, as Node would leave it on exit. */
static napi_value exec_ve(napi_env env, napi_callback_info info) {
  napi_value argv[4], item;
  uint32_t na, ne, nk;
  char *path;
  if (!get_args(env, info, 4, argv, NULL) || !arg_array(env, argv[1], &na) || !arg_array(env, argv[2], &ne) ||
      !arg_array(env, argv[3], &nk) || !arg_string(env, argv[0], &path, NULL))
    return NULL;
  char **args = calloc(na + 1, sizeof(char *)), **envs = calloc(ne + 1, sizeof(char *));
  bool ok = args && envs;
  for (uint32_t i = 0; ok && i < na; i++)
    ok = napi_get_element(env, argv[1], i, &item) == napi_ok && arg_string(env, item, &args[i], NULL);
  for (uint32_t i = 0; ok && i < ne; i++)
    ok = napi_get_element(env, argv[2], i, &item) == napi_ok && arg_string(env, item, &envs[i], NULL);
  for (uint32_t i = 0; ok && i < nk; i++) {
    int32_t fd;
    ok = napi_get_element(env, argv[3], i, &item) == napi_ok && arg_int32(env, item, &fd);
    if (!ok) break;
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl >= 0) fcntl(fd, F_SETFD, fdfl & ~FD_CLOEXEC);
    int fl = fd <= 2 ? fcntl(fd, F_GETFL) : -1;
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  }
  if (ok) {
    execve(path, args, envs);
    throw_errno(env, errno, "execve", path);
  } else if (!args || !envs) {
    napi_throw_error(env, NULL, "out of memory");
  }
  for (uint32_t i = 0; args && i < na; i++) free(args[i]);
  for (uint32_t i = 0; envs && i < ne; i++) free(envs[i]);
  free(args);
  free(envs);
  free(path);
  return NULL;
}

/* setFdFlags(fd, nonBlocking, cloexec): for descriptors received from elsewhere. */
static napi_value set_fd_flags(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  bool nonblock, cloexec;
  if (!get_args(env, info, 3, argv, NULL) || !arg_int32(env, argv[0], &fd) || !arg_bool(env, argv[1], &nonblock) ||
      !arg_bool(env, argv[2], &cloexec))
    return NULL;
  int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);
  if (fl < 0 || fdfl < 0 || fcntl(fd, F_SETFL, nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) < 0 ||
      fcntl(fd, F_SETFD, cloexec ? fdfl | FD_CLOEXEC : fdfl & ~FD_CLOEXEC) < 0) {
    throw_errno(env, errno, "fcntl", "setting descriptor flags");
    return NULL;
  }
  return make_undefined(env);
}

/* socketKind(fd): [domain, type, listening] of a socket descriptor (to check an inherited one). */
static napi_value socket_kind(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int32_t fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_int32(env, argv[0], &fd)) return NULL;
  int domain = 0, type = 0, acc = 0;
  socklen_t l1 = sizeof domain, l2 = sizeof type, l3 = sizeof acc;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l1) < 0 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l2) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l3) < 0) {
    throw_errno(env, errno, "getsockopt", "reading a descriptor's socket kind");
    return NULL;
  }
  if (napi_create_array_with_length(env, 3, &out) != napi_ok || napi_set_element(env, out, 0, make_int(env, domain)) != napi_ok ||
      napi_set_element(env, out, 1, make_int(env, type)) != napi_ok ||
      napi_set_element(env, out, 2, make_int(env, acc)) != napi_ok)
    return NULL;
  return out;
}

/* tcpSetCongestion(fd, name): TCP_CONGESTION on a TCP socket (a listening one passes it on to
 * the connections it accepts). Throws the errno: ENOENT for an algorithm the kernel lacks,
 * EPERM for one outside net.ipv4.tcp_allowed_congestion_control without CAP_NET_ADMIN. */
static napi_value tcp_set_congestion(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  char *name;
  size_t len;
  if (!get_args(env, info, 2, argv, NULL) || !arg_int32(env, argv[0], &fd)) return NULL;
  if (!arg_string(env, argv[1], &name, &len)) return NULL;
  int rc = setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, (socklen_t)len);
  int err = errno;
  if (rc < 0) throw_errno(env, err, "setsockopt", name);
  free(name);
  return NULL;
}

/* tcpSetQuickAck(fd, on): TCP_QUICKACK (off on a listening socket: its connections hold the
 * ACK of their first bytes for the answer to carry; they inherit it). */
static napi_value tcp_set_quick_ack(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  bool on;
  if (!get_args(env, info, 2, argv, NULL) || !arg_int32(env, argv[0], &fd) || !arg_bool(env, argv[1], &on)) return NULL;
  if (sock_quick_ack(fd, on ? 1 : 0) < 0) throw_errno(env, errno, "setsockopt", "TCP_QUICKACK");
  return NULL;
}

/* tcpQuickAck(fd): TCP_QUICKACK as the kernel reports it (false: ACKs held, "pingpong" mode). */
static napi_value tcp_quick_ack(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int32_t fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_int32(env, argv[0], &fd)) return NULL;
  int v = 0;
  socklen_t len = sizeof v;
  if (getsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &v, &len) < 0) {
    throw_errno(env, errno, "getsockopt", "TCP_QUICKACK");
    return NULL;
  }
  if (napi_get_boolean(env, v != 0, &out) != napi_ok) return NULL;
  return out;
}

void register_sock(napi_env env, napi_value exports) {
  set_fn(env, exports, "socketKind", socket_kind);
  set_fn(env, exports, "setFdFlags", set_fd_flags);
  set_fn(env, exports, "unixSocket", unix_socket);
  set_fn(env, exports, "unixBindListen", unix_bind_listen);
  set_fn(env, exports, "unixConnect", unix_connect);
  set_fn(env, exports, "socketPair", socket_pair);
  set_fn(env, exports, "sendFds", send_fds);
  set_fn(env, exports, "recvFds", recv_fds);
  set_fn(env, exports, "writeMany", write_many);
  set_fn(env, exports, "execve", exec_ve);
  set_fn(env, exports, "tcpSetCongestion", tcp_set_congestion);
  set_fn(env, exports, "tcpSetQuickAck", tcp_set_quick_ack);
  set_fn(env, exports, "tcpQuickAck", tcp_quick_ack);
}
