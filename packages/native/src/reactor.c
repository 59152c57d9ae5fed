/*
 * The reactor: one epoll set per event loop, driven by a thread of its own, for descriptors the
 * addon's C code drives itself (the splicers of splice.c). A watched descriptor costs an epoll
 * registration in the kernel and nothing in libuv, and the system calls its readiness leads to
 * (splice, shutdown, close, connect) run off the JS thread: on a loaded proxy the JS thread
 * only parses, decides and accounts, and the kernel's share of moving the bytes goes to
 * another core.
 *
 * Threads: the JS thread makes the reactor, posts commands (`reactor_command`: run this item
 * on the reactor thread, e.g. "connect and register it") and counts running users
 * (`reactor_hold`: the JS loop stays alive while there are any). The reactor thread waits on the
 * set, dispatches ready events in batches of up to BATCH to their items' event callbacks, runs
 * the commands, and asks the tick function (if set) for its next deadline. A command that finds
 * the thread asleep wakes it at once, or, if the caller allows (`at_turn_end`: a tunnel's
 * start), at the end of the JS loop turn (a uv_check, with a uv_idle so the loop does not
 * block first), once for all such commands of that turn. Items the reactor thread
 * has news of are posted back (`reactor_post`);
 * their done callbacks run on the JS thread, in post order, from one uv_async (wake-ups
 * coalesce: one per loop turn at most). The uv_async is sent once per batch, after the batch
 * and outside every lock (`flush_posts`), not at each post: where both threads share one core,
 * the woken JS thread preempts the reactor thread at once, and a wake sent with an item's lock
 * held made the JS thread block on that lock and the two threads switch back and forth (two
 * to four switches per post, measured).
 *
 * Napping (nap.h): busy with many tunnels, a turn with events or commands that leaves nothing
 * ready sleeps on a timer instead of in epoll_wait, and meanwhile counts as awake (a command
 * queues without a wake-up and runs after the nap), so neither the JS thread's commands nor the
 * peers' bytes wake it one by one.
 *
 * Inline mode (OXY_REACTOR=inline): no thread. The JS loop polls the epoll set (a uv_poll on
 * its descriptor) and runs, on the JS thread, what the thread would: commands at the end of the
 * loop turn that queued them, events as the set turns readable, the tick from a uv_timer, and
 * the posts' done callbacks straight after the round that posted them. No wake-up crosses
 * threads; the kernel's share of moving the bytes stays on the JS thread's core.
 *
 * Memory: an item whose last reference is dropped is retired (`reactor_retire`, from either
 * thread) and freed by the reactor thread after the batch it is dispatching, so an event of the
 * same batch never points at freed memory; a descriptor taken out of the set (epoll_ctl DEL)
 * is in no later batch. Once the thread has stopped (the env is going away), retired items are
 * freed at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#include "nap.h"
#include "native.h"

/* Events taken from the epoll set per wait. */
#define BATCH 256

struct reactor {
  uv_async_t async; /* the JS loop's end: posted items */
  uv_check_t check; /* JS thread: wakes the thread once, after the loop turn's commands */
  uv_idle_t idle;   /* JS thread: active while a wake is due, so the loop does not block first */
  bool wake_due;    /* JS thread: a wake is due at the end of this loop turn */
  /* Inline mode (no thread): the JS loop polls the set and runs what the thread would. */
  bool inline_mode;
  bool dispatching; /* JS thread, inline: inside inline_run (commands queue without a wake) */
  uv_poll_t poll;   /* inline: the set is readable */
  uv_timer_t timer; /* inline: the tick's next deadline */
  uv_prepare_t nap_prep; /* inline: naps before libuv polls (as the HTTP/1.1 engine does) */
  bool inline_stirred;   /* inline: the last run dispatched events */
  uv_loop_t *loop;
  napi_env env;
  int (*tick)(reactor_t *r); /* reactor thread: what is due before each wait */
  int epfd;
  int wakefd; /* eventfd in the set (tag NULL): commands or stop */
  pthread_t thread;
  bool started, stopping, stopped;
  bool post_due; /* reactor thread: items were posted since the last uv_async_send */
  int active; /* running users (JS thread only): the loop stays alive while there are any */
  int tunnels; /* open tunnels (either thread, atomic): the exchanges in progress of a nap */
  nap_t nap;   /* reactor thread (nap.h): napping once busy with many tunnels */

