/*
 * wake-cost: what one cross-thread wake-up costs on this machine, the figure behind reading
 * UDP on the JS thread (uv_poll) rather than on the addon's reactor thread (docs/udp.md).
 *
 * Reading on the reactor would add, per batch of datagrams, one hand-off to the JS thread: an
 * eventfd write (uv_async_send) and a wake-up of a thread sleeping in epoll_wait. This measures
 * exactly that, as a ping-pong between two threads, each sleeping in epoll_wait on its own
 * eventfd and waking the other with a write, like the reactor and libuv do.
 *
 *   cc -O2 -pthread -o /tmp/wake-cost bench/tools/wake-cost.c && /tmp/wake-cost [round trips]
 *
 * Prints one JSON line: wall time and CPU time per hand-off (half a round trip), and context
 * switches per hand-off.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int efd[2], ep[2];
static long rounds;

static void wait_on(int side) {
  struct epoll_event ev;
  uint64_t v;
  while (epoll_wait(ep[side], &ev, 1, -1) != 1) {
  }
  if (read(efd[side], &v, sizeof v) != sizeof v) exit(1);
}

static void poke(int side) {
  uint64_t one = 1;
  if (write(efd[side], &one, sizeof one) != sizeof one) exit(1);
}

static void *other(void *arg) {
  (void)arg;
  for (long i = 0; i < rounds; i++) {
    wait_on(1);
    poke(0);
  }
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  rounds = argc > 1 ? atol(argv[1]) : 100000;
  for (int i = 0; i < 2; i++) {
    efd[i] = eventfd(0, EFD_NONBLOCK);
    ep[i] = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep[i], EPOLL_CTL_ADD, efd[i], &ev);
  }
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  double t0 = now();
  pthread_t t;
  pthread_create(&t, NULL, other, NULL);
  for (long i = 0; i < rounds; i++) {
    poke(1);
    wait_on(0);
  }
  pthread_join(t, NULL);
  double wall = now() - t0;
  getrusage(RUSAGE_SELF, &r1);
  double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec + r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
               (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec + r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
  long cs = (r1.ru_nvcsw - r0.ru_nvcsw) + (r1.ru_nivcsw - r0.ru_nivcsw);
  double handoffs = 2.0 * (double)rounds;
  printf("{\"handoffs\":%.0f,\"wall_us_per_handoff\":%.2f,\"cpu_us_per_handoff\":%.2f,\"ctx_switches_per_handoff\":%.2f}\n",
         handoffs, wall * 1e6 / handoffs, cpu * 1e6 / handoffs, (double)cs / handoffs);
  return 0;
}
