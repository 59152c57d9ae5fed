/*
 * tls-load: the load generator for S8 (intercepted HTTPS through CONNECT) of the Oxy benchmark.
 *
 * Why it exists: the first S8 client was Node.js TLS in one process; on a two-core machine it
 * spent about as much CPU per request as the proxies it measured, so its own cost set the rates
 * (the "direct" row, no proxy, was 9,172 requests/s). This is a single-threaded epoll loop in C
 * over OpenSSL, spending a few microseconds per request beyond the TLS record work itself, so
 * that the proxies, not the client, set the rate. It never talks to anything but the addresses
 * it is given, and stops by itself when its duration is over.
 *
 *   tls-load keepalive|tunnels --target H:P --ca FILE [--proxy H:P] [--name N] [--path P]
 *            [-c N] [-d SECONDS] [--sources N]
 *     keepalive: `-c` connections (through `CONNECT name:port` when --proxy is given), each a TLS
 *       connection carrying `GET path` after `GET path` (keep-alive); counts responses.
 *     tunnels: `-c` loops, each opening a new connection per request (CONNECT, full TLS
 *       handshake, one `GET path`, close); counts connections. Sessions are never resumed: each
 *       handshake is a full one, as with a client that does not keep sessions.
 *     TLS: SNI and certificate name `--name` (default localhost), verified against `--ca` only,
 *     ALPN `http/1.1`, OpenSSL's default versions (TLS 1.3 here). A response must be `200` with
 *     `Content-Length`. Prints one JSON line: {"count":N,"seconds":S,"errors":E}.
 *
 * Source addresses rotate over 127.0.0.1..127.0.0.N (--sources) so that TIME_WAIT sockets of a
 * 10-second run of new connections do not exhaust the ephemeral ports of one source address.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <sys/epoll.h>

#include "load-common.h"

enum state { CLOSED, CONNECTING, PROXY_READ, HANDSHAKE, RESPONSE };

struct slot {
  int fd;
  SSL *ssl;
  enum state st;
  double t0;        /* when the current step began (for the 10-second stall check) */
  double retry_at;  /* a closed slot reopens at this time (after an error: 10 ms later) */
  size_t len;       /* bytes in buf */
  size_t head_len;  /* length of the response head once parsed, else 0 */
  long body_need;   /* body bytes still to come once the head is parsed */
  char buf[16384];
};

static struct load_args opt = {.path = "/1k", .concurrency = 32, .duration = 10, .sources = 16};
static int tunnels_mode = 0;
static const char *name = "localhost", *ca_file = NULL;
static char connect_req[512], get_req[512];
static size_t connect_req_len, get_req_len;
static SSL_CTX *ctx;
static long count = 0, errors = 0;

static void slot_close(int ep, struct slot *s, double retry_at) {
  if (s->ssl) SSL_free(s->ssl);
  s->ssl = NULL;
  if (s->fd >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
  }
  s->fd = -1;
  s->st = CLOSED;
  s->retry_at = retry_at;
}

static int slot_open(int ep, struct slot *s, uint32_t id) {
  int fd = load_connect(&opt, NULL);
  if (fd < 0) return -1;
  s->fd = fd;
  s->st = CONNECTING;
  s->t0 = load_now();
  s->len = 0;
  /* Edge-triggered both ways: every event drives the slot until OpenSSL or read() would block. */
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = id};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

/* Sends the request on a TLS connection whose handshake finished. */
static int send_request(struct slot *s) {
  s->st = RESPONSE;
  s->len = 0;
  s->head_len = 0;
  s->body_need = -1;
  s->t0 = load_now();
  int w = SSL_write(s->ssl, get_req, (int)get_req_len);
  return w == (int)get_req_len ? 0 : -1; /* a small record on an idle connection is written whole */
}

static int start_tls(struct slot *s) {
  s->ssl = SSL_new(ctx);
  if (!s->ssl) return -1;
  SSL_set_fd(s->ssl, s->fd);
  SSL_set_tlsext_host_name(s->ssl, name);
  SSL_set1_host(s->ssl, name);
  SSL_set_connect_state(s->ssl);
  s->st = HANDSHAKE;
  return 0;
}

/*
 * Drives one slot after an event until it would block. Returns 0 (waiting), 1 (a request
 * completed: the caller counts it and sends the next or reopens) or -1 (error).
 */
