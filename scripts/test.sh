#!/usr/bin/env bash
# scripts/test.sh - the project's single test command: prerequisites, fmt, clippy, unit/integration
# tests, optimised build, then the external conformance suites and interop clients against real
# Portcullis servers started here (and stopped on exit).
# Usage: ./scripts/test.sh
# Stages: (a) prerequisites  (b) cargo fmt --check  (c) cargo clippy -D warnings  (d) cargo test
#         (e) build          (f) conformance: examples/conformance_server + scripts/conformance.sh
#         (g) interop: portcullis serve (embedded default, token from `portcullis token`; HTTP + SSE)
#             and --stdio + scripts/interop.sh
#         (h) authentication against oidc-provider (cargo test --features idp-tests --test idp_oidc)
#         (i) OAuth client flows: scripts/oauth-interop.sh (TS + Python SDK OAuth providers against
#             oidc-provider and against the built-in dev authorization server)
# Env: CARGO_TARGET_DIR (default target), PORTCULLIS_PROFILE (cargo profile, default ci),
#      PORTCULLIS_TEST_CACHE (tool cache, see scripts/lib.sh),
#      PORTCULLIS_READY_TIMEOUT (seconds to wait for a server to listen, default 30).
# Exit non-zero if any stage failed or was skipped; the last lines summarise every stage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
logs=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-test.XXXXXX")
ready_timeout=${PORTCULLIS_READY_TIMEOUT:-30}
# One optimised build profile for every stage: release without LTO (see Cargo.toml [profile.ci]);
# benchmarks use the LTO release profile.
profile=${PORTCULLIS_PROFILE:-ci}

results=(); failed=0; server_pids=()
record() { # STATUS LABEL [NOTE]
  results+=("$(printf '%-4s %s%s' "$1" "$2" "${3:+ - $3}")")
  [ "$1" = PASS ] || failed=$((failed + 1))
  echo "--> $1: $2${3:+ - $3}"
}
announce() { echo; echo "=== $1"; }

cleanup() {
  local pid
  for pid in "${server_pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

have() { command -v "$1" >/dev/null 2>&1; }
reachable() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server NAME LOG CMD... : starts CMD in the background, waits until its --listen port accepts
# connections; the port is the last ":N" of the --listen argument. Sets $server_pid.
start_server() {
  local name=$1 log=$2; shift 2
  local port="" a i
  for a in "$@"; do case $a in *:[0-9]*) port=${a##*:} ;; esac; done
  echo "starting $name: $* (log: $log)"
  "$@" >"$log" 2>&1 </dev/null &
  server_pid=$!
  server_pids+=("$server_pid")
  for ((i = 0; i < ready_timeout * 10; i++)); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "$name exited before listening; last log lines:"; tail -n 20 "$log" | sed 's/^/  /'; return 1
    fi
    if reachable 127.0.0.1 "$port"; then echo "$name is listening on 127.0.0.1:$port (pid $server_pid)"; return 0; fi
    sleep 0.1
  done
  echo "$name did not listen on 127.0.0.1:$port within ${ready_timeout}s; last log lines:"
  tail -n 20 "$log" | sed 's/^/  /'
  return 1
}

stop_server() { # PID
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
announce "(a) prerequisites"
missing=(); need_rust=1; need_harness=1
if have cargo; then
  echo "cargo:   $(cargo --version)"
  cargo fmt --version >/dev/null 2>&1 || missing+=("rustfmt (rustup component add rustfmt)")
  cargo clippy --version >/dev/null 2>&1 || missing+=("clippy (rustup component add clippy)")
else
  need_rust=0; missing+=("cargo (install Rust: https://rustup.rs)")
fi
if have node && have npm; then
  echo "node:    $(node --version), npm $(npm --version) (Node 22 for the suites is fetched from npm into the cache)"
else
  need_harness=0
  have node || missing+=("node (install Node.js with npm, e.g. apt-get install nodejs npm)")
  have npm || missing+=("npm (install Node.js with npm, e.g. apt-get install npm)")
fi
if have python3 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "python3: $(python3 --version 2>&1)"
else
  need_harness=0
  if have python3; then missing+=("python3 venv module (e.g. apt-get install python3-venv)")
  else missing+=("python3 >= 3.10 with venv (e.g. apt-get install python3 python3-venv)"); fi
fi
have flock || { need_harness=0; missing+=("flock (util-linux)"); }
echo "test tool cache: ${PORTCULLIS_TEST_CACHE:-$HOME/.cache/portcullis-test}"
declare -A svc_need=(
  [Redis]="tests/auth.rs and tests/ratelimit_redis.rs (revocations and rate limits shared through Redis)"
  [PostgreSQL]="tests/audit.rs (audit trail in PostgreSQL)"
)
for svc in "PostgreSQL 5432" "MariaDB 3306" "Redis 6379"; do
  read -r svc_name svc_port <<<"$svc"
  if reachable 127.0.0.1 "$svc_port"; then echo "$svc_name: reachable on 127.0.0.1:$svc_port"
  else
    echo "$svc_name: NOT reachable on 127.0.0.1:$svc_port${svc_need[$svc_name]:+ - needed by ${svc_need[$svc_name]}}"
    [ -n "${svc_need[$svc_name]:-}" ] && missing+=("$svc_name on 127.0.0.1:$svc_port (needed by ${svc_need[$svc_name]})")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  record PASS "(a) prerequisites"
else
  printf 'MISSING: %s\n' "${missing[@]}"
  record FAIL "(a) prerequisites" "missing: $(printf '%s; ' "${missing[@]}" | sed 's/; $//')"
fi

# run_stage LABEL NEED CMD... : announce, run CMD if NEED=1 (else skip), record the result.
run_stage() {
  local label=$1 need=$2; shift 2
  announce "$label: $*"
  if [ "$need" != 1 ]; then record SKIP "$label" "prerequisites missing"; return 1; fi
  if "$@"; then record PASS "$label"; else record FAIL "$label" "exit $?"; return 1; fi
}

run_stage "(b) format" "$need_rust" cargo fmt --all --check || true
run_stage "(c) clippy" "$need_rust" cargo clippy --workspace --all-targets --profile "$profile" -- -D warnings || true
run_stage "(d) cargo test" "$need_rust" cargo test --workspace --profile "$profile" || true
built=0
run_stage "(e) build" "$need_rust" cargo build --profile "$profile" --bin portcullis --example conformance_server && built=1

case $profile in dev|test) out_dir=debug ;; bench) out_dir=release ;; *) out_dir=$profile ;; esac
portcullis=$target/$out_dir/portcullis
conformance_server=$target/$out_dir/examples/conformance_server
harness_ok=$(( built && need_harness ))
if [ $built = 1 ] || [ "$need_rust" != 1 ]; then why_skip="prerequisites missing"; else why_skip="build failed"; fi

