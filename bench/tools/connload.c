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
 *     Prints one JSON line: tunnels, tunnels_per_s, errors, setup latency p50/p99 in ms, and
 *     cpu_s, this process's own CPU time (user and system), so that what a tunnel costs the
 *     client beside the proxy can be told apart (the bench's `client µs` columns).
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
#include <errno.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/resource.h>

#include "load-common.h"

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

static struct load_args opt = {.path = "/1k", .concurrency = 64, .duration = 10, .sources = 16};
static int count = 5000;
static char connect_req[512], get_req[512];
static size_t connect_req_len, get_req_len;

static uint32_t *lat_us;
static size_t lat_n = 0, lat_cap = 0;
static long done_ok = 0, errors = 0, timeouts = 0, refused = 0;

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
  int fd = load_connect(&opt, &s->t0);
  if (fd < 0) return -1;
  s->fd = fd;
  s->st = CONNECTING;
  s->len = 0;
  s->body_need = -1;
  s->head_len = 0;
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = id};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return 0;
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
    if (opt.use_proxy) {
      s->st = READ_CONNECT_RESP;
      return load_send_all(s->fd, connect_req, connect_req_len) < 0 ? -1 : 0;
    }
    record_latency(load_now() - s->t0);
    s->st = READ_RESP;
    return load_send_all(s->fd, get_req, get_req_len) < 0 ? -1 : 0;
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
    size_t h = load_head_end(s->buf, s->len);
    if (!h) return s->len == sizeof s->buf ? -1 : 0;
    if (s->len < 12 || strncmp(s->buf + 8, " 200", 4) != 0) return -1;
    record_latency(load_now() - s->t0);
    memmove(s->buf, s->buf + h, s->len - h);
    s->len -= h;
    if (idle_mode) {
      s->st = ESTABLISHED;
      return 1;
    }
    s->st = READ_RESP;
    if (load_send_all(s->fd, get_req, get_req_len) < 0) return -1;
    if (s->len == 0) return 0;
  }
  if (s->body_need < 0) {
    size_t h = load_head_end(s->buf, s->len);
    if (!h) return s->len == sizeof s->buf ? -1 : 0;
    if (strncmp(s->buf + 8, " 200", 4) != 0) return -1;
    long cl = load_content_length(s->buf, h);
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
    int shared = load_shared_option(&opt, a, v);
    if (shared < 0) usage();
    else if (shared == 0) {
      if (!strcmp(a, "-n")) count = atoi(v);
      else usage();
    }
    i++;
  }
  if (!opt.target_str || opt.concurrency < 1 || (idle_mode && !opt.use_proxy)) usage();
  const char *target_str = opt.target_str;
  int concurrency = opt.concurrency;
  connect_req_len = (size_t)snprintf(connect_req, sizeof connect_req,
                                     "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target_str, target_str);
  get_req_len = (size_t)snprintf(get_req, sizeof get_req,
                                 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", opt.path, target_str);
  load_signals();

  int ep = epoll_create1(EPOLL_CLOEXEC);
  int nslots = idle_mode ? count : concurrency;
  struct slot *slots = calloc((size_t)nslots, sizeof *slots);
  for (int i = 0; i < nslots; i++) slots[i].fd = -1, slots[i].st = IDLE_SLOT;

  double start = load_now(), deadline = start + opt.duration, last_sweep = start;
  int opened = 0, in_setup = 0, settled = 0;
  struct epoll_event evs[256];

  if (!idle_mode)
    for (int i = 0; i < concurrency; i++)
      if (slot_open(ep, &slots[i], (uint32_t)i) < 0) errors++;

  for (;;) {
    if (load_stop) break;
    double t = load_now();
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
      if (load_now() < deadline && slot_open(ep, s, id) < 0) errors++;
    }
    t = load_now();
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
  double elapsed = (idle_mode ? load_now() : deadline) - start;
  qsort(lat_us, lat_n, sizeof *lat_us, cmp_u32);
  if (idle_mode) {
    long established = 0;
    for (int i = 0; i < nslots; i++) established += slots[i].st == ESTABLISHED;
    printf("{\"mode\":\"idle\",\"established\":%ld,\"errors\":%ld,\"refused\":%ld,\"timeouts\":%ld,"
           "\"setup_s\":%.3f,\"setup_p50_ms\":%.3f,\"setup_p99_ms\":%.3f}\n",
           established, errors, refused, timeouts, elapsed, percentile_ms(50), percentile_ms(99));
    fflush(stdout);
    char b[64];
    while (!load_stop && read(0, b, sizeof b) > 0) {
    }
    return 0;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu_s = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  printf("{\"mode\":\"tunnels\",\"tunnels\":%ld,\"tunnels_per_s\":%.1f,\"errors\":%ld,\"refused\":%ld,"
         "\"timeouts\":%ld,\"duration_s\":%.3f,\"setup_p50_ms\":%.3f,\"setup_p99_ms\":%.3f,\"cpu_s\":%.3f}\n",
         done_ok, done_ok / elapsed, errors, refused, timeouts, elapsed, percentile_ms(50), percentile_ms(99), cpu_s);
  return 0;
}
