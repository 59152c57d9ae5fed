/*
 * Entry point of the addon and the helpers every part shares (see native.h).
 */
#include "native.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

void throw_errno(napi_env env, int err, const char *syscall, const char *detail) {
  napi_value msg, error, v;
  char text[512];
  const char *name = uv_err_name(-err);
  snprintf(text, sizeof text, "%s: %s (%s)", syscall, strerror(err), detail ? detail : "");
  if (napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg) != napi_ok) return;
  if (napi_create_error(env, NULL, msg, &error) != napi_ok) return;
  if (napi_create_int32(env, err, &v) == napi_ok) napi_set_named_property(env, error, "errno", v);
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, error, "code", v);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, error, "syscall", v);
  if (napi_create_string_utf8(env, detail ? detail : "", NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, error, "detail", v);
  napi_throw(env, error);
}

void throw_type(napi_env env, const char *message) { napi_throw_type_error(env, NULL, message); }

bool arg_int32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    throw_type(env, "expected an integer");
    return false;
  }
  return true;
}

bool arg_bool(napi_env env, napi_value v, bool *out) {
  if (napi_get_value_bool(env, v, out) != napi_ok) {
    throw_type(env, "expected a boolean");
    return false;
  }
  return true;
}

bool arg_string(napi_env env, napi_value v, char **out, size_t *len) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) {
    throw_type(env, "expected a string");
    return false;
  }
  char *s = malloc(n + 1);
  if (!s) {
    napi_throw_error(env, NULL, "out of memory");
    return false;
  }
  if (napi_get_value_string_utf8(env, v, s, n + 1, &n) != napi_ok) {
    free(s);
    throw_type(env, "expected a string");
    return false;
  }
  *out = s;
  if (len) *len = n;
  return true;
}

bool arg_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is || napi_get_buffer_info(env, v, data, len) != napi_ok) {
    throw_type(env, "expected a Buffer");
    return false;
  }
  return true;
}

bool arg_array(napi_env env, napi_value v, uint32_t *len) {
  bool is;
  if (napi_is_array(env, v, &is) != napi_ok || !is || napi_get_array_length(env, v, len) != napi_ok) {
    throw_type(env, "expected an array");
    return false;
  }
  return true;
}

napi_value make_int(napi_env env, int64_t n) {
  napi_value v = NULL;
  napi_create_int64(env, n, &v);
  return v;
}

void *unwrap_owner(napi_env env, napi_value owner, const char *missing) {
  void *p = NULL;
  if (napi_unwrap(env, owner, &p) != napi_ok || !p) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
    }
    throw_type(env, missing);
    return NULL;
  }
  return p;
}

napi_value make_undefined(napi_env env) {
  napi_value v = NULL;
  napi_get_undefined(env, &v);
  return v;
}

bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, void **data) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, data) != napi_ok) return false;
  if (argc < want) {
    throw_type(env, "too few arguments");
    return false;
  }
  return true;
}

void set_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, name, fn);
}

static napi_value init(napi_env env, napi_value exports) {
  register_seccomp(env, exports);
  register_tun(env, exports);
  register_sock(env, exports);
  register_poll(env, exports);
  register_splice(env, exports);
  register_accept(env, exports);
  register_writer(env, exports);
  register_udp(env, exports);
  register_h1(env, exports);
  register_tls(env, exports);
  register_reactor(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
