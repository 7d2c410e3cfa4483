#!/usr/bin/env bash
# Stop the local Slurm started by scripts/slurm-up.sh: slurmd, slurmctld,
# slurmdbd (by their pid files), MariaDB (`mariadb-admin shutdown`), munged
# last, and wait until they are gone. Idempotent: fine when nothing runs.
#
#   scripts/slurm-down.sh [--purge-netns]
#
# --purge-netns also deletes the network namespace (default "hpcorch",
# override with HPCORCH_NETNS); otherwise it is left in place.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/slurm-common.sh
. "$here/lib/slurm-common.sh"

purge=0
for arg in "$@"; do
    case $arg in
        --purge-netns) purge=1 ;;
        -h | --help)
            sed -n '2,9p' "$0"
            exit 0
            ;;
        *)
            echo "usage: $0 [--purge-netns]" >&2
            exit 2
            ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    log "ERROR: must run as root"
    exit 1
fi

T0=$(now_us)
rc=0

stop_daemon "$SLURMD" 20 || rc=1
stop_daemon "$SLURMCTLD" 20 || rc=1
stop_daemon "$SLURMDBD" 20 || rc=1

if pid=$(daemon_pid "$MARIADBD"); then
    log "stopping mariadbd (pid $pid)"
    if hpcorch_netns_exists; then
        run() { inns "$@"; }
    else
        run() { "$@"; }
    fi
    run timeout 30 mariadb-admin --socket="$MYSQL_SOCKET" shutdown </dev/null >/dev/null 2>&1 || true
    # Falls back to SIGTERM/SIGKILL when still running.
    if ! wait_for 30 _not_alive "$pid" mariadbd; then
        stop_daemon "$MARIADBD" 20 || rc=1
    fi
fi

stop_daemon "$MUNGED" 10 || rc=1

if [ "$purge" = 1 ] && [ -e "$HPCORCH_NETNS_PATH" ]; then
    log "deleting network namespace $HPCORCH_NETNS"
    hpcorch_netns_delete || rc=1
fi

if [ "$rc" = 0 ]; then
    log "stopped in $(elapsed_s "$T0") s"
else
    log "ERROR: some daemons could not be stopped"
fi
exit "$rc"
