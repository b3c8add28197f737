#!/usr/bin/env bash
# Measures a large table: start-up load time, resident memory per prefix,
# and reloads forced with SIGHUP while the load generator runs, compared
# with the same load without reloads.
#
# Usage: scripts/reload-bench.sh [--v4 N] [--v6 N] [-d SECS] [--port PORT]
#                                [--debounce DURATION]
#   --v4 N, --v6 N  synthetic table size (default 1000000 and 100000), made
#                   by the peer harness's gen_large.py
#   -d SECS         length of each load (default 10)
#   --port PORT     loopback port for ipclass (default 18096)
#   --debounce DURATION  the server's --reload-debounce (default 50ms)
# Environment: PEERS_DIR (the peer harness folder; default ../shared/peers or
# ../../shared/peers beside this checkout).
# Writes results/reload-<UTC time>/: the config, server log, steady.txt and
# reloading.txt from the load generator, and targets.txt, which compares
# the results with the reload target. The table goes to results/ and is
# reused by later runs.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
me=reload-bench
# shellcheck source=scripts/common.sh
source "$repo/scripts/common.sh"
v4=1000000 v6=100000 duration=10 port=18096 debounce=50ms
while (($#)); do
  case "$1" in
    --v4) v4=$(value "$@"); shift 2 ;;
    --v6) v6=$(value "$@"); shift 2 ;;
    -d) duration=$(value "$@"); shift 2 ;;
    --port) port=$(value "$@"); shift 2 ;;
    --debounce) debounce=$(value "$@"); shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    *) echo "reload-bench: unknown argument $1; see --help" >&2; exit 2 ;;
  esac
done
find_peers

out="$repo/results/reload-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
# Two builds, so that the served binary is the one `cargo build --release`
# makes: built with the example, it would get the example's dev-dependency
# features of tokio.
cargo build --release --bin ipclass --manifest-path "$repo/Cargo.toml"
cargo build --release --example load --manifest-path "$repo/Cargo.toml"
table="$repo/results/table-$v4-$v6.txt"
[[ -f $table ]] || python3 "$peers/gen_large.py" --v4 "$v4" --v6 "$v6" --out "$table"
cat >"$out/large.toml" <<TOML
[sets.large]
internal = true
files = ["$table"]
TOML

require_free_port "$port"
"$repo/target/release/ipclass" --log-format json serve --config "$out/large.toml" \
  --listen "127.0.0.1:$port" --reload-debounce "$debounce" 2>"$out/server.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
deadline=$((SECONDS + 120))
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
  ((SECONDS < deadline)) && kill -0 "$server" 2>/dev/null \
    || { echo "reload-bench: ipclass did not become ready; see $out/server.log" >&2; exit 1; }
  sleep 0.2
done

rss_kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$server/status")
prefixes=$((v4 + v6))
echo "start-up: $(grep -o '"build_ms":[0-9.]*' "$out/server.log" | head -1)"
echo "resident memory: $((rss_kib / 1024)) MiB, $((rss_kib * 1024 / prefixes)) bytes per prefix (whole process)"

load() {  # load NAME: packed IPv4 batches of 1,024 for the set duration
  "$repo/target/release/examples/load" --target "127.0.0.1:$port" --form packed \
    --batch 1024 --duration "${duration}s" --addresses "$peers/data/queries.txt" \
    --family v4 >"$out/$1.txt" \
    || echo "reload-bench: the $1 load had failed requests; the verdict below counts them" >&2
  echo "$1: $(grep -iE 'addresses/s|p99' "$out/$1.txt" | tr '\n' ' ')"
}

load steady
load reloading &
loader=$!
before=$(grep -c '"table reloaded"' "$out/server.log" || true)
while kill -0 "$loader" 2>/dev/null; do
  kill -HUP "$server"
  sleep 1
done
wait "$loader"
summary() {  # summary FIELD: median and max of a field of the reload log lines
  grep '"table reloaded"' "$out/server.log" | tail -n +"$((before + 1))" \
    | grep -o "\"$1\":[0-9.]*" | sed "s/\"$1\"://" | sort -n \
    | awk -v field="$1" '{ v[NR] = $1 } END { if (NR) printf "reloads: %d, %s median %.0f, max %.0f\n", NR, field, v[int((NR + 1) / 2)], v[NR] }'
}
# build_ms is the read and build, reload_ms adds the settle wait and the
# second hash up to the swap.
summary build_ms
summary reload_ms

# The reload target: every reload under 300 ms, p99 within 1.5x of steady
# load, no failed request, at most 40 bytes per prefix.
p99() { awk '/^latency ms:/ { for (i = 2; i < NF; i++) if ($i == "p99") print $(i + 1) }' "$out/$1.txt"; }
failed() { awk '/^errors:/ { print $2 }' "$out/$1.txt"; }
for name in steady reloading; do
  [[ -n $(failed "$name") ]] || { echo "reload-bench: the $name load did not run; see $out/$name.txt" >&2; exit 1; }
done
max_reload=$(grep '"table reloaded"' "$out/server.log" | tail -n +"$((before + 1))" \
  | grep -o '"reload_ms":[0-9.]*' | sed 's/"reload_ms"://' | sort -n | tail -1)
awk -v max="${max_reload:-}" -v steady="$(p99 steady)" -v reloading="$(p99 reloading)" \
  -v failed="$(($(failed steady) + $(failed reloading)))" -v bytes="$((rss_kib * 1024 / prefixes))" '
  function verdict(ok) { return ok ? "met" : "not met" }
  BEGIN {
    if (max == "") { print "target: no reload finished during the load: not met"; exit }
    printf "target: slowest reload %.0f ms, under 300: %s\n", max, verdict(max < 300)
    printf "target: p99 %.2fx of steady load (%s against %s ms), at most 1.5x: %s\n",
      reloading / steady, reloading, steady, verdict(reloading <= 1.5 * steady)
    printf "target: %d failed requests, none: %s\n", failed, verdict(failed == 0)
    printf "target: %d bytes per prefix, at most 40: %s\n", bytes, verdict(bytes <= 40)
  }' | tee "$out/targets.txt"
echo "results in $out"
