# Shared by the benchmark scripts: finding the peer harness, writing its
# homelab config, checking a port, and reading option values. Source it
# after setting `repo` and `me`.
#
# The peer harness is the folder of scripts and data that runs nginx geo,
# HAProxy map_ip and the Python baselines on the same homelab list and query
# mix (bench.sh, grpc_bench.sh, start.sh, gen_large.py, data/). It is not
# part of this repository, and BENCHMARKS.md describes where it comes from.

# Sets `peers` to the harness folder: PEERS_DIR, else ../shared/peers or
# ../../shared/peers beside this checkout. Exits with the folders tried.
find_peers() {
  local candidate tried=()
  if [[ -n ${PEERS_DIR:-} ]]; then
    tried=("$PEERS_DIR")
  else
    tried=("$repo/../shared/peers" "$repo/../../shared/peers")
  fi
  for candidate in "${tried[@]}"; do
    if [[ -f $candidate/bench.sh && -f $candidate/data/homelab.txt ]]; then
      peers=$(cd "$candidate" && pwd)
      return 0
    fi
  done
  echo "$me: peer harness not found in ${tried[*]}; set PEERS_DIR to the folder that contains bench.sh and data/homelab.txt (BENCHMARKS.md says where it comes from)" >&2
  exit 1
}

# Writes a config to FILE that serves the harness's homelab list as one
# internal set, the table that every comparison with the peers uses. Call
# it after find_peers.
write_homelab_config() {
  cat >"$1" <<TOML
# The peer harness's homelab list as one internal set.
[sets.homelab]
internal = true
files = ["$peers/data/homelab.txt"]
TOML
}

# Exits when something already listens on 127.0.0.1:PORT, because that
# server would pass a readiness check in place of the one started here.
require_free_port() {
  if (: >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "$me: port $1 is in use; stop what listens there or pass --port" >&2
    exit 1
  fi
}

# Prints $2, the value of option $1, or exits when it is missing, as in
# `duration=$(value "$@")`.
value() {
  if (($# < 2)) || [[ $2 == -* && $2 != -[0-9]* ]]; then
    echo "$me: $1 needs a value; see --help" >&2
    exit 2
  fi
  printf '%s\n' "$2"
}
