/*
 * Spinning for the native HTTP/1.1 engine (h1.c), opt-in with OXY_SPIN_US: before the JS loop
 * may sleep, after a turn in which the engine had events, the loop's epoll set is polled for up
 * to that long. Where the proxy has a core of its own and the load is steady, the next event is
 * usually microseconds away, and catching it awake spares the sleep, the wake-up (an interrupt
 * to this core, paid by whoever sent the bytes) and the cold cache after it.
 */
#define _GNU_SOURCE
#include "h1.h"

#include <poll.h>
#include <sys/resource.h>

/* Spinning only pays where nobody else wants this core: a thread that another preempts more
 * than SPIN_PREEMPTS times in a window of SPIN_WINDOW_MS (getrusage's involuntary switches)
 * shares its core, and its spin would take the time of the process it waits for. */
#define SPIN_WINDOW_MS 100
#define SPIN_PREEMPTS 50
static bool spin_allowed(h1_engine_t *e) {
  uint64_t now = uv_now(e->loop);
  if (now - e->spin_window >= SPIN_WINDOW_MS) {
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) == 0) {
      e->spin_ok = ru.ru_nivcsw - e->spin_preempted <= SPIN_PREEMPTS;
      e->spin_preempted = ru.ru_nivcsw;
    }
    e->spin_window = now;
  }
  return e->spin_ok;
}

static void on_spin(uv_prepare_t *h) {
  h1_engine_t *e = h->data;
  if (!e->stirred) return;
  e->stirred = false;
  if (!spin_allowed(e)) return;
  struct pollfd p = {.fd = uv_backend_fd(e->loop), .events = POLLIN};
  uint64_t end = uv_hrtime() + e->spin_ns;
  while (poll(&p, 1, 0) == 0 && uv_hrtime() < end) {
  }
}

void h1_spin_start(h1_engine_t *e, uint64_t ns) {
  e->spin_ns = ns;
  if (ns > 0) uv_prepare_start(&e->spin, on_spin);
}

