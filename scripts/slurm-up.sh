#!/usr/bin/env bash
# Install (Debian 12 packages) and start a real single-node Slurm 22.05 with
# accounting (slurmdbd + MariaDB) inside a private network namespace that
# holds only loopback (default "hpcorch", override with HPCORCH_NETNS).
#
# Idempotent: when everything is already up with the same configuration it
# only checks (well under 1 s). Run as root. Daemons are started detached
# from the caller's stdio; their logs are under /var/log/slurm/.
#
# Clients must run inside the namespace too:  scripts/in-netns.sh sbatch ...
#
# Environment: HPCORCH_NETNS (namespace name), HPCORCH_SLURM_TIMEOUT (seconds
# to wait for each readiness condition, default 60), HPCORCH_SLURM_MEM (how
# memory limits are enforced: cgroup or polling; default cgroup where possible).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/slurm-common.sh
. "$here/lib/slurm-common.sh"

T0=$(now_us)
TIMEOUT=${HPCORCH_SLURM_TIMEOUT:-60}

PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server
      openmpi-bin libopenmpi-dev iproute2 util-linux)

CLUSTER=hpcorch
PARTITION=debug
NODE=$(hostname -s)
NCPUS=$(nproc)
MEM_MB=$(free -m | awk '/^Mem:/ {print $2}')
SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
DB_NAME=slurm_acct_db
DB_USER=slurm
CGROUP_CONF=/etc/slurm/cgroup.conf

# Memory enforcement, so that a run over its --mem is killed as on a real
# cluster (and hpcorch's report of it can be tested). Preferred: task/cgroup
# with ConstrainRAMSpace: the kernel stops the job at its limit and sacct says
# OUT_OF_MEMORY. Slurm 22.05 needs a writable cgroup v1 memory hierarchy for
# that (its cgroup/v2 plugin needs systemd). Without one, jobacct_gather polls
# every second and kills a step over its limit (OverMemoryKill, UsePss so
# shared pages count once); sacct then says only FAILED and the task's log
# "Exceeded job memory limit", which hpcorch reads too.
# HPCORCH_SLURM_MEM=polling forces the second way (to test it where both work).
MEM_ENFORCEMENT=${HPCORCH_SLURM_MEM:-}
if [ -z "$MEM_ENFORCEMENT" ]; then
    MEM_ENFORCEMENT=polling
    if [ -w /sys/fs/cgroup/memory/cgroup.procs ] &&
        grep -qs '^cgroup /sys/fs/cgroup/memory cgroup .*memory' /proc/mounts; then
        MEM_ENFORCEMENT=cgroup
    fi
fi
if [ "$MEM_ENFORCEMENT" = cgroup ]; then
    TASK_PLUGIN=task/cgroup
    ACCT_GATHER_MEMORY="# memory limits: task/cgroup, ConstrainRAMSpace in cgroup.conf"
else
    MEM_ENFORCEMENT=polling
    TASK_PLUGIN=task/none
    ACCT_GATHER_MEMORY=JobAcctGatherParams=UsePss,OverMemoryKill
fi

# ---------------------------------------------------------------- helpers

dump_logs() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        printf '\n===== tail -n 30 %s\n' "$f" >&2
        tail -n 30 "$f" >&2
    done
}

# fail MSG [LOGS...] : print MSG and the tails of LOGS (default: all), exit 1.
fail() {
    local msg=$1
    shift
    log "ERROR: $msg"
    if [ $# -eq 0 ]; then
        set -- "$SLURM_START_LOG" /var/log/munge/munged.log "$MARIADB_LOG" \
            "$SLURM_LOGDIR/slurmdbd.log" "$SLURM_LOGDIR/slurmctld.log" "$SLURM_LOGDIR/slurmd.log"
    fi
    dump_logs "$@"
    exit 1
}

missing_pkgs() {
    local out p
    out=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PKGS[@]}" 2>/dev/null || true)
    for p in "${PKGS[@]}"; do
        case $'\n'"$out"$'\n' in
            *$'\n'"$p installed"$'\n'*) ;;
            *) printf '%s\n' "$p" ;;
        esac
    done
}

