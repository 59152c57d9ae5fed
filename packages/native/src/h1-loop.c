/*
 * The native HTTP/1.1 engine's work on the loop's clock (h1.c has the connections): the sweep of
 * its timeouts, and napping.
 *
 * The sweep (h1_sweep, from the engine's timer): heads, idle connections, lingering closes,
 * responses, stalled bodies and idle pooled upstream connections past their time.
 *
 * Napping (nap.h): when the engine is busy with many requests at once and a turn with engine
 * events finds nothing more ready, the thread naps before libuv polls. Requests in progress
 * are those from their route to their answer (h1_set_state counts them).
 */
#define _GNU_SOURCE
#include "h1.h"

static void on_prepare(uv_prepare_t *h) {
  h1_engine_t *e = h->data; /* the engine's box begins with it */
  if (!e->stirred) return;
  e->stirred = false;
  nap_before_poll(&e->nap, uv_backend_fd(e->loop), uv_hrtime(), e->active);
}

void h1_nap_start(h1_engine_t *e) {
  nap_init(&e->nap);
  if (e->nap.ns > 0) uv_prepare_start(&e->nap_check, on_prepare);
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
      /* a filter at work (choosing, or its promise) is not the upstream stalling */
      else if (e->response_timeout > 0 && c->head_parsed && now >= c->stall_check_at && c->filter != FILTER_ASK &&
               !c->filter_wait) {
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
