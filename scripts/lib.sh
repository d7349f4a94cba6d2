# scripts/lib.sh - shared helpers for Portcullis's external test harness (sourced, not run).
# Owns: pinned versions of third-party MCP test tools and of the test OAuth/OIDC server
# (oidc-provider), their one-time cached install (under a lock, with stamp files), the Node 22
# path and prerequisite checks.
# shellcheck shell=bash disable=SC2034  # sourced; variables are used by the callers
set -euo pipefail
PC_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PC_ROOT="$(cd "$PC_SCRIPTS/.." && pwd)"
PC_CACHE="${PORTCULLIS_TEST_CACHE:-$HOME/.cache/portcullis-test}"

# Pinned versions (change here only).
NODE_SPEC=node@22.23.3
CONF_SPEC=@modelcontextprotocol/conformance@0.1.16
CONF_ALPHA_SPEC=@modelcontextprotocol/conformance@0.2.0-alpha.12
SDK_SPEC=@modelcontextprotocol/sdk@1.32.2
INSPECTOR_SPEC=@modelcontextprotocol/inspector@2.12.0
PY_MCP1=mcp==1.30.0
PY_MCP2=mcp==2.3.0
OIDC_SPEC=oidc-provider@9.13.3

# pc_require_tools CMD... : fail with an install hint for every missing command.
pc_require_tools() {
  local missing=0 t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 && continue
    missing=1
    case $t in
      node|npm) echo "portcullis-test: '$t' is missing: install Node.js (any version with npm; Node 22 itself is fetched from npm), e.g. 'apt-get install nodejs npm' or https://nodejs.org" >&2 ;;
      python3)  echo "portcullis-test: 'python3' is missing: install Python >= 3.10 with the venv module, e.g. 'apt-get install python3 python3-venv'" >&2 ;;
      flock)    echo "portcullis-test: 'flock' is missing: install util-linux, e.g. 'apt-get install util-linux'" >&2 ;;
      curl)     echo "portcullis-test: 'curl' is missing: e.g. 'apt-get install curl'" >&2 ;;
      *)        echo "portcullis-test: '$t' is missing" >&2 ;;
    esac
  done
  return $missing
}

# pc_npm_prereqs : the tools every npm-installed harness piece needs.
pc_npm_prereqs() {
  pc_require_tools node npm flock || return 1
  mkdir -p "$PC_CACHE"
}

# pc_prereqs : the tools every harness script needs (npm and Python pieces).
pc_prereqs() {
  pc_require_tools node npm python3 flock || return 1
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "portcullis-test: python3 has no working venv/ensurepip module: install it, e.g. 'apt-get install python3-venv'" >&2
    return 1
  fi
  mkdir -p "$PC_CACHE"
}

# pc_once NAME WANT CMD... : run CMD once per (NAME, WANT) under a lock; a stamp file records WANT.
pc_once() {
  local name=$1 want=$2; shift 2
  local stamp="$PC_CACHE/$name/.portcullis-installed"
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  mkdir -p "$PC_CACHE/$name"
  (
    flock 9
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      echo "portcullis-test: installing $want into $PC_CACHE/$name ..." >&2
      "$@" >&2 && echo "$want" > "$stamp"
    fi
  ) 9>"$PC_CACHE/.$name.lock"
}

_pc_npm_install() { # DIR SPEC...
  local d=$1; shift
  [ -f "$d/package.json" ] || echo '{"private":true}' > "$d/package.json"
  npm install --prefix "$d" --save-exact --no-audit --no-fund --loglevel=error "$@"
}

_pc_venv_install() { # DIR SPEC...
  local d=$1; shift
  rm -rf "${d:?}/bin" "${d:?}/lib" "${d:?}/include" "${d:?}/pyvenv.cfg"
  python3 -m venv "$d" && "$d/bin/pip" install -q --disable-pip-version-check "$@"
}

# pc_npm NAME SPEC... : exact npm packages in $PC_CACHE/NAME; prints that directory.
pc_npm() {
  local name=$1; shift
  pc_npm_prereqs || return 1
  pc_once "$name" "$*" _pc_npm_install "$PC_CACHE/$name" "$@" || {
    echo "portcullis-test: npm install of $* failed" >&2; return 1; }
  echo "$PC_CACHE/$name"
}

# pc_venv NAME SPEC... : Python venv with exact packages; prints its directory.
pc_venv() {
  local name=$1; shift
  pc_prereqs || return 1
  # The stamp includes the Python version: a venv breaks when its interpreter changes.
  pc_once "$name" "$* ($(python3 --version 2>&1))" _pc_venv_install "$PC_CACHE/$name" "$@" || {
    echo "portcullis-test: pip install of $* failed" >&2; return 1; }
  echo "$PC_CACHE/$name"
}

# pc_node22 : prints the path of a Node 22 binary (installed from npm once).
pc_node22() {
  local d; d=$(pc_npm node22 "$NODE_SPEC") || return 1
  echo "$d/node_modules/.bin/node"
}

# Convenience wrappers for the pinned tool sets.
pc_conformance_dir()       { pc_npm conformance "$CONF_SPEC"; }
pc_conformance_alpha_dir() { pc_npm conformance-alpha "$CONF_ALPHA_SPEC"; }
pc_clients_dir()           { pc_npm clients "$SDK_SPEC" "$INSPECTOR_SPEC"; }
pc_idp_dir()               { pc_npm idp "$OIDC_SPEC"; }
pc_py_mcp1()               { pc_venv py-mcp1 "$PY_MCP1"; }
pc_py_mcp2()               { pc_venv py-mcp2 "$PY_MCP2"; }

# pc_summary PASSED FAILED : prints the final line; the status follows FAILED.
pc_summary() { echo "$1 passed, $2 failed"; [ "$2" -eq 0 ]; }