static int slot_step(struct slot *s) {
  for (;;) {
    switch (s->st) {
      case CLOSED:
        return 0;
      case CONNECTING: {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) return -1;
        if (opt.use_proxy) {
          s->st = PROXY_READ;
          s->len = 0;
          if (load_send_all(s->fd, connect_req, connect_req_len) < 0) return -1;
        } else if (start_tls(s) < 0) return -1;
        continue;
      }
      case PROXY_READ: {
        ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
        if (r < 0) return errno == EAGAIN ? 0 : -1;
        if (r == 0) return -1;
        s->len += (size_t)r;
        size_t h = load_head_end(s->buf, s->len);
        if (!h) {
          if (s->len == sizeof s->buf) return -1;
          continue;
        }
        /* Nothing may follow the 200 before the client's first TLS byte. */
        if (s->len < 12 || strncmp(s->buf + 8, " 200", 4) != 0 || h != s->len) return -1;
        if (start_tls(s) < 0) return -1;
        continue;
      }
      case HANDSHAKE: {
        int r = SSL_do_handshake(s->ssl);
        if (r == 1) {
          if (send_request(s) < 0) return -1;
          continue;
        }
        int e = SSL_get_error(s->ssl, r);
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
      }
      case RESPONSE: {
        int r = SSL_read(s->ssl, s->buf + s->len, (int)(sizeof s->buf - s->len));
        if (r <= 0) {
          int e = SSL_get_error(s->ssl, r);
          return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
        }
        s->len += (size_t)r;
        if (s->body_need < 0) {
          size_t h = load_head_end(s->buf, s->len);
          if (!h) {
            if (s->len == sizeof s->buf) return -1;
            continue;
          }
          if (s->len < 12 || strncmp(s->buf + 8, " 200", 4) != 0) return -1;
          long cl = load_content_length(s->buf, h);
          if (cl < 0) return -1;
          s->head_len = h;
          s->body_need = cl;
        }
        /* The body is not kept: count down what arrived past the head. */
        long have = (long)(s->len - s->head_len);
        if (have > s->body_need) return -1; /* bytes without a request */
        s->body_need -= have;
        s->len = s->head_len = 0;
        if (s->body_need == 0) return 1;
        continue;
      }
    }
  }
}

static void usage(void) {
  fprintf(stderr,
          "usage: tls-load keepalive|tunnels --target H:P --ca FILE [--proxy H:P] [--name N] [--path P]"
          " [-c N] [-d SECONDS] [--sources N]\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  tunnels_mode = strcmp(argv[1], "tunnels") == 0;
  if (!tunnels_mode && strcmp(argv[1], "keepalive") != 0) usage();
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    int shared = load_shared_option(&opt, a, v);
    if (shared < 0) usage();
    else if (shared == 0) {
      if (!strcmp(a, "--ca")) ca_file = v;
      else if (!strcmp(a, "--name")) name = v;
      else usage();
    }
    i++;
  }
  if (!opt.target_str || !ca_file || opt.concurrency < 1) usage();
  int concurrency = opt.concurrency;
  int port = ntohs(opt.target_addr.sin_port);
  connect_req_len = (size_t)snprintf(connect_req, sizeof connect_req,
                                     "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", name, port, name, port);
  /* No `Connection: close` in either mode: the client closes a tunnel itself, as before. */
  get_req_len = (size_t)snprintf(get_req, sizeof get_req, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", opt.path, name);

  ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx || SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
    fprintf(stderr, "tls-load: cannot load CA file %s\n", ca_file);
    ERR_print_errors_fp(stderr);
    return 2;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);

  load_signals();
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
  double start = load_now(), deadline = start + opt.duration, last_sweep = start;
  for (int i = 0; i < concurrency; i++) {
    slots[i].fd = -1;
    if (slot_open(ep, &slots[i], (uint32_t)i) < 0) {
      errors++;
      slots[i].retry_at = start + 0.01;
    }
  }
  struct epoll_event evs[256];
  while (!load_stop) {
    double t = load_now();
    if (t >= deadline) break;
    int n = epoll_wait(ep, evs, 256, 10);
    for (int k = 0; k < n; k++) {
      uint32_t id = evs[k].data.u32;
      struct slot *s = &slots[id];
      if (s->fd < 0) continue;
      int rc;
      while ((rc = slot_step(s)) == 1) {
        if (load_now() >= deadline) break; /* only exchanges finished within the duration count */
        count++;
        if (tunnels_mode) break;
        if (send_request(s) < 0) {
          rc = -1;
          break;
        }
      }
      if (rc == 1 && tunnels_mode) {
        slot_close(ep, s, 0);
        if (slot_open(ep, s, id) < 0) errors++, s->retry_at = load_now() + 0.01;
      } else if (rc < 0) {
        errors++;
        slot_close(ep, s, load_now() + 0.01);
      }
    }
    t = load_now();
    if (t - last_sweep > 0.01) {
      last_sweep = t;
      for (int i = 0; i < concurrency; i++) {
        struct slot *s = &slots[i];
        if (s->fd >= 0 && t - s->t0 > 10) { /* a step stuck for 10 s is an error */
          errors++;
          slot_close(ep, s, t);
        }
        if (s->fd < 0 && t >= s->retry_at && t < deadline && slot_open(ep, s, (uint32_t)i) < 0) {
          errors++;
          s->retry_at = t + 0.01;
        }
      }
    }
  }
  double elapsed = load_now() - start;
  printf("{\"count\":%ld,\"seconds\":%.3f,\"errors\":%ld}\n", count, elapsed, errors);
  return 0;
}
