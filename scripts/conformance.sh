#!/usr/bin/env bash
# scripts/conformance.sh - runs the official MCP server conformance suites against a running
# Portcullis Streamable HTTP endpoint and decides pass/fail from the suites' checks.json files.
# Usage: scripts/conformance.sh URL [--scenario NAME] [--only stable|alpha] [extra suite args...]
#   stable  @modelcontextprotocol/conformance@0.1.16 server --url URL --suite all
#           pass: zero FAILURE and zero WARNING checks, and the suite exits 0
#   alpha   @modelcontextprotocol/conformance@0.2.0-alpha.12 server --url URL --requirements 2025-11-25
#           pass: zero FAILURE checks, "not scored" scenarios included (its exit code is not trusted)
#   --scenario NAME  run only that scenario in both suites (replaces --suite/--requirements)
#   --only S         run only one of the two suites; other args go to both suites unchanged
# URL must be the Streamable HTTP endpoint (e.g. http://127.0.0.1:8080/mcp) with auth off: the
# suites send no Authorization header. Runs on Node 22 from the test cache (scripts/lib.sh).
# Env: PORTCULLIS_CONFORMANCE_OUT (results dir; default a new temp dir),
#      PORTCULLIS_CONFORMANCE_TIMEOUT (seconds per suite, default 900).
# Last line: N passed, M failed (checks over both suites; M also counts a suite that broke).
# shellcheck disable=SC2016  # the single-quoted snippets are JavaScript, expanded by node
source "$(dirname "$0")/lib.sh"
usage() { sed -n 2,15p "$0" | sed 's/^# \{0,1\}//'; exit 2; }

url=""; scenario=(); only=""; extra=()
while [ $# -gt 0 ]; do
  case $1 in
    --scenario) scenario=(--scenario "${2:?--scenario needs a name}"); shift 2 ;;
    --only) only=${2:?--only needs stable or alpha}; shift 2
            case $only in stable|alpha) ;; *) usage ;; esac ;;
    -h|--help) usage ;;
    -*) extra+=("$1"); shift ;;
    *) if [ -z "$url" ]; then url=$1; else extra+=("$1"); fi; shift ;;
  esac
done
[ -n "$url" ] || usage

node=$(pc_node22)
out=${PORTCULLIS_CONFORMANCE_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/portcullis-conformance.XXXXXX")}
mkdir -p "$out"
to=${PORTCULLIS_CONFORMANCE_TIMEOUT:-900}
# Ctrl-C ends the run; the clients run with timeout --foreground, so they get the signal too.
trap 'exit 130' INT TERM
total_pass=0; total_fail=0

# run_suite LABEL SUBDIR PKGDIR ALLOW_WARNINGS SELECTION... : one suite run, its report, its counts.
run_suite() {
  local label=$1 res="$out/$2" pkgdir=$3 allow_warn=$4; shift 4
  local sel=("$@") rc=0 counts s f w
  [ ${#scenario[@]} -gt 0 ] && sel=("${scenario[@]}")
  rm -rf "$res"; mkdir -p "$res"
  echo "== conformance $label: server --url $url ${sel[*]} ${extra[*]}"
  timeout --foreground -k 10 "$to" "$node" "$pkgdir/node_modules/@modelcontextprotocol/conformance/dist/index.js" server \
    --url "$url" "${sel[@]}" -o "$res" "${extra[@]}" >"$res/console.log" 2>&1 || rc=$?
  [ $rc = 124 ] && echo "  suite timed out after ${to}s"

  # The suite's own summary: per-scenario lines for multi-scenario runs, else the result line.
  sed -n '/^=== SUMMARY ===/,$p' "$res/console.log" | sed 's/^/  /'
  grep -E '^(Passed: |Error|error:|Validation error)' -A2 "$res/console.log" | sed 's/^/  /' || true

  # Every FAILURE / WARNING check from checks.json; last line "COUNTS success failure warning".
  counts=$("$node" -e '
    const fs = require("fs"), path = require("path");
    const [root, log] = process.argv.slice(1);
    // Scenarios listed under "Not scored for ...:" (alpha) are still judged, but marked.
    const notScored = new Set();
    let inNs = false;
    for (const line of fs.readFileSync(log, "utf8").split("\n")) {
      if (/^Not scored for/.test(line)) { inNs = true; continue; }
      const m = inNs && line.match(/^\s+\S+\s+(\S+)\s*(\(.*\))?$/);
      if (m) notScored.add(m[1]); else if (inNs && line.trim() === "") inNs = false;
    }
    let s = 0, f = 0, w = 0;
    for (const d of fs.readdirSync(root).sort()) {
      const file = path.join(root, d, "checks.json");
      if (!fs.existsSync(file)) continue;
      const name = d.replace(/^server-/, "").replace(/-\d{4}-\d\d-\d\dT[\d-]+Z$/, "");
      for (const c of JSON.parse(fs.readFileSync(file, "utf8"))) {
        if (c.status === "SUCCESS") s++;
        if (c.status !== "FAILURE" && c.status !== "WARNING") continue;
        if (c.status === "FAILURE") f++; else w++;
        const msg = (c.errorMessage || c.description || "").split("\n").join(" | ").slice(0, 200);
        console.log(`  ${c.status} ${name}${notScored.has(name) ? " (not scored)" : ""} / ${c.id}: ${msg}`);
      }
    }
    console.log(`COUNTS ${s} ${f} ${w}`);' "$res" "$res/console.log") || counts="COUNTS 0 1 0"
  printf '%s\n' "$counts" | grep -v '^COUNTS ' || true
  read -r _ s f w <<<"$(printf '%s\n' "$counts" | tail -n 1)"
  echo "  results: $res (console.log, */checks.json)"

  local bad=$f verdict=PASS why=()
  [ "$allow_warn" = 0 ] && bad=$((bad + w))
  [ "$f" -gt 0 ] && why+=("$f FAILURE check(s)")
  [ "$allow_warn" = 0 ] && [ "$w" -gt 0 ] && why+=("$w WARNING check(s)")
  if [ "$s" -eq 0 ] && [ "$f" -eq 0 ]; then why+=("no checks ran"); bad=$((bad + 1)); fi
  # The stable suite's exit code must be 0 as well; the alpha's is not trusted (unscored runs exit 0).
  if [ "$allow_warn" = 0 ] && [ $rc != 0 ] && [ "$bad" -eq 0 ]; then why+=("suite exited $rc"); bad=1; fi
  if [ "$allow_warn" = 1 ] && [ $rc != 0 ] && [ $rc != 1 ] && [ "$bad" -eq 0 ]; then why+=("suite exited $rc"); bad=1; fi
  [ "$bad" -gt 0 ] && verdict=FAIL
  echo "  -> $verdict $label: $s checks passed, $f failures, $w warnings, suite exit $rc${why:+ ($(printf '%s; ' "${why[@]}" | sed 's/; $//'))}"
  total_pass=$((total_pass + s)); total_fail=$((total_fail + bad))
}

if [ "$only" != alpha ]; then
  dir=$(pc_conformance_dir)
  run_suite "$CONF_SPEC" stable "$dir" 0 --suite all
fi
if [ "$only" != stable ]; then
  dir=$(pc_conformance_alpha_dir)
  run_suite "$CONF_ALPHA_SPEC" alpha "$dir" 1 --requirements 2025-11-25
fi
pc_summary "$total_pass" "$total_fail"
