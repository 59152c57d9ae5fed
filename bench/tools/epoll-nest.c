/*
 * epoll-nest: what a sender pays when the receiving socket's epoll set is itself in another
 * epoll set, as an inline reactor's is (its set is watched by the JS loop's, reactor.c). Each
 * byte that arrives runs the socket's epoll callback in the sender's system call, and with the
 * nesting the outer set's callback too. The question behind it is S6b's (bench/analysis-l4.md,
 * "what the client and the upstream spend behind each proxy"): do the client and the upstream
 * pay more per event behind Oxy's nested sets?
 *
 * One thread: a loopback TCP connection, the accepted end in epoll set A (level-triggered, as
 * the reactor's sockets), A in set B when nested; one-byte writes with TCP_NODELAY, the
 * receiver drained every 64 writes so that the byte always lands on a socket with data queued.
 *
 *   cc -O2 -o /tmp/epoll-nest bench/tools/epoll-nest.c && /tmp/epoll-nest [writes] [rounds]
 *
 * Prints one JSON line: microseconds per write, the median of the rounds, flat and nested,
 * the two run alternately.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* Microseconds per one-byte write, the receiving socket's set nested in another or not. */
static double per_write(int nested, int writes) {
  int one = 1;
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
      getsockname(l, (struct sockaddr *)&a, &len) != 0)
    die("listen");
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  if (s < 0) die("accept");
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int inner = epoll_create1(EPOLL_CLOEXEC), outer = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN};
  if (inner < 0 || outer < 0 || epoll_ctl(inner, EPOLL_CTL_ADD, s, &ev) != 0) die("epoll");
  if (nested && epoll_ctl(outer, EPOLL_CTL_ADD, inner, &ev) != 0) die("epoll nest");
  char buf[4096], b = 'x';
  double t0 = now_s();
  for (int i = 0; i < writes; i++) {
    if (write(c, &b, 1) != 1) die("write");
    if ((i & 63) == 63 && recv(s, buf, sizeof buf, MSG_DONTWAIT) < 0) die("recv");
  }
  double us = (now_s() - t0) / writes * 1e6;
  close(outer);
  close(inner);
  close(s);
  close(c);
  close(l);
  return us;
}

static int by_value(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

int main(int argc, char **argv) {
  int writes = argc > 1 ? atoi(argv[1]) : 200000, rounds = argc > 2 ? atoi(argv[2]) : 6;
  if (writes < 64 || rounds < 1 || rounds > 100) {
    fprintf(stderr, "usage: epoll-nest [writes >= 64] [rounds 1-100]\n");
    return 2;
  }
  double flat[100], nest[100];
  for (int r = 0; r < rounds; r++) {
    flat[r] = per_write(0, writes);
    nest[r] = per_write(1, writes);
  }
  qsort(flat, (size_t)rounds, sizeof flat[0], by_value);
  qsort(nest, (size_t)rounds, sizeof nest[0], by_value);
  printf("{\"writes\":%d,\"rounds\":%d,\"flat_us\":%.3f,\"nested_us\":%.3f}\n", writes, rounds,
         flat[rounds / 2], nest[rounds / 2]);
  return 0;
}
