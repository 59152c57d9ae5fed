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
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

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

static struct sockaddr_in proxy_addr, target_addr;
static int use_proxy = 0, tunnels_mode = 0;
static const char *name = "localhost", *path = "/1k", *ca_file = NULL;
static int concurrency = 32, sources = 16, source_next = 0;
static double duration = 10;
static char connect_req[512], get_req[512];
static size_t connect_req_len, get_req_len;
static SSL_CTX *ctx;
static long count = 0, errors = 0;
static volatile sig_atomic_t stop_flag = 0;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

static int parse_addr(const char *s, struct sockaddr_in *out) {
  char host[256];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)atoi(colon + 1));
  return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

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
  const struct sockaddr_in *dst = use_proxy ? &proxy_addr : &target_addr;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (sources > 1 && (ntohl(dst->sin_addr.s_addr) >> 24) == 127) {
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001 + (uint32_t)(source_next++ % sources));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
      close(fd);
      return -1;
    }
  }
  if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  s->fd = fd;
  s->st = CONNECTING;
  s->t0 = now();
  s->len = 0;
  /* Edge-triggered both ways: every event drives the slot until OpenSSL or read() would block. */
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = id};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

static int send_plain(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) return -1; /* a few hundred bytes to a fresh socket never hits EAGAIN */
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static size_t head_end(const char *buf, size_t len) {
  const char *e = memmem(buf, len, "\r\n\r\n", 4);
  return e ? (size_t)(e - buf) + 4 : 0;
}

static long content_length(const char *head, size_t n) {
  for (size_t i = 0; i + 16 < n; i++)
    if (head[i] == '\n' && strncasecmp(head + i + 1, "content-length:", 15) == 0)
      return strtol(head + i + 16, NULL, 10);
  return -1;
}

/* Sends the request on a TLS connection whose handshake finished. */
static int send_request(struct slot *s) {
  s->st = RESPONSE;
  s->len = 0;
  s->head_len = 0;
  s->body_need = -1;
  s->t0 = now();
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
        if (use_proxy) {
          s->st = PROXY_READ;
          s->len = 0;
          if (send_plain(s->fd, connect_req, connect_req_len) < 0) return -1;
        } else if (start_tls(s) < 0) return -1;
        continue;
      }
      case PROXY_READ: {
        ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
        if (r < 0) return errno == EAGAIN ? 0 : -1;
        if (r == 0) return -1;
        s->len += (size_t)r;
        size_t h = head_end(s->buf, s->len);
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
          size_t h = head_end(s->buf, s->len);
          if (!h) {
            if (s->len == sizeof s->buf) return -1;
            continue;
          }
          if (s->len < 12 || strncmp(s->buf + 8, " 200", 4) != 0) return -1;
          long cl = content_length(s->buf, h);
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
  const char *target_str = NULL;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) usage();
    if (!strcmp(a, "--proxy")) {
      if (parse_addr(v, &proxy_addr)) usage();
      use_proxy = 1;
    } else if (!strcmp(a, "--target")) {
      if (parse_addr(v, &target_addr)) usage();
      target_str = v;
    } else if (!strcmp(a, "--ca")) ca_file = v;
    else if (!strcmp(a, "--name")) name = v;
    else if (!strcmp(a, "--path")) path = v;
    else if (!strcmp(a, "-c")) concurrency = atoi(v);
    else if (!strcmp(a, "-d")) duration = atof(v);
    else if (!strcmp(a, "--sources")) sources = atoi(v);
    else usage();
    i++;
  }
  if (!target_str || !ca_file || concurrency < 1) usage();
  int port = ntohs(target_addr.sin_port);
  connect_req_len = (size_t)snprintf(connect_req, sizeof connect_req,
                                     "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", name, port, name, port);
  /* No `Connection: close` in either mode: the client closes a tunnel itself, as before. */
  get_req_len = (size_t)snprintf(get_req, sizeof get_req, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, name);

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

  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
  double start = now(), deadline = start + duration, last_sweep = start;
  for (int i = 0; i < concurrency; i++) {
    slots[i].fd = -1;
    if (slot_open(ep, &slots[i], (uint32_t)i) < 0) {
      errors++;
      slots[i].retry_at = start + 0.01;
    }
  }
  struct epoll_event evs[256];
  while (!stop_flag) {
    double t = now();
    if (t >= deadline) break;
    int n = epoll_wait(ep, evs, 256, 10);
    for (int k = 0; k < n; k++) {
      uint32_t id = evs[k].data.u32;
      struct slot *s = &slots[id];
      if (s->fd < 0) continue;
      int rc;
      while ((rc = slot_step(s)) == 1) {
        if (now() >= deadline) break; /* only exchanges finished within the duration count */
        count++;
        if (tunnels_mode) break;
        if (send_request(s) < 0) {
          rc = -1;
          break;
        }
      }
      if (rc == 1 && tunnels_mode) {
        slot_close(ep, s, 0);
        if (slot_open(ep, s, id) < 0) errors++, s->retry_at = now() + 0.01;
      } else if (rc < 0) {
        errors++;
        slot_close(ep, s, now() + 0.01);
      }
    }
    t = now();
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
  double elapsed = now() - start;
  printf("{\"count\":%ld,\"seconds\":%.3f,\"errors\":%ld}\n", count, elapsed, errors);
  return 0;
}
