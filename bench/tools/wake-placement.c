/*
 * wake-placement: where the kernel puts a woken task, as a function of how busy its waker's CPU
 * is. The figure behind S6b's two states (bench/analysis-l4.md): a proxy writes to its client or
 * upstream and goes on with other connections; if the kernel places the woken peer on the
 * proxy's CPU, the two take turns there while the other CPU may idle.
 *
 * A waker process, each millisecond, writes one byte to a sleeper (a socket pair: a
 * synchronous wake-up, as a TCP socket's), then stays busy for `duty` of the millisecond and
 * sleeps the rest. The sleeper, woken, notes whether it runs on the CPU the waker wrote from,
 * then works 50 µs (a peer's turn). Each duty runs in a fresh pair of processes: 200 ms to let
 * the kernel's utilisation averages settle, then 300 ms counted.
 *
 *   cc -O2 -o /tmp/wake-placement bench/tools/wake-placement.c && /tmp/wake-placement [duty ...]
 *
 * Prints one JSON line: the duties and, for each, the share of wake-ups that ran on the
 * waker's CPU. Upstream Linux decides by idle CPUs and shared caches; a kernel that packs tasks
 * onto busy vCPUs (this VM's `sched_vcpu_pack`) shows a step: near 1 below some duty, near 0 above.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_S 1e-3
#define SETTLE_S 0.2
#define COUNT_S 0.3
#define WORK_S 50e-6
#define END 255 /* the waker's last byte: a CPU number is below it */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void busy(double seconds) {
  double end = now() + seconds;
  while (now() < end) {
  }
}

/* The sleeper: counts the wake-ups after `settle_until` and those on the waker's CPU; reports
 * them on `fd` when the waker's END arrives. */
static void sleeper(int fd, double settle_until) {
  long woken = 0, same = 0;
  unsigned char cpu;
  while (read(fd, &cpu, 1) == 1 && cpu != END) {
    if (now() >= settle_until) {
      woken++;
      same += sched_getcpu() == cpu;
    }
    busy(WORK_S);
  }
  long counts[2] = {woken, same};
  if (write(fd, counts, sizeof counts) != (ssize_t)sizeof counts) exit(1);
}

/* One duty in a fresh pair of processes: the share of wake-ups on the waker's CPU, or -1. */
static double measure(double duty) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return -1;
  double start = now();
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    close(sv[0]);
    sleeper(sv[1], start + SETTLE_S);
    _exit(0);
  }
  close(sv[1]);
  while (now() < start + SETTLE_S + COUNT_S) {
    double t0 = now();
    unsigned char cpu = (unsigned char)sched_getcpu();
    if (write(sv[0], &cpu, 1) != 1) break;
    busy(duty * PERIOD_S);
    double rest = PERIOD_S - (now() - t0);
    if (rest > 0) {
      struct timespec ts = {0, (long)(rest * 1e9)};
      nanosleep(&ts, NULL);
    }
  }
  unsigned char end = END;
  long counts[2] = {0, 0};
  bool ok = write(sv[0], &end, 1) == 1 && read(sv[0], counts, sizeof counts) == (ssize_t)sizeof counts;
  close(sv[0]);
  waitpid(pid, NULL, 0);
  return ok && counts[0] > 0 ? (double)counts[1] / (double)counts[0] : -1;
}

static const double fallback[] = {0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9};

/* The i-th duty: from the command line when it names any, else the fallback sweep. */
static double duty_at(int i, int argc, char **argv) {
  return argc > 1 ? atof(argv[i + 1]) : fallback[i];
}

int main(int argc, char **argv) {
  int n = argc > 1 ? argc - 1 : (int)(sizeof fallback / sizeof fallback[0]);
  printf("{\"duty\":[");
  for (int i = 0; i < n; i++) printf("%s%.2f", i ? "," : "", duty_at(i, argc, argv));
  printf("],\"on_waker_cpu\":[");
  for (int i = 0; i < n; i++) printf("%s%.3f", i ? "," : "", measure(duty_at(i, argc, argv)));
  printf("]}\n");
  return 0;
}
