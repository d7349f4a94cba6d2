#!/usr/bin/env bash
# scripts/interop.sh - drives a running Portcullis server with real, pinned third-party MCP clients
# (TS SDK, Python SDK 1.x and 2.x, MCP Inspector CLI) and counts the clients that pass.
# Usage: scripts/interop.sh BASE_URL [--stdio "CMD ARGS..."] [--token T]
#   BASE_URL like http://127.0.0.1:8080: Streamable HTTP at BASE_URL/mcp, legacy SSE at BASE_URL/sse
#   (env MCP_URL / SSE_URL override those two URLs, e.g. for servers using other ports/paths).
#   Clients: ts-sdk-1.32.2-http, ts-sdk-1.32.2-sse (tests/interop/ts_client.mjs),
#            py-mcp-1.30.0-http, py-mcp-1.30.0-sse, py-mcp-2.3.0-auto (tests/interop/py_client.py),
#            inspector-2.12.0 (--cli: tools/list, tools/call echo, resources/list, prompts/list),
#            py-mcp-1.30.0-stdio with --stdio (spawns CMD; the server must exit when stdin closes).
#   --token T (or env MCP_TOKEN) is sent as "Authorization: Bearer T" by the HTTP clients.
# Env: PORTCULLIS_TEST_CACHE (tool cache), PORTCULLIS_CLIENT_TIMEOUT (seconds per client, 120).
# Last line: N passed, M failed (N, M = clients); exit 1 if any client failed.
# shellcheck disable=SC2016  # the single-quoted snippets are JavaScript, expanded by node
source "$(dirname "$0")/lib.sh"
usage() { sed -n 2,13p "$0" | sed 's/^# \{0,1\}//'; exit 2; }

base=""; stdio_cmd=""; token=${MCP_TOKEN:-}
while [ $# -gt 0 ]; do
  case $1 in
    --stdio) stdio_cmd=${2:?--stdio needs a command line}; shift 2 ;;
    --token) token=${2:?--token needs a value}; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) base=${1%/}; shift ;;
  esac
done
[ -n "$base" ] || [ -n "${MCP_URL:-}" ] || usage
mcp_url=${MCP_URL:-$base/mcp}
sse_url=${SSE_URL:-$base/sse}

node=$(pc_node22)
npm_dir=$(pc_clients_dir)
py1=$(pc_py_mcp1)
py2=$(pc_py_mcp2)
export PC_NPM_DIR=$npm_dir MCP_TOKEN=$token
interop="$PC_ROOT/tests/interop"
# Ctrl-C ends the run; the clients run with timeout --foreground, so they get the signal too.
trap 'exit 130' INT TERM
to=${PORTCULLIS_CLIENT_TIMEOUT:-120}
pass=0; fail=0; results=()

run() { # NAME CMD... : one client, counted as one pass or one failure; its output indented
  local name=$1 rc=0; shift
  echo "== $name"
  set +e
  "$@" 2>&1 | sed 's/^/  /'
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 124 ] && echo "  FAIL: client timed out after ${to}s"
  if [ "$rc" = 0 ]; then
    echo "-> PASS $name"; pass=$((pass + 1)); results+=("PASS $name")
  else
    echo "-> FAIL $name (exit $rc)"; fail=$((fail + 1)); results+=("FAIL $name")
  fi
}

# inspector_step NAME CHECK-JS CLI-ARGS... : one Inspector CLI call; CHECK-JS gets the parsed
# JSON output as j and returns a note, or throws to fail the step.
inspector_step() {
  local name=$1 check=$2 out rc=0 hdr=()
  shift 2
  [ -n "$token" ] && hdr=(--header "Authorization: Bearer $token")
  # stdout is the JSON result; stderr carries diagnostics (e.g. schema portability notes).
  local errf; errf=$(mktemp)
  out=$(timeout --foreground -k 10 "$to" "$node" "$npm_dir/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js" \
    --cli "$mcp_url" --transport http "${hdr[@]}" "$@" 2>"$errf") || rc=$?
  if [ -s "$errf" ]; then sed 's/^/  inspector: /' "$errf" | head -n 5; fi
  rm -f "$errf"
  if [ $rc != 0 ]; then
    echo "FAIL $name: inspector exit $rc: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ' | cut -c1-300)"
    return 1
  fi
  printf '%s' "$out" | "$node" -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const [name, check] = process.argv.slice(1);
      try {
        const j = JSON.parse(s);
        const note = new Function("j", check)(j);
        console.log(`ok ${name}${note ? " - " + note : ""}`);
      } catch (e) {
        console.log(`FAIL ${name}: ${e.message}: ${s.split("\n").join(" ").slice(0, 200)}`);
        process.exit(1);
      }
    });' "$name" "$check"
}

inspector() { # Inspector v2 CLI over Streamable HTTP: four calls, each checked
  local bad=0
  inspector_step tools/list '
    if (!Array.isArray(j.tools)) throw new Error("no tools array");
    if (!j.tools.some((t) => t.name === "echo")) throw new Error("no tool named echo");
    return `${j.tools.length} tools, echo present`;' --method tools/list || bad=1
  inspector_step "tools/call echo" '
    if (j.isError === true) throw new Error("isError");
    const t = (j.content || []).filter((c) => c.type === "text").map((c) => c.text).join("");
    if (!t.includes("hi")) throw new Error("result text lacks \"hi\"");
    return JSON.stringify(t).slice(0, 80);' --method tools/call --tool-name echo --tool-arg message=hi || bad=1
  inspector_step resources/list '
    if (!Array.isArray(j.resources) || !j.resources.length) throw new Error("no resources");
    return `${j.resources.length} resources`;' --method resources/list || bad=1
  inspector_step prompts/list '
    if (!Array.isArray(j.prompts) || !j.prompts.length) throw new Error("no prompts");
    return `${j.prompts.length} prompts`;' --method prompts/list || bad=1
  return $bad
}

echo "interop: Streamable HTTP $mcp_url, SSE $sse_url${stdio_cmd:+, stdio: $stdio_cmd}"
run ts-sdk-1.32.2-http timeout --foreground -k 10 "$to" "$node" "$interop/ts_client.mjs" "$mcp_url"
run ts-sdk-1.32.2-sse timeout --foreground -k 10 "$to" "$node" "$interop/ts_client.mjs" "$sse_url" --sse
run py-mcp-1.30.0-http timeout --foreground -k 10 "$to" "$py1/bin/python" "$interop/py_client.py" http "$mcp_url"
run py-mcp-1.30.0-sse timeout --foreground -k 10 "$to" "$py1/bin/python" "$interop/py_client.py" sse "$sse_url"
run py-mcp-2.3.0-auto timeout --foreground -k 10 "$to" "$py2/bin/python" "$interop/py_client.py" auto "$mcp_url"
run inspector-2.12.0 inspector
if [ -n "$stdio_cmd" ]; then
  run py-mcp-1.30.0-stdio timeout --foreground -k 10 "$to" "$py1/bin/python" "$interop/py_client.py" stdio "$stdio_cmd"
fi
echo "== interop summary"
printf '  %s\n' "${results[@]}"
pc_summary "$pass" "$fail"
