/*
 * Held ACKs, with a bound. A socket with TCP_QUICKACK off (Linux's "pingpong" mode) does not
 * acknowledge bytes at once: the ACK waits for the next segment out, which carries it. A
 * tunnel's sockets are in that mode on purpose: the client's when its listener has
 * `tcp_smart_accept` (accepted sockets inherit it), so the answer carries the ACK of the
 * request; the upstream's from its connect with `tcp.smart_connect`, so the client's first
 * bytes carry the handshake's last ACK. One packet less each; and a target whose connection
 * comes with its first bytes wakes once for both. On loopback, packets and wake-ups are most of
 * what a short connection costs.
 *
 * The kernel alone holds such an ACK until its delayed-ACK timer: 40 ms for data, 200 ms for
 * the handshake. A peer that waits for it meanwhile waits that long: a server that speaks first
 * does not see its connection until the handshake's ACK comes, and a client using Nagle's
 * algorithm that writes twice before any answer holds its second write until the first is
 * acknowledged. That is why HAProxy leaves both options off for TCP.
 *
 * Here the reactor thread lists each held ACK, and one still owed goes out (TCP_QUICKACK on:
 * the kernel sends it and acknowledges at once from then on, as after its own timer):
 * - when the thread has had nothing to do for ack_idle_ms (OXY_ACK_IDLE_MS, default
 *   ACK_IDLE_MS): a held ACK pays only while other connections keep the thread busy (their
 *   events are what delays it), so an idle proxy sends it a millisecond or two late at most;
 * - at the latest ack_hold_ms (OXY_ACK_HOLD_MS, default ACK_HOLD_MS) after it was held. Under
 *   load an exchange takes milliseconds anyway (64 connections in flight at 6,000 a second:
 *   10 ms each), and the answer carries nearly every ACK held that long.
 * A segment out to that side (bytes or the FIN) takes it off the list with no system call; so
 * does the peer's FIN, after which the peer has nothing more to send.
 *
 * Holding the handshake's ACK makes a server that speaks first wait for it, so a listener whose
 * clients let QUIET_MISSES such holds in a row go out without their bytes stops holding it, but
 * for one tunnel in QUIET_RETRY (early_t).
 *
 * Each side has one list, oldest first: every entry is held for the same time, so the list is
 * in due order and the tick looks at its head. Lifetime: a listed splicer is named by the
 * reactor thread (splicer_named), which keeps it alive if JS stops it meanwhile; the tick then
 * unlinks it.
 */
#include "splice.h"

#define ACK_HOLD_MS 10
#define ACK_IDLE_MS 1
int64_t ack_hold_ms = ACK_HOLD_MS, ack_idle_ms = ACK_IDLE_MS;

static __thread splicer_t *head[2], *tail[2];
/* Runs of any splicer (splice_ack_after_run), and the tick that last saw the count change. */
static __thread uint64_t runs, runs_seen;
static __thread int64_t quiet_since;

static void unlink_ack(splicer_t *s, int i) {
  if (!s->ack_held[i]) return;
  if (s->ack_prev[i]) s->ack_prev[i]->ack_next[i] = s->ack_next[i];
  else head[i] = s->ack_next[i];
  if (s->ack_next[i]) s->ack_next[i]->ack_prev[i] = s->ack_prev[i];
  else tail[i] = s->ack_prev[i];
  s->ack_prev[i] = s->ack_next[i] = NULL;
  s->ack_held[i] = false;
}

/* The handshake's held ACK is over: it rode on the client's first bytes (a hit for the
 * listener), or it went without them (a miss: a target that speaks first waited for it). */
static void handshake_over(splicer_t *s, bool rode) {
  if (!s->ack_handshake) return;
  early_t *e = splicer_early(s);
  if (rode) e->quiet = 0;
  else if (e->quiet < QUIET_MISSES) e->quiet++;
  s->ack_handshake = false;
}

