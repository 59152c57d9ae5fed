/*
 * The sending half of the addon's UDP sockets (udp.c): one datagram (sendmsg) or many
 * (sendmmsg), each optionally behind a header sent as a second iovec; on EAGAIN the rest is
 * copied into the socket's bounded queue, written in order when the socket is writable
 * (flush_queue, called from udp.c's poll callback). Functions are described in udp.c.
 */
#define _GNU_SOURCE
#include "native.h"
#include "udp.h"

#include <errno.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

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
int flush_queue(udp_t *u) {
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

/*
 * One chunk of udpSendMany: up to MAX_BATCH datagrams as up to MAX_BATCH messages. With UDP
 * segmentation offload a message carries a run of datagrams to one destination, all of one size
 * but the last (which may be shorter), with a UDP_SEGMENT control message: the kernel builds
 * one packet and walks the IP stack once for the run, and splits it into the datagrams on the
 * way out (on loopback, at the receiving socket). A run of one is a plain message.
 *
 * The iovecs are flat: datagram k's are iov[k * niov ...] ([header,] data), so a run's are
 * contiguous.
 */
typedef struct {
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH * 2];
  struct sockaddr_in6 addrs[MAX_BATCH];
  char ctrl[MAX_BATCH][CMSG_SPACE(sizeof(uint16_t))];
  int first[MAX_BATCH], count[MAX_BATCH]; /* each message's datagrams: first index in the chunk, count */
  size_t seg[MAX_BATCH];                   /* each message's segment size (header included) */
  size_t size[MAX_BATCH];                  /* each datagram's size (header included) */
  int n, niov;                             /* messages; iovecs per datagram */
} chunk_t;

/* Most datagrams in one message, and most bytes: the kernel's limits are 64 segments (older
 * kernels) and an IP packet's 64 KiB. */
#define GSO_MAX_SEGS 64
#define GSO_MAX_BYTES 60000

/* Adds datagram k (its iovecs and size already in the chunk) to the last message when it can
 * ride in it, else as a new message. */
static void chunk_add(const udp_t *u, chunk_t *c, int k, const struct sockaddr_in6 *sa, socklen_t salen) {
  size_t size = c->size[k];
  if (c->n > 0) {
    int m = c->n - 1;
    size_t seg = c->seg[m];
    bool last_full = c->size[c->first[m] + c->count[m] - 1] == seg;
    if (last_full && size > 0 && size <= seg && seg < u->gso_limit && c->count[m] < GSO_MAX_SEGS &&
        (size_t)c->count[m] * seg + size <= GSO_MAX_BYTES &&
        c->msgs[m].msg_hdr.msg_namelen == salen && (salen == 0 || memcmp(&c->addrs[m], sa, salen) == 0)) {
      c->count[m]++;
      return;
    }
  }
  int m = c->n++;
  memset(&c->msgs[m], 0, sizeof c->msgs[m]);
  c->first[m] = k;
  c->count[m] = 1;
  c->seg[m] = size;
  if (salen) {
    c->addrs[m] = *sa;
    c->msgs[m].msg_hdr.msg_name = &c->addrs[m];
    c->msgs[m].msg_hdr.msg_namelen = salen;
  }
}

