{
  "targets": [
    {
      "target_name": "oxy_native",
      "sources": ["src/addon.c", "src/seccomp.c", "src/tun.c", "src/sock.c", "src/poll.c", "src/reactor.c", "src/splice.c", "src/splice-js.c", "src/writer.c", "src/udp.c", "src/udp-sock.c", "src/udp-send.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "libraries": ["-lseccomp"]
    }
  ]
}
