/*
 * The listener shared by accept.c (the reactor thread's half: accepting, records, commands) and
 * accept-js.c (the JS thread's half: starting, stopping, handing records and adoptions to JS).
 * Private to the addon; see accept.c for what a listener is.
 */
#ifndef OXY_ACCEPT_H
#define OXY_ACCEPT_H
#include "splice.h" /* first: _GNU_SOURCE, for accept4 */

/* Connections accepted per readiness report before the other descriptors get their turn. */
#define ACCEPT_BATCH 64
#define REC_FIELDS 10
/* Records are held up to RECORD_DELAY_MS (or until RECORD_BATCH of them) before the JS thread
 * is woken for them: on a busy endpoint one wake-up serves dozens of connections. A stopped
 * listener's records go at once (a drain waits for them). */
#define RECORD_DELAY_MS 10
#define RECORD_BATCH 64

typedef struct {
  int kind, err, side;
  double b01, b10, connect_ms;
  int64_t accepted_ns, ended_ns;
  struct sockaddr_storage peer, local;
} rec_t;

struct listener {
  reactor_item_t item; /* first: the reactor's lists */
  reactor_t *r;
  napi_env env;
  napi_ref owner; /* strong until stopped with nothing live */
  int fd;         /* the duplicate; -1 once stopped (reactor thread) */
  uint32_t events;
  struct sockaddr_storage addr, src;
  socklen_t addrlen, srclen;
  int timeout_ms, pipe_size;
  bool nodelay, wildcard;
  bool held;            /* JS thread: holds the loop */
  splicer_t *live_head; /* reactor thread: tunnels JS has not heard of */
  listener_t *due_next; /* reactor thread: in the list of listeners holding records */
  bool due_linked;
  int64_t due_at; /* CLOCK_MONOTONIC ms: when the held records go to JS */

  pthread_mutex_t mu; /* guards what follows */
  rec_t *recs;
  size_t nrec, cap;
  int live;
  bool stopping, aborting, stopped, cmd_pending, queued;
};

extern const reactor_ops_t listener_ops;
/* JS thread: what the reactor thread posted for l (records, the end of its accepting). */
void listener_done(napi_env env, reactor_item_t *it);

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
