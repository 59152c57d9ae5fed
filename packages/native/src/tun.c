/*
 * TUN: open a layer-3 TUN device (IFF_TUN | IFF_NO_PI) by name, non-blocking and close-on-exec,
 * so that reads and writes are driven by the event loop (poll.c) and never by the thread pool.
 */
#define _GNU_SOURCE
#include "native.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* tunOpen(name: string): [fd, actualName]. A name like "tun%d" lets the kernel pick. */
static napi_value tun_open(napi_env env, napi_callback_info info) {
  napi_value argv[1], out, v;
  char *name, detail[96];
  size_t len;
  if (!get_args(env, info, 1, argv, NULL) || !arg_string(env, argv[0], &name, &len)) return NULL;
  if (len == 0 || len >= IFNAMSIZ) {
    free(name);
    throw_type(env, "TUN device name must be 1 to 15 bytes");
    return NULL;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  memcpy(ifr.ifr_name, name, len);
  free(name);
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    throw_errno(env, errno, "open", "opening /dev/net/tun");
    return NULL;
  }
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    snprintf(detail, sizeof detail, "creating TUN device %s", ifr.ifr_name);
    throw_errno(env, err, "ioctl(TUNSETIFF)", detail);
    return NULL;
  }
  ifr.ifr_name[IFNAMSIZ - 1] = 0;
  if (napi_create_array_with_length(env, 2, &out) != napi_ok ||
      napi_set_element(env, out, 0, make_int(env, fd)) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_element(env, out, 1, v) != napi_ok) {
    close(fd);
    return NULL;
  }
  return out;
}

/* setNetns(fd): moves the calling thread (only) into the network namespace open at fd. */
static napi_value set_netns(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv, NULL) || !arg_int32(env, argv[0], &fd)) return NULL;
  if (setns(fd, CLONE_NEWNET) < 0) {
    throw_errno(env, errno, "setns", "entering a network namespace");
    return NULL;
  }
  return make_undefined(env);
}

/* unshareNetns(): moves the calling thread (only) into a new, empty network namespace. */
static napi_value unshare_netns(napi_env env, napi_callback_info info) {
  (void)info;
  if (unshare(CLONE_NEWNET) < 0) {
    throw_errno(env, errno, "unshare", "creating a network namespace");
    return NULL;
  }
  return make_undefined(env);
}

void register_tun(napi_env env, napi_value exports) {
  set_fn(env, exports, "tunOpen", tun_open);
  set_fn(env, exports, "setNetns", set_netns);
  set_fn(env, exports, "unshareNetns", unshare_netns);
}