slurm_conf() {
    cat <<EOF
# Written by hpcorch scripts/slurm-up.sh: local edits are overwritten.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$SLURM_LOGDIR/slurmctld.log
SlurmdLogFile=$SLURM_LOGDIR/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=$TASK_PLUGIN
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
# MaxArraySize 201: arrays of at most 201 tasks (index 0-200), so that a test can
# make hpcorch split a sweep at the cluster's own limit, and still room for
# scripts/bench_slurm.py --runs 200 (its peer submits one 200-task array).
MaxArraySize=201
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000,bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
# Sample every second in both memory modes, so that sacct's MaxRSS knows the peak of
# short runs too (the default, 30 s, leaves it empty): a memory retry starts from it.
JobAcctGatherFrequency=task=1
$ACCT_GATHER_MEMORY
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# cgroup.conf: only with task/cgroup (none at all otherwise).
cgroup_conf() {
    [ "$MEM_ENFORCEMENT" = cgroup ] || return 0
    cat <<EOF
# Written by hpcorch scripts/slurm-up.sh: local edits are overwritten.
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
EOF
}

dbd_conf() {
    cat <<EOF
# Written by hpcorch scripts/slurm-up.sh: local edits are overwritten.
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$SLURM_LOGDIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
}

# started_before SPEC FILE : the daemon runs, and started before FILE was last
# written, so it may still run an older configuration. Not every setting
# reaches a running slurmctld by `scontrol reconfigure` (MaxArraySize is read
# once: `scontrol show config` shows the new value while sbatch still checks
# the old one), so a config written after the start means a restart.
started_before() {
    local pid ticks boot written
    pid=$(daemon_pid "$1") || return 1
    [ -f "$2" ] || return 1
    ticks=$(awk '{print $22}' "/proc/$pid/stat" 2>/dev/null) || return 1
    boot=$(awk '/^btime/ {print $2}' /proc/stat)
    written=$(stat -c %Y "$2")
    [ $(( boot + ticks / $(getconf CLK_TCK) )) -lt "$written" ]
}

# same_content FILE TEXT : FILE exists and holds TEXT.
same_content() {
    [ -f "$1" ] || return 1
    local cur
    cur=$(<"$1")
    [ "$cur" = "$2" ]
}

node_state() {
    local st
    st=$(inns timeout 10 sinfo -h -N -n "$NODE" -o %t 2>/dev/null) || return 1
    printf '%s' "${st%%$'\n'*}"
}

node_ready() {
    case $(node_state) in
        idle | mix | alloc | comp) return 0 ;;
    esac
    return 1
}

all_daemons_up() {
    local d
    for d in "$MUNGED" "$MARIADBD" "$SLURMDBD" "$SLURMCTLD" "$SLURMD"; do
        daemon_up "$d" || return 1
    done
}

mariadb_ping() { inns mariadb-admin --socket="$MYSQL_SOCKET" ping >/dev/null 2>&1; }
dbd_answers() { inns timeout 10 sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }
sacct_works() { inns timeout 10 sacct -n -X >/dev/null 2>&1; }

summary() {
    local how=$1 ver
    ver=$(inns sinfo -V 2>/dev/null || echo slurm)
    log "$ver up in netns $HPCORCH_NETNS: node $NODE $(node_state) (${NCPUS} CPUs, ${MEM_MB} MB), partition $PARTITION, accounting on, memory limits by $MEM_ENFORCEMENT; $how in $(elapsed_s "$T0") s"
}

# --------------------------------------------------------- desired configs

DB_PASS=
if [ -r "$DBD_CONF" ]; then
    DB_PASS=$(sed -n 's/^StoragePass=//p' "$DBD_CONF" | head -n 1)
fi
if [ -z "$DB_PASS" ]; then
    DB_PASS=$(head -c 18 /dev/urandom | base64 | tr -d '+/=')
fi
WANT_SLURM_CONF=$(slurm_conf)
WANT_DBD_CONF=$(dbd_conf)
WANT_CGROUP_CONF=$(cgroup_conf)

# cgroup_conf_ok : cgroup.conf is as wanted (absent when none is wanted).
cgroup_conf_ok() {
    if [ -z "$WANT_CGROUP_CONF" ]; then
        [ ! -e "$CGROUP_CONF" ]
    else
        same_content "$CGROUP_CONF" "$WANT_CGROUP_CONF"
    fi
}

