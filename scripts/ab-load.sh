#!/usr/bin/env bash
# Compares the gRPC load of two builds side by side: the commit BASE and the
# working tree. Both serve the peers' homelab list with one runtime worker,
# on two ports, and the load example runs against them in turns, the order
# alternating from pair to pair, so that a change of the host's load falls
# on both. Each run prints addresses/s and the server's CPU time per
# address. The last line gives the ratios of the working tree to BASE,
# sorted, and their median.
#
# Usage: scripts/ab-load.sh BASE [--pairs N] [-d SECS] [--port PORT]
#                           [-- LOAD_OPTIONS...]
#   BASE          a commit, built in a worktree under target/ab/
#   --pairs N     pairs of runs (default 3)
#   -d SECS       length of each run (default 8)
#   --port PORT   loopback port of BASE; the working tree uses PORT + 1
#                 (default 18401)
#   LOAD_OPTIONS  options of the load example (default: --form packed
#                 --batch 1024 --concurrency 32 --connections 4 --family v4)
# Environment: PEERS_DIR (the peer harness folder, as for bench-peers.sh).
# Writes results/ab-<UTC time>/: the config, both server logs, and each
# run's output.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
me=ab-load
# shellcheck source=scripts/common.sh
source "$repo/scripts/common.sh"
base="" pairs=3 duration=8 port=18401
load_options=(--form packed --batch 1024 --concurrency 32 --connections 4 --family v4)
while (($#)); do
  case "$1" in
    --pairs) pairs=$(value "$@"); shift 2 ;;
    -d) duration=$(value "$@"); shift 2 ;;
    --port) port=$(value "$@"); shift 2 ;;
    --) shift; load_options=("$@"); break ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
    -*) echo "$me: unknown argument $1; see --help" >&2; exit 2 ;;
    *) [[ -z $base ]] || { echo "$me: unexpected second BASE $1; pass one commit, see --help" >&2; exit 2; }
       base=$1; shift ;;
  esac
done
[[ -n $base ]] || { echo "$me: missing BASE, the commit to compare with; see --help" >&2; exit 2; }
commit=$(git -C "$repo" rev-parse --verify --quiet "$base^{commit}") \
  || { echo "$me: $base is not a commit of this repository" >&2; exit 2; }
find_peers
require_free_port "$port"
require_free_port "$((port + 1))"

# The base builds in its own worktree and target folder, so the two builds
# never share artifacts.
tree="$repo/target/ab/${commit:0:12}"
if [[ ! -d $tree ]]; then
  git -C "$repo" worktree add --detach "$tree" "$commit" >/dev/null
fi
cargo build --release --bin ipclass --manifest-path "$tree/Cargo.toml"
cargo build --release --bin ipclass --manifest-path "$repo/Cargo.toml"
cargo build --release --example load --manifest-path "$repo/Cargo.toml"

out="$repo/results/ab-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
write_homelab_config "$out/homelab.toml"
{
  echo "base: $commit"
  echo "tree: $(git -C "$repo" rev-parse HEAD)$(git -C "$repo" diff HEAD --quiet || echo '+dirty')"
  echo "load options: ${load_options[*]}"
} | tee "$out/builds.txt"

servers=()
trap 'kill "${servers[@]}" 2>/dev/null || true' EXIT
start() {  # start NAME BINARY PORT: serve, wait until ready, print the PID
  "$2" serve --config "$out/homelab.toml" --listen "127.0.0.1:$3" --workers 1 \
    >/dev/null 2>"$out/server-$1.log" &
  local pid=$! deadline=$((SECONDS + 30))
  until curl -sf "http://127.0.0.1:$3/readyz" >/dev/null; do
    if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
      echo "$me: $1 did not become ready; see $out/server-$1.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$pid"
}
base_pid=$(start base "$tree/target/release/ipclass" "$port")
tree_pid=$(start tree "$repo/target/release/ipclass" "$((port + 1))")
servers=("$base_pid" "$tree_pid")

run() {  # run NAME PID PORT PAIR: one load run; prints addresses/s
  local file="$out/$4-$1.txt"
  "$repo/target/release/examples/load" --target "127.0.0.1:$3" --duration "${duration}s" \
    --addresses "$peers/data/queries.txt" --server-pid "$2" "${load_options[@]}" >"$file"
  echo "pair $4 $1: $(grep -E '^(addresses/s|server CPU)' "$file" | tr -s ' ' | tr '\n' ' ')" >&2
  awk '/^addresses\/s:/ { print $2 }' "$file"
}
ratios=()
for pair in $(seq 1 "$pairs"); do
  if ((pair % 2)); then
    a=$(run base "$base_pid" "$port" "$pair")
    b=$(run tree "$tree_pid" "$((port + 1))" "$pair")
  else
    b=$(run tree "$tree_pid" "$((port + 1))" "$pair")
    a=$(run base "$base_pid" "$port" "$pair")
  fi
  ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk -v base="${commit:0:12}" '
  { r[NR] = $1; list = list (NR > 1 ? ", " : "") $1 }
  END { printf "tree / base %s addresses/s: %s; median %s\n", base, list, r[int((NR + 1) / 2)] }' \
  | tee -a "$out/builds.txt"
echo "results in $out"
