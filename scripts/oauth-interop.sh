#!/usr/bin/env bash
# scripts/oauth-interop.sh - proves that the official MCP SDK OAuth clients complete a real OAuth 2.1
# flow against Portcullis as a resource server, twice:
#   1. idp:     the test IdP (scripts/idp.sh, oidc-provider) and a Portcullis with [auth] mode = "jwt"
#               trusting it;
#   2. builtin: `portcullis serve` on its embedded default (no config): the built-in dev
#               authorization server. The client-credentials and public clients are registered
#               first with RFC 7591 (curl), as an operator would.
# Each server runs on a free 127.0.0.1 port; the SDK clients find the authorization server only
# through Portcullis's 401 and protected resource metadata.
# Usage: scripts/oauth-interop.sh
#   Clients: ts-sdk-1.32.2-client-credentials  ClientCredentialsProvider (tests/interop/oauth_ts.mjs)
#            ts-sdk-1.32.2-authcode-dcr        code + PKCE, OAuthClientProvider, dynamic registration
#            ts-sdk-1.32.2-authcode-public     code + PKCE with the pre-registered public client
#            py-mcp-2.3.0-authcode-dcr         OAuthClientProvider, code + PKCE (tests/interop/oauth_py.py)
#            py-mcp-2.3.0-client-credentials   ClientCredentialsOAuthProvider
# Env: PORTCULLIS_BIN (default target/release/portcullis), PORTCULLIS_TEST_CACHE (tool cache),
#      PORTCULLIS_CLIENT_TIMEOUT (seconds per client, 120), PORTCULLIS_START_TIMEOUT (seconds, 30).
# Everything started here is stopped on exit. Last line: N passed, M failed (N, M = client runs);
# exit 1 if any client failed or the servers did not start.
source "$(dirname "$0")/lib.sh"
usage() { sed -n 2,22p "$0" | sed 's/^# \{0,1\}//'; exit 2; }
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
stop_portcullis() {
  local i
  if [ -n "$pc_pid" ] && kill -0 "$pc_pid" 2>/dev/null; then
    kill "$pc_pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pc_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pc_pid" 2>/dev/null && kill -9 "$pc_pid" 2>/dev/null
    wait "$pc_pid" 2>/dev/null || true
  fi
  pc_pid=""
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_portcullis
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
# start_portcullis DIR PORT [ARGS...]: `portcullis serve --listen 127.0.0.1:PORT ARGS` run from DIR
# (relative state paths such as the dev key and the revocation database land there); waits until
# its protected resource metadata answers. Sets pc_pid.
start_portcullis() {
  local dir=$1 port=$2 i started=0 how st; shift 2
  mkdir -p "$dir"
  (cd "$dir" && exec "$bin" serve --listen "127.0.0.1:$port" "$@") >"$dir/portcullis.log" 2>&1 </dev/null &
  pc_pid=$!
  local prm_url="http://127.0.0.1:$port/.well-known/oauth-protected-resource/mcp"
  for ((i = 0; i < ${PORTCULLIS_START_TIMEOUT:-30} * 10; i++)); do
    kill -0 "$pc_pid" 2>/dev/null || break
    if curl -fsS --max-time 2 "$prm_url" >/dev/null 2>&1; then started=1; break; fi
    sleep 0.1
  done
  if [ "$started" != 1 ]; then
    how="did not answer on 127.0.0.1:$port within ${PORTCULLIS_START_TIMEOUT:-30}s"
    kill -0 "$pc_pid" 2>/dev/null || { wait "$pc_pid" && st=0 || st=$?; how="exited with status $st"; pc_pid=""; }
    echo "oauth-interop: Portcullis ($bin) $how; last lines of its log:" >&2
    tail -n 20 "$dir/portcullis.log" | sed 's/^/  /' >&2
    return 1
  fi
  echo "oauth-interop: PRM $(curl -fsS --max-time 5 "$prm_url")"
}

export PC_NPM_DIR=$npm_dir
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

# run_clients LABEL URL : the five SDK client runs against one Portcullis
run_clients() {
  local label=$1 url=$2
  run "$label/ts-sdk-1.32.2-client-credentials" "$node" "$interop/oauth_ts.mjs" "$url" client-credentials
  run "$label/ts-sdk-1.32.2-authcode-dcr" "$node" "$interop/oauth_ts.mjs" "$url" authcode
  run "$label/ts-sdk-1.32.2-authcode-public" "$node" "$interop/oauth_ts.mjs" "$url" authcode-public
  run "$label/py-mcp-2.3.0-authcode-dcr" "$py2/bin/python" "$interop/oauth_py.py" "$url" authcode
  run "$label/py-mcp-2.3.0-client-credentials" "$py2/bin/python" "$interop/oauth_py.py" "$url" client-credentials
}

# --- 1. oidc-provider ------------------------------------------------------------------------
if start_portcullis "$tmp/idp" "$pc_port" --config "$tmp/portcullis.toml"; then
  echo "oauth-interop: Portcullis $url ($("$bin" --version 2>/dev/null || echo "$bin")), IdP $issuer"
  OAUTH_ISSUER=$issuer run_clients idp "$url"
else
  fail=$((fail + 1)); results+=("FAIL idp/portcullis did not start")
fi
stop_portcullis
"$PC_SCRIPTS/idp.sh" stop "$idp_port" 2>/dev/null || true; idp_port=""

# --- 2. the built-in dev authorization server (the embedded default) ---------------------------
dev_port=$(free_port)
dev_base="http://127.0.0.1:$dev_port"
# register NAME JSON: RFC 7591 registration at the built-in server; prints "client_id client_secret".
register() {
  curl -fsS --max-time 10 -H 'content-type: application/json' -d "$2" "$dev_base/register" \
    | python3 -c 'import json, sys; c = json.load(sys.stdin); print(c["client_id"], c.get("client_secret", "-"))'
}
if start_portcullis "$tmp/builtin" "$dev_port"; then
  echo "oauth-interop: Portcullis $dev_base/mcp on its embedded default (built-in dev authorization server)"
  cc_id=""; cc_secret=""; pub_id=""
  read -r cc_id cc_secret < <(register cc '{"client_name":"oauth-interop cc","grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_basic"}') || true
  read -r pub_id _ < <(register public '{"client_name":"oauth-interop public","redirect_uris":["http://127.0.0.1:3000/callback"],"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":"none"}') || true
  if [ -n "${cc_id:-}" ] && [ -n "${pub_id:-}" ]; then
    OAUTH_ISSUER=$dev_base OAUTH_CLIENT_ID=$cc_id OAUTH_CLIENT_SECRET=$cc_secret OAUTH_PUBLIC_CLIENT_ID=$pub_id \
      run_clients builtin "$dev_base/mcp"
  else
    fail=$((fail + 1)); results+=("FAIL builtin/client registration (curl $dev_base/register)")
  fi
else
  fail=$((fail + 1)); results+=("FAIL builtin/portcullis did not start")
fi

if [ "$fail" -gt 0 ]; then
  for log in "$tmp"/idp/portcullis.log "$tmp"/builtin/portcullis.log; do
    [ -f "$log" ] || continue
    echo "== $log (last 20 lines)"
    tail -n 20 "$log" | sed 's/^/  /'
  done
fi
echo "== oauth interop summary"
printf '  %s\n' "${results[@]}"
pc_summary "$pass" "$fail"
