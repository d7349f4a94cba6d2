#!/usr/bin/env bash
# bench/auth.sh - the cost of authentication: `portcullis serve` without auth beside the same
# server requiring an RS256 JWT (public key from tests/fixtures, verified-token cache warm), one
# load generator, interleaved passes. Then uncached verifications per second per core.
# Usage: PEER_BENCH=DIR bench/auth.sh [seconds] [passes] [clients]   (defaults 10 3 16)
# Needs: target/release/portcullis and target/release/examples/jwt_bench (cargo build --release
# --bin portcullis --example jwt_bench) and DIR/mcpload/target/release/mcpload.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/.." && pwd)
: "${PEER_BENCH:?set PEER_BENCH to a built peer bench directory (see BENCHMARKS.md)}"
S=${1:-10}; P=${2:-3}; C=${3:-16}
load="$PEER_BENCH/mcpload/target/release/mcpload"
bin=$root/target/release/portcullis; jb=$root/target/release/examples/jwt_bench
cfg=$(mktemp)
cat > "$cfg" <<TOML
[server]
listen = "127.0.0.1:3502"
[audit]
sink = "off"
[policy.tool_scopes]
[auth]
mode = "jwt"
[[auth.issuers]]
issuer = "https://bench.test"
algorithms = ["RS256"]
public_key_files = ["$root/tests/fixtures/rsa-a.pub.pem"]
TOML
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "$cfg"' EXIT
noauth=$(mktemp); printf '[auth]\nmode = "off"\n[audit]\nsink = "off"\n' > "$noauth"
"$bin" serve --config "$noauth" --listen 127.0.0.1:3500 >/dev/null 2>&1 & pids+=($!)
"$bin" serve --config "$cfg" >/dev/null 2>&1 & pids+=($!)
sleep 2
tok=$("$jb" mint http://127.0.0.1:3502/mcp)
for p in $(seq 1 "$P"); do
  printf '{"server":"portcullis-noauth","pass":%s,' "$p"; "$load" http://127.0.0.1:3500/mcp --clients "$C" --seconds "$S" | cut -c2-
  printf '{"server":"portcullis-jwt-rs256","pass":%s,' "$p"; "$load" http://127.0.0.1:3502/mcp --token "$tok" --clients "$C" --seconds "$S" | cut -c2-
done
"$jb" verify 20000