  pthread_mutex_t lock; /* guards everything below */
  bool sleeping;        /* the thread is (about to be) in epoll_wait: a command must wake it */
  reactor_item_t *cmd_head, *cmd_tail;
  reactor_item_t *done_head, *done_tail;
  reactor_item_t *dead; /* retired: freed after the current batch */
  struct reactor *next;
};

static pthread_mutex_t reactors_lock = PTHREAD_MUTEX_INITIALIZER;
static reactor_t *reactors = NULL;

static void free_list(reactor_item_t *it) {
  while (it) {
    reactor_item_t *n = it->next_cmd;
    free(it);
    it = n;
  }
}

static void on_async(uv_async_t *h);
static void on_check(uv_check_t *h);
static void on_idle(uv_idle_t *h);
static void on_inline_timer(uv_timer_t *h);
static void inline_run(reactor_t *r);

/* The reactor this thread drives (NULL on any other thread). */
static __thread reactor_t *self;

/* Reactor thread, holding no lock: wakes the JS thread once for what this batch posted. */
static void flush_posts(reactor_t *r) {
  if (!r->post_due) return;
  r->post_due = false;
  /* Inline, this is the JS thread: the callbacks run now (they may queue commands). */
  if (r->inline_mode) on_async(&r->async);
  else uv_async_send(&r->async);
}

/* Runs a list of commands taken from the queue, in order. */
static void run_commands(reactor_t *r, reactor_item_t *cmds) {
  while (cmds) {
    reactor_item_t *n = cmds->next_cmd;
    cmds->ops->command(r, cmds);
    cmds = n;
  }
}

/* A batch of events to their items (the eventfd's, tagged NULL, is drained). */
static void dispatch(reactor_t *r, const struct epoll_event *ev, int n) {
  for (int k = 0; k < n; k++) {
    if (ev[k].data.ptr == NULL) {
      uint64_t v;
      ssize_t ignored = read(r->wakefd, &v, sizeof v);
      (void)ignored;
      continue;
    }
    uintptr_t tag = (uintptr_t)ev[k].data.ptr;
    reactor_item_t *it = (reactor_item_t *)(tag & ~(uintptr_t)1);
    it->ops->event(it, (int)(tag & 1), ev[k].events);
  }
}

/* After a batch: the items retired meanwhile are freed (no event of the batch is left to use them). */
static void free_retired(reactor_t *r) {
  pthread_mutex_lock(&r->lock);
  reactor_item_t *dead = r->dead;
  r->dead = NULL;
  pthread_mutex_unlock(&r->lock);
  free_list(dead);
}

/* JS thread: a check at the end of this loop turn (and an idle so the loop does not block
 * before it), once, for whatever the turn queues. */
static void check_at_turn_end(reactor_t *r) {
  if (r->wake_due) return;
  r->wake_due = true;
  uv_idle_start(&r->idle, on_idle);
  uv_check_start(&r->check, on_check);
}

