/*
 * The native HTTP/1.1 engine's work on the loop's clock (h1.c has the connections): the sweep of
 * its timeouts, and spinning.
 *
 * The sweep (h1_sweep, from the engine's timer): heads, idle connections, lingering closes,
 * responses, stalled bodies and idle pooled upstream connections past their time.
 *
 * Spinning, opt-in with OXY_SPIN_US: before the JS loop may sleep, after a turn in which the
 * engine had events, the loop's epoll set is polled for up to that long. Where the proxy has a core of its own and the load is steady, the next event is
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


void h1_sweep(h1_engine_t *e) {
  uint64_t now = h1_now(e);
  h1_conn_t *next;
  for (h1_conn_t *c = e->conns; c; c = next) {
    next = c->next;
    switch (c->state) {
    case ST_SILENT:
    case ST_HEAD:
      if (e->header_timeout > 0 && now - c->since >= e->header_timeout)
        h1_hand_back(c, EV_EXPIRE, c->state == ST_HEAD ? 3 : 1);
      break;
    case ST_IDLE:
      if (c->lingering) {
        if (now - c->since >= LINGER_QUIET_MS || now - c->linger_start >= LINGER_MAX_MS) h1_conn_close(c, true);
      } else if (e->idle_timeout > 0 && now - c->since >= e->idle_timeout && h1_buf_pending(&c->out) == 0) {
        h1_conn_close(c, true);
      }
      break;
    case ST_UP:
      if (e->response_timeout > 0 && c->sent && !c->head_parsed && now - c->t_sent >= e->response_timeout)
        h1_fail(c, F_TIMEOUT);
      else if (e->response_timeout > 0 && c->head_parsed && now >= c->stall_check_at) {
        /* as the JS engine's stall check: cut once a whole period passed without a byte */
        if (c->bytes_down != c->bytes_at_check) {
          c->bytes_at_check = c->bytes_down;
          c->stall_check_at = now + e->response_timeout;
        } else {
          h1_fail(c, F_TIMEOUT);
        }
      }
      else if (e->body_timeout > 0 && c->body_left > 0 && now - c->progress_up >= e->body_timeout)
        h1_fail(c, F_BODY_TIMEOUT);
      break;
    default:
      break;
    }
  }
  h1_up_t *un;
  for (h1_up_t *u = e->idle; u; u = un) {
    un = u->next;
    if (e->pool_idle_timeout > 0 && now - u->idle_since >= e->pool_idle_timeout) h1_up_close(u);
  }
}
