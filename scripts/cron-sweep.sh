#!/usr/bin/env bash
# Cron-friendly wrapper: run one hpcorch sweep with a lock, a log file and clear exit codes.
#
# Usage:
#   scripts/cron-sweep.sh [-p PYTHON] [-s SETUP_FILE] [-n NAME] [-l LOCK_DIR] [-d LOG_DIR]
#                         [-k KEEP] TRAIN_PY [OVERRIDES...]
#
#   -p PYTHON    interpreter with hpcorch installed (default: python3 on PATH after setup)
#   -s SETUP     a bash file sourced first (module load ..., venv activation)
#   -n NAME      name of this sweep for the lock and log files (default: from TRAIN_PY's path)
#   -l LOCK_DIR  where NAME.lock lives (default: $HPCORCH_CRON_DIR or ~/.hpcorch/cron)
#   -d LOG_DIR   where NAME-YYYYmmdd-HHMMSS.log files go (default: the lock directory)
#   -k KEEP      keep only the newest KEEP logs of NAME (default 30; 0 keeps all)
#
# crontab example: every night at 03:00, the same sweep directory each time, so runs
# that already succeeded are skipped and runs still queued from last night are found
# again instead of submitted twice:
#   0 3 * * * /opt/hpcorch/scripts/cron-sweep.sh -p /opt/venv/bin/python \
#       /home/me/proj/train.py provider=mycluster lr=1e-3,1e-4 hydra.sweep.dir=/scratch/me/nightly
#
# The sweep runs in TRAIN_PY's directory (`python TRAIN_PY -m OVERRIDES...`). Quiet on
# success (cron mails nothing); on failure the log's tail goes to stderr (cron mails it).
#
# Exit codes: 0 every run succeeded; 1 the sweep failed (a run failed, or hpcorch or the
# app refused to start; see the log); 2 usage error; 3 another instance holds the lock
# (nothing was done); 4 the lock or log directory cannot be written.
set -uo pipefail

usage() {
    sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

python=python3
setup=
name=
state_dir=${HPCORCH_CRON_DIR:-${HOME:-/tmp}/.hpcorch/cron}
lock_dir=
log_dir=
keep=30
while getopts ":p:s:n:l:d:k:h" opt; do
    case $opt in
        p) python=$OPTARG ;;
        s) setup=$OPTARG ;;
        n) name=$OPTARG ;;
        l) lock_dir=$OPTARG ;;
        d) log_dir=$OPTARG ;;
        k) keep=$OPTARG ;;
        h) usage ;;
        *) echo "cron-sweep: bad option -$OPTARG" >&2; usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
case $keep in '' | *[!0-9]*) echo "cron-sweep: -k wants a number, got '$keep'" >&2; exit 2 ;; esac

train=$1
shift
if [ ! -f "$train" ]; then
    echo "cron-sweep: no such file: $train" >&2
    exit 2
fi
train_dir=$(cd "$(dirname "$train")" && pwd)
train_file=$train_dir/$(basename "$train")
if [ -z "$name" ]; then
    name=$(basename "$train_dir")-$(basename "$train" .py)
fi
case $name in *[!A-Za-z0-9._-]*) echo "cron-sweep: -n NAME may only use A-Z a-z 0-9 . _ -" >&2; exit 2 ;; esac
lock_dir=${lock_dir:-$state_dir}
log_dir=${log_dir:-$lock_dir}
if ! mkdir -p "$lock_dir" "$log_dir" 2>/dev/null || [ ! -w "$lock_dir" ] || [ ! -w "$log_dir" ]; then
    echo "cron-sweep: cannot write $lock_dir or $log_dir" >&2
    exit 4
fi

# One sweep of a name at a time: a slow night must not overlap the next one.
lock=$lock_dir/$name.lock
exec 9>>"$lock" || { echo "cron-sweep: cannot open $lock" >&2; exit 4; }
if ! flock -n 9; then
    echo "cron-sweep: $name is still running (lock $lock held); nothing done" >&2
    exit 3
fi

log=$log_dir/$name-$(date +%Y%m%d-%H%M%S).log
{
    echo "cron-sweep: $name started $(date -Is) on $(hostname) (pid $$)"
    echo "command: cd $train_dir && $python $train_file -m $*"
} >"$log"

rc=0
(
    if [ -n "$setup" ]; then
        # shellcheck disable=SC1090
        source "$setup" || exit 1
    fi
    cd "$train_dir" || exit 1
    exec "$python" "$train_file" -m "$@" 9>&-
) >>"$log" 2>&1 </dev/null || rc=$?
echo "cron-sweep: $name finished $(date -Is) with exit status $rc" >>"$log"

if [ "$keep" -gt 0 ]; then
    # Newest first; names are timestamped, so lexical order is time order.
    find "$log_dir" -maxdepth 1 -type f -name "$name-*.log" -print | sort -r |
        tail -n +"$((keep + 1))" | while IFS= read -r old; do rm -f -- "$old"; done
fi

if [ "$rc" -ne 0 ]; then
    echo "cron-sweep: $name FAILED (exit status $rc); log: $log" >&2
    tail -n 40 "$log" >&2
    exit 1
fi
exit 0
