/*
 * Settings of Node's own TLS contexts that Node does not expose. A `tls.SecureContext`'s
 * `context._external` is a V8 External holding its OpenSSL `SSL_CTX *`; the OpenSSL functions
 * are Node's own (the node binary exports the OpenSSL it links), declared weak here so the
 * addon still loads, and links nothing but libc, in a Node built against a shared OpenSSL
 * without them: the call then reports false and the context keeps OpenSSL's default.
 */
#include "native.h"

#include <stddef.h>
#include <stdint.h>

/* OpenSSL >= 1.1.1: how many TLS 1.3 session tickets a server sends after a handshake. */
extern int SSL_CTX_set_num_tickets(void *ctx, size_t num_tickets) __attribute__((weak));

/* tlsSetTickets(address, n): true when the SSL_CTX at `address` will send n tickets per handshake. */
static napi_value tls_set_tickets(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  uint64_t address;
  bool lossless;
  int32_t n;
  if (!get_args(env, info, 2, argv, NULL)) return NULL;
  if (napi_get_value_bigint_uint64(env, argv[0], &address, &lossless) != napi_ok || !lossless || address == 0) {
    throw_type(env, "expected an SSL_CTX address (bigint)");
    return NULL;
  }
  if (!arg_int32(env, argv[1], &n)) return NULL;
  if (n < 0) {
    throw_type(env, "expected a ticket count >= 0");
    return NULL;
  }
  bool ok = SSL_CTX_set_num_tickets != NULL && SSL_CTX_set_num_tickets((void *)(uintptr_t)address, (size_t)n) == 1;
  napi_get_boolean(env, ok, &out);
  return out;
}

void register_tls(napi_env env, napi_value exports) { set_fn(env, exports, "tlsSetTickets", tls_set_tickets); }
