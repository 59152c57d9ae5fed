/*
 * The splicer shared by splice.c (the reactor thread's half: moving bytes, connecting tunnels)
 * and splice-js.c (the JS thread's half: starting, stopping, reporting). Private to the addon.
 */
#ifndef OXY_SPLICE_H
#define OXY_SPLICE_H
#define _GNU_SOURCE
#include "native.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Bytes moved per direction per wakeup before yielding to the others (fairness between tunnels).
 * OXY_SPLICE_ROUND_BYTES (read once, at least 4096) overrides it: tests use small rounds. */
#define ROUND_BYTES (4u << 20)
extern size_t round_bytes;
/* Bytes a direction moves at the kernel's default pipe size before its pipe is grown (to at most
 * GROW_FIRST), and bytes it moves before it is grown to the asked size (a long bulk transfer:
 * a 1 MiB pipe moves a GiB with a third less of the reactor thread's CPU than a 256 KiB one).
 * At most BULK_PIPES pipes in the process are larger than GROW_FIRST: an unprivileged user's
 * pipes share 64 MiB (fs.pipe-user-pages-soft), past which new pipes get two pages. */
#define GROW_AFTER (1u << 20)
#define GROW_FIRST (256u << 10)
#define GROW_BULK_AFTER (16u << 20)
#define BULK_PIPES 32
/* The kernel's default pipe capacity; only pipes still at it go back to the pool. */
#define PIPE_DEFAULT 65536u
/* Most empty pipes a reactor thread keeps (fewer when the descriptor limit is low: 1/16 of it). */
#define POOL_MAX 256
/* Bytes a direction copies through user space (read/write) before it takes a pipe and splices:
 * a short exchange costs a read and a write per message instead of two splices and a pipe.
 * OXY_SPLICE_COPY_BYTES (read once; 0 splices from the first byte) overrides it. */
#define COPY_BYTES (32u << 10)
extern size_t copy_bytes;
/* Whether a tunnel may send its client's first bytes before its connect is reported (splice.c,
 * early_copy); OXY_EARLY=0 (read once) turns it off, for comparisons. */
extern bool early_on;
/* The reactor thread's copy buffer (one read's most). */
#define COPY_BUF (16u << 10)
/* How long after its connect a tunnel is announced to JS (onSpliceConnected) if it has not ended
 * by then: a short tunnel is announced with its end, one wake-up of the JS thread instead of two. */
#define ANNOUNCE_MS 50
/* How each descriptor is registered, once. */
#define WATCH (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

/* What the JS thread is to hear (posted, then taken under the lock). */
#define NOTE_CONNECTED 1
#define NOTE_END 2

/* End kinds. */
#define END_DONE 0
#define END_ERROR 1
#define END_CONNECT 2
#define END_ABORT 3 /* accept.c: a drain's deadline ended a tunnel JS had not heard of */

typedef struct {
  int src, dst;    /* side indices */
  int pr, pw;      /* pipe ends, -1 until the first byte */
  size_t inpipe;   /* bytes read into the pipe, not yet written out */
  size_t cap;      /* the pipe's capacity */
  uint64_t bytes;  /* bytes read from src */
  uint8_t *held;   /* copied bytes read from src that dst did not take yet (malloc'd) */
  size_t held_len, held_off;
  bool eof, shut;
  bool bulk;       /* its pipe is one of the BULK_PIPES */
} dir_t;

/* Whether speaking early pays (splice.c, early_copy): after EARLY_MISSES misses in a row (the
 * client had not spoken, or the connect was still under way), only one tunnel in EARLY_RETRY
 * tries, and a hit turns it back on. Per listener, and per reactor thread for other tunnels. */
#define EARLY_MISSES 8
#define EARLY_RETRY 64
/* Whether holding the handshake's last ACK for the client's first bytes pays (splice-ack.c):
 * after QUIET_MISSES holds in a row that ended without them (clients that wait for the server
 * to speak first), only one tunnel in QUIET_RETRY holds, and a hold that rode turns it back on. */
#define QUIET_MISSES 2
#define QUIET_RETRY 64
typedef struct {
  uint8_t misses, skipped;
  uint8_t quiet, quiet_skipped;
} early_t;

typedef struct splicer splicer_t;
typedef struct listener listener_t;

/* A tunnel's connect phase (tunnelStart): freed once connected and its bytes written. */
typedef struct {
  struct sockaddr_storage addr, src;
  socklen_t addrlen, srclen;
  int64_t deadline;       /* CLOCK_MONOTONIC ms; 0: none. Once connected: when to announce it */
  int64_t started;        /* CLOCK_MONOTONIC ms the connect started */
  splicer_t *prev, *next; /* the reactor thread's list of connects with a deadline, then of
                             connected tunnels not yet announced */
  bool linked;
  /* pre[i]: bytes to write to side i before any spliced byte (the 2xx head; early data). */
  uint8_t *pre[2];
  size_t pre_len[2], pre_off[2];
} connect_t;

