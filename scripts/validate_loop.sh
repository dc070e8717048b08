#!/usr/bin/env bash
# validate_loop.sh: run `ckptkit emit-metrics ROOT` every INTERVAL, for hosts
# without systemd timers or cron (a container, a tmux pane).
#
# Usage: scripts/validate_loop.sh [--once] ROOT INTERVAL
#
#   ROOT      the checkpoint root
#   INTERVAL  time between the starts of two passes: 300, 30s, 5m, 1h
#   --once    run one pass and exit with ckptkit's exit code
#
# Environment:
#   CKPTKIT            the ckptkit command (default: `ckptkit` on PATH, else
#                      `deno run <flags> <this checkout>/cli.ts`); split on
#                      whitespace, so it may carry arguments
#   CKPTKIT_LOOP_ARGS  extra arguments for emit-metrics, split on whitespace, e.g.
#                      "--textfile /var/lib/node_exporter/ckptkit.prom --sample-bytes 64KiB"
#   CKPTKIT_CONFIG, CKPTKIT_LOG_LEVEL, ...  read by ckptkit itself
#
# Each pass prints one line on stdout:
#   2026-01-01T00:00:00Z pass=3 exit=0 ok: no problems found, metrics written
# ckptkit's own output and JSON logs go to stderr. Exit 1 (problems found) and
# exit 4 (I/O error, Pushgateway down) and any other failure are logged and
# retried on the next pass; exit 2 (bad flag or config, missing root) stops the
# loop with exit 2, since retrying it cannot help. SIGTERM or SIGINT stops the
# loop at once (a pass in progress gets the signal too) with exit 0.
set -euo pipefail

readonly PROG=validate_loop.sh

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

die_usage() {
  printf '%s: %s (see --help)\n' "$PROG" "$1" >&2
  exit 2
}

# Seconds in INTERVAL (300, 30s, 5m, 1h), or nothing when it does not parse.
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

# Sets the array `ckptkit` to the command that runs ckptkit.
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

# Milliseconds since the epoch (whole seconds when bash has no EPOCHREALTIME).
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

meaning() {
  case $1 in
    0) echo "ok: no problems found, metrics written" ;;
    1) echo "problems found (corrupt checkpoint, broken latest or crashed write), metrics written" ;;
    2) echo "usage or config error: stopping" ;;
    4) echo "runtime error (I/O error or push failed; see stderr)" ;;
    *) echo "ckptkit failed unexpectedly (see stderr)" ;;
  esac
}

once=0
args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --once) once=1 ;;
    --) shift && args+=("$@") && break ;;
    -*) die_usage "unknown option '$1'" ;;
    *) args+=("$1") ;;
  esac
  shift
done
[[ ${#args[@]} -eq 2 ]] || die_usage "expected ROOT and INTERVAL"
root=${args[0]}
interval_s=$(parse_interval "${args[1]}") || die_usage "INTERVAL '${args[1]}': expected 300, 30s, 5m or 1h"
((interval_s > 0)) || die_usage "INTERVAL must be above zero"

ckptkit=()
resolve_ckptkit
extra=()
read -r -a extra <<<"${CKPTKIT_LOOP_ARGS:-}"

stop=""
child=""
# shellcheck disable=SC2317  # called by the traps below
on_signal() {
  stop=$1
  # Forward to a pass in progress: it only reads checkpoints and writes files
  # atomically, so leaving it half-way leaves nothing half-done.
  if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null || true; fi
}
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT

# Runs one emit-metrics pass in the background and waits for it, so a signal
# is handled at once instead of after the pass; sets `code`.
run_pass() {
  code=0
  "${ckptkit[@]}" emit-metrics "$root" "${extra[@]}" </dev/null >&2 &
  child=$!
  wait "$child" || code=$?
  # A trapped signal interrupts `wait`; wait again for the pass to end.
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

passes=0
while [[ -z $stop ]]; do
  started=$(now_ms)
  run_pass
  [[ -z $stop ]] || break
  passes=$((passes + 1))
  printf '%s pass=%d exit=%d %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$passes" "$code" "$(meaning "$code")"
  if ((once)); then exit "$code"; fi
  if ((code == 2)); then exit 2; fi
  now=$(now_ms)
  pause $((interval_s * 1000 - (now - started)))
done
printf '%s: %s received, stopped after %d pass(es)\n' "$PROG" "$stop" "$passes" >&2
exit 0
