#!/usr/bin/env bash
# Stop the Grid Engine started by scripts/sge-up.sh: sge_execd, then sge_qmaster
# (SIGTERM by their pid files; qmaster takes ~10 s to shut down), and wait until
# they are gone. Idempotent: fine when nothing runs. Configuration, spool and
# accounting stay (scripts/sge-up.sh starts them again in a few seconds).
#
#   scripts/sge-down.sh [--purge]
#
# --purge also removes the packages and their configuration (apt-get purge), so
# that the next scripts/sge-up.sh installs from scratch.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/slurm-common.sh
. "$here/lib/slurm-common.sh"   # log, daemon_pid, stop_daemon

purge=0
for arg in "$@"; do
    case $arg in
        --purge) purge=1 ;;
        -h | --help)
            sed -n '2,10p' "$0"
            exit 0
            ;;
        *)
            echo "usage: $0 [--purge]" >&2
            exit 2
            ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    log "ERROR: must run as root"
    exit 1
fi

T0=$(now_us)
SPOOL=/var/spool/gridengine
rc=0
for f in "$SPOOL"/execd/*/execd.pid; do
    [ -e "$f" ] || continue
    stop_daemon "sge_execd:$f:sge_execd" 30 || rc=1
done
stop_daemon "sge_qmaster:$SPOOL/qmaster/qmaster.pid:sge_qmaster" 60 || rc=1
if [ "$purge" = 1 ] && [ "$rc" = 0 ]; then
    log "purging the gridengine packages"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y gridengine-master gridengine-exec \
        gridengine-client gridengine-common </dev/null >/dev/null 2>&1 || rc=1
fi
[ "$rc" = 0 ] && log "Grid Engine stopped in $(elapsed_s "$T0") s" || log "ERROR: could not stop everything"
exit "$rc"
