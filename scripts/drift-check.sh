#!/usr/bin/env bash
# Run the example experiment's sweep and check it against its committed baseline.
# Unattended: meant for cron or CI; the report also lands as JSON and JUnit XML.
#
# Usage: scripts/drift-check.sh [-b BASELINE] [-o OUTDIR] [-a APP] [-u] [-- OVERRIDE...]
#   -b BASELINE  the baseline file (default: baselines/example.yaml)
#   -o OUTDIR    where the sweep, drift.json and drift.xml go
#                (default: multirun/drift-check/<UTC timestamp> in the repository)
#   -a APP       the Hydra app to run (default: train.py at the repository root)
#   -u           update: run the sweep, then rewrite BASELINE from it (its tolerances kept);
#                review the diff before committing it
#   OVERRIDE...  extra Hydra overrides for the sweep, e.g. -- provider=slurm
# The sweep's overrides come from the baseline (`hpcorch baseline args BASELINE`); every
# run is run afresh (hpcorch.rerun=true), never reused from an earlier identical run.
#
# Environment: PYTHON (default: .venv/bin/python in the repository, else python3).
#
# Exit codes:
#   0  no drift: every metric of every run within tolerance
#   1  drift: a metric out of tolerance, a run or metric missing on either side,
#      a changed data split (OUTDIR/drift.json says which, and what changed around it)
#   2  usage error, or a baseline file that cannot be read (the message names file and line)
#   3  the sweep itself did not complete (some runs failed); the check still ran and
#      its report is in OUTDIR
#
# Cron example (03:00 daily, one directory per day):
#   0 3 * * * cd /path/to/repo && scripts/drift-check.sh -o /var/tmp/drift/$(date +\%F) \
#             >> /var/log/hpcorch-drift.log 2>&1
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
baseline="$root/baselines/example.yaml"
app="$root/train.py"
out=""
update=0

usage() { sed -n '4,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while getopts ":b:o:a:uh" opt; do
    case "$opt" in
        b) baseline=$OPTARG ;;
        o) out=$OPTARG ;;
        a) app=$OPTARG ;;
        u) update=1 ;;
        h) usage ;;
        *) echo "drift-check: unknown option -$OPTARG" >&2; usage ;;
    esac
done
shift $((OPTIND - 1))

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
[[ -f "$baseline" ]] || { echo "drift-check: no baseline file $baseline" >&2; exit 2; }
[[ -f "$app" ]] || { echo "drift-check: no app $app" >&2; exit 2; }
out=${out:-"$root/multirun/drift-check/$(date -u +%Y%m%dT%H%M%SZ)"}
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)

hpcorch() { "$PYTHON" -m hpcorch "$@"; }

args_text=$(hpcorch baseline args "$baseline") || {
    echo "drift-check: cannot read the sweep's overrides from $baseline" >&2; exit 2; }
mapfile -t sweep_args <<< "$args_text"

echo "drift-check: $app -m ${sweep_args[*]} $* -> $out/sweep"
"$PYTHON" "$app" -m "${sweep_args[@]}" "$@" hpcorch.rerun=true hpcorch.progress=off \
    "hydra.sweep.dir=$out/sweep" > "$out/sweep.log" 2>&1
sweep_rc=$?
if [[ $sweep_rc -ne 0 ]]; then
    echo "drift-check: the sweep exited $sweep_rc (log: $out/sweep.log)" >&2
    tail -n 20 "$out/sweep.log" >&2
    [[ -f "$out/sweep/.hpcorch/sweep.json" ]] || exit 3
fi

if [[ $update -eq 1 ]]; then
    [[ $sweep_rc -eq 0 ]] || exit 3
    hpcorch baseline save "$out/sweep" -o "$baseline" --force --tolerances "$baseline" \
        --name "$(basename "$baseline" .yaml)" || exit 2
    exit 0
fi

hpcorch baseline check "$out/sweep" --against "$baseline" \
    --json "$out/drift.json" --junit "$out/drift.xml"
check_rc=$?
echo "drift-check: report in $out/drift.json and $out/drift.xml"
if [[ $sweep_rc -ne 0 ]]; then exit 3; fi
case $check_rc in
    0|1|2) exit "$check_rc" ;;
    *) exit 2 ;;
esac
