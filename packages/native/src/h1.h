/*
 * The native HTTP/1.1 forward engine's shared declarations: the strict head parsers and the
 * rewriters (h1-parse.c), the engine on the event loop (h1.c) and its JS surface (h1-js.c).
 */
#ifndef OXY_H1_H
#define OXY_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define H1_MAX_FIELDS 96
#define H1_MAX_LISTED 8

/* Parser results besides a head length (> 0). */
enum { H1_INCOMPLETE = 0, H1_HANDBACK = -1, H1_BAD = -2 };

typedef struct {
  uint32_t name, name_len, value, value_len; /* offsets into the head */
} h1_field_t;

/* A request head the engine can forward itself. */
typedef struct {
  size_t head_len;
  uint32_t method_len;
  uint32_t auth, auth_len; /* the authority as written in the target */
  uint32_t path, path_len; /* path and query, without a fragment; empty means "/" */
  bool path_slash;         /* the path starts with '?': a '/' goes before it */
  char host[256];          /* the target's host, lower-case, without IPv6 brackets */
  int port;
  bool keep_alive;
  bool is_head;
  bool retriable; /* bodiless and idempotent */
  int64_t content_length; /* -1: none */
  int nfields;
  h1_field_t fields[H1_MAX_FIELDS];
  int nlisted; /* Connection-listed field names */
  h1_field_t listed[H1_MAX_LISTED];
} h1_req_t;

/* A response head as the engine relays it. */
typedef struct {
  size_t head_len;
  int status;
  uint32_t reason, reason_len;
  int minor;
  bool keep_alive;
  bool chunked;
  int64_t content_length; /* -1: none */
  int nfields;
  h1_field_t fields[H1_MAX_FIELDS];
  int nlisted;
  h1_field_t listed[H1_MAX_LISTED];
} h1_res_t;

/* Parses a request head at buf[0..len): its length, H1_INCOMPLETE (no end within len and len <
 * max), or H1_HANDBACK (anything the engine leaves to the JS engine: malformed, oversized, not
 * HTTP/1.1, not an absolute-form http:// target, a body other than Content-Length, Upgrade,
 * Expect, CONNECT, a Host count other than one). */
int h1_parse_request(const char *buf, size_t len, size_t max, h1_req_t *r);
/* Parses a response head: its length, H1_INCOMPLETE, or H1_BAD (the upstream's fault). */
int h1_parse_response(const char *buf, size_t len, size_t max, h1_res_t *r);

/* Writes the request head as the JS engine sends it upstream into out (cap bytes): returns its
 * length, or 0 when it does not fit. */
size_t h1_rewrite_request(const char *buf, const h1_req_t *r, char *out, size_t cap);
/* Writes the response head as the JS engine sends it to the client; *chunked says whether the
 * engine frames the body chunked (upstream chunked, or close-delimited); `bodiless` for HEAD,
 * 1xx, 204, 304. */
size_t h1_rewrite_response(const char *buf, const h1_res_t *r, bool bodiless, bool close, bool *chunked,
                           char *out, size_t cap);
/* As h1_rewrite_response, without the upstream's Content-Length (the body then goes chunked):
 * for a body filter that may change the body's length. */
size_t h1_rewrite_response_unsized(const char *buf, const h1_res_t *r, bool close, char *out, size_t cap);

/* The chunked-body tracker: passes bytes through and says where the body ends. */
typedef struct {
  int state;
  uint64_t left; /* bytes of chunk data left */
  int line;      /* length of the size line or trailer line so far */
  uint64_t data; /* chunk data bytes seen (the payload, without framing) */
} h1_chunks_t;
/* Consumes up to len bytes of a chunked body: returns how many belong to it (the rest follows
 * it), sets *done when the last chunk and its trailers ended; -1 on malformed framing. */
ssize_t h1_chunks_feed(h1_chunks_t *c, const char *buf, size_t len, bool *done);
/* As h1_chunks_feed, and the chunk data (the payload, without framing) is moved to dst (which
 * may be buf itself: it never runs ahead of the input), its length added to *payload; the
 * trailer section's bytes (the fields and the empty line that ends the body) are copied to
 * tdst (room for len bytes, not buf), their length added to *tlen. */
