/*
 * The descriptor half of the addon's UDP sockets (udp.c drives them on the event loop): making
 * one (family, SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY, buffer sizes; non-blocking and
 * close-on-exec), adopting one received from elsewhere (checked to be an IPv4/IPv6 datagram
 * socket), bind, connect, the local and peer addresses, and the address conversions both
 * halves share (see udp.h). Nothing here closes a descriptor it did not make.
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

/* ---- addresses ---- */

/* Parses ip into sa for a socket of `family` (an IPv4 address on an IPv6 socket becomes
 * v4-mapped). Returns the length, or 0 when ip is not an address of a usable family. */
socklen_t parse_addr(const char *ip, int port, int family, struct sockaddr_in6 *out) {
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
void addr_to_ints(const struct sockaddr_in6 *sa, int32_t *m) {
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
socklen_t ints_to_addr(const int32_t *m, int family, struct sockaddr_in6 *out) {
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

int sock_family(int fd) {
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

void register_udp_sockets(napi_env env, napi_value exports) {
  set_fn(env, exports, "udpSocket", udp_socket);
  set_fn(env, exports, "udpAdopt", udp_adopt);
  set_fn(env, exports, "udpBind", udp_bind);
  set_fn(env, exports, "udpConnect", udp_connect);
  set_fn(env, exports, "udpAddress", udp_address);
  set_fn(env, exports, "udpPackAddress", udp_pack_address);
}
