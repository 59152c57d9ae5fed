/*
 * The pipe pool and copy buffer of the thread that drives a reactor (its own thread, or the JS
 * thread in inline mode), for the splicer (splice.c). That thread only. Kept on the heap behind
 * a thread-specific key, not in TLS storage of its own size: the addon is dlopen'd. A pipe that
 * ended empty and was never grown goes back to the pool, so a short tunnel makes and closes no
 * pipe; the pool's pipes are closed when a reactor thread ends, or, inline, when the env goes
 * (splice_pipes_release: a worker's JS thread outlives the addon's code, and a key destructor
 * left to run at its exit would call unmapped code).
 * Growing a direction's pipe (splice_pipe_grow) goes in two steps, and the second, past
 * GROW_FIRST, is for at most BULK_PIPES pipes at once (a process-wide count: either thread may
 * close a pipe).
 */
#include "splice.h"


typedef struct {
  int n, max;
  int ends[POOL_MAX][2]; /* [read end, write end] */
  uint8_t buf[COPY_BUF]; /* the thread's copy buffer (a young direction's bytes: see pump) */
} pipe_pool_t;

static __thread pipe_pool_t *pool;
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* The reactor thread ends (its env is going away): close the pooled pipes. */
static void pool_free(void *arg) {
  pipe_pool_t *p = arg;
  while (p->n > 0) {
    p->n--;
    close(p->ends[p->n][0]);
    close(p->ends[p->n][1]);
  }
  free(p);
}

static void pool_key_make(void) {
  pthread_key_create(&pool_key, pool_free);
}

/* Makes this thread's pool on first use; without one (no memory) pipes are simply not pooled. */
static void pool_init(void) {
  struct rlimit lim;
  if (pool) return;
  pthread_once(&pool_once, pool_key_make);
  pool = calloc(1, sizeof *pool);
  if (!pool) return;
  pool->max = POOL_MAX;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur / 16 < POOL_MAX)
    pool->max = (int)(lim.rlim_cur / 16);
  pthread_setspecific(pool_key, pool);
}

/* A pipe for direction d: a pooled one, or a new one at the kernel's default size. */
int splice_pipe_take(dir_t *d) {
  pool_init();
  if (pool && pool->n > 0) {
    pool->n--;
    d->pr = pool->ends[pool->n][0];
    d->pw = pool->ends[pool->n][1];
  } else {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) return errno;
    d->pr = p[0];
    d->pw = p[1];
  }
  d->cap = PIPE_DEFAULT;
  return 0;
}

/* Pipes larger than GROW_FIRST in the process (either thread closes them: atomic). */
static int bulk_pipes;

void splice_pipe_grow(dir_t *d, size_t asked) {
  size_t want = asked;
  bool bulk = want > GROW_FIRST && d->bytes >= GROW_BULK_AFTER;
  if (want > GROW_FIRST && !bulk) want = GROW_FIRST;
  if (bulk && __atomic_add_fetch(&bulk_pipes, 1, __ATOMIC_RELAXED) > BULK_PIPES) {
    __atomic_sub_fetch(&bulk_pipes, 1, __ATOMIC_RELAXED); /* the budget is spent: stay as it is */
    bulk = false;
    want = GROW_FIRST;
  }
  if (want <= d->cap) {
    if (bulk) __atomic_sub_fetch(&bulk_pipes, 1, __ATOMIC_RELAXED);
    return;
  }
  int c = fcntl(d->pw, F_SETPIPE_SZ, (int)want);
  if (c < 0 && bulk) __atomic_sub_fetch(&bulk_pipes, 1, __ATOMIC_RELAXED);
  d->bulk = bulk && c > 0;
  /* Failed (EPERM past an unprivileged user's share, ENOMEM): not asked again at this size. */
  d->cap = c > 0 ? (size_t)c : want;
}

/* Direction d's pipe back to the pool (if `may_pool`, it ended empty and was never grown); else closed. */
void splice_pipe_give(dir_t *d, bool may_pool) {
  if (d->pr < 0) return;
  if (d->bulk) __atomic_sub_fetch(&bulk_pipes, 1, __ATOMIC_RELAXED);
  d->bulk = false;
  if (may_pool && d->inpipe == 0 && d->cap == PIPE_DEFAULT && pool && pool->n < pool->max) {
    pool->ends[pool->n][0] = d->pr;
    pool->ends[pool->n][1] = d->pw;
    pool->n++;
  } else {
    close(d->pr);
    close(d->pw);
  }
  d->pr = d->pw = -1;
}

/* The reactor thread's copy buffer (COPY_BUF bytes), made on first use; NULL without memory. */
uint8_t *splice_copy_buf(void) {
  pool_init();
  return pool ? pool->buf : NULL;
}

/* This thread's pool, closed now (the env whose JS thread drives the reactor is going away). */
void splice_pipes_release(void) {
  if (!pool) return;
  pthread_setspecific(pool_key, NULL);
  pool_free(pool);
  pool = NULL;
}