static void *run(void *arg) {
  reactor_t *r = arg;
  struct epoll_event ev[BATCH];
  pthread_setname_np(pthread_self(), "oxy-reactor"); /* for top -H, perf and /proc: not "MainThread" */
  self = r;
  bool stirred = false; /* the last turn had events or commands */
  for (;;) {
    int (*tick)(reactor_t *) = __atomic_load_n(&r->tick, __ATOMIC_ACQUIRE);
    int timeout = tick ? tick(r) : -1;
    pthread_mutex_lock(&r->lock);
    reactor_item_t *cmds = r->cmd_head;
    r->cmd_head = r->cmd_tail = NULL;
    bool stop = r->stopping;
    /* Napping, the thread is awake for the commands' purposes: they queue without a wake-up
     * and run after the nap. */
    bool nap = cmds == NULL && !stop && stirred && timeout != 0 &&
               nap_worth(&r->nap, uv_hrtime(), __atomic_load_n(&r->tunnels, __ATOMIC_RELAXED));
    r->sleeping = cmds == NULL && !stop && !nap;
    pthread_mutex_unlock(&r->lock);
    if (stop) break;
    flush_posts(r); /* what the last batch and the tick posted: once, with no lock held */
    if (cmds) {
      /* Run them, then look again (for more, and for the deadlines they set) before sleeping. */
      run_commands(r, cmds);
      stirred = true;
      continue;
    }
    int n;
    if (nap) {
      n = r->nap.always ? 0 : epoll_wait(r->epfd, ev, BATCH, 0); /* the tests' nap comes even with more ready */
      if (n == 0) {
        nap_sleep(&r->nap);
        n = epoll_wait(r->epfd, ev, BATCH, 0);
      }
    } else {
      n = epoll_wait(r->epfd, ev, BATCH, timeout);
      pthread_mutex_lock(&r->lock);
      r->sleeping = false;
      pthread_mutex_unlock(&r->lock);
    }
    stirred = n > 0;
    dispatch(r, ev, n);
    free_retired(r);
  }
  return NULL;
}

/* JS thread: the items the reactor thread posted, in order. */
static void on_async(uv_async_t *h) {
  reactor_t *r = h->data;
  pthread_mutex_lock(&r->lock);
  reactor_item_t *it = r->done_head;
  r->done_head = r->done_tail = NULL;
  pthread_mutex_unlock(&r->lock);
  while (it) {
    reactor_item_t *n = it->next_done;
    it->ops->done(r->env, it);
    it = n;
  }
}

static void wake(reactor_t *r) {
  uint64_t one = 1;
  ssize_t ignored = write(r->wakefd, &one, sizeof one);
  (void)ignored;
}

/* JS thread, at the end of the loop turn that queued commands: one wake for all of them. */
static void on_check(uv_check_t *h) {
  reactor_t *r = h->data;
  uv_check_stop(&r->check);
  uv_idle_stop(&r->idle);
  r->wake_due = false;
  if (r->inline_mode) {
    inline_run(r);
    return;
  }
  pthread_mutex_lock(&r->lock);
  bool sleeping = r->sleeping && r->cmd_head != NULL;
  if (sleeping) r->sleeping = false; /* one wake-up per sleep */
  pthread_mutex_unlock(&r->lock);
  if (sleeping) wake(r);
}

static void on_idle(uv_idle_t *h) {
  (void)h; /* only its being active matters: the loop polls without blocking */
}

/* Inline mode: what run() does for one wake-up, on the JS thread, never blocking. Rounds go on
 * while commands are queued (the done callbacks of a round may queue more: a tunnel's 200
 * leads to its splice) or the set had a full batch; a bounded number, then the loop turn ends
 * and the rest waits for the next (the poll stays readable, the check is re-armed). */
