#!/usr/bin/env bash
# Measures ipclass beside the peers (nginx geo, HAProxy map_ip, Python) on the
# peers' homelab list, with the same CPU share: one runtime worker, as the
# peers get one nginx worker and one HAProxy thread.
#
# Usage: scripts/bench-peers.sh [-d SECS] [-r REPS] [--port PORT] [--skip-peers]
#   -d SECS      length of each load (default 10)
#   -r REPS      repetitions of the peer scripts (default 3)
#   --port PORT  loopback port for ipclass (default 18095)
#   --skip-peers run only the gRPC load generator against ipclass
# Environment:
#   PEERS_DIR        the peer harness folder (default ../shared/peers or
#                    ../../shared/peers beside this checkout)
#   PEERS_STATE      passed through to the peer scripts
#   IPCLASS_WORKERS  runtime workers for ipclass (default 1)
#   BENCH_ARGS, GRPC_BENCH_ARGS  extra options for bench.sh and grpc_bench.sh,
#                    such as --no-inproc
#
# Writes everything under results/<UTC time>/ in this checkout: the generated
# config, the server log, bench.txt (wrk/h2load), grpc.txt (h2load gRPC),
# load.txt and load.csv (the load example with server CPU per address), and
# targets.txt, which compares the results with the benchmark targets.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
me=bench-peers
# shellcheck source=scripts/common.sh
source "$repo/scripts/common.sh"
duration=10 reps=3 port=18095 skip_peers=0
while (($#)); do
  case "$1" in
    -d) duration=$(value "$@"); shift 2 ;;
    -r) reps=$(value "$@"); shift 2 ;;
    --port) port=$(value "$@"); shift 2 ;;
    --skip-peers) skip_peers=1; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "bench-peers: unknown argument $1; see --help" >&2; exit 2 ;;
  esac
done

find_peers
# shellcheck disable=SC1091
source "$peers/ports.env"

out="$repo/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "bench-peers: results in $out"

# Two builds, so that the served binary is the one `cargo build --release`
# makes: built with the example, it would get the example's dev-dependency
# features of tokio.
cargo build --release --bin ipclass --manifest-path "$repo/Cargo.toml"
cargo build --release --example load --manifest-path "$repo/Cargo.toml"

write_homelab_config "$out/homelab.toml"

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff HEAD --quiet || echo '+dirty')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
  echo "kernel: $(uname -r)"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"

require_free_port "$port"
IPCLASS_WORKERS=${IPCLASS_WORKERS:-1} "$repo/target/release/ipclass" serve \
  --config "$out/homelab.toml" --listen "127.0.0.1:$port" 2>"$out/server.log" &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT

deadline=$((SECONDS + 30))
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
  if ((SECONDS > deadline)) || ! kill -0 "$server_pid" 2>/dev/null; then
    echo "bench-peers: ipclass did not become ready; see $out/server.log" >&2
    exit 1
  fi
  sleep 0.1
done

load() {
  "$repo/target/release/examples/load" --target "127.0.0.1:$port" \
    --duration "${duration}s" --server-pid "$server_pid" --csv "$out/load.csv" "$@" \
    | tee -a "$out/load.txt"
}
for batch in 1 64 1024; do
  load --form packed --batch "$batch" --addresses "$peers/data/queries.txt" --family v4
  load --form text --batch "$batch" --addresses "$peers/data/queries.txt"
done

if ((skip_peers == 0)); then
  # shellcheck disable=SC2086
  "$peers/bench.sh" -d "$duration" -r "$reps" ${BENCH_ARGS:-} \
    --target "ours=http://127.0.0.1:$port/v1/is-internal?ip=" | tee "$out/bench.txt"
  # shellcheck disable=SC2086
  "$peers/grpc_bench.sh" -d "$duration" -r "$reps" -n 1,64,1024 ${GRPC_BENCH_ARGS:-} \
    --target "python-grpc=127.0.0.1:$PYGRPC_PORT" --target "ours=127.0.0.1:$port" | tee "$out/grpc.txt"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"

# The targets that these runs measure, from the summaries above.
{
  batch_rate() {  # batch_rate FORM: addresses/s of the batch-1024 load of FORM
    awk -v form="$1" '/^target / { hit = ($4 == form && $6 == 1024) }
      hit && /^addresses\/s:/ { print $2; exit }' "$out/load.txt"
  }
  for form in Packed Text; do
    floor=$([[ $form == Packed ]] && echo 20000000 || echo 5000000)
    rate=$(batch_rate "$form")
    verdict=$([[ -n $rate ]] && ((rate >= floor)) && echo met || echo "not met")
    echo "target: gRPC $form batch 1024: ${rate:-none} addresses/s, at least $floor: $verdict"
  done
  if [[ -f $out/bench.txt ]]; then
    awk '$1 == "nginx-geo" && $2 == "h1" && NF == 9 { nginx_p99 = $(NF - 2) }
      $1 == "ours" && NF == 9 { ratio = $NF; p99 = $(NF - 2) }
      END {
        if (ratio == "" || nginx_p99 == "") { print "target: GET against nginx-geo: no summary"; exit }
        printf "target: GET %.3fx nginx-geo, at least 1.0: %s; p99 %s ms against %s ms: %s\n",
          ratio, (ratio >= 1.0 ? "met" : "not met"), p99, nginx_p99,
          (p99 + 0 <= nginx_p99 + 0 ? "met" : "not met")
      }' "$out/bench.txt"
  fi
} | tee "$out/targets.txt"
echo "bench-peers: done; results in $out"
