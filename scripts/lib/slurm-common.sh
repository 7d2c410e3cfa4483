# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this file
# Helpers shared by scripts/slurm-up.sh and scripts/slurm-down.sh.
# Requires scripts/lib/netns.sh to be sourced first.

SLURM_LOGDIR=/var/log/slurm
SLURM_START_LOG=$SLURM_LOGDIR/hpcorch-start.log   # stdio of every daemon we start
MARIADB_LOG=/var/log/mysql/mariadbd.log
MYSQL_SOCKET=/run/mysqld/mysqld.sock

# name:pidfile:comm, in start order.
MUNGED=munged:/run/munge/munged.pid:munged
MARIADBD=mariadbd:/run/mysqld/mysqld.pid:mariadbd
SLURMDBD=slurmdbd:/run/slurmdbd.pid:slurmdbd
SLURMCTLD=slurmctld:/run/slurmctld.pid:slurmctld
SLURMD=slurmd:/run/slurmd.pid:slurmd

_hp_prog=${0##*/}
log() { printf '%s: %s\n' "${_hp_prog%.sh}" "$*" >&2; }

# now_us, elapsed_s, inns and wait_for come from scripts/lib/netns.sh.

# pid_alive PID COMM : PID exists, is not a zombie, and its comm is COMM.
# (PID 1 here does not reap: exited daemons linger as zombies.)
pid_alive() {
    local pid=$1 comm=$2 c st
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    { c=$(<"/proc/$pid/comm"); } 2>/dev/null || return 1
    [ "$c" = "$comm" ] || return 1
    { st=$(<"/proc/$pid/stat"); } 2>/dev/null || return 1
    st=${st##*) }
    st=${st%% *}
    [ "$st" != Z ] && [ "$st" != X ]
}

# daemon_pid SPEC : print the pid of the running daemon (from its pid file).
daemon_pid() {
    local spec=$1 pidfile comm pid
    pidfile=${spec#*:}; pidfile=${pidfile%%:*}
    comm=${spec##*:}
    [ -r "$pidfile" ] || return 1
    { pid=$(<"$pidfile"); } 2>/dev/null || return 1
    pid=${pid//[^0-9]/}
    pid_alive "$pid" "$comm" || return 1
    printf '%s' "$pid"
}

# daemon_up SPEC : the daemon runs inside our namespace.
daemon_up() {
    local pid
    pid=$(daemon_pid "$1") || return 1
    hpcorch_netns_holds_pid "$pid"
}

# stop_daemon SPEC [TIMEOUT_S] : SIGTERM by pid file, wait, SIGKILL if needed.
stop_daemon() {
    local spec=$1 timeout=${2:-20} name pid comm
    name=${spec%%:*}
    comm=${spec##*:}
    pid=$(daemon_pid "$spec") || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$timeout" _not_alive "$pid" "$comm"; then
        log "$name (pid $pid) ignored SIGTERM for ${timeout}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 10 _not_alive "$pid" "$comm" || { log "$name (pid $pid) still alive"; return 1; }
    fi
}
_not_alive() { ! pid_alive "$1" "$2"; }

# Close every fd above 2 (so a started daemon holds none of the caller's pipes).
close_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done 2>/dev/null
    return 0
}

# spawn LOG CMD... : run a self-daemonizing CMD inside the namespace in a new
# session, stdin from /dev/null, stdout/stderr appended to LOG; returns CMD's
# exit status (the parent exits once the daemon has forked).
spawn() {
    local logf=$1
    shift
    printf '=== %s %s\n' "$(date '+%F %T')" "$*" >>"$logf"
    (
        close_fds
        exec setsid nsenter --net="$HPCORCH_NETNS_PATH" -- "$@" </dev/null >>"$logf" 2>&1
    )
}

# spawn_bg LOG CMD... : same for a CMD that stays in the foreground.
spawn_bg() {
    local logf=$1
    shift
    printf '=== %s %s\n' "$(date '+%F %T')" "$*" >>"$logf"
    (
        close_fds
        exec setsid -f nsenter --net="$HPCORCH_NETNS_PATH" -- "$@" </dev/null >>"$logf" 2>&1
    )
}
