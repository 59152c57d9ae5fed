/*
 * seccomp: install a filter built from a list of syscall names, as a classic BPF program
 * assembled here against the kernel's own headers (no libseccomp, so `npm ci` needs no -dev
 * package and the addon links nothing but libc).
 *
 * The program, in order:
 *   1. the architecture check libseccomp makes: seccomp_data.arch must be this build's
 *      AUDIT_ARCH, else the process is killed (a syscall number means another syscall on
 *      another ABI, e.g. i386 through int 0x80 on x86_64);
 *   2. on x86_64, syscalls with the x32 bit set are killed too (same numbers, other ABI);
 *   3. one `jeq nr` + `ret action` pair per syscall with an action other than the default;
 *   4. `ret default`.
 * It is installed with seccomp(2) and SECCOMP_FILTER_FLAG_TSYNC, after PR_SET_NO_NEW_PRIVS:
 * without TSYNC libuv's thread pool keeps running unfiltered, a verified bypass.
 *
 * Syscall names resolve through syscall-names.h (generated from the kernel headers): a name
 * Linux defines somewhere but not on this architecture is skipped; any other is a typo.
 * Actions are passed as small integers, mirrored in seccomp.ts.
 */
#include "native.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__ILP32__)
#define OXY_AUDIT_ARCH AUDIT_ARCH_X86_64 /* x32: same audit arch, syscalls carry the x32 bit */
#define OXY_X32_ABI 1
#elif defined(__x86_64__)
#define OXY_AUDIT_ARCH AUDIT_ARCH_X86_64
#define OXY_X32_ABI 0
#elif defined(__i386__)
#define OXY_AUDIT_ARCH AUDIT_ARCH_I386
#elif defined(__aarch64__) && defined(__AARCH64EB__)
#define OXY_AUDIT_ARCH AUDIT_ARCH_AARCH64BE
#elif defined(__aarch64__)
#define OXY_AUDIT_ARCH AUDIT_ARCH_AARCH64
#elif defined(__riscv) && __riscv_xlen == 64
#define OXY_AUDIT_ARCH AUDIT_ARCH_RISCV64
#else
#error "seccomp.c: unknown architecture; add its AUDIT_ARCH_* here"
#endif

#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif

typedef struct {
  const char *name;
  int nr; /* -1: not on this architecture */
} syscall_entry_t;

static const syscall_entry_t syscalls[] = {
#include "syscall-names.h"
};
#define NSYSCALLS (sizeof syscalls / sizeof syscalls[0])

enum { ACT_KILL_PROCESS = 0, ACT_ERRNO = 1, ACT_LOG = 2, ACT_TRAP = 3, ACT_ALLOW = 4 };

static bool to_action(int kind, int err, uint32_t *out) {
  switch (kind) {
    case ACT_KILL_PROCESS: *out = SECCOMP_RET_KILL_PROCESS; return true;
    case ACT_ERRNO: *out = SECCOMP_RET_ERRNO | ((uint32_t)err & SECCOMP_RET_DATA); return err > 0 && err < 4096;
    case ACT_LOG: *out = SECCOMP_RET_LOG; return true;
    case ACT_TRAP: *out = SECCOMP_RET_TRAP; return true;
    case ACT_ALLOW: *out = SECCOMP_RET_ALLOW; return true;
    default: return false;
  }
}

/* The entry for `name`, or NULL when Linux defines no such syscall on any known table. */
static const syscall_entry_t *lookup(const char *name) {
  for (size_t i = 0; i < NSYSCALLS; i++)
    if (strcmp(syscalls[i].name, name) == 0) return &syscalls[i];
  return NULL;
}

/* unknownSyscalls(names: string[]): string[] — names Linux defines on no architecture. */
static napi_value unknown_syscalls(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, item;
  uint32_t n, found = 0;
  if (!get_args(env, info, 1, argv, NULL) || !arg_array(env, argv[0], &n)) return NULL;
  if (napi_create_array(env, &out) != napi_ok) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    char *name;
    if (napi_get_element(env, argv[0], i, &item) != napi_ok || !arg_string(env, item, &name, NULL))
      return NULL;
    bool known = lookup(name) != NULL;
    free(name);
    if (!known) napi_set_element(env, out, found++, item);
  }
  return out;
}

/* A growing BPF program. */
typedef struct {
  struct sock_filter *insns;
  size_t len, cap;
} prog_t;

static bool emit(prog_t *p, struct sock_filter insn) {
  if (p->len == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 256;
    struct sock_filter *next = realloc(p->insns, cap * sizeof *next);
    if (!next) return false;
    p->insns = next;
    p->cap = cap;
  }
  p->insns[p->len++] = insn;
  return true;
}

