/*
 * The reactor: one epoll set per event loop, watched by a single uv_poll, for descriptors the
 * addon's C code drives itself (today the splicers of splice.c). A watched descriptor then costs
 * an epoll registration in the kernel and nothing in libuv: no uv handle per descriptor.
 *
 * The events are the user's: level-triggered interest set only while someone is interested (a
 * hung-up socket nobody waits on then cannot wake the loop), or, as splice.c does, EPOLLET
 * registered once for the descriptor's life. Ready events are dispatched in batches of up to
 * BATCH per loop iteration to the reactor's callback with the tag given at watch time (the set
 * is level-triggered in libuv's epoll: what a batch left comes on the next loop turn).
 * Memory freed while a batch is dispatched (`reactor_free_later`) is freed after the batch, so a
 * later event of the same batch never points at freed memory. The loop is kept alive while
 * `reactor_hold` says something is running.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <uv.h>

#include "native.h"

/* Events taken from the epoll set per loop iteration. */
#define BATCH 256

struct reactor {
  uv_poll_t poll;
  uv_loop_t *loop;
  reactor_cb cb;
  int epfd;
  int dispatching;  /* > 0 while a batch is being dispatched */
  int active;       /* running users: the loop stays alive while there are any */
  void **dead;      /* freed after the current batch */
  size_t ndead, capdead;
  struct reactor *next;
};

static pthread_mutex_t reactors_lock = PTHREAD_MUTEX_INITIALIZER;
static reactor_t *reactors = NULL;

static void on_ready(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  reactor_t *r = h->data;
  struct epoll_event ev[BATCH];
  /* One batch per loop iteration; the set stays readable (level-triggered) if more is ready. */
  int n = epoll_wait(r->epfd, ev, BATCH, 0);
  r->dispatching++;
  for (int k = 0; k < n; k++) r->cb(ev[k].data.ptr, ev[k].events);
  r->dispatching--;
  if (r->dispatching == 0) {
    for (size_t i = 0; i < r->ndead; i++) free(r->dead[i]);
    r->ndead = 0;
  }
}

/* The env is going away: unlink its loop's reactor and stop watching. */
static void cleanup(void *arg) {
  reactor_t *r = arg;
  pthread_mutex_lock(&reactors_lock);
  for (reactor_t **p = &reactors; *p; p = &(*p)->next) {
    if (*p == r) {
      *p = r->next;
      break;
    }
  }
  pthread_mutex_unlock(&reactors_lock);
  r->active = 0;
  uv_poll_stop(&r->poll);
  /* No close callback: a worker's env unloads the addon before its loop runs the closing
   * handles, and a callback here would then be a call into unmapped code (SIGSEGV). Closing
   * the poll handle has taken the set out of libuv's epoll already; the struct is kept (users
   * finalised later may still look at it). */
  uv_close((uv_handle_t *)&r->poll, NULL);
  close(r->epfd);
  r->epfd = -1;
}

reactor_t *reactor_for(napi_env env, reactor_cb cb) {
  uv_loop_t *loop;
  reactor_t *r;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;
  pthread_mutex_lock(&reactors_lock);
  for (r = reactors; r && r->loop != loop; r = r->next) {
  }
  pthread_mutex_unlock(&reactors_lock);
  if (r) return r;
  r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->loop = loop;
  r->cb = cb;
  r->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (r->epfd < 0) {
    int e = errno;
    free(r);
    throw_errno(env, e, "epoll_create1", "making the addon's epoll set");
    return NULL;
  }
  int rc = uv_poll_init(loop, &r->poll, r->epfd);
  if (rc == 0) {
    r->poll.data = r;
    rc = uv_poll_start(&r->poll, UV_READABLE, on_ready);
  }
  if (rc < 0) {
    close(r->epfd);
    free(r); /* uv_poll_init fails before the handle is registered; start cannot fail on epoll */
    throw_errno(env, -rc, "uv_poll_init", "watching the addon's epoll set");
    return NULL;
  }
  uv_unref((uv_handle_t *)&r->poll); /* only running users keep the loop alive (reactor_hold) */
  napi_add_env_cleanup_hook(env, cleanup, r);
  pthread_mutex_lock(&reactors_lock);
  r->next = reactors;
  reactors = r;
  pthread_mutex_unlock(&reactors_lock);
  return r;
}

int reactor_watch(reactor_t *r, int fd, uint32_t *registered, uint32_t events, void *tag) {
  if (events == *registered) return 0;
  if (r->epfd < 0) return EBADF;
  struct epoll_event e = {.events = events, .data.ptr = tag};
  int op = events == 0 ? EPOLL_CTL_DEL : *registered == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(r->epfd, op, fd, &e) < 0) return errno;
  *registered = events;
  return 0;
}

void reactor_hold(reactor_t *r, int delta) {
  r->active += delta;
  if (r->epfd < 0) return;
  if (r->active == 1 && delta > 0) uv_ref((uv_handle_t *)&r->poll);
  if (r->active == 0) uv_unref((uv_handle_t *)&r->poll);
}

void reactor_free_later(reactor_t *r, void *p) {
  if (r->dispatching == 0) {
    free(p);
    return;
  }
  if (r->ndead == r->capdead) {
    size_t cap = r->capdead ? r->capdead * 2 : 64;
    void **d = realloc(r->dead, cap * sizeof *d);
    if (!d) return; /* leak rather than free under a pending event */
    r->dead = d;
    r->capdead = cap;
  }
  r->dead[r->ndead++] = p;
}
