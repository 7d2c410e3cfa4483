# shellcheck shell=bash
# Private network namespace for the local Slurm cluster (sourced by
# scripts/slurm-up.sh, scripts/slurm-down.sh and scripts/in-netns.sh).
#
# The namespace holds only `lo`, with 127.0.0.1 and an extra 127.0.0.2/8
# (glibc's AI_ADDRCONFIG ignores 127.0.0.1 alone; slurmctld/slurmdbd then fail
# with "getaddrinfo() failed").  Enter it with `nsenter --net=PATH`, never with
# `ip netns exec` (that remounts /sys and slurmd loses /sys/fs/cgroup).

HPCORCH_NETNS="${HPCORCH_NETNS:-hpcorch}"
HPCORCH_NETNS_PATH="/run/netns/${HPCORCH_NETNS}"

# True when /run/netns/NAME is a live network namespace handle (nsfs mount).
hpcorch_netns_exists() {
    [ -e "$HPCORCH_NETNS_PATH" ] &&
        [ "$(stat -f -L -c %T "$HPCORCH_NETNS_PATH" 2>/dev/null)" = nsfs ]
}

# True when the calling process already runs inside the namespace.
hpcorch_netns_inside() {
    local want have
    want=$(stat -L -c %i "$HPCORCH_NETNS_PATH" 2>/dev/null) || return 1
    have=$(stat -L -c %i /proc/self/ns/net 2>/dev/null) || return 1
    [ -n "$want" ] && [ "$want" = "$have" ]
}

# True when process PID runs inside the namespace.
hpcorch_netns_holds_pid() {
    local want have
    want=$(stat -L -c %i "$HPCORCH_NETNS_PATH" 2>/dev/null) || return 1
    have=$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null) || return 1
    [ "$want" = "$have" ]
}

# Create the namespace if missing and make sure lo is up with 127.0.0.2/8.
# Idempotent; fast when everything is already in place.
hpcorch_netns_ensure() {
    local ns=$HPCORCH_NETNS
    if ! hpcorch_netns_exists; then
        if [ -e "$HPCORCH_NETNS_PATH" ]; then
            # Stale handle (e.g. left from a previous boot): drop it first.
            ip netns delete "$ns" 2>/dev/null || rm -f "$HPCORCH_NETNS_PATH"
        fi
        ip netns add "$ns"
    fi
    local lo
    lo=$(ip -n "$ns" -o addr show dev lo 2>/dev/null || true)
    if ! ip -n "$ns" -o link show dev lo 2>/dev/null | grep -q '[<,]UP[,>]'; then
        ip -n "$ns" link set lo up
    fi
    case $lo in
        *" 127.0.0.2/8 "*) ;;
        *) ip -n "$ns" addr add 127.0.0.2/8 dev lo ;;
    esac
}

# Remove the namespace (processes still inside keep it alive until they exit).
hpcorch_netns_delete() {
    if [ -e "$HPCORCH_NETNS_PATH" ]; then
        ip netns delete "$HPCORCH_NETNS"
    fi
}

# --- helpers shared by the bring-up scripts -------------------------------------

# Microseconds since the epoch (locale-proof: EPOCHREALTIME may use a comma).
now_us() { local t=${EPOCHREALTIME//[.,]/}; printf '%s' "$((10#$t))"; }
elapsed_s() { # elapsed_s START_US -> "12.34"
    local d=$(( ($(now_us) - $1) / 10000 ))
    printf '%d.%02d' $((d / 100)) $((d % 100))
}

# Run a command inside the namespace (directly when we already are inside).
inns() {
    if hpcorch_netns_inside; then
        "$@"
    else
        nsenter --net="$HPCORCH_NETNS_PATH" -- "$@"
    fi
}

# wait_for TIMEOUT_S CMD... : poll CMD every 0.2 s until it succeeds.
wait_for() {
    local deadline=$(( $(now_us) + $1 * 1000000 ))
    shift
    until "$@"; do
        if [ "$(now_us)" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.2
    done
}