/* The ACK owed on side i goes now, and the socket acknowledges at once from here on. */
static void send_ack(splicer_t *s, int i) {
  sock_quick_ack(s->fd[i], 1);
  s->ack_smart[i] = false;
  if (i == 1) handshake_over(s, false);
}

void splice_ack_hold(splicer_t *s, int i) {
  if (s->ack_held[i] || !s->ack_smart[i]) return;
  if (ack_hold_ms <= 0) {
    send_ack(s, i);
    return;
  }
  s->ack_due[i] = splicer_now_ms() + ack_hold_ms;
  s->ack_prev[i] = tail[i];
  s->ack_next[i] = NULL;
  if (tail[i]) tail[i]->ack_next[i] = s;
  else head[i] = s;
  tail[i] = s;
  s->ack_held[i] = true;
}

void splice_ack_handshake(splicer_t *s) {
  early_t *e = splicer_early(s);
  bool worth = e->quiet < QUIET_MISSES || ++e->quiet_skipped >= QUIET_RETRY;
  if (!worth || ack_hold_ms <= 0) {
    send_ack(s, 1);
    return;
  }
  e->quiet_skipped = 0;
  splice_ack_hold(s, 1);
  s->ack_handshake = s->ack_held[1];
}

void splice_ack_after_run(splicer_t *s) {
  runs++;
  for (int i = 0; i < 2; i++) {
    if (!s->ack_smart[i]) continue;
    const dir_t *in = &s->dir[i], *out = &s->dir[1 - i];
    bool got = in->bytes != s->ack_in[i];
    bool sent = out->bytes != s->ack_out[i] || out->shut;
    s->ack_in[i] = in->bytes;
    s->ack_out[i] = out->bytes;
    /* The target spoke (or closed) first, after the kernel's own timer let the ACK go: a miss. */
    if (i == 1 && (sent || got || in->eof)) handshake_over(s, sent);
    if (in->eof || out->shut) {
      /* The peer sent all it will (the ACK of its FIN waits for ours, as the kernel means it),
       * or our FIN carried the ACK: nothing to hold from here on. */
      unlink_ack(s, i);
      s->ack_smart[i] = false;
      continue;
    }
    if (sent) unlink_ack(s, i);
    /* Bytes read and none written to that side after them: the ACK they are owed is held. A
     * run pumps toward the upstream first, so for the client's side (0) bytes written in the
     * same run came after the read and carried its ACK; for the upstream's they came before. */
    if (got && !(i == 0 && sent)) splice_ack_hold(s, i);
  }
}

void splice_ack_carried(splicer_t *s, int i) {
  if (i == 1) handshake_over(s, true);
  unlink_ack(s, i);
}

void splice_ack_drop(splicer_t *s) {
  unlink_ack(s, 0);
  unlink_ack(s, 1);
  s->ack_handshake = false;
}

int splice_ack_tick(int64_t now) {
  if (!head[0] && !head[1]) return -1;
  if (runs != runs_seen) {
    runs_seen = runs;
    quiet_since = now;
  }
  bool idle = now - quiet_since >= ack_idle_ms;
  int64_t next = INT64_MAX;
  for (int i = 0; i < 2; i++) {
    while (head[i]) {
      splicer_t *s = head[i];
      if (!idle && s->ack_due[i] > now) {
        if (s->ack_due[i] < next) next = s->ack_due[i];
        break;
      }
      pthread_mutex_lock(&s->mu);
      unlink_ack(s, i);
      /* Stopped by JS while listed: the reactor thread's reference goes if this was its last. */
      if (s->closing) s->thread_ref = splicer_named(s);
      else send_ack(s, i);
      bool gone = splicer_unreferenced(s);
      pthread_mutex_unlock(&s->mu);
      if (gone) splicer_retire(s);
    }
  }
  if (next == INT64_MAX) return -1;
  if (quiet_since + ack_idle_ms < next) next = quiet_since + ack_idle_ms;
  return (int)(next - now);
}
