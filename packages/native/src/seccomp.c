/*
 * seccomp: install a filter built from a list of syscall names, with libseccomp.
 *
 * Why libseccomp rather than raw BPF: it owns the per-architecture syscall tables (names that
 * do not exist on this architecture are skipped, misspelt names are reported), the audit-arch
 * check, and TSYNC. The filter is always synchronised to every thread of the process (TSYNC):
 * without it libuv's thread pool keeps running unfiltered, a verified bypass.
 *
 * Actions are passed as small integers, mirrored in index.ts.
 */
#include "native.h"

#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { ACT_KILL_PROCESS = 0, ACT_ERRNO = 1, ACT_LOG = 2, ACT_TRAP = 3, ACT_ALLOW = 4 };

static bool to_action(int kind, int err, uint32_t *out) {
  switch (kind) {
    case ACT_KILL_PROCESS: *out = SCMP_ACT_KILL_PROCESS; return true;
    case ACT_ERRNO: *out = SCMP_ACT_ERRNO((uint16_t)err); return err > 0 && err < 4096;
    case ACT_LOG: *out = SCMP_ACT_LOG; return true;
    case ACT_TRAP: *out = SCMP_ACT_TRAP; return true;
    case ACT_ALLOW: *out = SCMP_ACT_ALLOW; return true;
    default: return false;
  }
}

/* unknownSyscalls(names: string[]): string[] — names libseccomp does not know on any arch. */
static napi_value unknown_syscalls(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, item;
  uint32_t n, found = 0;
  if (!get_args(env, info, 1, argv, NULL) || !arg_array(env, argv[0], &n)) return NULL;
  if (napi_create_array(env, &out) != napi_ok) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    char *name;
    if (napi_get_element(env, argv[0], i, &item) != napi_ok || !arg_string(env, item, &name, NULL))
      return NULL;
    int nr = seccomp_syscall_resolve_name(name);
    free(name);
    if (nr == __NR_SCMP_ERROR) napi_set_element(env, out, found++, item);
  }
  return out;
}

/* Adds one rule per name in `names` with `action`; on failure fills what/detail, returns -errno. */
static int add_rules(napi_env env, scmp_filter_ctx ctx, uint32_t action, napi_value names, const char **what,
                     char *detail, size_t dlen, bool *js_error) {
  napi_value item;
  uint32_t n;
  if (!arg_array(env, names, &n)) {
    *js_error = true;
    return -EINVAL;
  }
  for (uint32_t i = 0; i < n; i++) {
    char *name;
    if (napi_get_element(env, names, i, &item) != napi_ok || !arg_string(env, item, &name, NULL)) {
      *js_error = true;
      return -EINVAL;
    }
    int rc = 0, nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) {
      rc = -EINVAL;
      *what = "seccomp_syscall_resolve_name";
      snprintf(detail, dlen, "unknown syscall name \"%s\"", name);
    } else {
      rc = seccomp_rule_add(ctx, action, nr, 0);
      /* A syscall absent from this architecture is not an error: the lists are portable. */
      if (rc == -EDOM || (nr < 0 && rc != 0)) rc = 0;
      if (rc != 0) {
        *what = "seccomp_rule_add";
        snprintf(detail, dlen, "adding a rule for \"%s\"", name);
      }
    }
    free(name);
    if (rc != 0) return rc;
  }
  return 0;
}

/*
 * install(defaultKind, defaultErrno, groups: [kind, errno, names: string[]][], tsync: boolean)
 * Each group's syscalls get the group's action; every other syscall gets the default action.
 * A syscall must appear in one group only.
 */
static napi_value install(napi_env env, napi_callback_info info) {
  napi_value argv[4], group, v;
  int32_t dkind, derr, gkind, gerr;
  uint32_t ngroups, def_action, action;
  bool tsync, js_error = false;
  if (!get_args(env, info, 4, argv, NULL) || !arg_int32(env, argv[0], &dkind) ||
      !arg_int32(env, argv[1], &derr) || !arg_array(env, argv[2], &ngroups) || !arg_bool(env, argv[3], &tsync))
    return NULL;
  if (!to_action(dkind, derr, &def_action)) {
    throw_type(env, "invalid seccomp action or errno");
    return NULL;
  }
  scmp_filter_ctx ctx = seccomp_init(def_action);
  if (!ctx) {
    throw_errno(env, ENOMEM, "seccomp_init", "creating the filter");
    return NULL;
  }
  const char *what = "seccomp_attr_set";
  char detail[160] = "setting filter attributes";
  /* Report the kernel's own errno from seccomp_load, not libseccomp's ECANCELED. */
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_API_SYSRAWRC, 1);
  if (rc == 0 && tsync) rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  for (uint32_t g = 0; rc == 0 && g < ngroups; g++) {
    napi_value names;
    if (napi_get_element(env, argv[2], g, &group) != napi_ok || napi_get_element(env, group, 0, &v) != napi_ok ||
        !arg_int32(env, v, &gkind) || napi_get_element(env, group, 1, &v) != napi_ok || !arg_int32(env, v, &gerr) ||
        napi_get_element(env, group, 2, &names) != napi_ok) {
      seccomp_release(ctx);
      return NULL;
    }
    if (!to_action(gkind, gerr, &action)) {
      seccomp_release(ctx);
      throw_type(env, "invalid seccomp action or errno");
      return NULL;
    }
    rc = add_rules(env, ctx, action, names, &what, detail, sizeof detail, &js_error);
  }
  if (js_error) {
    seccomp_release(ctx);
    return NULL;
  }
  if (rc == 0) {
    what = "seccomp_load";
    snprintf(detail, sizeof detail, "installing the filter%s", tsync ? " on every thread (TSYNC)" : "");
    rc = seccomp_load(ctx);
    /* With TSYNC, a positive value is the id of a thread that could not be synchronised. */
    if (rc > 0) {
      snprintf(detail, sizeof detail, "thread %d could not be synchronised (TSYNC)", rc);
      rc = -ESRCH;
    }
  }
  seccomp_release(ctx);
  if (rc != 0) {
    throw_errno(env, -rc, what, detail);
    return NULL;
  }
  return make_undefined(env);
}

/* syscallName(nr): the native architecture's name for syscall number nr, or null. */
static napi_value syscall_name(napi_env env, napi_callback_info info) {
  napi_value argv[1], out;
  int32_t nr;
  if (!get_args(env, info, 1, argv, NULL) || !arg_int32(env, argv[0], &nr)) return NULL;
  char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  if (!name) {
    napi_get_null(env, &out);
    return out;
  }
  napi_status st = napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &out);
  free(name);
  return st == napi_ok ? out : NULL;
}

void register_seccomp(napi_env env, napi_value exports) {
  set_fn(env, exports, "seccompSyscallName", syscall_name);
  set_fn(env, exports, "seccompInstall", install);
  set_fn(env, exports, "seccompUnknownSyscalls", unknown_syscalls);
}
