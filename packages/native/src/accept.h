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
#define REC_FIELDS 12
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
  double id; /* connect mode: JS's id of the tunnel (acceptConnect) */
  int fd;    /* connect mode, a failed connect: the client's descriptor, for JS to answer; else -1 */
} rec_t;

/* Connect mode (accept-head.c): the most a request head may take before it is handed back. */
#define HEAD_MAX 8192
/* What became of a head read on the reactor thread (onHeads' kind). */
#define HEAD_CONNECT 0 /* a complete CONNECT head with nothing after it: JS decides */
#define HEAD_BACK 1    /* anything else: JS serves the connection (descriptor and bytes) */

/* A connection whose request head the reactor thread reads (connect mode). */
typedef struct head head_t;
struct head {
  reactor_item_t item; /* first */
  listener_t *l;
  int fd;
  int kind; /* HEAD_*, once posted */
  uint32_t events;
  int64_t accepted_ns, deadline; /* deadline: CLOCK_MONOTONIC ms */
  head_t *prev, *next;           /* the listener's heads being read (reactor thread), then its posted ones */
  struct sockaddr_storage peer, local;
  size_t n;
  char buf[HEAD_MAX];
};

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
  bool nodelay, wildcard, smart_connect, end_on_up_eof;
  /* Reactor thread: TCP_NODELAY was set on the listening socket, which accepted sockets inherit
   * (Linux): not set again per connection. */
  bool nodelay_inherited;
  /* Reactor thread: the listening socket has TCP_QUICKACK off (`tcp_smart_accept`), which
   * accepted sockets inherit: their ACKs are held (splice-ack.c). */
  bool acks_held;
  /* An `http` endpoint's listener: the reactor thread reads each request head (accept-head.c). */
  bool connect_mode;
  early_t early; /* reactor thread: whether its tunnels' clients speak early (splice.c) */
  int head_timeout_ms;
  head_t *reading, *reading_tail; /* reactor thread: heads being read, oldest first */
  listener_t *reading_next;       /* reactor thread: in the list of listeners reading heads */
  bool reading_linked;
  bool held;            /* JS thread: holds the loop */
  splicer_t *live_head; /* reactor thread: tunnels JS has not heard of */
  listener_t *due_next; /* reactor thread: in the list of listeners holding records */
  bool due_linked;
  int64_t due_at; /* CLOCK_MONOTONIC ms: when the held records go to JS */

  pthread_mutex_t mu; /* guards what follows */
  rec_t *recs;
  size_t nrec, cap;
  head_t *posted, *posted_tail; /* connect mode: heads for JS, in order */
  splicer_t *starts;            /* connect mode: tunnels JS started (acceptConnect), to link */
  /* Tunnels JS has not heard of, and in connect mode heads being read or held by JS. */
  int live;
  bool stopping, aborting, stopped, cmd_pending, queued;
};

extern const reactor_ops_t listener_ops;
/* JS thread: what the reactor thread posted for l (records, the end of its accepting). */
void listener_done(napi_env env, reactor_item_t *it);
/* Reactor thread, under l->mu: posts l to the JS thread unless it is on its way. */
void listener_post(listener_t *l);
/* Reactor thread: links s (of l) into l's live list; starts it as start_one does. */
void listener_start(listener_t *l, splicer_t *s);

/* accept-head.c (reactor thread): a connection accepted in connect mode; every head still being
 * read handed back (the listener stops); the heads past their deadline handed back (ms to the
 * next, or -1). */
void head_accept(listener_t *l, int cfd, const struct sockaddr_storage *peer);
void heads_hand_back(listener_t *l);
int heads_tick(int64_t now);
/* accept-head.c (JS thread): calls owner.onHeads for the posted heads and frees them. */
void heads_deliver(napi_env env, listener_t *l, napi_value owner, head_t *list);

static inline int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
