/*
 * connload: the load generator for the tunnel scenarios (S3, S4) of the Oxy benchmark.
 *
 * Why it exists: a Node.js or curl client opening tens of thousands of short CONNECT tunnels a
 * second would itself be the bottleneck, so this is a single-threaded epoll loop in C that
 * spends almost nothing per tunnel. It never talks to anything but the addresses it is given,
 * and stops by itself when its duration is over.
 *
 *   connload tunnels --target H:P [--proxy H:P] [--path /1k] [-c 64] [-d 10] [--sources 16]
 *     Keeps `-c` tunnels in flight for `-d` seconds. Each one: TCP connect to the proxy,
 *     `CONNECT target`, wait for 200, one `GET path` inside, read the whole response, close.
 *     Without --proxy the GET goes straight to the target (the "direct" limit of the machine).
 *     Prints one JSON line: tunnels, tunnels_per_s, errors, setup latency p50/p99 in ms.
 *     Setup latency is from connect() to the proxy's 200 (to TCP connect without a proxy).
 *
 *   connload idle --proxy H:P --target H:P [-n 5000] [-c 200]
 *     Opens `-n` tunnels (at most `-c` being set up at once), keeps them open and silent, prints
 *     one JSON line once all are settled, then waits until its stdin closes or SIGTERM.
 *
 * Source addresses rotate over 127.0.0.1..127.0.0.N (--sources) so that TIME_WAIT sockets of a
 * 10-second run do not exhaust the ephemeral ports of a single source address.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum state { IDLE_SLOT, CONNECTING, READ_CONNECT_RESP, READ_RESP, ESTABLISHED };

struct slot {
  int fd;
  enum state st;
  double t0;
  size_t len;
  long body_need; /* -1 until the response head is parsed */
  size_t head_len;
  char buf[4096];
};

static struct sockaddr_in proxy_addr, target_addr;
static int use_proxy = 0;
static const char *target_str = NULL;
static const char *path = "/1k";
static int concurrency = 64;
static double duration = 10;
static int count = 5000;
static int sources = 16;
static int source_next = 0;
static char connect_req[512], get_req[512];
static size_t connect_req_len, get_req_len;
static volatile sig_atomic_t stop_flag = 0;

static uint32_t *lat_us;
static size_t lat_n = 0, lat_cap = 0;
static long done_ok = 0, errors = 0, timeouts = 0, refused = 0;

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
  memcpy(host, s, colon - s);
  host[colon - s] = 0;
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)atoi(colon + 1));
  return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static void record_latency(double seconds) {
  if (lat_n == lat_cap) {
    lat_cap = lat_cap ? lat_cap * 2 : 65536;
    lat_us = realloc(lat_us, lat_cap * sizeof *lat_us);
    if (!lat_us) {
      perror("realloc");
      exit(1);
    }
  }
  lat_us[lat_n++] = (uint32_t)(seconds * 1e6);
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static double percentile_ms(double p) {
  if (lat_n == 0) return 0;
  size_t i = (size_t)(p / 100.0 * (lat_n - 1) + 0.5);
  return lat_us[i] / 1000.0;
}

static void slot_close(int ep, struct slot *s) {
  if (s->fd >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
  }
  s->fd = -1;
  s->st = IDLE_SLOT;
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
  s->fd = fd;
  s->st = CONNECTING;
  s->t0 = now();
  s->len = 0;
  s->body_need = -1;
  s->head_len = 0;
  if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) < 0 && errno != EINPROGRESS) {
    close(fd);
    s->fd = -1;
    s->st = IDLE_SLOT;
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = id};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return 0;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) return -1; /* a few hundred bytes to a fresh socket never hits EAGAIN */
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Returns the length of the response head once "\r\n\r\n" is in the buffer, 0 before. */
static size_t head_end(const struct slot *s) {
  const char *e = memmem(s->buf, s->len, "\r\n\r\n", 4);
  return e ? (size_t)(e - s->buf) + 4 : 0;
}

static long content_length(const char *head, size_t n) {
  for (size_t i = 0; i + 15 < n; i++) {
    if ((head[i] == '\n') && strncasecmp(head + i + 1, "content-length:", 15) == 0)
      return strtol(head + i + 16, NULL, 10);
  }
  return -1;
}

/* Advances one slot after an epoll event. Returns 1 when the tunnel completed, -1 on error. */
static int slot_step(int ep, struct slot *s, uint32_t id, int idle_mode) {
  if (s->st == CONNECTING) {
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
      if (err == ECONNREFUSED) refused++;
      return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = id};
    epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
    if (use_proxy) {
      s->st = READ_CONNECT_RESP;
      return send_all(s->fd, connect_req, connect_req_len) < 0 ? -1 : 0;
    }
    record_latency(now() - s->t0);
    s->st = READ_RESP;
    return send_all(s->fd, get_req, get_req_len) < 0 ? -1 : 0;
  }
  if (s->st == ESTABLISHED) {
    char junk[256];
    ssize_t r = read(s->fd, junk, sizeof junk);
    return (r == 0 || (r < 0 && errno != EAGAIN)) ? -1 : 0;
  }
  ssize_t r = read(s->fd, s->buf + s->len, sizeof s->buf - s->len);
  if (r < 0) return errno == EAGAIN ? 0 : -1;
  if (r == 0) return -1;
  s->len += (size_t)r;
  if (s->st == READ_CONNECT_RESP) {
    size_t h = head_end(s);
    if (!h) return s->len == sizeof s->buf ? -1 : 0;
    if (s->len < 12 || strncmp(s->buf + 8, " 200", 4) != 0) return -1;
    record_latency(now() - s->t0);
    memmove(s->buf, s->buf + h, s->len - h);
    s->len -= h;
    if (idle_mode) {
      s->st = ESTABLISHED;
      return 1;
    }
    s->st = READ_RESP;
    if (send_all(s->fd, get_req, get_req_len) < 0) return -1;
    if (s->len == 0) return 0;
  }
  if (s->body_need < 0) {
    size_t h = head_end(s);
    if (!h) return s->len == sizeof s->buf ? -1 : 0;
    if (strncmp(s->buf + 8, " 200", 4) != 0) return -1;
    long cl = content_length(s->buf, h);
    if (cl < 0) return -1;
    s->head_len = h;
    s->body_need = cl;
  }
  /* The body is not kept: drop what was read past the head and count down. */
  long have = (long)(s->len - s->head_len);
  if (have >= s->body_need) return 1;
  s->body_need -= have;
  s->len = s->head_len = 0;
  return 0;
}

