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
napi_value make_undefined(napi_env env);

/* Argument count check; throws and returns false when fewer than `want` were given. */
bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, void **data);

void register_seccomp(napi_env env, napi_value exports);
void register_tun(napi_env env, napi_value exports);
void register_sock(napi_env env, napi_value exports);
void register_poll(napi_env env, napi_value exports);
void register_splice(napi_env env, napi_value exports);

void set_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);

/* reactor.c: one epoll set per event loop, on a thread of its own, for descriptors the addon
 * drives itself. Items are structs whose first member is a reactor_item_t, allocated with malloc. */
typedef struct reactor reactor_t;
typedef struct reactor_item {
  struct reactor_item *next;
} reactor_item_t;
/* Reactor thread: one ready descriptor, with the tag given to reactor_watch and the epoll events. */
typedef void (*reactor_cb)(void *tag, uint32_t events);
/* Reactor thread: a command posted by reactor_command. */
typedef void (*reactor_cmd_cb)(reactor_t *r, reactor_item_t *it);
/* Reactor thread, before each wait: runs what is due, returns the wait's timeout (ms, -1: none). */
typedef int (*reactor_tick_cb)(reactor_t *r);
/* JS thread: an item the reactor thread posted (reactor_post), in post order. */
typedef void (*reactor_done_cb)(napi_env env, reactor_item_t *it);
/* The reactor of env's loop, made (and its thread started) on first use with these callbacks
 * (`tick` may be NULL: no deadlines). NULL: exception pending. */
reactor_t *reactor_for(napi_env env, reactor_cb cb, reactor_cmd_cb cmd, reactor_tick_cb tick, reactor_done_cb done);
/* Sets fd's interest to `events` (0: out of the set); *registered tracks it. Returns 0 or an
 * errno. Either thread, under the item's own lock. */
int reactor_watch(reactor_t *r, int fd, uint32_t *registered, uint32_t events, void *tag);
/* JS thread: counts running users (+1/-1); the loop stays alive while there are any. */
void reactor_hold(reactor_t *r, int delta);
/* JS thread: runs `it` on the reactor thread. False once the reactor is stopping. */
bool reactor_command(reactor_t *r, reactor_item_t *it);
/* Reactor thread: hands `it` to the JS thread's done callback. */
void reactor_post(reactor_t *r, reactor_item_t *it);
/* Either thread: free(it) once no batch being dispatched can point at it. */
void reactor_retire(reactor_t *r, reactor_item_t *it);
/* CLOCK_MONOTONIC in milliseconds. */
int64_t reactor_now_ms(void);

#endif
