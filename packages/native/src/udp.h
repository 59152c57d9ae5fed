/*
 * What the parts of the addon's UDP sockets share: udp-sock.c (descriptors, addresses), udp.c
 * (the socket on the event loop, reading) and udp-send.c (sending and the write queue).
 */
#ifndef OXY_UDP_H
#define OXY_UDP_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "native.h"

#define MAX_BATCH 64
#define META 8
enum { CB_BATCH = 0, CB_ERROR = 1, CB_FATAL = 2, CB_SOCKET_ERROR = 3, CB_TRUNCATED = 4 };
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
  size_t gso_limit; /* runs of datagrams this size or larger go one by one (a refused UDP_SEGMENT) */
  double stats[ST_COUNT];
} udp_t;

/* udp.c */
void call_js(udp_t *u, int kind, int32_t value);
/* Starts or stops the poll handle for what the socket waits for (reading, writability). */
void restart(udp_t *u);
/* The live socket behind a handle, or an exception (TypeError, or EBADF once closed). */
udp_t *get_udp(napi_env env, napi_value v);
bool arg_int32_array(napi_env env, napi_value v, int32_t **data, size_t *len);
bool arg_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len);
/* udp-send.c */
/* Writes the queue, in order, until EAGAIN; returns the first failure's errno (0: none). */
int flush_queue(udp_t *u);
void register_udp_send(napi_env env, napi_value exports);

/* udp-sock.c */
/* Parses ip into sa for a socket of `family` (an IPv4 address on an IPv6 socket becomes
 * v4-mapped). Returns the length, or 0 when ip is not an address of a usable family. */
socklen_t parse_addr(const char *ip, int port, int family, struct sockaddr_in6 *out);
/* Fills 6 ints [port, family, a0..a3] from a socket address. */
void addr_to_ints(const struct sockaddr_in6 *sa, int32_t *m);
/* The reverse of addr_to_ints for a socket of `family`; 0 when the ints name no usable address. */
socklen_t ints_to_addr(const int32_t *m, int family, struct sockaddr_in6 *out);
/* The socket's domain (AF_INET, AF_INET6), or -1 with errno set. */
int sock_family(int fd);
/* Registers udpSocket, udpAdopt, udpBind, udpConnect, udpAddress, udpPackAddress. */
void register_udp_sockets(napi_env env, napi_value exports);

#endif