static void inline_run(reactor_t *r) {
  struct epoll_event ev[BATCH];
  if (r->dispatching || r->stopped) return;
  r->dispatching = true;
  bool more = false;
  for (int round = 0; round < 16; round++) {
    self = r;
    pthread_mutex_lock(&r->lock);
    reactor_item_t *cmds = r->cmd_head;
    r->cmd_head = r->cmd_tail = NULL;
    pthread_mutex_unlock(&r->lock);
    run_commands(r, cmds);
    int n = epoll_wait(r->epfd, ev, BATCH, 0);
    if (n > 0) r->inline_stirred = true;
    dispatch(r, ev, n);
    free_retired(r);
    self = NULL;
    flush_posts(r); /* JS callbacks, outside the reactor's role: they may queue commands */
    pthread_mutex_lock(&r->lock);
    more = r->cmd_head != NULL;
    pthread_mutex_unlock(&r->lock);
    if (!more && n < BATCH) break;
    more = true;
  }
  r->dispatching = false;
  if (r->stopped) return;
  if (more) check_at_turn_end(r);
  int (*tick)(reactor_t *) = r->tick;
  self = r;
  int timeout = tick ? tick(r) : -1;
  self = NULL;
  flush_posts(r);
  if (timeout >= 0) uv_timer_start(&r->timer, on_inline_timer, (uint64_t)timeout, 0);
  else uv_timer_stop(&r->timer);
}

static void on_inline_poll(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  inline_run(h->data);
}

static void on_inline_timer(uv_timer_t *h) {
  inline_run(h->data);
}

/* Inline, before libuv polls: busy with many tunnels, a turn that dispatched events and left
 * nothing ready on the loop naps (nap.h), so the peers' bytes gather instead of each waking the
 * JS thread (the HTTP/1.1 engine's nap, h1-loop.c, the same way). */
static void on_inline_prepare(uv_prepare_t *h) {
  reactor_t *r = h->data;
  if (!r->inline_stirred) return;
  r->inline_stirred = false;
  nap_before_poll(&r->nap, uv_backend_fd(r->loop), uv_hrtime(), __atomic_load_n(&r->tunnels, __ATOMIC_RELAXED));
}

/* The env is going away: stop the thread, unlink the reactor, stop watching. */
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
  if (r->started) {
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_mutex_unlock(&r->lock);
    wake(r);
    pthread_join(r->thread, NULL);
  }
  pthread_mutex_lock(&r->lock);
  r->stopped = true;
  reactor_item_t *dead = r->dead;
  r->dead = NULL;
  /* Posted items nobody will take: their owners are finalised with the env. */
  r->done_head = r->done_tail = NULL;
  pthread_mutex_unlock(&r->lock);
  free_list(dead);
  r->active = 0;
  /* No close callback: a worker's env unloads the addon before its loop runs the closing
   * handles, and a callback here would then be a call into unmapped code (SIGSEGV). The struct
   * is kept (users finalised later may still look at it). */
  uv_close((uv_handle_t *)&r->async, NULL);
  uv_close((uv_handle_t *)&r->check, NULL);
  uv_close((uv_handle_t *)&r->idle, NULL);
  if (r->inline_mode) {
    uv_close((uv_handle_t *)&r->poll, NULL);
    uv_close((uv_handle_t *)&r->timer, NULL);
    uv_close((uv_handle_t *)&r->nap_prep, NULL);
    splice_pipes_release();
  }
  close(r->epfd);
  close(r->wakefd);
  r->epfd = -1;
  r->wakefd = -1;
}

/* Which way a reactor is driven: a thread of its own, or the JS loop. OXY_REACTOR (`thread`,
 * `inline`) decides when set; otherwise `want_inline`, the maker's choice (reactorMode), and by
 * default the thread (docs/internals.md has the figures for both). */
static bool reactor_inline_chosen(bool want_inline) {
  const char *v = getenv("OXY_REACTOR");
  if (v && strcmp(v, "inline") == 0) return true;
  if (v && strcmp(v, "thread") == 0) return false;
  return want_inline;
}

static reactor_t *reactor_make(napi_env env, bool want_inline);

reactor_t *reactor_for(napi_env env) {
  return reactor_make(env, false);
}

