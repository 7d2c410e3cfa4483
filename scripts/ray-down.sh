#!/usr/bin/env bash
# Stop the local Ray head started by scripts/ray-up.sh, and only that one:
# its processes are found by the temp dir they name (HPCORCH_RAY_TEMP_DIR,
# default /tmp/hpcorch-ray), never by a broad `ray stop`, so other Ray
# instances on the machine live on. SIGTERM, then SIGKILL after
# HPCORCH_RAY_STOP_GRACE seconds (default 5). Idempotent: fine when nothing runs.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"
# shellcheck source=scripts/lib/ray-common.sh
. "$here/lib/ray-common.sh"

T0=$(now_us)
pids=$(ray_pids)
if [ -z "$pids" ]; then
    log "Ray is not running (temp dir $RAY_TEMP_DIR)"
    exit 0
fi

# shellcheck disable=SC2086  # one pid per word
kill -TERM $pids 2>/dev/null || true
gone() { [ -z "$(ray_pids)" ]; }
# gcs_server and the autoscaler monitor may sit out SIGTERM; a test head needs no more grace.
grace=${HPCORCH_RAY_STOP_GRACE:-5}
if ! wait_for "$grace" gone; then
    log "still running after ${grace} s, sending SIGKILL: $(ray_pids | tr '\n' ' ')"
    # shellcheck disable=SC2046
    kill -KILL $(ray_pids) 2>/dev/null || true
    wait_for "$RAY_TIMEOUT" gone || { log "ERROR: Ray processes survive SIGKILL: $(ray_pids | tr '\n' ' ')"; exit 1; }
fi
log "Ray stopped in $(elapsed_s "$T0") s"
