#!/usr/bin/env bash
# submit_validation.sh: submit a distributed validation of a checkpoint root to
# Slurm: a job array of N shards (validate_array.sbatch, one `ckptkit scan
# --shard i/N` per task) and the merge job (validate_merge.sbatch), which
# starts once every shard has ended.
#
# Usage: examples/slurm/submit_validation.sh [N]
#
#   N  the number of shards, one array task each (default: CKPTKIT_SHARDS, else 4)
#
# Environment: CKPTKIT_ROOT (required), CKPTKIT, CKPTKIT_SCAN_ARGS,
# CKPTKIT_REPORT_DIR (default: ./ckptkit-reports, made absolute here) and
# CKPTKIT_TEXTFILE, read by the two batch scripts (see their headers); sbatch
# reads its own SBATCH_* variables too (SBATCH_PARTITION, SBATCH_ACCOUNT, ...).
#
# The merge depends on the array with afterany, not afterok: a shard that finds
# problems exits 1 and ends FAILED, and afterok would then never merge.
#
# Prints the two job ids and where the verdict will be; the merge job's exit
# code (sacct -j <id>, or without accounting scontrol show job <id> until
# MinJobAge has passed) is the verdict: 0 no problems, 1 problems found,
# 2 incomplete or mismatched reports (submit again), 4 I/O error.
set -euo pipefail

readonly PROG=submit_validation.sh

die() {
  printf '%s: %s\n' "$PROG" "$1" >&2
  exit 2
}

case ${1:-} in
  -h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    exit 0
    ;;
esac
[[ $# -le 1 ]] || die "expected at most one argument, N (see --help)"
shards=${1:-${CKPTKIT_SHARDS:-4}}
[[ $shards =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number: '$shards'"
[[ -n ${CKPTKIT_ROOT:-} ]] || die "set CKPTKIT_ROOT to the checkpoint root (on the shared filesystem)"
command -v sbatch >/dev/null 2>&1 || die "sbatch not found: run this on a Slurm login node"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
report_dir=${CKPTKIT_REPORT_DIR:-ckptkit-reports}
[[ $report_dir == /* ]] || report_dir=$PWD/$report_dir
export CKPTKIT_ROOT CKPTKIT_SHARDS=$shards CKPTKIT_REPORT_DIR=$report_dir

# --parsable prints "<job id>" or "<job id>;<cluster>".
array=$(sbatch --parsable --export=ALL --array="0-$((shards - 1))" "$here/validate_array.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --export=ALL --dependency="afterany:$array" "$here/validate_merge.sbatch" "$array")
merge=${merge%%;*}

printf 'shards: job array %s (%d tasks), reports in %s/%s\n' "$array" "$shards" "$report_dir" "$array"
printf 'merge:  job %s (after every shard has ended); verdict in ckptkit-validate-merge-%s.out\n' "$merge" "$merge"
