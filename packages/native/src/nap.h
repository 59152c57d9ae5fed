/*
 * Napping, the native code's interrupt moderation (the HTTP/1.1 engine's loop, h1-loop.c, and the
 * reactor thread, reactor.c): when a thread busy with many exchanges at once finishes a turn
 * with nothing more ready, it sleeps a short, fixed time on a timer instead of sleeping in epoll
 * until the next byte. While it naps no thread waits on its descriptors, so the processes and
 * threads that send to it need not wake it: a cross-CPU wake-up, paid by the sender's core, about
 * once per exchange when this thread is faster than its peers. The next turn gathers several
 * exchanges' events, and its writes reach the peers in a burst. It adds at most the nap (and the
 * timer's slack) to an exchange's time, and only under load.
 *
 * Worth a nap: the thread is busy (a turn with events every NAP_MAX_GAP_NS or less, the mean over
 * the last window of NAP_WINDOW_NS, counted over the time the window really took, so an idle
 * spell ends it), and the nap is small beside an exchange's time: that is about the exchanges
 * in progress times the gap, and the nap must be NAP_SHARE times less. So 64 connections in a
 * closed loop nap, where 4 or 8 would only wait longer for their own answers: they have no
 * other connections' events to gather in it.
 */
#ifndef OXY_NAP_H
#define OXY_NAP_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NAP_US 100 /* the default nap (OXY_NAP_US) */
#define NAP_WINDOW_NS (10 * 1000 * 1000)
#define NAP_MAX_GAP_NS (200 * 1000)
#define NAP_SHARE 10

typedef struct {
  uint64_t ns;     /* the nap, 0: off */
  uint64_t window; /* the window began (ns, any monotonic clock) */
  uint64_t gap;    /* the last window's mean time between turns with events (ns) */
  int turns;       /* turns with events in this window */
  bool always;     /* OXY_NAP_ALWAYS=1 (tests): after every turn with events */
} nap_t;

/* A turn with events ended at `now`, with `in_progress` exchanges open: nap before sleeping? */
static inline bool nap_worth(nap_t *n, uint64_t now, int in_progress) {
  if (n->ns == 0) return false;
  if (n->always) return true;
  uint64_t took = now - n->window;
  if (took >= NAP_WINDOW_NS) {
    n->gap = took / (uint64_t)(n->turns > 0 ? n->turns : 1);
    n->turns = 0;
    n->window = now;
  }
  n->turns++;
  return n->gap > 0 && n->gap <= NAP_MAX_GAP_NS && (uint64_t)(in_progress > 0 ? in_progress : 0) * n->gap >= NAP_SHARE * n->ns;
}

static inline void nap_sleep(const nap_t *n) {
  struct timespec t = {.tv_sec = 0, .tv_nsec = (long)n->ns};
  nanosleep(&t, NULL);
}

/* A loop about to poll, after a turn with events: naps if worth it (nap_worth) and nothing is
 * ready on the loop's own poll descriptor `loop_fd` (uv_backend_fd), or always in the tests. */
static inline void nap_before_poll(nap_t *n, int loop_fd, uint64_t now, int in_progress) {
  if (!nap_worth(n, now, in_progress)) return;
  if (!n->always) {
    struct pollfd p = {.fd = loop_fd, .events = POLLIN};
    if (poll(&p, 1, 0) != 0) return; /* more is ready: no nap */
  }
  nap_sleep(n);
}

/* From the environment: OXY_NAP_US (default NAP_US, 0 off) and OXY_NAP_ALWAYS. */
static inline void nap_init(nap_t *n) {
  const char *us = getenv("OXY_NAP_US"), *always = getenv("OXY_NAP_ALWAYS");
  *n = (nap_t){.ns = (us && *us ? strtoull(us, NULL, 10) : NAP_US) * 1000, .always = always && strcmp(always, "1") == 0};
}

#endif