struct splicer {
  reactor_item_t item; /* first: the reactor's lists */
  reactor_t *r;
  pthread_mutex_t mu;
  int fd[2];
  uint32_t events[2]; /* epoll interest registered per side (WATCH); 0: not in the set */
  bool can_read[2];   /* side i may have bytes (or EOF) to read: set by events, cleared by EAGAIN */
  bool can_write[2];  /* side i may take bytes: likewise */
  bool rdhup[2];      /* side i reported its peer's FIN: a short read from it means end of file */
  dir_t dir[2];       /* dir[i]: side i → side 1-i */
  connect_t *cx;      /* tunnelStart, until connected and its bytes written */
  int pipe_size;
  bool connecting;    /* waiting for the upstream connect */
  bool tunnel;        /* tunnelStart */
  bool connected;     /* tunnelStart: connected (its head may have been written) */
  bool announced;     /* tunnelStart: NOTE_CONNECTED posted */
  double connect_ms;  /* tunnelStart: how long the connect took */
  bool closing;       /* out of the set, descriptors closed */
  /* Who refers to it; freed when none does. */
  bool js_ref, thread_ref, queued;
  bool cmd_pending;   /* posted to the reactor thread, not yet run there */
  bool retired;
  int notes;          /* NOTE_* posted, not yet taken */
  int end_kind, end_err, end_side;
  napi_env env;
  napi_ref owner;     /* napi_wrap's reference, strong while running; NULL once let go */
  /* accept.c: a tunnel the reactor thread accepted itself (NULL otherwise). Until announced it
   * has no owner: its end becomes a record of the listener's batch, or, announced, JS adopts it. */
  listener_t *lst;
  splicer_t *lprev, *lnext; /* the listener's tunnels JS has not heard of (reactor thread only) */
  bool adopt;               /* announced: JS is to adopt it (wrap it into an owner) */
  bool keep_client;         /* connect mode: a failed connect keeps the client for JS to answer */
  /* The handshake's last ACK rides on the client's first bytes when those go with the connect
   * (HAProxy's tcp-smart-connect): one packet less each way; a plain ACK when there are none. */
  bool smart_connect;
  /* `tunnel_half_close: false`: the upstream's end of stream (fd[1]'s FIN) ends the tunnel once
   * its bytes and FIN are out to the client with nothing of the client's unread (splice.c). */
  bool end_on_up_eof;
  bool up_end_seen; /* reactor thread: the upstream's end was looked at (up_end_ends) */
  /* Held ACKs (splice-ack.c), per side: its socket holds the ACKs it owes (TCP_QUICKACK off:
   * smart accept on the client, smart connect on the upstream); one is held now, in the reactor
   * thread's list, until ack_due (CLOCK_MONOTONIC ms); the byte counts each way last seen. */
  bool ack_smart[2], ack_held[2];
  bool ack_handshake; /* side 1's held ACK is the handshake's: no client bytes yet */
  int64_t ack_due[2];
  uint64_t ack_in[2], ack_out[2];
  splicer_t *ack_prev[2], *ack_next[2];
  int kept_fd;              /* ... that client's descriptor, until it goes in the record; else -1 */
  double lst_id;            /* connect mode: JS's id of the tunnel, in its record */
  int64_t accepted_ns;      /* CLOCK_MONOTONIC */
  struct sockaddr_storage peer, local;
};

/* splice.c */
extern const reactor_ops_t splicer_ops;
/* Under s->mu: true (once) when nobody refers to s any more: the caller retires it after unlocking. */
bool splicer_unreferenced(splicer_t *s);
/* Frees s (and its connect phase) through the reactor, after the batch in flight. */
void splicer_retire(splicer_t *s);
/* Under s->mu: out of the set, descriptors and pipes closed (pooled on the reactor thread). */
void splicer_close(splicer_t *s, bool on_thread);
void connect_free(connect_t *cx);
/* splice-js.c: a connect from JS arguments (literal IPs, the bytes to write); NULL, JS exception pending, if bad. */
connect_t *splicer_connect_args(napi_env env, napi_value ip, int32_t port, napi_value src, napi_value head,
                                napi_value early);
/* Reactor thread, before each wait: connect deadlines. */
int splicer_tick(reactor_t *r);
int64_t splicer_now_ms(void);

