/*
 * Shared helpers for the addon: argument reading and errno errors.
 *
 * Every failed system call becomes a JS Error with `errno` (number), `code` ("EPERM"),
 * `syscall` and `detail`; the TypeScript wrapper turns it into a named NativeError that says
 * what was refused and how to allow it. Functions here never leak a descriptor on error.
 */
#ifndef OXY_NATIVE_H
#define OXY_NATIVE_H

#define NAPI_VERSION 8
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* TCP_QUICKACK on fd: off holds the ACKs the kernel owes for the next segment out; on sends a
 * held one now (and ends the holding). 0, or -1 with errno; callers that only save a packet
 * ignore a failure (the worst is one packet more, or one held to the kernel's own timer). */
static inline int sock_quick_ack(int fd, int on) {
  return setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on);
}
/* Whether fd holds its ACKs (TCP_QUICKACK off; a listening socket's accepted ones inherit it). */
static inline bool sock_acks_held(int fd) {
  int quick = 1;
  socklen_t len = sizeof quick;
  return getsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &quick, &len) == 0 && quick == 0;
}

/* Throws an Error for errno `err` raised by `syscall`; `detail` says what was attempted. */
void throw_errno(napi_env env, int err, const char *syscall, const char *detail);
/* Throws a TypeError about a bad argument. */
void throw_type(napi_env env, const char *message);

/* Argument readers: return false (with an exception pending) when the value is unfit. */
bool arg_int32(napi_env env, napi_value v, int32_t *out);
bool arg_bool(napi_env env, napi_value v, bool *out);
/* Copies a string into a malloc'ed buffer the caller frees. */
bool arg_string(napi_env env, napi_value v, char **out, size_t *len);
bool arg_buffer(napi_env env, napi_value v, void **data, size_t *len);
bool arg_array(napi_env env, napi_value v, uint32_t *len);

napi_value make_int(napi_env env, int64_t n);
/* The native struct wrapped into `owner` (napi_wrap), or NULL with a TypeError saying `missing`. */
void *unwrap_owner(napi_env env, napi_value owner, const char *missing);
napi_value make_undefined(napi_env env);

/* Argument count check; throws and returns false when fewer than `want` were given. */
bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, void **data);

void register_seccomp(napi_env env, napi_value exports);
void register_tun(napi_env env, napi_value exports);
void register_sock(napi_env env, napi_value exports);
void register_poll(napi_env env, napi_value exports);
void register_splice(napi_env env, napi_value exports);
void register_accept(napi_env env, napi_value exports);
void register_writer(napi_env env, napi_value exports);
void register_udp(napi_env env, napi_value exports);
void register_h1(napi_env env, napi_value exports);
void register_tls(napi_env env, napi_value exports);
void register_reactor(napi_env env, napi_value exports);

void set_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);

/* reactor.c: one epoll set per event loop, on a thread of its own, for descriptors the addon
 * drives itself. Items are structs whose first member is a reactor_item_t, allocated with malloc
 * (at least 2-byte aligned: a watch tag is the item's address with a side in its low bit). */
typedef struct reactor reactor_t;
typedef struct reactor_item reactor_item_t;
/* What the reactor calls for an item. */
typedef struct {
  /* Reactor thread: the item was posted with reactor_command. */
  void (*command)(reactor_t *r, reactor_item_t *it);
  /* Reactor thread: a descriptor watched with tag `it | side` is ready with `events`. */
  void (*event)(reactor_item_t *it, int side, uint32_t events);
  /* JS thread: the item was posted with reactor_post (items come in post order). */
  void (*done)(napi_env env, reactor_item_t *it);
} reactor_ops_t;
struct reactor_item {
  const reactor_ops_t *ops;
  reactor_item_t *next_cmd;  /* the command list, then the retired list */
  reactor_item_t *next_done; /* the list of posts to the JS thread */
};
/* The reactor of env's loop, made (and its thread started) on first use. NULL: exception pending. */
reactor_t *reactor_for(napi_env env);
/* Sets fd's interest to `events` (0: out of the set); *registered tracks it; events come to
 * it->ops->event with `side` (0 or 1). Returns 0 or an errno. Either thread, under the item's own lock. */
int reactor_watch(reactor_t *r, int fd, uint32_t *registered, uint32_t events, reactor_item_t *it, int side);
/* Sets the function the reactor thread calls before each wait: it runs what is due and returns
 * the wait's timeout in ms (-1: none). One per reactor; the same one may be set again. */
void reactor_set_tick(reactor_t *r, int (*tick)(reactor_t *r));
/* JS thread: counts running users (+1/-1); the loop stays alive while there are any. */
void reactor_hold(reactor_t *r, int delta);
/* Counts open tunnels (splicers from their making to their close), for the thread's naps. */
void reactor_tunnels(reactor_t *r, int delta);
/* JS thread: runs its command on the reactor thread. An item is in the command list at most once
 * at a time. False once the reactor is stopping. A sleeping reactor thread is woken at once, or
 * with `at_turn_end` once at the end of this JS loop turn for all such commands. */
bool reactor_command(reactor_t *r, reactor_item_t *it, bool at_turn_end);
/* Reactor thread: hands `it` to its done callback on the JS thread. An item is posted at most
 * once at a time. */
void reactor_post(reactor_t *r, reactor_item_t *it);
/* Either thread: free(it) once no batch being dispatched can point at it. */
void reactor_retire(reactor_t *r, reactor_item_t *it);
/* splice-pipes.c: the calling thread's pipe pool, closed (inline reactors, at the env's end). */
void splice_pipes_release(void);

#endif
