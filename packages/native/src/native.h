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

/* reactor.c: one epoll set per event loop for descriptors the addon drives itself. */
typedef struct reactor reactor_t;
/* Called for each ready descriptor with the tag given to reactor_watch and the epoll events. */
typedef void (*reactor_cb)(void *tag, uint32_t events);
/* The reactor of env's loop, made on first use (with `cb`, its only callback). NULL: exception pending. */
reactor_t *reactor_for(napi_env env, reactor_cb cb);
/* Sets fd's interest to `events` (0: out of the set); *registered tracks it. Returns 0 or an errno. */
int reactor_watch(reactor_t *r, int fd, uint32_t *registered, uint32_t events, void *tag);
/* Counts running users (+1/-1): the loop stays alive while there are any. */
void reactor_hold(reactor_t *r, int delta);
/* free(p), after the batch being dispatched if there is one. */
void reactor_free_later(reactor_t *r, void *p);

#endif
