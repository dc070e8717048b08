#!/usr/bin/env bash
# watch_corruption.sh: poll a checkpoint root with `ckptkit scan --json` and
# report each checkpoint that becomes corrupt, once, as it appears.
#
# Usage: scripts/watch_corruption.sh ROOT [INTERVAL]
#
#   ROOT      the checkpoint root
#   INTERVAL  time between the starts of two polls: 60, 30s, 5m, 1h (default 60s)
#
# Environment:
#   CKPTKIT             the ckptkit command (default: `ckptkit` on PATH, else
#                       `deno run <flags> <this checkout>/cli.ts`); split on whitespace
#   CKPTKIT_WATCH_ARGS  scan arguments, split on whitespace (default "--fast": sizes
#                       and presence only; "--sample-bytes 64KiB" samples data;
#                       set it empty for full hashing)
#   CKPTKIT_LOG_LEVEL   log level of the scans (default error: the watcher reports)
#   CKPTKIT_WATCH_PARSER  python3 or jq (default: python3 when installed, else jq)
#
# For each newly corrupt checkpoint it prints one line on stdout
#   2026-01-01T00:00:00Z corruption_detected /ckpts/step-30 size_mismatch: shard-0.bin: ...
# and one JSON line on stderr
#   {"ts":"...","severity":"error","event":"corruption_detected","job_id":...,"run_id":...,
#    "step":30,"checkpoint_path":"/ckpts/step-30","reason":"size_mismatch","reasons":[...],"detail":"..."}
# A reported checkpoint is remembered (in memory) until a poll finds it valid
# again or gone (`corruption_cleared` on stderr); a later corruption is then
# reported again. A poll that fails (exit 4, unreadable output) changes
# nothing and logs `scan_failed`; exit 2 from ckptkit (bad flag or config,
# missing root) stops the watcher with exit 2. SIGTERM or SIGINT: exit 0.
set -euo pipefail

readonly PROG=watch_corruption.sh
readonly SEP=$'\x1f'

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

die_usage() {
  printf '%s: %s (see --help)\n' "$PROG" "$1" >&2
  exit 2
}

parse_interval() {
  local value=$1 number unit
  [[ $value =~ ^([0-9]+)(s|m|h)?$ ]] || return 1
  number=$((10#${BASH_REMATCH[1]}))
  unit=${BASH_REMATCH[2]:-s}
  case $unit in
    s) echo "$number" ;;
    m) echo $((number * 60)) ;;
    h) echo $((number * 3600)) ;;
  esac
}

