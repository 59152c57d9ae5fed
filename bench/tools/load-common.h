/*
 * load-common.h: what the bench's C load generators (connload.c, tls-load.c) share: the
 * options both take (--proxy, --target, --path, -c, -d, --sources), the clock, the stop signals,
 * a non-blocking TCP connect from a rotating loopback source address, and the few HTTP/1.1
 * response-head helpers they parse answers with.
 *
 * Header only (static functions): each tool is still built from its one .c file with one `cc`
 * command (bench/lib/setup.ts, bench/lib/intercept.ts), which rebuild when this file changes.
 *
 * Ordering: fill a `struct load_args` with the tool's defaults, offer each command-line option
 * to load_shared_option() before the tool's own, call load_signals() before the event loop.
 */
#ifndef LOAD_COMMON_H
#define LOAD_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* The options both tools take; the tool sets its defaults before parsing. */
struct load_args {
  struct sockaddr_in proxy_addr, target_addr;
  int use_proxy;           /* --proxy was given */
  const char *target_str;  /* --target as written (NULL until given) */
  const char *path;        /* --path */
  int concurrency;         /* -c */
  double duration;         /* -d, seconds */
  int sources;             /* --sources: loopback source addresses to rotate over */
};

/* Set by SIGTERM or SIGINT: the event loop stops at its next turn. */
static volatile sig_atomic_t load_stop = 0;

static inline void load_on_signal(int sig) {
  (void)sig;
  load_stop = 1;
}

/* SIGPIPE ignored (a peer's reset is an error return, not a death); SIGTERM, SIGINT stop. */
static inline void load_signals(void) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, load_on_signal);
  signal(SIGINT, load_on_signal);
}

/* Monotonic seconds. */
static inline double load_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Parses an IPv4 `H:P` into `out`; 0 on success, -1 otherwise. */
static inline int load_parse_addr(const char *s, struct sockaddr_in *out) {
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

/*
 * Takes option `a` with value `v` when it is one of the shared options: 1 when taken, 0 when
 * it is not a shared option (the tool's own, or unknown), -1 when its value is malformed.
 */
static inline int load_shared_option(struct load_args *o, const char *a, const char *v) {
  if (!strcmp(a, "--proxy")) {
    if (load_parse_addr(v, &o->proxy_addr)) return -1;
    o->use_proxy = 1;
  } else if (!strcmp(a, "--target")) {
    if (load_parse_addr(v, &o->target_addr)) return -1;
    o->target_str = v;
  } else if (!strcmp(a, "--path")) o->path = v;
  else if (!strcmp(a, "-c")) o->concurrency = atoi(v);
  else if (!strcmp(a, "-d")) o->duration = atof(v);
  else if (!strcmp(a, "--sources")) o->sources = atoi(v);
  else return 0;
  return 1;
}

/*
 * Opens a non-blocking TCP connection (TCP_NODELAY) to the proxy, or to the target without one.
 * To a loopback destination with --sources above 1, the source address rotates over
 * 127.0.0.1..127.0.0.N, so that the TIME_WAIT sockets of a run of short connections do not
 * exhaust the ephemeral ports of one source address. Stores in `*connect_at` (when not NULL) the
 * time connect() was called. Returns the socket (connect in progress), or -1 with nothing open.
 */
static inline int load_connect(const struct load_args *o, double *connect_at) {
  static uint32_t source_next = 0;
  const struct sockaddr_in *dst = o->use_proxy ? &o->proxy_addr : &o->target_addr;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (o->sources > 1 && (ntohl(dst->sin_addr.s_addr) >> 24) == 127) {
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001 + source_next++ % (uint32_t)o->sources);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
      close(fd);
      return -1;
    }
  }
  if (connect_at) *connect_at = load_now();
  if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Writes all of a small message to a fresh socket (a few hundred bytes never hit EAGAIN). */
static inline int load_send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* The length of a response head once "\r\n\r\n" is in `buf`, 0 before. */
static inline size_t load_head_end(const char *buf, size_t len) {
  const char *e = memmem(buf, len, "\r\n\r\n", 4);
  return e ? (size_t)(e - buf) + 4 : 0;
}

/* The Content-Length of a response head of `n` bytes, -1 when it has none. */
static inline long load_content_length(const char *head, size_t n) {
  for (size_t i = 0; i + 16 < n; i++)
    if (head[i] == '\n' && strncasecmp(head + i + 1, "content-length:", 15) == 0)
      return strtol(head + i + 16, NULL, 10);
  return -1;
}

#endif