# -------------------------------------------------------------- fast path

if [ "$(id -u)" -ne 0 ]; then
    log "ERROR: must run as root"
    exit 1
fi

if hpcorch_netns_exists &&
    [ -z "$(missing_pkgs)" ] &&
    same_content "$SLURM_CONF" "$WANT_SLURM_CONF" &&
    same_content "$DBD_CONF" "$WANT_DBD_CONF" &&
    cgroup_conf_ok &&
    ! started_before "$SLURMCTLD" "$SLURM_CONF" && ! started_before "$SLURMD" "$SLURM_CONF" &&
    all_daemons_up && node_ready; then
    summary "already up: checked"
    exit 0
fi

# --------------------------------------------------------------- packages

installed_now=0
mapfile -t missing < <(missing_pkgs)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$SLURM_LOGDIR"
    apt_log=$SLURM_LOGDIR/hpcorch-apt.log
    : >"$apt_log"
    # Keep package scripts from starting services (on the host network).
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt_install() {
        apt-get install -y --no-install-recommends "${PKGS[@]}" </dev/null >>"$apt_log" 2>&1
    }
    apt_ok=0
    if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null && apt_install; then
        apt_ok=1
    elif apt-get update </dev/null >>"$apt_log" 2>&1 && apt_install; then
        apt_ok=1
    fi
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    [ "$apt_ok" = 1 ] || fail "apt-get install failed" "$apt_log"
    installed_now=1
fi

# ------------------------------------------------------- namespace, dirs

hpcorch_netns_ensure
install -d -m 0755 "$SLURM_LOGDIR" "$STATE_DIR" "$SPOOL_DIR" /etc/slurm
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
install -d -o mysql -g mysql -m 0755 /run/mysqld
install -d -o mysql -g adm -m 2750 /var/log/mysql
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

# ----------------------------------------------------------------- configs

slurm_conf_changed=0
dbd_conf_changed=0
if ! same_content "$SLURM_CONF" "$WANT_SLURM_CONF"; then
    printf '%s\n' "$WANT_SLURM_CONF" >"$SLURM_CONF.tmp"
    chmod 0644 "$SLURM_CONF.tmp"
    mv -f "$SLURM_CONF.tmp" "$SLURM_CONF"
    slurm_conf_changed=1
    log "wrote $SLURM_CONF"
fi
if ! cgroup_conf_ok; then
    if [ -z "$WANT_CGROUP_CONF" ]; then
        rm -f "$CGROUP_CONF"
        log "removed $CGROUP_CONF"
    else
        printf '%s\n' "$WANT_CGROUP_CONF" >"$CGROUP_CONF.tmp"
        chmod 0644 "$CGROUP_CONF.tmp"
        mv -f "$CGROUP_CONF.tmp" "$CGROUP_CONF"
        log "wrote $CGROUP_CONF"
    fi
    slurm_conf_changed=1
fi
if ! same_content "$DBD_CONF" "$WANT_DBD_CONF"; then
    (umask 077 && printf '%s\n' "$WANT_DBD_CONF" >"$DBD_CONF.tmp")
    mv -f "$DBD_CONF.tmp" "$DBD_CONF"
    dbd_conf_changed=1
    log "wrote $DBD_CONF"
fi
chown root:root "$DBD_CONF"
chmod 0600 "$DBD_CONF"

# A daemon running outside the namespace (or with an old config) is stopped
# and started again below.
restart_if() { # restart_if COND SPEC
    if [ "$1" = 1 ] || { daemon_pid "$2" >/dev/null && ! daemon_up "$2"; }; then
        stop_daemon "$2" || fail "cannot stop ${2%%:*}"
    fi
}
restart_if 0 "$MUNGED"
restart_if 0 "$MARIADBD"
restart_if "$dbd_conf_changed" "$SLURMDBD"
# After a slurm.conf change restart BOTH slurmctld and slurmd; slurmd also
# after (re)installing Open MPI, or `srun --mpi=pmix` hangs.
restart_if "$installed_now" "$SLURMD"
# A daemon started before slurm.conf was written (an earlier run of this script
# was interrupted, or the file was changed by hand) is restarted too.
started_before "$SLURMD" "$SLURM_CONF" && slurm_conf_changed=1
started_before "$SLURMCTLD" "$SLURM_CONF" && slurm_conf_changed=1
restart_if "$slurm_conf_changed" "$SLURMD"
restart_if "$slurm_conf_changed" "$SLURMCTLD"