resolve_ckptkit() {
  if [[ -n ${CKPTKIT:-} ]]; then
    read -r -a ckptkit <<<"$CKPTKIT"
  elif command -v ckptkit >/dev/null 2>&1; then
    ckptkit=(ckptkit)
  else
    local repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    ckptkit=(deno run --allow-read --allow-write --allow-env --allow-sys --allow-net "$repo/cli.ts")
  fi
  if [[ ${#ckptkit[@]} -eq 0 ]] || ! command -v "${ckptkit[0]}" >/dev/null 2>&1; then
    printf '%s: cannot run ckptkit: %q not found (install the binary, or set CKPTKIT)\n' \
      "$PROG" "${ckptkit[0]:-}" >&2
    exit 2
  fi
}

# Callers take its output into a variable first: bash 5.2 re-parses a command
# substitution inside $((...)) when it runs, and a signal trap firing during that
# parse aborts the script ("unexpected EOF while looking for matching `)'").
now_ms() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    local micros=${EPOCHREALTIME//[.,]/}
    echo $((10#$micros / 1000))
  else
    local seconds
    seconds=$(date +%s)
    echo $((seconds * 1000))
  fi
}

timestamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Both parsers read `ckptkit scan --json` output from the file named by their
# argument and print fields separated by \x1f, one record per line:
#   OK                                       the scan produced a result; then
#   C <path> <summary> <json fields>         one line per invalid checkpoint
#   ERR <reason> <message>                   ckptkit's error document instead
# <json fields> is a JSON object without its braces, ready for a log line.
# shellcheck disable=SC2016  # $-expressions belong to the parsers
readonly PY_PARSER='
import json, sys
SEP = "\x1f"

def clean(value):
    return " ".join(str(value).replace(SEP, " ").split())

try:
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
except Exception as err:
    print(SEP.join(["ERR", "io_error", clean("unreadable scan output: %s" % err)]))
    sys.exit(0)
if not isinstance(doc, dict) or not isinstance(doc.get("checkpoints"), list):
    err = doc.get("error") if isinstance(doc, dict) else None
    err = err if isinstance(err, dict) else {}
    print(SEP.join(["ERR", clean(err.get("reason") or "io_error"), clean(err.get("message") or "no scan result")]))
    sys.exit(0)
print("OK")
for c in doc["checkpoints"]:
    if not isinstance(c, dict) or c.get("ok") is not False or not isinstance(c.get("path"), str):
        continue
    problems = [p for p in (c.get("problems") or []) if isinstance(p, dict)]
    reasons = []
    for p in problems:
        if str(p.get("reason")) not in reasons:
            reasons.append(str(p.get("reason")))
    reasons = reasons or ["unknown"]
    first = problems[0] if problems else {}
    detail = ": ".join(clean(x) for x in (first.get("reason"), first.get("path"), first.get("detail")) if x)
    if len(problems) > 1:
        detail += " (+%d more)" % (len(problems) - 1)
    fields = {
        "job_id": c.get("job_id"), "run_id": c.get("run_id"), "step": c.get("step"),
        "checkpoint_path": c["path"], "reason": reasons[0], "reasons": reasons, "detail": detail,
    }
    print(SEP.join(["C", clean(c["path"]), detail or reasons[0], json.dumps(fields, separators=(",", ":"))[1:-1]]))
'
# shellcheck disable=SC2016
readonly JQ_PARSER='
def clean: tostring | gsub("[\\s\u001f]+"; " ") | sub("^ "; "") | sub(" $"; "");
if type == "object" and (.checkpoints | type) == "array" then
  "OK",
  (.checkpoints[]
   | select(type == "object" and .ok == false and (.path | type) == "string")
   | ([.problems // [] | .[] | select(type == "object")]) as $problems
   | (reduce $problems[] as $p ([]; if index([$p.reason | tostring]) then . else . + [$p.reason | tostring] end)
      | if length == 0 then ["unknown"] else . end) as $reasons
   | ($problems[0] // {}) as $first
   | ([$first.reason, $first.path, $first.detail] | map(select(. != null and . != "" and . != false) | clean)
      | join(": ")) as $d
   | (if ($problems | length) > 1 then $d + " (+\(($problems | length) - 1) more)" else $d end) as $detail
   | {job_id, run_id, step, checkpoint_path: .path, reason: $reasons[0], reasons: $reasons, detail: $detail} as $fields
   | ["C", (.path | clean), (if $detail == "" then $reasons[0] else $detail end), ($fields | tojson | .[1:-1])]
   | join("\u001f"))
else
  (if type == "object" and (.error | type) == "object" then .error else {} end) as $e
  | ["ERR", ($e.reason // "io_error" | clean), ($e.message // "no scan result" | clean)] | join("\u001f")
end
'

# Parses the scan output file $1 into the file $2; a parser that fails makes
# the poll a failed one, never stops the watcher.
parse_scan() {
  local ok=0
  case $parser in
    python3) python3 -c "$PY_PARSER" "$1" >"$2" || ok=$? ;;
    jq) jq -r "$JQ_PARSER" "$1" >"$2" 2>/dev/null || ok=$? ;;
  esac
  if ((ok != 0)); then
    printf 'ERR%sio_error%sunreadable scan output (%s exited %d)\n' "$SEP" "$SEP" "$parser" "$ok" >"$2"
  fi
}

# One JSON log line on stderr: log SEVERITY EVENT 'json fields without braces'.
log() {
  printf '{"ts":"%s","severity":"%s","event":"%s",%s}\n' "$(timestamp)" "$1" "$2" "$3" >&2
}

# A string as a JSON string literal (for the few values the parsers do not render).
json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//[$'\t\n\r']/ }
  printf '"%s"' "$s"
}

interval_arg=60s
args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --) shift && args+=("$@") && break ;;
    -*) die_usage "unknown option '$1'" ;;
    *) args+=("$1") ;;
  esac
  shift
done
[[ ${#args[@]} -ge 1 && ${#args[@]} -le 2 ]] || die_usage "expected ROOT [INTERVAL]"
root=${args[0]}
[[ ${#args[@]} -lt 2 ]] || interval_arg=${args[1]}
interval_s=$(parse_interval "$interval_arg") || die_usage "INTERVAL '$interval_arg': expected 60, 30s, 5m or 1h"
((interval_s > 0)) || die_usage "INTERVAL must be above zero"

parser=${CKPTKIT_WATCH_PARSER:-}
if [[ -z $parser ]]; then
  if command -v python3 >/dev/null 2>&1; then parser=python3; elif command -v jq >/dev/null 2>&1; then parser=jq; fi
fi
case $parser in
  python3 | jq) command -v "$parser" >/dev/null 2>&1 || die_usage "CKPTKIT_WATCH_PARSER=$parser: not installed" ;;
  "") die_usage "needs python3 or jq to read ckptkit's JSON" ;;
  *) die_usage "CKPTKIT_WATCH_PARSER must be python3 or jq, not '$parser'" ;;
esac

ckptkit=()
resolve_ckptkit
scan_args=()
read -r -a scan_args <<<"${CKPTKIT_WATCH_ARGS---fast}"

workdir=$(mktemp -d "${TMPDIR:-/tmp}/ckptkit-watch.XXXXXX")
trap 'rm -rf "$workdir"' EXIT

stop=""
child=""
# shellcheck disable=SC2317  # called by the traps below
on_signal() {
  stop=$1
  if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null || true; fi
}
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT

# Runs one scan into $workdir/scan.json in the background (so a signal is
# handled at once); sets `code`.
run_scan() {
  code=0
  "${ckptkit[@]}" scan "$root" --json --log-level "${CKPTKIT_LOG_LEVEL:-error}" "${scan_args[@]}" \
    </dev/null >"$workdir/scan.json" &
  child=$!
  wait "$child" || code=$?
  while [[ -n $stop ]] && kill -0 "$child" 2>/dev/null; do
    wait "$child" || code=$?
  done
  child=""
}

# Sleeps $1 milliseconds in the background, so a signal ends the wait at once.
# A signal can land between the fork and `child=$!`, when the trap has no
# child to stop: sleeping in slices of at most one second towards a deadline,
# and checking `stop` before each, bounds what such a signal can cost to one
# slice.
pause() {
  local now deadline left slice
  now=$(now_ms)
  deadline=$((now + $1))
  while [[ -z $stop ]]; do
    now=$(now_ms)
    left=$((deadline - now))
    ((left > 0)) || break
    slice=$((left < 1000 ? left : 1000))
    sleep "$((slice / 1000)).$(printf '%03d' $((slice % 1000)))" &
    child=$!
    if [[ -z $stop ]]; then wait "$child" || true; fi
    kill "$child" 2>/dev/null || true
    child=""
  done
}

declare -A reported=() # checkpoint path -> 1, for every corruption already reported
declare -A current=()

# Reads the parsed scan; reports new corruptions and forgets cleared ones.
process_scan() {
  local kind path summary fields first
  current=()
  IFS= read -r first <"$workdir/parsed" || first=""
  if [[ $first != OK ]]; then
    local reason message
    IFS=$SEP read -r _ reason message <<<"$first" || true
    log warn scan_failed "\"checkpoint_path\":$(json_string "$root"),\"reason\":$(json_string "${reason:-io_error}"),\"exit_code\":$code,\"message\":$(json_string "${message:-}")"
    return
  fi
  while IFS=$SEP read -r kind path summary fields; do
    [[ $kind == C && -n $path ]] || continue
    current[$path]=1
    if [[ -z ${reported[$path]+x} ]]; then
      reported[$path]=1
      printf '%s corruption_detected %s %s\n' "$(timestamp)" "$path" "$summary"
      log error corruption_detected "$fields"
    fi
  done < <(tail -n +2 "$workdir/parsed")
  for path in "${!reported[@]}"; do
    if [[ -z ${current[$path]+x} ]]; then
      unset 'reported[$path]'
      log info corruption_cleared "\"checkpoint_path\":$(json_string "$path"),\"reason\":null"
    fi
  done
}

while [[ -z $stop ]]; do
  started=$(now_ms)
  run_scan
  [[ -z $stop ]] || break
  case $code in
    0 | 1)
      parse_scan "$workdir/scan.json" "$workdir/parsed"
      process_scan
      ;;
    2)
      parse_scan "$workdir/scan.json" "$workdir/parsed"
      IFS=$SEP read -r _ reason message <"$workdir/parsed" || true
      log error watch_stopped "\"checkpoint_path\":$(json_string "$root"),\"reason\":$(json_string "${reason:-invalid_argument}"),\"exit_code\":2,\"message\":$(json_string "${message:-} (exit 2: usage or config error; not retrying)")"
      exit 2
      ;;
    *)
      parse_scan "$workdir/scan.json" "$workdir/parsed"
      if [[ $(head -n 1 "$workdir/parsed") == OK ]]; then
        # A result without a 0/1 exit code cannot be trusted as complete.
        printf 'ERR%sio_error%sckptkit scan exited %d\n' "$SEP" "$SEP" "$code" >"$workdir/parsed"
      fi
      process_scan
      ;;
  esac
  now=$(now_ms)
  pause $((interval_s * 1000 - (now - started)))
done
exit 0
