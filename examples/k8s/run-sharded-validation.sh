#!/usr/bin/env bash
# run-sharded-validation.sh: run examples/k8s/validate-indexed-job.yaml once:
# the shard pods, then the merge, and print the merged verdict.
#
# Usage: examples/k8s/run-sharded-validation.sh [MANIFEST]
#
#   MANIFEST  default: validate-indexed-job.yaml beside this script
#
# Steps: delete the two Jobs of the previous run (the reports volume stays),
# apply the manifest (the merge Job is created suspended), wait until the shard
# Job is Complete, resume the merge Job, wait for it, print its log (the merged
# report: the only thing on stdout) and exit with its exit code. Kubernetes has
# no dependency between Jobs; this script is that dependency.
#
# Environment:
#   KUBECTL        the kubectl command, split on whitespace (default: kubectl),
#                  e.g. "kubectl --namespace training --context prod"
#   SHARD_TIMEOUT  how long to wait for the shards: 300, 30s, 5m, 6h (default 6h)
#   MERGE_TIMEOUT  how long to wait for the merge (default 30m)
#   POLL_INTERVAL  seconds between two looks at a Job (default 10)
#
# Exit code: the merge's: 0 no problems found, 1 problems found, 2 incomplete or
# mismatched reports (a checkpoint was committed while the shards ran: run it
# again); 4 the shards or the merge failed or timed out (see `kubectl logs`).
set -euo pipefail

readonly PROG=run-sharded-validation.sh
readonly SHARDS_JOB=ckptkit-validate-shards
readonly MERGE_JOB=ckptkit-validate-merge

die() {
  printf '%s: %s\n' "$PROG" "$1" >&2
  exit "${2:-2}"
}

# Seconds in 300, 30s, 5m or 6h; fails when it does not parse.
parse_duration() {
  local number unit
  [[ $1 =~ ^([0-9]+)(s|m|h)?$ ]] || return 1
  number=$((10#${BASH_REMATCH[1]}))
  unit=${BASH_REMATCH[2]:-s}
  case $unit in
    s) echo "$number" ;;
    m) echo $((number * 60)) ;;
    h) echo $((number * 3600)) ;;
  esac
}

case ${1:-} in
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
esac
[[ $# -le 1 ]] || die "expected at most one argument, MANIFEST (see --help)"
manifest=${1:-$(dirname "${BASH_SOURCE[0]}")/validate-indexed-job.yaml}
[[ -f $manifest ]] || die "no manifest at $manifest"
shard_timeout=$(parse_duration "${SHARD_TIMEOUT:-6h}") || die "SHARD_TIMEOUT '${SHARD_TIMEOUT}': expected 300, 30s, 5m or 6h"
merge_timeout=$(parse_duration "${MERGE_TIMEOUT:-30m}") || die "MERGE_TIMEOUT '${MERGE_TIMEOUT}': expected 300, 30s, 5m or 6h"
poll=${POLL_INTERVAL:-10}
[[ $poll =~ ^[0-9]+$ ]] || die "POLL_INTERVAL must be a number of seconds: '$poll'"

kubectl=()
read -r -a kubectl <<<"${KUBECTL:-kubectl}"
if [[ ${#kubectl[@]} -eq 0 ]] || ! command -v "${kubectl[0]}" >/dev/null 2>&1; then
  die "cannot run kubectl: '${kubectl[0]:-}' not found (set KUBECTL)"
fi

# Waits until job $1 is Complete or Failed, at most $2 seconds; prints which
# (or "Timeout").
wait_job() {
  local job=$1 deadline=$((SECONDS + $2)) conditions
  while :; do
    conditions=$("${kubectl[@]}" get job "$job" -o jsonpath='{.status.conditions[?(@.status=="True")].type}')
    case " $conditions " in
      *" Complete "*) echo Complete && return ;;
      *" Failed "*) echo Failed && return ;;
    esac
    ((SECONDS < deadline)) || { echo Timeout && return; }
    sleep "$poll"
  done
}

# kubectl's own messages go to stderr: stdout is the merged report alone.
"${kubectl[@]}" delete job "$SHARDS_JOB" "$MERGE_JOB" --ignore-not-found >&2
"${kubectl[@]}" apply -f "$manifest" >&2

printf '%s: waiting for the shards (job/%s)\n' "$PROG" "$SHARDS_JOB" >&2
shards=$(wait_job "$SHARDS_JOB" "$shard_timeout")
if [[ $shards != Complete ]]; then
  die "job/$SHARDS_JOB: $shards, nothing merged (kubectl logs -l batch.kubernetes.io/job-name=$SHARDS_JOB)" 4
fi

printf '%s: shards done; merging (job/%s)\n' "$PROG" "$MERGE_JOB" >&2
"${kubectl[@]}" patch job "$MERGE_JOB" --type=merge -p '{"spec":{"suspend":false}}' >&2
merge=$(wait_job "$MERGE_JOB" "$merge_timeout")
"${kubectl[@]}" logs "job/$MERGE_JOB" || true
code=$("${kubectl[@]}" get pods -l "batch.kubernetes.io/job-name=$MERGE_JOB" \
  -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.exitCode}' || true)
if [[ $merge == Timeout || ! $code =~ ^[0-9]+$ ]]; then
  die "job/$MERGE_JOB: $merge, no exit code (kubectl describe job/$MERGE_JOB)" 4
fi
printf '%s: job/%s %s, exit %s\n' "$PROG" "$MERGE_JOB" "$merge" "$code" >&2
exit "$code"
