# The addon links nothing but libc (test/elf-needed.test.ts): no libseccomp (seccomp.c
# assembles its BPF itself), and initial-exec TLS for splice.c's two per-thread pointers, so
# no __tls_get_addr from the dynamic loader (glibc reserves static TLS for dlopen'ed objects).
{
  "targets": [
    {
      "target_name": "oxy_native",
      "sources": ["src/addon.c", "src/seccomp.c", "src/tun.c", "src/sock.c", "src/poll.c", "src/reactor.c", "src/splice.c", "src/splice-pipes.c", "src/splice-copy.c", "src/splice-ack.c", "src/splice-js.c", "src/accept.c", "src/accept-head.c", "src/accept-js.c", "src/writer.c", "src/udp.c", "src/udp-sock.c", "src/udp-send.c", "src/h1.c", "src/h1-up.c", "src/h1-parse.c", "src/h1-js.c", "src/h1-loop.c", "src/h1-body.c", "src/tls.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2", "-ftls-model=initial-exec"]
    }
  ]
}
