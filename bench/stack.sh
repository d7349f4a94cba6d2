#!/usr/bin/env bash
# bench/stack.sh - the whole security stack against the official SDK with none: rmcp-stateful
# beside Portcullis bare (no auth, no audit), Portcullis full (JWT from the dev issuer with the
# verified-token cache, policy with a required scope, schema validation, durable SQLite audit with
# group commit, metrics) and Portcullis full with batched-asynchronous audit. One load generator,
# servers interleaved in every pass. Then the audit sink's sustained events/s (examples/audit_bench).
# Usage: PEER_BENCH=DIR bench/stack.sh [seconds] [passes] [clients...]   (defaults 10 3 16 64)
# Needs: target/release/portcullis and target/release/examples/audit_bench
# (cargo build --release --bin portcullis --example audit_bench), DIR/mcpload and DIR/peers/rmcp built.
# Output: one JSON line per run, then one for the audit sink.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/.." && pwd)
: "${PEER_BENCH:?set PEER_BENCH to a built peer bench directory (see BENCHMARKS.md)}"
S=${1:-10}; P=${2:-3}; shift $(( $# >= 2 ? 2 : $# )) || true
CLIENTS=("$@"); [ ${#CLIENTS[@]} -gt 0 ] || CLIENTS=(16 64)
load="$PEER_BENCH/mcpload/target/release/mcpload"
bin=${PORTCULLIS_BIN:-$root/target/release/portcullis}
ab=$root/target/release/examples/audit_bench
for f in "$load" "$PEER_BENCH/peers/rmcp/target/release/peer-rmcp" "$bin" "$ab"; do
  [ -x "$f" ] || { echo "missing $f (build it first)" >&2; exit 2; }
done
work=$(mktemp -d); pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
start() { local dir=$1; shift; mkdir -p "$dir"; (cd "$dir" && exec "$@") >/dev/null 2>&1 & pids+=($!); }
start "$work/rmcp" env PORT=3300 "$PEER_BENCH/peers/rmcp/target/release/peer-rmcp"
# Bare: what the transport and engine cost alone.
printf '[auth]\nmode = "off"\n[audit]\nsink = "off"\n[metrics]\nenabled = false\n[log]\nlevel = "warn"\n' > "$work/bare.toml"
start "$work/bare" "$bin" serve --config "$work/bare.toml" --listen 127.0.0.1:3510
# Full: the embedded default (dev auth, policy requiring mcp:tools, validation, durable SQLite
# audit, metrics), request log lines off like the others.
printf '[log]\nlevel = "warn"\n' > "$work/full.toml"
start "$work/full" "$bin" serve --config "$work/full.toml" --listen 127.0.0.1:3511
printf '[log]\nlevel = "warn"\n[audit]\ndurability = "async"\n' > "$work/async.toml"
start "$work/async" "$bin" serve --config "$work/async.toml" --listen 127.0.0.1:3512
sleep 2
tok_full=$(cd "$work/full" && "$bin" token --config "$work/full.toml" --listen 127.0.0.1:3511 --sub bench)
tok_async=$(cd "$work/async" && "$bin" token --config "$work/async.toml" --listen 127.0.0.1:3512 --sub bench)
run() { local name=$1 c=$2 p=$3; shift 3
  printf '{"server":"%s","clients":%s,"pass":%s,' "$name" "$c" "$p"
  "$load" "$@" --clients "$c" --seconds "$S" | cut -c2-; }
for p in $(seq 1 "$P"); do
  for c in "${CLIENTS[@]}"; do
    run rmcp-stateful "$c" "$p" http://127.0.0.1:3300/mcp
    run portcullis-bare "$c" "$p" http://127.0.0.1:3510/mcp
    run portcullis-full "$c" "$p" http://127.0.0.1:3511/mcp --token "$tok_full"
    run portcullis-full-async-audit "$c" "$p" http://127.0.0.1:3512/mcp --token "$tok_async"
  done
done
# Audit records written by the full servers (every call is one record).
for s in full async; do
  printf '{"audit_records_%s":%s}\n' "$s" "$(cd "$work/$s" && "$bin" audit verify --config "$work/$s.toml" | sed -n 's/^ok: \([0-9]*\) records.*/\1/p')"
done
"$ab" 500000 "$work/audit-bench.db"
