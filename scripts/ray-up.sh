#!/usr/bin/env bash
# Start a real local Ray head (Ray's own `ray start --head`) for development
# and CI, inside the private network namespace that holds only loopback
# (default "hpcorch", override with HPCORCH_NETNS), with every listener on
# 127.0.0.1, the dashboard / Jobs API on 127.0.0.1:8265 and token
# authentication on (the token is Ray's own, ~/.ray/auth_token, generated
# here when missing).
#
# Idempotent: when the head already answers it only checks (well under 1 s).
# The head is detached from the caller's stdio (its output goes to
# $HPCORCH_RAY_TEMP_DIR/hpcorch-ray-start.log), so CI pipes never hang.
# Every wait is bounded (HPCORCH_RAY_TIMEOUT, default 60 s).
#
# Clients must run inside the namespace too:
#   scripts/in-netns.sh .venv/bin/python -m pytest tests/ -m ray
# Settings: see scripts/lib/ray-common.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/ray-common.sh
. "$here/lib/ray-common.sh"

T0=$(now_us)

fail() {
    log "ERROR: $1"
    if [ -s "$RAY_START_LOG" ]; then
        printf '\n===== tail -n 40 %s\n' "$RAY_START_LOG" >&2
        tail -n 40 "$RAY_START_LOG" >&2
    fi
    local f
    for f in "$RAY_TEMP_DIR"/session_latest/logs/{gcs_server.err,raylet.err,dashboard.err}; do
        [ -s "$f" ] || continue
        printf '\n===== tail -n 20 %s\n' "$f" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}

[ -x "$RAY_BIN" ] || fail "no Ray at $RAY_BIN: install it with  $RAY_PYTHON -m pip install -e '.[ray]'"
command -v curl >/dev/null || fail "curl is needed for the readiness checks (apt-get install curl)"
if [ "$(id -u)" -eq 0 ] || hpcorch_netns_inside; then
    hpcorch_netns_inside || hpcorch_netns_ensure
else
    hpcorch_netns_exists || fail "network namespace $HPCORCH_NETNS missing: run this script as root once"
fi

if ray_healthy; then
    log "Ray already up: dashboard $RAY_DASHBOARD_URL, address 127.0.0.1:$RAY_PORT ($(elapsed_s "$T0") s)"
    exit 0
fi

# A head that does not answer (crashed, half started) is removed before a new start.
stale=$(ray_pids)
if [ -n "$stale" ]; then
    log "removing a Ray head that does not answer (pids $(echo "$stale" | tr '\n' ' '))"
    "$here/ray-down.sh"
fi

mkdir -p "$RAY_TEMP_DIR"
: >"$RAY_START_LOG"

# Ray's own token: generated once, reused by every client of this user.
if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ -z "${RAY_AUTH_TOKEN_PATH:-}" ] && [ ! -s "$HOME/.ray/auth_token" ]; then
    log "generating Ray's authentication token ($HOME/.ray/auth_token)"
    (umask 077 && "$RAY_BIN" get-auth-token --generate </dev/null >/dev/null 2>>"$RAY_START_LOG") ||
        fail "ray get-auth-token --generate failed"
fi

log "starting Ray head (temp dir $RAY_TEMP_DIR, $RAY_NUM_CPUS CPUs)"
# setsid + stdio to a file: the daemons `ray start` leaves behind hold none of our pipes.
inns setsid "$RAY_BIN" start --head \
    --node-ip-address 127.0.0.1 --port "$RAY_PORT" \
    --dashboard-host 127.0.0.1 --dashboard-port "$RAY_DASHBOARD_PORT" \
    --num-cpus "$RAY_NUM_CPUS" --temp-dir "$RAY_TEMP_DIR" \
    --disable-usage-stats </dev/null >>"$RAY_START_LOG" 2>&1 ||
    fail "ray start --head failed"

wait_for "$RAY_TIMEOUT" ray_healthy || fail "the dashboard did not answer on $RAY_DASHBOARD_URL within ${RAY_TIMEOUT}s"
log "Ray up in $(elapsed_s "$T0") s: dashboard $RAY_DASHBOARD_URL, address 127.0.0.1:$RAY_PORT"