/* This JS thread's reactor, made now (driven as reactor_inline_chosen says) if it has none. */
static reactor_t *reactor_make(napi_env env, bool want_inline) {
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
  r->env = env;
  pthread_mutex_init(&r->lock, NULL);
  r->epfd = epoll_create1(EPOLL_CLOEXEC);
  r->wakefd = r->epfd < 0 ? -1 : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->wakefd < 0) {
    int e = errno;
    const char *call = r->epfd < 0 ? "epoll_create1" : "eventfd";
    if (r->epfd >= 0) close(r->epfd);
    free(r);
    throw_errno(env, e, call, "making the addon's epoll set");
    return NULL;
  }
  struct epoll_event we = {.events = EPOLLIN, .data.ptr = NULL};
  int rc = epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->wakefd, &we) < 0 ? -errno : 0;
  const char *what = "epoll_ctl";
  if (rc == 0) {
    what = "uv_async_init";
    rc = uv_async_init(loop, &r->async, on_async);
  }
  if (rc == 0) {
    /* Never fail once the loop is alive; unref'd: a due wake does not keep the loop alive. */
    uv_check_init(loop, &r->check);
    uv_idle_init(loop, &r->idle);
    r->check.data = r;
    r->idle.data = r;
    uv_unref((uv_handle_t *)&r->check);
    uv_unref((uv_handle_t *)&r->idle);
    r->async.data = r;
    uv_unref((uv_handle_t *)&r->async); /* only running users keep the loop alive */
    r->inline_mode = reactor_inline_chosen(want_inline);
    nap_init(&r->nap); /* the thread's, or inline the JS loop's (on_inline_prepare) */
    const char *doing = "starting the addon's reactor thread";
    if (r->inline_mode) {
      what = "uv_poll_init";
      doing = "polling the addon's epoll set on the JS loop";
      rc = uv_poll_init(loop, &r->poll, r->epfd);
      if (rc == 0) {
        r->poll.data = r;
        uv_timer_init(loop, &r->timer);
        r->timer.data = r;
        uv_unref((uv_handle_t *)&r->timer);
        uv_poll_start(&r->poll, UV_READABLE, on_inline_poll);
        uv_unref((uv_handle_t *)&r->poll);
        uv_prepare_init(loop, &r->nap_prep);
        r->nap_prep.data = r;
        uv_unref((uv_handle_t *)&r->nap_prep);
        if (r->nap.ns > 0) uv_prepare_start(&r->nap_prep, on_inline_prepare);
      }
    } else {
      what = "pthread_create";
      rc = -pthread_create(&r->thread, NULL, run, r);
      r->started = rc == 0;
    }
    if (rc < 0) {
      /* The handles are the loop's until closed: the struct is leaked with them. */
      uv_close((uv_handle_t *)&r->async, NULL);
      uv_close((uv_handle_t *)&r->check, NULL);
      uv_close((uv_handle_t *)&r->idle, NULL);
      close(r->epfd);
      close(r->wakefd);
      r->epfd = r->wakefd = -1;
      r->stopped = true;
      throw_errno(env, -rc, what, doing);
      return NULL;
    }
  }
  if (rc < 0) {
    close(r->epfd);
    close(r->wakefd);
    free(r);
    throw_errno(env, -rc, what, "making the addon's epoll set");
    return NULL;
  }
  napi_add_env_cleanup_hook(env, cleanup, r);
  pthread_mutex_lock(&reactors_lock);
  r->next = reactors;
  reactors = r;
  pthread_mutex_unlock(&reactors_lock);
  return r;
}

int reactor_watch(reactor_t *r, int fd, uint32_t *registered, uint32_t events, reactor_item_t *it, int side) {
  if (events == *registered) return 0;
  if (r->epfd < 0) return EBADF;
  struct epoll_event e = {.events = events, .data.ptr = (void *)((uintptr_t)it | (uintptr_t)(side & 1))};
  int op = events == 0 ? EPOLL_CTL_DEL : *registered == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(r->epfd, op, fd, &e) < 0) return errno;
  *registered = events;
  return 0;
}