ssize_t h1_chunks_decode(h1_chunks_t *c, const char *buf, size_t len, bool *done, char *dst, size_t *payload,
                         char *tdst, size_t *tlen);


/* ---- the engine (h1.c) and its JS surface (h1-js.c) ---- */
#include <uv.h>
#include "nap.h"
#include "native.h"

typedef struct h1_engine h1_engine_t;
typedef struct h1_conn h1_conn_t;
typedef struct h1_up h1_up_t;

/* Bytes waiting to be written: data[off..len). */
typedef struct {
  char *data;
  size_t off, len, cap;
} h1_buf_t;

/* What the engine tells JS, batched once per loop turn. */
enum { EV_ROUTE = 1, EV_DONE = 2, EV_FAIL = 3, EV_HANDBACK = 4, EV_CLOSED = 5, EV_EXPIRE = 6, EV_HEAD = 7 };
/* Why a request failed (EV_FAIL). */
enum { F_CLOSED = 1, F_TIMEOUT = 2, F_BAD_RESPONSE = 3, F_BODY_TIMEOUT = 4, F_CLIENT_CLOSED = 5, F_BODY_CUT = 6 };

typedef struct h1_event {
  struct h1_event *next;
  int type, id;
  int kind;      /* EV_FAIL: F_*; EV_EXPIRE: the phase */
  int status; /* EV_CLOSED, EV_HANDBACK, EV_EXPIRE: the connection's quiet requests */
  bool responded, reused, body_unread;
  double bytes_up, bytes_down;
  double t_total, t_connect, t_head; /* ms before the record was made; -1: none */
  char method[25];
  char host[256];
  int port;
  char upstream[80];
  char *bytes; /* EV_HANDBACK: what was read and not acted on */
  size_t nbytes;
} h1_event_t;

struct h1_up {
  uv_poll_t poll;
  h1_engine_t *e;
  h1_conn_t *conn; /* the request using it, or NULL while idle */
  h1_up_t *next;   /* the idle list */
  int fd, events;
  bool closing;
  uint64_t idle_since;
  char key[272];
  char upstream[80];
};

struct h1_engine {
  napi_env env;
  uv_loop_t *loop;
  napi_ref cb;
  napi_async_context actx;
  uv_check_t check;
  uv_timer_t sweep;
  h1_conn_t *conns; /* live connections */
  h1_up_t *idle;    /* idle upstream connections, most recent first */
  h1_event_t *ev_head, *ev_tail;
  size_t max_header, max_response_header;
  uint64_t header_timeout, idle_timeout, response_timeout, body_timeout, pool_idle_timeout; /* ms, 0: off */
  int pool_max_idle;
  bool draining, closed, in_callback;
  /* Nothing observes a finished request (no request-end hook, audit or DEBUG log): one that
   * ends well is counted (quiet_done, the connection's quiet) instead of getting an EV_DONE. */
  bool quiet;
  double quiet_done; /* such requests since the last batch */
  int nidle;         /* connections in the idle list */
  int handles; /* uv handles still to close before the struct may go */
  bool finalized;
  char *scratch; /* one read's worth, shared */
  /* Napping (nap.h): once busy, a turn with engine events that finds nothing more ready
   * sleeps on a timer before libuv may sleep in epoll (h1-loop.c). */
  uv_prepare_t nap_check;
  nap_t nap;
  bool stirred; /* an engine event ran since the last prepare */
  int active;   /* connections with a request in progress (h1_set_state) */
  /* Response bodies go through the app's filter (h1-body.c): each response head with a body is
   * shown to JS first (EV_HEAD), and a filtered body's chunks are given to `filter_cb`. */
  bool filter_bodies;
  napi_ref filter_cb;
  /* A batch is due even without events: a filter's promise waits for its microtasks, which
   * run when JS is next called (deliver's napi_make_callback). */
  bool want_tick;
};

enum { ST_SILENT, ST_HEAD, ST_IDLE, ST_ROUTE, ST_UP, ST_ANSWER, ST_GONE };

