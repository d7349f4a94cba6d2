#!/usr/bin/env bash
# scripts/oauth-interop.sh - proves that the official MCP SDK OAuth clients complete a real OAuth 2.1
# flow against Portcullis as a resource server: starts the test IdP (scripts/idp.sh, oidc-provider)
# and a Portcullis with [auth] mode = "jwt" trusting it, each on a free 127.0.0.1 port, then runs the
# SDK clients; they find the IdP only through Portcullis's 401 and protected resource metadata.
# Usage: scripts/oauth-interop.sh
#   Clients: ts-sdk-1.32.2-client-credentials  ClientCredentialsProvider (tests/interop/oauth_ts.mjs)
#            ts-sdk-1.32.2-authcode-dcr        code + PKCE, OAuthClientProvider, dynamic registration
#            ts-sdk-1.32.2-authcode-public     code + PKCE with the pre-registered public client
#            py-mcp-2.3.0-authcode-dcr         OAuthClientProvider, code + PKCE (tests/interop/oauth_py.py)
#            py-mcp-2.3.0-client-credentials   ClientCredentialsOAuthProvider
# Env: PORTCULLIS_BIN (default target/release/portcullis), PORTCULLIS_TEST_CACHE (tool cache),
#      PORTCULLIS_CLIENT_TIMEOUT (seconds per client, 120), PORTCULLIS_START_TIMEOUT (seconds, 30).
# Everything started here is stopped on exit. Last line: N passed, M failed (N, M = clients);
# exit 1 if any client failed or the servers did not start.
source "$(dirname "$0")/lib.sh"
usage() { sed -n 2,15p "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "oauth-interop: $*" >&2; exit 1; }
case ${1:-} in
  "") ;;
  -h|--help) usage ;;
  *) echo "unknown argument: $1" >&2; usage ;;
esac

bin=${PORTCULLIS_BIN:-$PC_ROOT/target/release/portcullis}
[[ $bin == /* ]] || bin="$PWD/$bin"
[ -x "$bin" ] || die "no Portcullis binary at $bin: build it (cargo build --release) or set PORTCULLIS_BIN"
pc_prereqs || exit 1
pc_require_tools curl || exit 1
node=$(pc_node22)
npm_dir=$(pc_clients_dir)
py2=$(pc_py_mcp2)
pc_idp_dir >/dev/null
interop="$PC_ROOT/tests/interop"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-oauth-interop.XXXXXX")
pc_pid=""; idp_port=""
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if [ -n "$pc_pid" ] && kill -0 "$pc_pid" 2>/dev/null; then
    kill "$pc_pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pc_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pc_pid" 2>/dev/null && kill -9 "$pc_pid" 2>/dev/null
    wait "$pc_pid" 2>/dev/null || true
  fi
  [ -n "$idp_port" ] && "$PC_SCRIPTS/idp.sh" stop "$idp_port" 2>/dev/null
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two distinct free ports (bound and released; the servers take them right after).
idp_port=$(free_port)
pc_port=$(free_port)
while [ "$pc_port" = "$idp_port" ]; do pc_port=$(free_port); done
url="http://127.0.0.1:$pc_port/mcp"

issuer=$(MCP_RESOURCE=$url "$PC_SCRIPTS/idp.sh" start "$idp_port") || { idp_port=""; die "the test IdP did not start"; }

cat >"$tmp/portcullis.toml" <<EOF
[server]
listen = "127.0.0.1:$pc_port"

[auth]
mode = "jwt"
resource = "$url"
scopes_supported = ["mcp:tools"]

[[auth.issuers]]
issuer = "$issuer"
algorithms = ["RS256"]
jwks_url = "$issuer/jwks"
EOF
# Run from the temporary directory: relative state paths (e.g. the revocation database) land there.
(cd "$tmp" && exec "$bin" serve --config "$tmp/portcullis.toml") >"$tmp/portcullis.log" 2>&1 </dev/null &
pc_pid=$!
prm_url="http://127.0.0.1:$pc_port/.well-known/oauth-protected-resource/mcp"
started=0
for ((i = 0; i < ${PORTCULLIS_START_TIMEOUT:-30} * 10; i++)); do
  kill -0 "$pc_pid" 2>/dev/null || break
  if curl -fsS --max-time 2 "$prm_url" >/dev/null 2>&1; then started=1; break; fi
  sleep 0.1
done
if [ "$started" != 1 ]; then
  how="did not answer on 127.0.0.1:$pc_port within ${PORTCULLIS_START_TIMEOUT:-30}s"
  kill -0 "$pc_pid" 2>/dev/null || { wait "$pc_pid" && st=0 || st=$?; how="exited with status $st"; pc_pid=""; }
  echo "oauth-interop: Portcullis ($bin) $how; last lines of its log:" >&2
  tail -n 20 "$tmp/portcullis.log" | sed 's/^/  /' >&2
  exit 1
fi
echo "oauth-interop: Portcullis $url ($("$bin" --version 2>/dev/null || echo "$bin")), IdP $issuer"
echo "oauth-interop: PRM $(curl -fsS --max-time 5 "$prm_url")"

export PC_NPM_DIR=$npm_dir OAUTH_ISSUER=$issuer
to=${PORTCULLIS_CLIENT_TIMEOUT:-120}
pass=0; fail=0; results=()

run() { # NAME CMD... : one client, counted as one pass or one failure; its output indented
  local name=$1 rc=0; shift
  echo "== $name"
  set +e
  timeout --foreground -k 10 "$to" "$@" 2>&1 | sed 's/^/  /'
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 124 ] && echo "  FAIL: client timed out after ${to}s"
  if [ "$rc" = 0 ]; then
    echo "-> PASS $name"; pass=$((pass + 1)); results+=("PASS $name")
  else
    echo "-> FAIL $name (exit $rc)"; fail=$((fail + 1)); results+=("FAIL $name")
  fi
}

run ts-sdk-1.32.2-client-credentials "$node" "$interop/oauth_ts.mjs" "$url" client-credentials
run ts-sdk-1.32.2-authcode-dcr "$node" "$interop/oauth_ts.mjs" "$url" authcode
run ts-sdk-1.32.2-authcode-public "$node" "$interop/oauth_ts.mjs" "$url" authcode-public
run py-mcp-2.3.0-authcode-dcr "$py2/bin/python" "$interop/oauth_py.py" "$url" authcode
run py-mcp-2.3.0-client-credentials "$py2/bin/python" "$interop/oauth_py.py" "$url" client-credentials

if [ "$fail" -gt 0 ]; then
  echo "== Portcullis log (last 20 lines)"
  tail -n 20 "$tmp/portcullis.log" | sed 's/^/  /'
  echo "== IdP log: $PC_CACHE/run/idp-$idp_port.log (last 10 lines)"
  tail -n 10 "$PC_CACHE/run/idp-$idp_port.log" 2>/dev/null | sed 's/^/  /'
fi
echo "== oauth interop summary"
printf '  %s\n' "${results[@]}"
pc_summary "$pass" "$fail"
