/*
 * The native HTTP/1.1 engine's work on the loop's clock (h1.c has the connections): the sweep of
 * its timeouts, and napping.
 *
 * The sweep (h1_sweep, from the engine's timer): heads, idle connections, lingering closes,
 * responses, stalled bodies and idle pooled upstream connections past their time.
 *
 * Napping (OXY_NAP_US, H1_NAP_US by default, 0 turns it off): when the engine is busy with many
 * requests at once (worth_a_nap) and a turn with engine events finds
 * nothing more ready, the thread sleeps on a timer for that long before libuv polls, instead of
 * sleeping in epoll until the next byte. While it naps nobody waits on its sockets, so the
 * processes sending to it (the client, the upstream) need not wake it: on a machine where a
 * cross-CPU wake-up is dear, that wake-up was paid by the sender's core once per request or
 * so. After the nap the turn finds the bytes of several connections, and the writes it makes
 * reach the peers in a burst. Like a network card's interrupt moderation, it adds at most the
 * nap to a request's time, and only under load; at low load the engine answers at once.
 * OXY_NAP_ALWAYS=1 (for tests) naps after every turn with events, whatever the load and even
 * with more ready.
 */
#define _GNU_SOURCE
#include "h1.h"

#include <poll.h>
#include <time.h>

/* Worth a nap when the engine is busy, a turn with events at least every NAP_MAX_GAP_NS (the
 * mean over the last window of NAP_WINDOW_NS, counted over the time it really took, so an idle
 * spell ends it), and the nap is small beside a request's time: a request's time is about the
 * requests in progress times that gap, and the nap must be NAP_SHARE times less. So 64
 * connections in a closed loop nap, where 4 or 8 would only wait longer for their answers:
 * they have no other connections' bytes to gather in it. */
#define NAP_WINDOW_NS (10 * 1000 * 1000)
#define NAP_MAX_GAP_NS (200 * 1000)
#define NAP_SHARE 10
static bool worth_a_nap(h1_engine_t *e, uint64_t now) {
  uint64_t took = now - e->nap_window;
  if (took >= NAP_WINDOW_NS) {
    e->nap_gap = took / (uint64_t)(e->nap_turns > 0 ? e->nap_turns : 1);
    e->nap_turns = 0;
    e->nap_window = now;
  }
  e->nap_turns++;
  return e->nap_gap > 0 && e->nap_gap <= NAP_MAX_GAP_NS && (uint64_t)e->active * e->nap_gap >= NAP_SHARE * e->nap_ns;
}

static void on_prepare(uv_prepare_t *h) {
  h1_engine_t *e = h->data; /* the engine's box begins with it */
  if (!e->stirred) return;
  e->stirred = false;
  if (!e->nap_always) {
    if (!worth_a_nap(e, uv_hrtime())) return;
    struct pollfd p = {.fd = uv_backend_fd(e->loop), .events = POLLIN};
    if (poll(&p, 1, 0) != 0) return; /* more is ready: no nap */
  }
  struct timespec t = {.tv_sec = 0, .tv_nsec = (long)e->nap_ns};
  nanosleep(&t, NULL);
}

void h1_nap_start(h1_engine_t *e, uint64_t ns) {
  e->nap_ns = ns;
  if (ns > 0) uv_prepare_start(&e->nap, on_prepare);
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