struct h1_conn {
  uv_poll_t poll;
  h1_engine_t *e;
  h1_conn_t *next, *prev;
  int fd, id, state, events;
  int served; /* requests started on this connection */
  int quiet;  /* requests counted, not told (engine quiet), not yet given to JS */
  bool routed; /* the request asked JS for its upstream (EV_ROUTE): JS holds its record */
  bool closing, client_eof, close_after;
  bool lingering; /* answered and shut for writing: the rest of the request body is read and dropped */
  bool acked;     /* this request's client ACK was sent at once (ack_if_waiting) */
  uint64_t linger_start;
  char *in;
  size_t in_len, in_cap;
  h1_req_t req;
  char method[25];
  char key[272];
  uint64_t since, t_start, t_connect, t_head, t_sent, progress, progress_up;
  size_t req_len; /* the rewritten head, kept in up_out for a retry */
  h1_up_t *up;
  bool reused, retried, sent, got_bytes, head_parsed, encode, upstream_reusable;
  bool up_write_failed; /* a body write failed: the rest is dropped, the answer still read */
  int64_t body_left; /* request body bytes still to come from the client */
  h1_buf_t up_out;   /* to the upstream */
  h1_buf_t out;      /* to the client */
  char *rhead;       /* the response head as it arrives */
  size_t rhead_len;
  h1_res_t res;
  int framing; /* 0 none, 1 length, 2 chunked, 3 close */
  int64_t res_left;
  h1_chunks_t chunks;
  double bytes_up, bytes_down;
  double rx, tx; /* client bytes read and written, for the connection's stats */
  uint64_t stall_check_at; /* the next response-timeout check of a body under way */
  double bytes_at_check;
  int status;
  /* The response body through the app's filter (h1-body.c). */
  int filter;          /* FILTER_* */
  bool filter_wait;    /* a chunk or the end is with JS (its promise): the upstream is not read */
  int filter_end;      /* 1: the body ended upstream, its end goes to JS next; 2: the end is with JS */
  bool filter_pumping; /* in h1_filter_pump (no recursion) */
  bool filter_lends;   /* the filter keeps no chunk: one read buffer serves the whole body */
  bool head_held;      /* the response head waits in `held` for the first bytes out (or the end) */
  h1_buf_t held;
  h1_buf_t trailers; /* a chunked upstream's trailer section, sent after the filtered body */
  size_t rest_off, rest_len; /* body bytes read with the head, in rhead, not yet filtered */
  napi_ref ab;               /* the memory of the next read: a Buffer given to JS with its bytes */
  char *ab_data;
};

enum { FILTER_NONE, FILTER_ASK, FILTER_ON };
/* What a filter call returned (h1-body.c). */
enum { FILTER_PASS, FILTER_PENDING, FILTER_STOPPED };
/* A bit of h1_filter_start's mode: the filter takes its chunks lent. */
#define FILTER_LEND 4
#define FILTER_READ 65536

/* A request is in progress from its route to its answer: the engine counts those (napping asks
 * for several at once, h1-loop.c). Every change of state goes through here. */
static inline bool h1_active_state(int st) { return st == ST_ROUTE || st == ST_UP || st == ST_ANSWER; }
static inline void h1_set_state(h1_conn_t *c, int st) {
  c->e->active += (int)h1_active_state(st) - (int)h1_active_state(c->state);
  c->state = st;
}

/* h1.c */
/* The loop's clock in ms (uv_now: read once per loop turn), for timeouts and idle times. */
static inline uint64_t h1_now(const h1_engine_t *e) { return uv_now(e->loop); }
/* A request's timestamp (ns) for its record; none (0) when the engine is quiet: nothing reads
 * the timings then (the request-end hook and the audit record are the only readers). */