void reactor_set_tick(reactor_t *r, int (*tick)(reactor_t *r)) {
  __atomic_store_n(&r->tick, tick, __ATOMIC_RELEASE);
}

void reactor_hold(reactor_t *r, int delta) {
  r->active += delta;
  if (r->stopped) return;
  /* Inline, the poll of the set is what keeps the loop alive; threaded, the wake-ups back. */
  uv_handle_t *h = r->inline_mode ? (uv_handle_t *)&r->poll : (uv_handle_t *)&r->async;
  if (r->active == 1 && delta > 0) uv_ref(h);
  if (r->active == 0) uv_unref(h);
}

void reactor_tunnels(reactor_t *r, int delta) {
  __atomic_add_fetch(&r->tunnels, delta, __ATOMIC_RELAXED);
}

bool reactor_command(reactor_t *r, reactor_item_t *it, bool at_turn_end) {
  pthread_mutex_lock(&r->lock);
  if (r->stopping || r->stopped) {
    pthread_mutex_unlock(&r->lock);
    return false;
  }
  it->next_cmd = NULL;
  if (r->cmd_tail) r->cmd_tail->next_cmd = it;
  else r->cmd_head = it;
  r->cmd_tail = it;
  if (r->inline_mode) {
    pthread_mutex_unlock(&r->lock);
    /* Run at the end of this loop turn, or by the dispatch under way. */
    if (!r->dispatching) check_at_turn_end(r);
    return true;
  }
  bool sleeping = r->sleeping;
  if (sleeping && !at_turn_end) r->sleeping = false; /* one wake-up per sleep */
  pthread_mutex_unlock(&r->lock);
  if (sleeping && !at_turn_end) {
    wake(r);
    return true;
  }
  /* A sleeping thread is woken once, at the end of this loop turn (on_check), for every
   * command the turn queues: a burst of accepted tunnels costs one wake-up, not one each. */
  if (sleeping) check_at_turn_end(r);
  return true;
}

void reactor_post(reactor_t *r, reactor_item_t *it) {
  pthread_mutex_lock(&r->lock);
  it->next_done = NULL;
  if (r->done_tail) r->done_tail->next_done = it;
  else r->done_head = it;
  r->done_tail = it;
  pthread_mutex_unlock(&r->lock);
  /* On the reactor thread (always, but for safety) the wake waits for the batch's end. */
  if (self == r) r->post_due = true;
  else uv_async_send(&r->async);
}

void reactor_retire(reactor_t *r, reactor_item_t *it) {
  pthread_mutex_lock(&r->lock);
  if (r->stopped) {
    pthread_mutex_unlock(&r->lock);
    free(it);
    return;
  }
  it->next_cmd = r->dead;
  r->dead = it;
  pthread_mutex_unlock(&r->lock);
}

/* reactorMode(mode): makes this JS thread's reactor now, driven inline on the JS loop ('inline')
 * or by a thread of its own ('thread'), unless it has one already or OXY_REACTOR says otherwise.
 * Returns the mode of the reactor in use. */
static napi_value js_reactor_mode(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv, NULL)) return NULL;
  char mode[8];
  size_t n = 0;
  if (napi_get_value_string_utf8(env, argv[0], mode, sizeof mode, &n) != napi_ok ||
      (strcmp(mode, "inline") != 0 && strcmp(mode, "thread") != 0)) {
    throw_type(env, "reactorMode: mode must be 'inline' or 'thread'");
    return NULL;
  }
  reactor_t *r = reactor_make(env, strcmp(mode, "inline") == 0);
  if (!r) return NULL;
  napi_value out = NULL;
  napi_create_string_utf8(env, r->inline_mode ? "inline" : "thread", NAPI_AUTO_LENGTH, &out);
  return out;
}

void register_reactor(napi_env env, napi_value exports) {
  set_fn(env, exports, "reactorMode", js_reactor_mode);
}
