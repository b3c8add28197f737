#!/usr/bin/env bash
# Runs the floor for single-address GETs: a one-thread epoll server in C
# that parses nothing and replies to every request head with the same fixed
# response, the size of an ipclass response. Under the peers' wrk load it
# shows what a server that does no work reaches on this machine, and how
# the kernel schedules it beside wrk.
#
# Usage: scripts/floor-responder.sh [--port PORT] [--work-ns NS]
#   --port PORT   loopback port (default 18301)
#   --work-ns NS  busy-wait NS nanoseconds per read, to model a server that
#                 spends that much more time on each request (default 0)
# It runs in the foreground until interrupted. Measure it with
#   PEERS_STATE=... PEERS_DIR/bench.sh --no-start --no-inproc \
#     --only nginx-geo,floor --target "floor=http://127.0.0.1:18301/v1/is-internal?ip="
# or with scripts/sched-profile.sh's wrk command. Needs a C compiler (cc).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
me=floor-responder
# shellcheck source=scripts/common.sh
source "$repo/scripts/common.sh"
port=18301 work_ns=0
while (($#)); do
  case "$1" in
    --port) port=$(value "$@"); shift 2 ;;
    --work-ns) work_ns=$(value "$@"); shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "floor-responder: unknown argument $1; see --help" >&2; exit 2 ;;
  esac
done
[[ $port =~ ^[0-9]+$ && $work_ns =~ ^[0-9]+$ ]] \
  || { echo "floor-responder: --port and --work-ns take whole numbers" >&2; exit 2; }
((10#$port >= 1 && 10#$port <= 65535)) \
  || { echo "floor-responder: --port $port is not a port; use 1 to 65535" >&2; exit 2; }
command -v cc >/dev/null || { echo "floor-responder: needs a C compiler: apt-get install gcc" >&2; exit 1; }

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cat >"$build/floor.c" <<'EOF'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Headers and a body of the sizes ipclass sends for a typical lookup. */
static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 115\r\n"
    "date: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n"
    "{\"ip\":\"192.168.1.5\",\"verdict\":\"internal\",\"internal\":true,"
    "\"set\":\"homelab\",\"network\":\"192.168.1.0/24\",\"generation\":1}";

static long elapsed_ns(const struct timespec *from) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - from->tv_sec) * 1000000000L + (now.tv_nsec - from->tv_nsec);
}

int main(int argc, char **argv) {
    int port = atoi(argv[1]);
    long work_ns = atol(argv[2]);
    int enabled = 1;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &enabled, sizeof enabled);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 1024)) {
        perror("floor-responder: cannot listen");
        return 1;
    }
    int poll = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(poll, EPOLL_CTL_ADD, listener, &event);
    fprintf(stderr, "floor-responder: listening on 127.0.0.1:%d\n", port);

    static char input[16384];
    struct epoll_event ready[256];
    for (;;) {
        int count = epoll_wait(poll, ready, 256, -1);
        for (int i = 0; i < count; i++) {
            int fd = ready[i].data.fd;
            if (fd == listener) {
                int client;
                while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &enabled, sizeof enabled);
                    struct epoll_event added = {.events = EPOLLIN, .data.fd = client};
                    epoll_ctl(poll, EPOLL_CTL_ADD, client, &added);
                }
                continue;
            }
            ssize_t read = recv(fd, input, sizeof input, 0);
            if (read <= 0) {
                close(fd);
                continue;
            }
            if (work_ns > 0) {
                struct timespec started;
                clock_gettime(CLOCK_MONOTONIC, &started);
                while (elapsed_ns(&started) < work_ns) {
                }
            }
            /* One response for each request head in the read. */
            for (ssize_t at = 3; at < read; at++) {
                if (memcmp(input + at - 3, "\r\n\r\n", 4) == 0) {
                    send(fd, RESPONSE, sizeof RESPONSE - 1, MSG_NOSIGNAL);
                }
            }
        }
    }
}
EOF
cc -O2 -o "$build/floor" "$build/floor.c"
# The server replaces this shell, so a signal to the script's PID stops it.
# The build folder is removed first, and the binary runs from an open
# descriptor.
exec 3<"$build/floor"
rm -rf "$build"
trap - EXIT
exec -a floor-responder /proc/self/fd/3 "$port" "$work_ns"
