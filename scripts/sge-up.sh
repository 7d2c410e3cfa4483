#!/usr/bin/env bash
# Install (Debian 12's Son of Grid Engine 8.1.9 packages) and start a real
# single-host Grid Engine inside the private network namespace that holds only
# loopback (default "hpcorch", override with HPCORCH_NETNS): sge_qmaster,
# sge_execd, one queue all.q with one slot per CPU, a parallel environment
# `smp` ($pe_slots), accounting flushed at once, a 1 s scheduling interval.
#
# Idempotent: when everything is already up as configured it only checks
# (well under a second). Run as root. The daemons' stdio goes to
# /var/log/gridengine/hpcorch-start.log; their own logs are under
# /var/spool/gridengine/{qmaster,execd/*}/messages.
#
# Clients must run inside the namespace too:  scripts/in-netns.sh qstat -f
# (with SGE_ROOT=/var/lib/gridengine SGE_CELL=default, the Debian defaults).
#
# Environment: HPCORCH_NETNS (namespace name), HPCORCH_SGE_TIMEOUT (seconds to
# wait for each readiness condition, default 60).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/slurm-common.sh
. "$here/lib/slurm-common.sh"   # log, daemon_pid, daemon_up, spawn, stop_daemon

T0=$(now_us)
TIMEOUT=${HPCORCH_SGE_TIMEOUT:-60}
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
HOST=$(hostname)
SLOTS=$(nproc)
PKGS=(gridengine-master gridengine-exec gridengine-client gridengine-common)
SPOOL=/var/spool/gridengine
COMMON=$SGE_ROOT/$SGE_CELL/common
LOGDIR=/var/log/gridengine
START_LOG=$LOGDIR/hpcorch-start.log
QMASTER=sge_qmaster:$SPOOL/qmaster/qmaster.pid:sge_qmaster
# The execd's spool dir is named after the host name it resolves itself to.
execd_spec() {
    local f
    for f in "$SPOOL"/execd/*/execd.pid; do
        if [ -r "$f" ] && daemon_pid "sge_execd:$f:sge_execd" >/dev/null; then
            printf 'sge_execd:%s:sge_execd' "$f"
            return 0
        fi
    done
    printf 'sge_execd:%s/execd/%s/execd.pid:sge_execd' "$SPOOL" "$HOST"
}

# 127.0.0.1 reverse-resolves to "localhost" (the first name in /etc/hosts): without
# this alias the daemons call themselves "localhost" and every client is refused.
WANT_ALIASES="$HOST localhost"

fail() {
    local msg=$1 f
    log "ERROR: $msg"
    for f in "$START_LOG" "$SPOOL"/qmaster/messages "$SPOOL"/execd/*/messages "${@:2}"; do
        [ -s "$f" ] || continue
        printf '\n===== tail -n 30 %s\n' "$f" >&2
        tail -n 30 "$f" >&2
    done
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

q() { inns timeout 20 "$@"; }  # an SGE client inside the namespace, never hanging
qmaster_answers() { q qstat >/dev/null 2>&1; }
# The queue instance is usable: known, with a load report, no alarm/disabled/error state.
queue_ready() {
    q qstat -f -q all.q 2>/dev/null |
        grep -qE "^all\.q@$HOST +B?I?P? +[0-9]+/[0-9]+/$SLOTS +[0-9.]+ +lx-amd64 *\$"
}
# Everything the checks below look at, in ONE qconf call (each client call costs a
# connection to qmaster); a missing object ends the output early, which reads as
# "not configured" and is then configured again (harmless).
CONF=
load_conf() { CONF=$(q qconf -sconf global -ssconf -ss -sp smp -sq all.q 2>/dev/null) || true; }
has() { grep -qE "$1" <<<"$CONF"; }
global_ok() {
    has '^min_uid +0$' && has '^min_gid +0$' && has '^load_report_time +00:00:01$' &&
        has 'accounting_flush_time=00:00:00'
}
sched_ok() { has '^schedule_interval +0:0:1$'; }
submit_ok() { has "^$HOST\$"; }
pe_ok() { has '^pe_name +smp$' && has '^allocation_rule +\$pe_slots$'; }
queue_ok() {
    has '^qname +all\.q$' && has "^hostlist +$HOST\$" && has '^pe_list +smp$' &&
        has '^shell +/bin/bash$' && has '^load_thresholds +NONE$' &&
        [ "$(grep -cE "^slots +$SLOTS\$" <<<"$CONF")" = 2 ]  # the PE's and the queue's
}
configured() { load_conf && global_ok && sched_ok && submit_ok && pe_ok && queue_ok; }
aliases_ok() { [ -f "$COMMON/host_aliases" ] && [ "$(<"$COMMON/host_aliases")" = "$WANT_ALIASES" ]; }

summary() {
    log "Son of Grid Engine $(dpkg-query -W -f='${Version}' gridengine-master 2>/dev/null) up in netns $HPCORCH_NETNS: host $HOST, queue all.q ($SLOTS slots), pe smp; $1 in $(elapsed_s "$T0") s"
}

# -------------------------------------------------------------- fast path

if [ "$(id -u)" -ne 0 ]; then
    log "ERROR: must run as root"
    exit 1
fi
if hpcorch_netns_exists && [ -z "$(missing_pkgs)" ] && aliases_ok &&
    daemon_up "$QMASTER" && daemon_up "$(execd_spec)" && configured && queue_ready; then
    summary "already up: checked"
    exit 0
fi

# --------------------------------------------------------------- packages

mkdir -p "$LOGDIR"
mapfile -t missing < <(missing_pkgs)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$LOGDIR/hpcorch-apt.log
    : >"$apt_log"
    # The master's postinst runs init_cluster with these answers (spool, cell, master).
    for p in common master exec client; do
        printf 'gridengine-%s shared/gridengineconfig boolean true\n' "$p"
        printf 'gridengine-%s shared/gridenginecell string default\n' "$p"
        printf 'gridengine-%s shared/gridenginemaster string %s\n' "$p" "$HOST"
    done | debconf-set-selections
    # Keep package scripts from starting daemons (on the host network).
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
fi
[ -d "$SPOOL/qmaster" ] && [ -f "$COMMON/act_qmaster" ] ||
    fail "no cluster configuration under $SGE_ROOT/$SGE_CELL (init_cluster did not run; purge the gridengine packages and run this again)"
if [ "$(<"$COMMON/act_qmaster")" != "$HOST" ]; then
    fail "the cluster was set up for host '$(<"$COMMON/act_qmaster")', this is '$HOST': purge the gridengine packages (apt-get purge ${PKGS[*]}) and run this again"
fi

# ------------------------------------------------------- namespace, dirs

hpcorch_netns_ensure
if ! aliases_ok; then
    printf '%s\n' "$WANT_ALIASES" >"$COMMON/host_aliases.tmp"
    chown sgeadmin:sgeadmin "$COMMON/host_aliases.tmp"
    mv -f "$COMMON/host_aliases.tmp" "$COMMON/host_aliases"
    log "wrote $COMMON/host_aliases"
    # Daemons that started without it know themselves by another name.
    stop_daemon "$(execd_spec)" 30 || fail "cannot stop sge_execd"
    stop_daemon "$QMASTER" 30 || fail "cannot stop sge_qmaster"
fi
install -d -o sgeadmin -g sgeadmin -m 0755 /run/gridengine
# Daemons running outside the namespace are started again inside it.
for spec in "$(execd_spec)" "$QMASTER"; do
    if daemon_pid "$spec" >/dev/null && ! daemon_up "$spec"; then
        stop_daemon "$spec" 30 || fail "cannot stop ${spec%%:*}"
    fi
done

# ----------------------------------------------------------------- qmaster

if ! daemon_up "$QMASTER"; then
    log "starting sge_qmaster"
    spawn "$START_LOG" /usr/sbin/sge_qmaster || fail "sge_qmaster did not start"
fi
wait_for "$TIMEOUT" qmaster_answers || fail "sge_qmaster does not answer on 127.0.0.1:6444"

# ------------------------------------------------------------- configuration

config_changed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load_conf
if ! global_ok; then
    # qconf -mconf edits through $EDITOR: a sed script is the editor.
    cat >"$tmp/editor" <<'EOS'
#!/bin/sh
sed -i -e 's/^min_uid .*/min_uid 0/' -e 's/^min_gid .*/min_gid 0/' \
 -e 's/^load_report_time .*/load_report_time 00:00:01/' \
 -e 's/^reporting_params .*/reporting_params accounting=true reporting=false flush_time=00:00:01 accounting_flush_time=00:00:00 joblog=false sharelog=00:00:00/' \
 -e '/^ *flush_time=/d' -e '/^ *accounting_flush_time=/d' "$1"
EOS
    chmod +x "$tmp/editor"
    EDITOR=$tmp/editor q qconf -mconf global >>"$START_LOG" 2>&1 || fail "qconf -mconf global failed"
    config_changed=1
fi
if ! sched_ok; then
    q qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
        -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/' \
        -e 's/^job_load_adjustments .*/job_load_adjustments NONE/' \
        -e 's/^load_adjustment_decay_time .*/load_adjustment_decay_time 0:0:0/' >"$tmp/sconf"
    q qconf -Msconf "$tmp/sconf" >>"$START_LOG" 2>&1 || fail "qconf -Msconf failed"
fi
if ! submit_ok; then
    q qconf -as "$HOST" >>"$START_LOG" 2>&1 || fail "qconf -as $HOST failed"
fi
if ! pe_ok; then
    printf '%s\n' "pe_name smp" "slots $SLOTS" "user_lists NONE" "xuser_lists NONE" \
        "start_proc_args NONE" "stop_proc_args NONE" 'allocation_rule $pe_slots' \
        "control_slaves FALSE" "job_is_first_task TRUE" "urgency_slots min" \
        "accounting_summary FALSE" "qsort_args NONE" >"$tmp/pe"
    if q qconf -sp smp >/dev/null 2>&1; then
        q qconf -Mp "$tmp/pe" >>"$START_LOG" 2>&1 || fail "qconf -Mp smp failed"
    else
        q qconf -Ap "$tmp/pe" >>"$START_LOG" 2>&1 || fail "qconf -Ap smp failed"
    fi
fi
if ! queue_ok; then
    # The template's pe_list names PEs that do not exist ("make smp mpi").
    q qconf -sq | sed -e 's/^qname .*/qname all.q/' -e "s/^hostlist .*/hostlist $HOST/" \
        -e 's/^load_thresholds .*/load_thresholds NONE/' -e 's/^pe_list .*/pe_list smp/' \
        -e "s/^slots .*/slots $SLOTS/" -e 's#^shell .*#shell /bin/bash#' >"$tmp/queue"
    if q qconf -sq all.q >/dev/null 2>&1; then
        q qconf -Mq "$tmp/queue" >>"$START_LOG" 2>&1 || fail "qconf -Mq all.q failed"
    else
        q qconf -Aq "$tmp/queue" >>"$START_LOG" 2>&1 || fail "qconf -Aq all.q failed"
    fi
fi
configured || fail "the configuration did not take (qconf -sconf / -ssconf / -sp smp / -sq all.q)"

# ------------------------------------------------------------------- execd

# A running execd does not see a changed global configuration: restart it.
if [ "$config_changed" = 1 ]; then
    stop_daemon "$(execd_spec)" 30 || fail "cannot stop sge_execd"
fi
if ! daemon_up "$(execd_spec)"; then
    log "starting sge_execd"
    spawn "$START_LOG" /usr/sbin/sge_execd || fail "sge_execd did not start"
fi
if ! wait_for "$TIMEOUT" queue_ready; then
    q qstat -f >&2 2>/dev/null || true
    fail "queue all.q@$HOST not usable after ${TIMEOUT}s"
fi
summary "started"