/* Either thread (splice-js.c): a new splicer, set up as tunnelStart's (accept.c's tunnels too). */
splicer_t *splicer_alloc(reactor_t *r, napi_env env, int pipe_size);
/* Reactor thread, under s->mu: ends s (a drain's deadline): kind END_ABORT. */
/* splice-js.c: a literal IP (no zone) and port as a socket address. */
bool splicer_parse_addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len);
/* splice-js.c: a Buffer argument (null or undefined: none) copied into malloc'd bytes. */
bool splicer_arg_pre(napi_env env, napi_value v, uint8_t **out, size_t *len);
/* splice-copy.c (reactor thread, under s->mu): one read from d's source into the copy buffer
 * and its write to d's destination, what it does not take held; and the write of held bytes.
 * 0 or an errno (*side: the side at fault); *stop when the direction has nothing more to do now. */
int splice_copy_once(splicer_t *s, dir_t *d, size_t *moved, int *side, bool *stop);
int splice_write_held(splicer_t *s, dir_t *d, int *side);
/* A read of direction d's source (recv or splice) that returned n < 1, with errno as it left it:
 * 0 at the end of file (d->eof set); EAGAIN, the side's readiness cleared until its next EPOLLIN
 * edge; EINTR; or another errno, *side set to the source. */
static inline int splice_read_end(splicer_t *s, dir_t *d, ssize_t n, int *side) {
  if (n == 0) {
    d->eof = true;
    return 0;
  }
  if (errno == EAGAIN) s->can_read[d->src] = false;
  else if (errno != EINTR) *side = d->src;
  return errno;
}
/* splice-ack.c: held ACKs, each until the thread is idle for ack_idle_ms (OXY_ACK_IDLE_MS) or for
 * at most ack_hold_ms (OXY_ACK_HOLD_MS). Reactor thread, under s->mu: side i's ACK is held from
 * now (the handshake's); after a run, the ACKs the bytes just read left owed, and those the
 * bytes just written carried; the end: out of the lists. */
extern int64_t ack_hold_ms, ack_idle_ms;
void splice_ack_hold(splicer_t *s, int i);
/* Side 1's socket, its connect started with TCP_QUICKACK off: the handshake's ACK is held for the
 * client's first bytes while that pays for the listener (early_t's quiet), else it goes now. */
void splice_ack_handshake(splicer_t *s);
void splice_ack_after_run(splicer_t *s);
/* A segment went out to side i besides the counted bytes (a tunnel's 2xx, the bytes after its
 * CONNECT head): it carried the ACK held there. */
void splice_ack_carried(splicer_t *s, int i);
void splice_ack_drop(splicer_t *s);
/* Reactor thread, before each wait: held ACKs past their time go now; ms to the next, or -1. */
int splice_ack_tick(int64_t now);
/* Under s->mu: whether the reactor thread's lists or queue still name s (it keeps s alive). */
static inline bool splicer_named(splicer_t *s) {
  return s->cmd_pending || (s->cx != NULL && s->cx->linked) || s->ack_held[0] || s->ack_held[1];
}
/* splice-pipes.c: the reactor thread's pipe pool and copy buffer. */
int splice_pipe_take(dir_t *d);
/* Grows direction d's pipe as far as it has earned (GROW_AFTER, GROW_BULK_AFTER), best effort. */
void splice_pipe_grow(dir_t *d, size_t asked);
void splice_pipe_give(dir_t *d, bool may_pool);
uint8_t *splice_copy_buf(void);
void splicer_abort(splicer_t *s);

/* accept.c (reactor thread, under s->mu): s, of a listener, ended before JS heard of it: its
 * record goes to the listener's batch; or it was announced: JS is to adopt it. */
void listener_ended(splicer_t *s);
void listener_announced(splicer_t *s);
/* splice.c (reactor thread): the early_t of s's listener (or of the thread's other tunnels). */
early_t *splicer_early(splicer_t *s);
/* accept.c (reactor thread): whether the listener's clients speak early (early_t). */
early_t *listener_early(listener_t *l);
/* accept.c (reactor thread, from splicer_tick): posts held records that are due; ms to the next. */
int listener_tick(int64_t now);
/* accept.c (JS thread): wraps announced s into a new owner from the listener's JS side. */
bool listener_adopt(napi_env env, splicer_t *s);

/* splice-js.c */
/* JS thread: reads the tunables from the environment, once. */
void splicer_config(void);
/* JS thread: wraps s into owner (as tunnelStart does) and holds the loop; false on failure. */
bool splicer_wrap(napi_env env, splicer_t *s, napi_value owner);
/* JS thread: ends s now, without a callback (see spliceStop). */
bool splicer_stop(splicer_t *s);
/* JS thread: what the reactor thread posted for a splicer. */
void splicer_done(napi_env env, reactor_item_t *it);

#endif