/* The architecture check (and x32 check on x86_64) that opens every program; leaves nr in A. */
static bool emit_prologue(prog_t *p) {
  bool ok = emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch))) &&
            emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, OXY_AUDIT_ARCH, 1, 0)) &&
            emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS)) &&
            emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
  /* Native x86_64 refuses x32 syscalls; an x32 build refuses plain x86_64 ones. */
  ok = ok && emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, OXY_X32_ABI ? 1 : 0,
                                                  OXY_X32_ABI ? 0 : 1)) &&
       emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
#endif
  return ok;
}

/* Adds one rule per name in `names` with `action`; on failure fills what/detail, returns -errno. */
static int add_rules(napi_env env, prog_t *p, uint32_t action, napi_value names, const char **what, char *detail,
                     size_t dlen, bool *js_error) {
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
    const syscall_entry_t *e = lookup(name);
    int rc = 0;
    if (!e) {
      rc = -EINVAL;
      *what = "seccomp";
      snprintf(detail, dlen, "unknown syscall name \"%s\"", name);
    } else if (e->nr >= 0) { /* A syscall absent from this architecture is skipped: lists are portable. */
      if (!emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)e->nr, 0, 1)) ||
          !emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, action))) {
        rc = -ENOMEM;
        *what = "seccomp";
        snprintf(detail, dlen, "assembling the filter");
      }
    }
    free(name);
    if (rc != 0) return rc;
  }
  return 0;
}

/* Installs `p` on this thread, or every thread with TSYNC; returns 0 or -errno. */
static int load(prog_t *p, bool tsync, const char **what, char *detail, size_t dlen) {
  if (p->len > BPF_MAXINSNS) {
    *what = "seccomp";
    snprintf(detail, dlen, "the filter has %zu instructions, more than the kernel's %d", p->len, BPF_MAXINSNS);
    return -EINVAL;
  }
  /* Lets an unprivileged process install a filter; set-uid binaries no longer gain privileges. */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    *what = "prctl";
    snprintf(detail, dlen, "setting PR_SET_NO_NEW_PRIVS");
    return -errno;
  }
  struct sock_fprog fprog = {.len = (unsigned short)p->len, .filter = p->insns};
  *what = "seccomp";
  snprintf(detail, dlen, "installing the filter%s", tsync ? " on every thread (TSYNC)" : "");
  long rc = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, tsync ? SECCOMP_FILTER_FLAG_TSYNC : 0, &fprog);
  if (rc < 0) return -errno;
  /* With TSYNC, a positive value is the id of a thread that could not be synchronised. */
  if (rc > 0) {
    snprintf(detail, dlen, "thread %ld could not be synchronised (TSYNC)", rc);
    return -ESRCH;
  }
  return 0;
}

/*
 * install(defaultKind, defaultErrno, groups: [kind, errno, names: string[]][], tsync: boolean)
 * Each group's syscalls get the group's action; every other syscall gets the default action.
 * A syscall must appear in one group only (the first match wins).
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
  prog_t p = {0};
  const char *what = "seccomp";
  char detail[160] = "assembling the filter";
  int rc = emit_prologue(&p) ? 0 : -ENOMEM;
  for (uint32_t g = 0; rc == 0 && g < ngroups; g++) {
    napi_value names;
    if (napi_get_element(env, argv[2], g, &group) != napi_ok || napi_get_element(env, group, 0, &v) != napi_ok ||
        !arg_int32(env, v, &gkind) || napi_get_element(env, group, 1, &v) != napi_ok || !arg_int32(env, v, &gerr) ||
        napi_get_element(env, group, 2, &names) != napi_ok) {
      free(p.insns);
      return NULL;
    }
    if (!to_action(gkind, gerr, &action)) {
      free(p.insns);
      throw_type(env, "invalid seccomp action or errno");
      return NULL;
    }
    rc = add_rules(env, &p, action, names, &what, detail, sizeof detail, &js_error);
  }
  if (js_error) {
    free(p.insns);
    return NULL;
  }
  if (rc == 0) rc = emit(&p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, def_action)) ? 0 : -ENOMEM;
  if (rc == 0) rc = load(&p, tsync, &what, detail, sizeof detail);
  free(p.insns);
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
  for (size_t i = 0; nr >= 0 && i < NSYSCALLS; i++)
    if (syscalls[i].nr == nr) return napi_create_string_utf8(env, syscalls[i].name, NAPI_AUTO_LENGTH, &out) == napi_ok ? out : NULL;
  napi_get_null(env, &out);
  return out;
}

void register_seccomp(napi_env env, napi_value exports) {
  set_fn(env, exports, "seccompSyscallName", syscall_name);
  set_fn(env, exports, "seccompInstall", install);
  set_fn(env, exports, "seccompUnknownSyscalls", unknown_syscalls);
}
