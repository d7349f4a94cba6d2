#!/usr/bin/env bash
# scripts/idp.sh - runs Portcullis's test OAuth 2.1 / OIDC authorization server (tests/idp/server.mjs,
# oidc-provider pinned in scripts/lib.sh) and talks to it: start/stop, tokens, introspection, revocation.
# Usage:
#   scripts/idp.sh start PORT        start on 127.0.0.1:PORT in the background, wait until discovery
#                                    answers, print the issuer http://127.0.0.1:PORT on stdout.
#                                    Env passes through to server.mjs: MCP_RESOURCE, MCP_OPAQUE_RESOURCE,
#                                    IDP_ANY_RESOURCE, IDP_SCOPES, IDP_CLIENT_ID, IDP_CLIENT_SECRET,
#                                    IDP_USER, IDP_TOKEN_TTL, IDP_NBF_OFFSET, IDP_KEY_FILE, IDP_EXTRA_KEY
#   scripts/idp.sh stop [PORT]       stop that IdP (no PORT: every IdP started from this cache)
#   scripts/idp.sh token PORT RESOURCE [SCOPE]         client_credentials JWT access token (stdout)
#   scripts/idp.sh opaque-token PORT RESOURCE [SCOPE]  same for a MCP_OPAQUE_RESOURCE resource
#   scripts/idp.sh introspect PORT TOKEN               RFC 7662 introspection; prints the JSON
#   scripts/idp.sh revoke PORT TOKEN [HINT]            RFC 7009 revocation (HINT: token_type_hint)
# PORT may also be an issuer URL. SCOPE defaults to $IDP_SCOPES or "mcp:tools tools:read tools:write";
# an empty SCOPE ("") sends no scope. Client auth is client_secret_basic with $IDP_CLIENT_ID /
# $IDP_CLIENT_SECRET (default mcp-test-client / mcp-test-secret).
# Files: $PORTCULLIS_TEST_CACHE/run/idp-PORT.pid and .log. Env IDP_START_TIMEOUT (seconds, 30).
# shellcheck disable=SC2016  # the single-quoted snippets are JavaScript, expanded by node
source "$(dirname "$0")/lib.sh"
usage() { sed -n 2,18p "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "idp.sh: $*" >&2; exit 1; }

run_dir="$PC_CACHE/run"
client_id=${IDP_CLIENT_ID:-mcp-test-client}
client_secret=${IDP_CLIENT_SECRET:-mcp-test-secret}

issuer_of() { # PORT|ISSUER
  [ -n "${1:-}" ] || usage
  if [[ $1 =~ ^[0-9]+$ ]]; then echo "http://127.0.0.1:$1"; else echo "${1%/}"; fi
}

json_get() { # KEY < JSON : prints the value (strings raw, others as JSON); status 1 if absent
  node -e 'let s = ""; process.stdin.on("data", (d) => { s += d; }).on("end", () => {
    let j; try { j = JSON.parse(s); } catch { process.exit(1); }
    const v = j[process.argv[1]]; if (v === undefined || v === null) process.exit(1);
    console.log(typeof v === "string" ? v : JSON.stringify(v)); });' "$1"
}

endpoint() { # ISSUER KEY : an endpoint URL from the discovery document
  local doc
  doc=$(curl -fsS --max-time 10 "$1/.well-known/openid-configuration") \
    || die "no discovery document at $1/.well-known/openid-configuration (is the IdP running? scripts/idp.sh start PORT)"
  printf '%s' "$doc" | json_get "$2" || die "discovery document of $1 has no $2"
}

