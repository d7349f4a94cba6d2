#!/usr/bin/env bash
# bench/compare.sh - throughput and latency of `portcullis serve` beside peer MCP servers, in one
# run, with one independent load generator (mcpload). Not a test: it prints numbers.
#
# Usage: PEER_BENCH=DIR bench/compare.sh [seconds] [passes] [clients...]
#   PEER_BENCH  a built copy of the peer bench: DIR/mcpload/target/release/mcpload,
#               DIR/peers/floor/target/release/peer-floor, DIR/peers/rmcp/target/release/peer-rmcp
#               (see BENCHMARKS.md for where it comes from and how to build it)
#   defaults    10 s per run, 3 passes, clients 1 16 64
# Each pass runs every (server, clients) pair once, servers interleaved so drift hits all alike.
# Output: one JSON line per run: {"server":…,"clients":…,"pass":…, mcpload's fields…}
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
: "${PEER_BENCH:?set PEER_BENCH to a built peer bench directory (see BENCHMARKS.md)}"
S=${1:-10}; P=${2:-3}; shift $(( $# >= 2 ? 2 : $# )) || true
CLIENTS=("$@"); [ ${#CLIENTS[@]} -gt 0 ] || CLIENTS=(1 16 64)
load="$PEER_BENCH/mcpload/target/release/mcpload"
bin=${PORTCULLIS_BIN:-$root/target/release/portcullis}
for f in "$load" "$PEER_BENCH/peers/floor/target/release/peer-floor" "$PEER_BENCH/peers/rmcp/target/release/peer-rmcp" "$bin"; do
  [ -x "$f" ] || { echo "missing $f (build it first)" >&2; exit 2; }
done
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
start() { "$@" >/dev/null 2>&1 & pids+=($!); }
start env PORT=3400 "$PEER_BENCH/peers/floor/target/release/peer-floor"
start env PORT=3300 "$PEER_BENCH/peers/rmcp/target/release/peer-rmcp"
# The embedded default without authentication (the peers have none), logging at its default
# level (info, one line per request) to /dev/null, and the same with request lines off, to show
# what logging costs.
noauth=$(mktemp); printf '[auth]\nmode = "off"\n[audit]\nsink = "off"\n' > "$noauth"
start "$bin" serve --config "$noauth" --listen 127.0.0.1:3500
cfg=$(mktemp); printf '[auth]\nmode = "off"\n[audit]\nsink = "off"\n[log]\nlevel = "warn"\n' > "$cfg"
start "$bin" serve --config "$cfg" --listen 127.0.0.1:3501
sleep 2
run() { local name=$1 c=$2 p=$3; shift 3
  printf '{"server":"%s","clients":%s,"pass":%s,' "$name" "$c" "$p"
  "$load" "$@" --clients "$c" --seconds "$S" | cut -c2-; }
for p in $(seq 1 "$P"); do
  for c in "${CLIENTS[@]}"; do
    run floor-modern "$c" "$p" http://127.0.0.1:3400/mcp --modern
    run rmcp-stateful "$c" "$p" http://127.0.0.1:3300/mcp
    run portcullis "$c" "$p" http://127.0.0.1:3500/mcp
    run portcullis-quiet "$c" "$p" http://127.0.0.1:3501/mcp
  done
done
rm -f "$cfg"
