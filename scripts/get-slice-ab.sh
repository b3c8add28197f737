#!/usr/bin/env bash
# Compares single-address GET latency with and without the runtime threads'
# short scheduler slice, each against nginx geo in the same run. Runs N
# pairs, alternating the order. Each run prints bench.sh's line for both
# targets: name, protocol, runs, requests/s (min-max), p50 and p99 in ms,
# errors, and the ratio to nginx-geo.
#
# Usage: scripts/get-slice-ab.sh [--pairs N] [-d SECS] [-r REPS] [--port PORT]
#   --pairs N   pairs of runs (default 4)
#   -d SECS     length of each wrk run (default 10)
#   -r REPS     wrk runs per target in each run (default 2)
#   --port PORT loopback port for ipclass (default 18095)
# Environment: PEERS_DIR (the peer harness folder; default ../shared/peers or
# ../../shared/peers beside this checkout)
# and PEERS_STATE (the state folder of the harness, as for bench-peers.sh).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
me=get-slice-ab
# shellcheck source=scripts/common.sh
source "$repo/scripts/common.sh"
pairs=4 duration=10 reps=2 port=18095
while (($#)); do
  case "$1" in
    --pairs) pairs=$(value "$@"); shift 2 ;;
    -d) duration=$(value "$@"); shift 2 ;;
    -r) reps=$(value "$@"); shift 2 ;;
    --port) port=$(value "$@"); shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "get-slice-ab: unknown argument $1; see --help" >&2; exit 2 ;;
  esac
done
find_peers

cargo build --release --bin ipclass --manifest-path "$repo/Cargo.toml"
out="$repo/results/get-slice-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
config="$out/homelab.toml"
write_homelab_config "$config"

require_free_port "$port"
run() {  # run SLICE: one server with --sched-slice SLICE, then bench.sh
  local slice=$1 server
  "$repo/target/release/ipclass" serve --config "$config" --workers 1 \
    --listen "127.0.0.1:$port" --sched-slice "$slice" 2>"$out/server-$slice.log" &
  server=$!
  until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 "$server" 2>/dev/null || { echo "get-slice-ab: ipclass exited; see $out" >&2; exit 1; }
    sleep 0.1
  done
  echo "slice $slice, $(date -u +%H:%M:%S), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  timeout 600 "$peers/bench.sh" -d "$duration" -r "$reps" --no-inproc --only nginx-geo,ours \
    --target "ours=http://127.0.0.1:$port/v1/is-internal?ip=" 2>&1 \
    | grep -E '^(nginx-geo|ours) ' | tail -2
  kill "$server"
  wait "$server" || true
}

for ((i = 0; i < pairs; i++)); do
  if ((i % 2)); then order=(100us off); else order=(off 100us); fi
  for slice in "${order[@]}"; do
    run "$slice"
  done
done | tee "$out/runs.txt"