post() { # URL CURL-ARGS... : POST with client auth; sets $body and $code
  local out
  out=$(curl -sS --max-time 20 -u "$client_id:$client_secret" -w '\n%{http_code}' "$@") \
    || die "request to $1 failed (is the IdP running?)"
  code=${out##*$'\n'}; body=${out%$'\n'*}
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cmd_start() {
  local port=${1:-}; [[ $port =~ ^[0-9]+$ ]] || usage
  pc_require_tools node npm flock curl || exit 1
  local node dir pidf log issuer i
  node=$(pc_node22) || die "could not install $NODE_SPEC"
  dir=$(pc_idp_dir) || die "could not install $OIDC_SPEC"
  mkdir -p "$run_dir"
  pidf="$run_dir/idp-$port.pid"; log="$run_dir/idp-$port.log"
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    die "an IdP is already running on port $port (pid $(cat "$pidf")); stop it with: scripts/idp.sh stop $port"
  fi
  rm -f "$pidf"
  port_busy "$port" && die "port $port on 127.0.0.1 is already in use by another process"
  PC_NPM_DIR=$dir setsid bash -c 'echo $$ > "$0"; exec "$@"' "$pidf" \
    "$node" "$PC_ROOT/tests/idp/server.mjs" "$port" >"$log" 2>&1 </dev/null &
  issuer="http://127.0.0.1:$port"
  for ((i = 0; i < ${IDP_START_TIMEOUT:-30} * 10; i++)); do
    sleep 0.1
    [ -s "$pidf" ] || continue
    kill -0 "$(cat "$pidf")" 2>/dev/null || break
    if curl -fsS --max-time 2 "$issuer/.well-known/openid-configuration" >/dev/null 2>&1; then
      echo "idp.sh: started $issuer (pid $(cat "$pidf"), log $log)" >&2
      echo "$issuer"; return 0
    fi
  done
  echo "idp.sh: the IdP did not start on port $port; last lines of $log:" >&2
  tail -n 20 "$log" | sed 's/^/  /' >&2
  if [ -s "$pidf" ]; then kill "$(cat "$pidf")" 2>/dev/null || true; fi
  rm -f "$pidf"; exit 1
}

cmd_stop() {
  local port=${1:-*} f pid n=0 bad=0 i
  [ "$port" = '*' ] || [[ $port =~ ^[0-9]+$ ]] || usage
  for f in "$run_dir"/idp-$port.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    # Only our own IdP processes: the pid must still run tests/idp/server.mjs.
    if kill -0 "$pid" 2>/dev/null && grep -q 'tests/idp/server.mjs' "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid"
      for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then echo "idp.sh: pid $pid did not stop" >&2; bad=1; continue; fi
      echo "idp.sh: stopped $(basename "$f" .pid) (pid $pid)" >&2; n=$((n + 1))
    fi
    rm -f "$f"
  done
  [ "$n" -gt 0 ] || [ "$bad" -gt 0 ] || echo "idp.sh: no running IdP${1:+ on port $1}" >&2
  return "$bad"
}

cmd_token() { # KIND PORT RESOURCE [SCOPE]
  local kind=$1 iss res scope tok url
  iss=$(issuer_of "${2:-}"); res=${3:-}; [ -n "$res" ] || usage
  scope=${4-${IDP_SCOPES:-mcp:tools tools:read tools:write}}
  pc_require_tools node curl || exit 1
  url=$(endpoint "$iss" token_endpoint)
  post "$url" --data-urlencode grant_type=client_credentials --data-urlencode "resource=$res" \
    ${scope:+--data-urlencode "scope=$scope"}
  [ "$code" = 200 ] || die "token request failed (HTTP $code): $body"
  tok=$(printf '%s' "$body" | json_get access_token) || die "no access_token in: $body"
  if [[ $tok =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]]; then
    [ "$kind" = jwt ] || die "got a JWT, not an opaque token: is $res listed in the IdP's MCP_OPAQUE_RESOURCE?"
  else
    [ "$kind" = opaque ] || die "got an opaque token, not a JWT: is $res listed in the IdP's MCP_RESOURCE?"
  fi
  echo "$tok"
}

cmd_introspect() { # PORT TOKEN
  local iss url; iss=$(issuer_of "${1:-}"); [ -n "${2:-}" ] || usage
  pc_require_tools node curl || exit 1
  url=$(endpoint "$iss" introspection_endpoint)
  post "$url" --data-urlencode "token=$2"
  [ "$code" = 200 ] || die "introspection failed (HTTP $code): $body"
  echo "$body"
}

cmd_revoke() { # PORT TOKEN [HINT]
  local iss url; iss=$(issuer_of "${1:-}"); [ -n "${2:-}" ] || usage
  pc_require_tools node curl || exit 1
  url=$(endpoint "$iss" revocation_endpoint)
  post "$url" --data-urlencode "token=$2" ${3:+--data-urlencode "token_type_hint=$3"}
  [ "$code" = 200 ] || die "revocation failed (HTTP $code): $body (the IdP revokes opaque and refresh tokens, not JWT access tokens)"
  echo "idp.sh: revoked" >&2
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  token) shift; cmd_token jwt "$@" ;;
  opaque-token) shift; cmd_token opaque "$@" ;;
  introspect) shift; cmd_introspect "$@" ;;
  revoke) shift; cmd_revoke "$@" ;;
  *) usage ;;
esac
