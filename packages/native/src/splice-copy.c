/*
 * The copying start of a splice (splice.c): a direction's first COPY_BYTES go through the reactor
 * thread's buffer (recv, send) instead of a pipe. A short exchange then costs a read and a write
 * per message where splicing costs two splices and a pipe, and a short read (the receive queue
 * emptied) ends the direction's turn without the read that would only say EAGAIN, or, once the
 * peer's FIN was reported (EPOLLRDHUP), the one that would only say 0, as nginx reads. Bytes the
 * destination does not take are held (malloc'd) and written before anything else.
 *
 * Reactor thread, under s->mu.
 */
#include "splice.h"

/* MSG_MORE for a copied direction's last bytes: its source's end was read with them, so the
 * shutdown (or close) that follows at once carries the FIN in the same segment (one packet and
 * one wake-up of the peer fewer per short connection; an unsent tail takes the FIN). */
static int fin_follows(const dir_t *d) {
  return d->eof ? MSG_MORE : 0;
}

/* Writes direction d's held bytes (copied, not yet taken by dst). */
int splice_write_held(splicer_t *s, dir_t *d, int *side) {
  while (d->held_off < d->held_len) {
    if (!s->can_write[d->dst]) return 0;
    int flags = MSG_NOSIGNAL | MSG_DONTWAIT | fin_follows(d);
    ssize_t n = send(s->fd[d->dst], d->held + d->held_off, d->held_len - d->held_off, flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        s->can_write[d->dst] = false;
        return 0;
      }
      *side = d->dst;
      return errno;
    }
    d->held_off += (size_t)n;
  }
  free(d->held);
  d->held = NULL;
  d->held_len = d->held_off = 0;
  return 0;
}

/* One read from src into the copy buffer and its write to dst (what dst does not take is held).
 * Returns 0 or an errno (*side set); *stop when the direction has nothing more to do now. */
int splice_copy_once(splicer_t *s, dir_t *d, size_t *moved, int *side, bool *stop) {
  uint8_t *copy_buf = splice_copy_buf();
  ssize_t n = recv(s->fd[d->src], copy_buf, COPY_BUF, MSG_DONTWAIT);
  if (n <= 0) {
    int e = splice_read_end(s, d, n, side);
    if (e == EAGAIN) *stop = true;
    return e == EAGAIN || e == EINTR ? 0 : e;
  }
  __atomic_store_n(&d->bytes, d->bytes + (uint64_t)n, __ATOMIC_RELAXED);
  *moved += (size_t)n;
  /* A short read emptied the receive queue: any later byte raises a new edge (as nginx reads).
   * If the peer's FIN was reported, the end of file is next: no read just to see the 0. */
  if ((size_t)n < COPY_BUF) {
    if (s->rdhup[d->src]) d->eof = true;
    else s->can_read[d->src] = false;
  }
  int flags = MSG_NOSIGNAL | MSG_DONTWAIT | fin_follows(d);
  size_t off = 0;
  while (off < (size_t)n && s->can_write[d->dst]) {
    ssize_t w = send(s->fd[d->dst], copy_buf + off, (size_t)n - off, flags);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        s->can_write[d->dst] = false;
        break;
      }
      *side = d->dst;
      return errno;
    }
    off += (size_t)w;
  }
  if (off < (size_t)n) {
    d->held = malloc((size_t)n - off);
    if (!d->held) {
      *side = -1;
      return ENOMEM;
    }
    memcpy(d->held, copy_buf + off, (size_t)n - off);
    d->held_len = (size_t)n - off;
    d->held_off = 0;
    *stop = true;
  }
  return 0;
}