static void usage(void) {
  fprintf(stderr,
          "usage: connload tunnels|idle --target H:P [--proxy H:P] [--path P] [-c N] [-d SECONDS]"
          " [-n N] [--sources N]\n");
  exit(2);
}

int main(int argc, char **argv) {
  if (argc < 2) usage();
  int idle_mode = strcmp(argv[1], "idle") == 0;
  if (!idle_mode && strcmp(argv[1], "tunnels") != 0) usage();
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
    } else if (!strcmp(a, "--path")) path = v;
    else if (!strcmp(a, "-c")) concurrency = atoi(v);
    else if (!strcmp(a, "-d")) duration = atof(v);
    else if (!strcmp(a, "-n")) count = atoi(v);
    else if (!strcmp(a, "--sources")) sources = atoi(v);
    else usage();
    i++;
  }
  if (!target_str || concurrency < 1 || (idle_mode && !use_proxy)) usage();
  connect_req_len = (size_t)snprintf(connect_req, sizeof connect_req,
                                     "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target_str, target_str);
  get_req_len = (size_t)snprintf(get_req, sizeof get_req,
                                 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, target_str);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);

  int ep = epoll_create1(EPOLL_CLOEXEC);
  int nslots = idle_mode ? count : concurrency;
  struct slot *slots = calloc((size_t)nslots, sizeof *slots);
  for (int i = 0; i < nslots; i++) slots[i].fd = -1, slots[i].st = IDLE_SLOT;

  double start = now(), deadline = start + duration, last_sweep = start;
  int opened = 0, in_setup = 0, settled = 0;
  struct epoll_event evs[256];

  if (!idle_mode)
    for (int i = 0; i < concurrency; i++)
      if (slot_open(ep, &slots[i], (uint32_t)i) < 0) errors++;

  for (;;) {
    if (stop_flag) break;
    double t = now();
    if (idle_mode) {
      while (in_setup < concurrency && opened < count) {
        if (slot_open(ep, &slots[opened], (uint32_t)opened) < 0) {
          errors++;
          settled++;
        } else in_setup++;
        opened++;
      }
      if (settled == count) break;
    } else if (t >= deadline) {
      break;
    }
    int n = epoll_wait(ep, evs, 256, 100);
    for (int k = 0; k < n; k++) {
      uint32_t id = evs[k].data.u32;
      struct slot *s = &slots[id];
      if (s->fd < 0) continue;
      int was_setup = s->st != ESTABLISHED;
      int rc = slot_step(ep, s, id, idle_mode);
      if (rc == 0) continue;
      if (idle_mode) {
        if (rc < 0) {
          errors++;
          slot_close(ep, s);
        }
        if (was_setup) in_setup--, settled++;
        continue;
      }
      if (rc > 0) done_ok++;
      else errors++;
      slot_close(ep, s);
      if (now() < deadline && slot_open(ep, s, id) < 0) errors++;
    }
    t = now();
    if (t - last_sweep > 0.25) { /* a tunnel stuck for 5 s is a timeout */
      last_sweep = t;
      for (int i = 0; i < (idle_mode ? opened : concurrency); i++) {
        struct slot *s = &slots[i];
        if (s->fd >= 0 && s->st != ESTABLISHED && t - s->t0 > 5) {
          timeouts++;
          errors++;
          slot_close(ep, s);
          if (idle_mode) in_setup--, settled++;
          else if (t < deadline && slot_open(ep, s, (uint32_t)i) < 0) errors++;
        }
      }
    }
  }
  double elapsed = (idle_mode ? now() : deadline) - start;
  qsort(lat_us, lat_n, sizeof *lat_us, cmp_u32);
  if (idle_mode) {
    long established = 0;
    for (int i = 0; i < nslots; i++) established += slots[i].st == ESTABLISHED;
    printf("{\"mode\":\"idle\",\"established\":%ld,\"errors\":%ld,\"refused\":%ld,\"timeouts\":%ld,"
           "\"setup_s\":%.3f,\"setup_p50_ms\":%.3f,\"setup_p99_ms\":%.3f}\n",
           established, errors, refused, timeouts, elapsed, percentile_ms(50), percentile_ms(99));
    fflush(stdout);
    char b[64];
    while (!stop_flag && read(0, b, sizeof b) > 0) {
    }
    return 0;
  }
  printf("{\"mode\":\"tunnels\",\"tunnels\":%ld,\"tunnels_per_s\":%.1f,\"errors\":%ld,\"refused\":%ld,"
         "\"timeouts\":%ld,\"duration_s\":%.3f,\"setup_p50_ms\":%.3f,\"setup_p99_ms\":%.3f}\n",
         done_ok, done_ok / elapsed, errors, refused, timeouts, elapsed, percentile_ms(50), percentile_ms(99));
  return 0;
}