# ------------------------------------------------------------------ munged

if ! daemon_up "$MUNGED"; then
    log "starting munged"
    spawn "$SLURM_START_LOG" runuser -u munge -- /usr/sbin/munged ||
        fail "munged did not start" "$SLURM_START_LOG" /var/log/munge/munged.log
    wait_for 10 daemon_up "$MUNGED" ||
        fail "munged not running" "$SLURM_START_LOG" /var/log/munge/munged.log
fi

# ----------------------------------------------------------------- mariadb

if ! daemon_up "$MARIADBD"; then
    if [ ! -d /var/lib/mysql/mysql ]; then
        log "initialising MariaDB data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql \
            --auth-root-authentication-method=socket </dev/null >>"$MARIADB_LOG" 2>&1 ||
            fail "mariadb-install-db failed" "$MARIADB_LOG"
    fi
    log "starting mariadbd"
    spawn_bg "$MARIADB_LOG" /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
        --port=3306 --socket="$MYSQL_SOCKET" --pid-file=/run/mysqld/mysqld.pid \
        --innodb-lock-wait-timeout=900 ||
        fail "mariadbd did not start" "$MARIADB_LOG"
fi
wait_for "$TIMEOUT" mariadb_ping || fail "mariadbd does not answer" "$MARIADB_LOG"

sql_quote() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }
inns mariadb --socket="$MYSQL_SOCKET" >>"$MARIADB_LOG" 2>&1 <<EOF || fail "database setup failed" "$MARIADB_LOG"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY $(sql_quote "$DB_PASS");
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY $(sql_quote "$DB_PASS");
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF

# ---------------------------------------------------------------- slurmdbd

if ! daemon_up "$SLURMDBD"; then
    log "starting slurmdbd"
    spawn "$SLURM_START_LOG" /usr/sbin/slurmdbd ||
        fail "slurmdbd did not start" "$SLURM_START_LOG" "$SLURM_LOGDIR/slurmdbd.log"
fi
wait_for "$TIMEOUT" dbd_answers ||
    fail "slurmdbd does not answer on 127.0.0.1:6819" "$SLURM_START_LOG" "$SLURM_LOGDIR/slurmdbd.log" "$MARIADB_LOG"

# --------------------------------------------------------------- slurmctld

if ! daemon_up "$SLURMCTLD"; then
    # ClusterName is remembered in StateSaveLocation; a mismatch makes
    # slurmctld exit ("CLUSTER NAME MISMATCH") until it is cleared.
    if [ -f "$STATE_DIR/clustername" ] && [ "$(<"$STATE_DIR/clustername")" != "$CLUSTER" ]; then
        log "clearing stale cluster name in $STATE_DIR/clustername"
        rm -f "$STATE_DIR/clustername"
    fi
    log "starting slurmctld"
    spawn "$SLURM_START_LOG" /usr/sbin/slurmctld ||
        fail "slurmctld did not start" "$SLURM_START_LOG" "$SLURM_LOGDIR/slurmctld.log"
    wait_for 10 daemon_up "$SLURMCTLD" ||
        fail "slurmctld not running" "$SLURM_START_LOG" "$SLURM_LOGDIR/slurmctld.log"
fi

# ------------------------------------------------------------------ slurmd

if ! daemon_up "$SLURMD"; then
    log "starting slurmd"
    spawn "$SLURM_START_LOG" /usr/sbin/slurmd ||
        fail "slurmd did not start" "$SLURM_START_LOG" "$SLURM_LOGDIR/slurmd.log"
fi

if ! wait_for "$TIMEOUT" node_ready; then
    inns scontrol show node "$NODE" >&2 2>/dev/null || true
    fail "node $NODE not ready (state: $(node_state || echo '?'))"
fi
wait_for "$TIMEOUT" sacct_works ||
    fail "sacct does not work" "$SLURM_LOGDIR/slurmctld.log" "$SLURM_LOGDIR/slurmdbd.log"

summary "started"