static inline uint64_t h1_stamp(const h1_engine_t *e) { return e->quiet ? 0 : uv_hrtime(); }
h1_conn_t *h1_conn_start(h1_engine_t *e, int fd, int id, const char *bytes, size_t n);
h1_conn_t *h1_conn_find(h1_engine_t *e, int id);
/* JS gave the upstream for a request waiting in ST_ROUTE (fd already the engine's). */
void h1_adopt(h1_conn_t *c, int fd, const char *upstream);
/* JS answers the request itself (an error before the response): bytes, then close or go on. */
void h1_answer(h1_conn_t *c, const char *bytes, size_t n, bool close);
void h1_sweep(h1_engine_t *e);
/* Draining: idle connections close now (EV_CLOSED, kind 1), busy ones after their response. */
void h1_drain(h1_engine_t *e);
/* Stops serving a connection at once, without an event (its JS socket went away). */
void h1_drop(h1_conn_t *c);
/* True while a request is under way or a response is being written (for the drain loop). */
bool h1_busy(h1_conn_t *c);
void h1_engine_close(h1_engine_t *e);
/* Starts napping when the engine is busy (h1-loop.c), as the environment says (nap_init). */
void h1_nap_start(h1_engine_t *e);
/* h1.c: hands a connection back to JS (EV_HANDBACK or EV_EXPIRE) with what it read. */
void h1_hand_back(h1_conn_t *c, int type, int phase);
/* h1.c: the request waits in ST_ROUTE for JS to connect an upstream (an EV_ROUTE event). */
void h1_ask_route(h1_conn_t *c);
void h1_push(h1_engine_t *e, h1_event_t *ev);
void h1_handle_closed(uv_handle_t *h);
/* Internal to h1.c and h1-up.c. */
#define READ_SIZE 65536
#define UP_OUT_HIGH 65536
/* Lingering, as nginx's lingering_close: how long a connection that answered before its
 * request body ended goes on reading it (ms without a byte, and in all). */
#define LINGER_QUIET_MS 5000
#define LINGER_MAX_MS 30000
bool h1_buf_add(h1_buf_t *b, const char *p, size_t n);
/* Appends p[0..n) as one chunk of a chunked body (n > 0). */
bool h1_buf_add_chunk(h1_buf_t *b, const char *p, size_t n);
size_t h1_buf_pending(const h1_buf_t *b);
int h1_buf_flush(h1_buf_t *b, int fd);
h1_event_t *h1_event_new(h1_conn_t *c, int type);
void h1_record(h1_conn_t *c, int type, int kind);
void h1_client_poll(h1_conn_t *c);
bool h1_flush_client(h1_conn_t *c);
void h1_conn_close(h1_conn_t *c, bool tell);
void h1_complete(h1_conn_t *c);
void h1_fail(h1_conn_t *c, int kind);
void h1_engine_maybe_free(h1_engine_t *e);
/* The response head left for the client (a filtered body holds it back until its first bytes). */
static inline bool h1_responded(const h1_conn_t *c) { return c->head_parsed && !c->head_held; }
/* h1-body.c */
/* The response head is in: shown to JS (EV_HEAD) before anything of the body moves. */
void h1_filter_ask(h1_conn_t *c);
/* JS's choice: mode 0 no filter, 1 a filter that observes, 2 one that rewrites (either with
 * FILTER_LEND: it keeps no chunk past its call); -1 refused (JS answers it: h1_answer). */
void h1_filter_start(h1_conn_t *c, int mode);
/* A filter's promise settled: bytes to send (NULL: nothing), or the body stopped. */
void h1_filter_resume(h1_conn_t *c, const char *bytes, size_t n, bool stop);
/* Moves the filtered body on as far as it can: bytes read with the head, the upstream, the end. */
void h1_filter_pump(h1_conn_t *c);
/* A filtered exchange ends: the memory it held. */
void h1_filter_reset(h1_conn_t *c);
/* One read of a filtered body's upstream (h1-up.c's up_read for a filtered body). */
bool h1_filter_read(h1_conn_t *c, h1_up_t *u, bool *more);
/* h1-up.c */
/* The upstream closed or failed with the response still to come. */
void h1_upstream_gone(h1_conn_t *c, bool eof);
/* Sends the response head in c->rhead on (rewritten) and relays the body bytes read with it;
 * false once the exchange ended (or failed). */
bool h1_head_relay(h1_conn_t *c, bool bodiless);
void h1_up_poll(h1_up_t *u);
void h1_up_close(h1_up_t *u);
void h1_up_closed(uv_handle_t *h);
void h1_up_release(h1_engine_t *e, h1_up_t *u);
h1_up_t *h1_up_take(h1_engine_t *e, const char *key);
void h1_send_request(h1_conn_t *c);
void h1_move_body(h1_conn_t *c);
void h1_on_up(uv_poll_t *h, int status, int events);

/* The JS side let go of the engine: freed once its handles have closed. */
void h1_engine_release(h1_engine_t *e);

#endif