/* Points each message at its datagrams' iovecs, with a UDP_SEGMENT control message for a run. */
static void chunk_finish(chunk_t *c) {
  for (int m = 0; m < c->n; m++) {
    struct msghdr *h = &c->msgs[m].msg_hdr;
    h->msg_iov = &c->iov[c->first[m] * c->niov];
    h->msg_iovlen = (size_t)(c->count[m] * c->niov);
    if (c->count[m] == 1) continue;
    h->msg_control = c->ctrl[m];
    h->msg_controllen = sizeof c->ctrl[m];
    struct cmsghdr *cm = CMSG_FIRSTHDR(h);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t seg = (uint16_t)c->seg[m];
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
}

/*
 * udpSendMany(h, data, meta, first, count, to | null, header | null, skip): sends datagrams
 * first..first+count-1 of meta, each without its first `skip` bytes; how many were sent or
 * queued.
 */
static napi_value udp_send_many(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  uint8_t *data, *hdr;
  size_t size, meta_len, to_len = 0, hlen;
  int32_t *meta, *to = NULL, first, count, skip;
  napi_valuetype t;
  if (!get_args(env, info, 8, argv, NULL) || !arg_bytes(env, argv[1], &data, &size) ||
      !arg_int32_array(env, argv[2], &meta, &meta_len) || !arg_int32(env, argv[3], &first) ||
      !arg_int32(env, argv[4], &count) || napi_typeof(env, argv[5], &t) != napi_ok ||
      !arg_opt_bytes(env, argv[6], &hdr, &hlen) || !arg_int32(env, argv[7], &skip))
    return NULL;
  if (t != napi_null && t != napi_undefined && !arg_int32_array(env, argv[5], &to, &to_len)) return NULL;
  udp_t *u = get_udp(env, argv[0]);
  if (!u) return NULL;
  if (first < 0 || count < 0 || skip < 0 || ((size_t)first + (size_t)count) * META > meta_len || (to && to_len < 6)) {
    throw_type(env, "first and count exceed the metadata, or the address is not [port, family, a0..a3]");
    return NULL;
  }
  meta += (size_t)first * META;
  for (int32_t i = 0; i < count; i++) {
    int32_t *m = meta + (size_t)i * META;
    if (m[0] < 0 || m[1] < skip || (size_t)m[0] + (size_t)m[1] > size) {
      throw_type(env, "a datagram's offset and length fall outside the data");
      return NULL;
    }
  }
  chunk_t c;
  struct sockaddr_in6 sa;
  c.niov = hlen ? 2 : 1;
  int32_t accepted = 0, first_err = 0, i = 0;
  while (i < count) {
    c.n = 0;
    int n = 0;
    for (; i + n < count && n < MAX_BATCH; n++) {
      int32_t *m = meta + (size_t)(i + n) * META;
      struct iovec *v = &c.iov[n * c.niov];
      if (hlen) {
        v->iov_base = hdr;
        v->iov_len = hlen;
        v++;
      }
      v->iov_base = data + m[0] + skip;
      v->iov_len = (size_t)(m[1] - skip);
      c.size[n] = hlen + v->iov_len;
      socklen_t salen = 0;
      /* A datagram with no usable address stops sendmmsg there with an error: it is dropped. */
      if (to || (!u->connected && m[3] != 0)) salen = ints_to_addr(to ? to : m + 2, u->family, &sa);
      chunk_add(u, &c, n, &sa, salen);
    }
    chunk_finish(&c);
    int sent = 0;
    if (!u->qhead) {
      sent = sendmmsg(u->fd, c.msgs, (unsigned)c.n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (sent < 0) {
        int e = errno;
        if (e == EINTR) continue;
        sent = 0;
        if (c.count[0] > 1 && (e == EINVAL || e == EIO || e == EMSGSIZE)) {
          /* The run was refused (a segment over the route's MTU, or no checksum offload on the
           * way): runs of this size or larger go as single datagrams from now on. */
          u->gso_limit = e == EIO ? 0 : c.seg[0];
          continue;
        }
        if (e != EAGAIN && e != ENOBUFS) {
          u->stats[ST_SEND_ERR]++;
          if (!first_err) first_err = e;
          i++; /* the datagram at fault is dropped */
          continue;
        }
      } else {
        int done = 0;
        for (int m = 0; m < sent; m++) done += c.count[m];
        for (int k = 0; k < done; k++) {
          u->stats[ST_SENT]++;
          u->stats[ST_SENT_BYTES] += (double)c.size[k];
        }
        accepted += done;
        i += done; /* after a short count, the next call reports why it stopped */
        continue;
      }
    }
    /* The socket is full (or others wait before these): queue the whole chunk, in order. */
    for (int m = 0; m < c.n; m++)
      for (int k = c.first[m]; k < c.first[m] + c.count[m]; k++) {
        struct iovec *v = &c.iov[k * c.niov + c.niov - 1];
        if (enqueue(u, hdr, hlen, v->iov_base, v->iov_len, &c.addrs[m], c.msgs[m].msg_hdr.msg_namelen)) accepted++;
      }
    i += n;
  }
  if (!first_err) return make_int(env, accepted);
  napi_value out;
  if (napi_create_array_with_length(env, 2, &out) != napi_ok ||
      napi_set_element(env, out, 0, make_int(env, accepted)) != napi_ok ||
      napi_set_element(env, out, 1, make_int(env, first_err)) != napi_ok)
    return NULL;
  return out;
}

void register_udp_send(napi_env env, napi_value exports) {
  set_fn(env, exports, "udpSend", udp_send);
  set_fn(env, exports, "udpSendMany", udp_send_many);
}
