#!/usr/bin/env bash
# Shows how the kernel schedules each HTTP server under the peers' wrk load.
# It runs wrk against nginx geo, HAProxy map_ip and ipclass (one worker
# each), and with --floor the floor responder, in turns. For each run it
# prints requests/s, p99, the server's CPU time per request, the server's
# preemptions per 1,000 requests, and the share of the machine that stayed
# idle. Every number comes from wrk and /proc. The pattern it shows needs
# an otherwise idle machine: other load on the cores changes where the
# kernel places wrk.
#
# Usage: scripts/sched-profile.sh [-d SECS] [-r ROUNDS] [--port PORT]
#                                 [--floor] [--floor-port PORT]
#   -d SECS      length of each wrk run (default 8)
#   -r ROUNDS    rounds over the servers (default 3)
#   --port PORT  loopback port for ipclass (default 18095)
#   --floor      also start scripts/floor-responder.sh and measure it
#   --floor-port PORT  its port (default 18301)
# Environment: PEERS_DIR (the peer harness folder, as for bench-peers.sh)
# and PEERS_STATE (the harness's state folder, default /tmp/ipclass-peers).
# The peers must be running (PEERS_STATE=... PEERS_DIR/start.sh), and their
# PIDs are read from PEERS_STATE/run; ipclass is started here.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
me=sched-profile
# shellcheck source=scripts/common.sh
source "$repo/scripts/common.sh"
duration=8 rounds=3 port=18095 floor=0 floor_port=18301
while (($#)); do
  case "$1" in
    -d) duration=$(value "$@"); shift 2 ;;
    -r) rounds=$(value "$@"); shift 2 ;;
    --port) port=$(value "$@"); shift 2 ;;
    --floor) floor=1; shift ;;
    --floor-port) floor_port=$(value "$@"); shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "sched-profile: unknown argument $1; see --help" >&2; exit 2 ;;
  esac
done
find_peers
# shellcheck disable=SC1091
source "$peers/ports.env"

# The servers that this harness started, from the PIDs it recorded: the
# nginx worker under its master, and HAProxy itself.
state=${PEERS_STATE:-${TMPDIR:-/tmp}/ipclass-peers}
launched() {  # launched NAME: the live PID in run/NAME.pid.launch, if any
  local file="$state/run/$1.pid.launch"
  [[ -f $file ]] && kill -0 "$(cat "$file")" 2>/dev/null && cat "$file"
}
nginx_master=$(launched nginx || true)
haproxy=$(launched haproxy || true)
nginx=$([[ -n $nginx_master ]] && pgrep -P "$nginx_master" -f 'nginx: worker' | head -1 || true)
[[ -n $nginx && -n $haproxy ]] \
  || { echo "sched-profile: no running peers recorded in $state/run; start them: PEERS_STATE=$state $peers/start.sh" >&2; exit 1; }

cargo build --release --bin ipclass --manifest-path "$repo/Cargo.toml"
config=$(mktemp --suffix=.toml)
write_homelab_config "$config"
log=$(mktemp)
require_free_port "$port"
"$repo/target/release/ipclass" serve --config "$config" --listen "127.0.0.1:$port" --workers 1 2>"$log" &
server=$!
floor_pid=
trap 'kill $server $floor_pid 2>/dev/null; rm -f "$config" "$log"' EXIT
until grep -q 'listening' "$log"; do
  kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
targets=(nginx-geo:$nginx:$NGINX_PORT haproxy-map:$haproxy:$HAPROXY_PORT ipclass:$server:$port)
if ((floor)); then
  require_free_port "$floor_port"
  "$repo/scripts/floor-responder.sh" --port "$floor_port" >/dev/null &
  floor_pid=$!
  until (: >"/dev/tcp/127.0.0.1/$floor_port") 2>/dev/null; do
    kill -0 "$floor_pid" 2>/dev/null || { echo "sched-profile: the floor responder exited" >&2; exit 1; }
    sleep 0.1
  done
  targets+=(floor:$floor_pid:$floor_port)
fi

# Sums a field of /proc/PID/task/*/status over the threads of PID.
thread_sum() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk -v key="$2:" '$1 == key { sum += $2 } END { print sum + 0 }'
}
# Prints the user+system CPU ticks of PID.
cpu_ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat; }
# Prints the idle and total jiffies of the machine.
machine_ticks() { awk '/^cpu / { total = 0; for (i = 2; i <= NF; i++) total += $i; print $5, total }' /proc/stat; }

tick=$(getconf CLK_TCK)
printf '%-11s %10s %8s %12s %16s %6s\n' target req/s p99_ms cpu_us/req preempted/1k_req idle%
for round in $(seq 1 "$rounds"); do
  for target in "${targets[@]}"; do
    IFS=: read -r name pid target_port <<<"$target"
    switches=$(thread_sum "$pid" nonvoluntary_ctxt_switches)
    ticks=$(cpu_ticks "$pid")
    read -r idle total < <(machine_ticks)
    result=$(PEER_QUERIES=$peers/data/queries.txt PEER_PATH_PREFIX=/v1/is-internal?ip= \
      timeout $((duration + 30)) wrk -t2 -c32 -d"${duration}s" -s "$peers/lua/cycle.lua" \
      "http://127.0.0.1:$target_port" | grep '^RESULT')
    read -r idle_after total_after < <(machine_ticks)
    requests=$(grep -oP 'requests=\K[0-9]+' <<<"$result")
    awk -v name="$name" -v requests="$requests" \
      -v rate="$(grep -oP 'req_s=\K[0-9.]+' <<<"$result")" \
      -v p99="$(grep -oP 'p99_us=\K[0-9]+' <<<"$result")" \
      -v cpu=$(($(cpu_ticks "$pid") - ticks)) -v tick="$tick" \
      -v preempted=$(($(thread_sum "$pid" nonvoluntary_ctxt_switches) - switches)) \
      -v idle=$((idle_after - idle)) -v total=$((total_after - total)) \
      'BEGIN { printf "%-11s %10.0f %8.2f %12.2f %16.0f %6.0f\n", name, rate, p99 / 1000,
        cpu / tick * 1e6 / requests, preempted * 1000 / requests, 100 * idle / total }'
  done
done