# ---------------------------------------------------------------------------------------------
announce "(f) conformance suites against examples/conformance_server"
if [ $harness_ok = 1 ]; then
  port1=$(free_port)
  if start_server conformance_server "$logs/conformance_server.log" \
      "$conformance_server" --listen "127.0.0.1:$port1"; then
    pid1=$server_pid
    if PORTCULLIS_CONFORMANCE_OUT="$logs/conformance" scripts/conformance.sh "http://127.0.0.1:$port1/mcp"; then
      record PASS "(f) conformance"
    else
      record FAIL "(f) conformance" "see above; results in $logs/conformance"
    fi
    stop_server "$pid1"
  else
    record FAIL "(f) conformance" "conformance_server did not start"
  fi
else
  record SKIP "(f) conformance" "$why_skip"
fi

# ---------------------------------------------------------------------------------------------
announce "(g) interop clients against portcullis serve (HTTP, SSE, stdio)"
if [ $harness_ok = 1 ]; then
  port2=$(free_port)
  # The embedded default (dev authentication): a token minted by `portcullis token` with the same
  # --listen, both run from one state directory so they share the dev signing key.
  state2="$logs/state-g"; mkdir -p "$state2"
  if start_server portcullis "$logs/portcullis.log" env -C "$state2" "$portcullis" serve --listen "127.0.0.1:$port2" \
      && token2=$(env -C "$state2" "$portcullis" token --listen "127.0.0.1:$port2" --sub interop --scope mcp:tools); then
    pid2=$server_pid
    if scripts/interop.sh "http://127.0.0.1:$port2" --token "$token2" --stdio "$(printf '%q' "$portcullis") serve --stdio"; then
      record PASS "(g) interop"
    else
      record FAIL "(g) interop" "see above; server log $logs/portcullis.log"
    fi
    stop_server "$pid2"
  else
    record FAIL "(g) interop" "portcullis serve did not start"
  fi
else
  record SKIP "(g) interop" "$why_skip"
fi

# ---------------------------------------------------------------------------------------------
announce "(h) authentication against a real authorization server (oidc-provider)"
if [ "$need_rust" = 1 ] && [ "$need_harness" = 1 ]; then
  # scripts/idp.sh installs the pinned oidc-provider on first use; install it up front so a
  # failed install reads as such rather than as a failing test.
  if (source scripts/lib.sh && pc_idp_dir >/dev/null) && cargo test --profile "$profile" --features idp-tests --test idp_oidc; then
    record PASS "(h) auth vs oidc-provider"
  else
    record FAIL "(h) auth vs oidc-provider" "see above"
  fi
  announce "(i) OAuth clients (TS SDK, Python SDK) through Portcullis's 401 + metadata to oidc-provider"
  if [ $built = 1 ] && PORTCULLIS_BIN=$portcullis scripts/oauth-interop.sh; then
    record PASS "(i) OAuth client flows"
  else
    record FAIL "(i) OAuth client flows" "see above"
  fi
else
  record SKIP "(h) auth vs oidc-provider" "prerequisites missing"
fi

# ---------------------------------------------------------------------------------------------
announce "summary (logs: $logs)"
printf '  %s\n' "${results[@]}"
total=${#results[@]}
echo "$((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
