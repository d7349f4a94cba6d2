#!/usr/bin/env bash
# bench/memory.sh - resident memory of `portcullis serve`: idle, then with N sessions held open
# by mcpload --sessions-only (one idle keep-alive connection per session), beside the rmcp peer.
# Usage: PEER_BENCH=DIR bench/memory.sh [sessions]   (default 1000). Prints one JSON line each.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
: "${PEER_BENCH:?set PEER_BENCH to a built peer bench directory (see BENCHMARKS.md)}"
N=${1:-1000}
load="$PEER_BENCH/mcpload/target/release/mcpload"
bin=${PORTCULLIS_BIN:-$root/target/release/portcullis}
rss() { awk '/^VmRSS/{print $2*1024}' "/proc/$1/status"; }
measure() { local name=$1 url=$2; shift 2
  "$@" >/dev/null 2>&1 & local pid=$!
  sleep 3
  local idle; idle=$(rss $pid)
  "$load" "$url" --sessions-only --clients "$N" --seconds 10 >/tmp/mem-$name.json &
  local lp=$!
  sleep 8
  local held; held=$(rss $pid)
  wait $lp
  local opened; opened=$(sed -n 's/.*"sessions":\([0-9]*\).*/\1/p' /tmp/mem-$name.json)
  printf '{"server":"%s","idle_rss":%s,"sessions":%s,"rss_held":%s,"bytes_per_session_held":%s}\n' \
    "$name" "$idle" "${opened:-0}" "$held" $(( (held-idle)/(${opened:-0}>0?${opened:-1}:1) ))
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
# Without authentication, like the peers.
noauth=$(mktemp); printf '[auth]\nmode = "off"\n[audit]\nsink = "off"\n' > "$noauth"
measure portcullis http://127.0.0.1:3510/mcp "$bin" serve --config "$noauth" --listen 127.0.0.1:3510
measure rmcp-stateful http://127.0.0.1:3300/mcp env PORT=3300 "$PEER_BENCH/peers/rmcp/target/release/peer-rmcp"
