# shellcheck shell=bash disable=SC2034  # variables are used by the scripts that source this file
# Settings and helpers shared by scripts/ray-up.sh and scripts/ray-down.sh.
# Requires scripts/lib/netns.sh to be sourced first.
#
# Environment (all optional):
#   HPCORCH_PYTHON           the interpreter whose `ray` runs the head (default: <repo>/.venv/bin/python)
#   HPCORCH_RAY_TEMP_DIR     Ray's --temp-dir (default /tmp/hpcorch-ray; keep it short: Ray puts
#                            unix sockets under it and their paths are limited to 107 bytes)
#   HPCORCH_RAY_PORT         GCS port (default 6379)
#   HPCORCH_RAY_DASHBOARD_PORT  dashboard / Jobs API port (default 8265)
#   HPCORCH_RAY_NUM_CPUS     CPUs the head offers (default: nproc)
#   HPCORCH_RAY_TIMEOUT      seconds to wait for readiness or shutdown (default 60)

_ray_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RAY_PYTHON=${HPCORCH_PYTHON:-$_ray_root/.venv/bin/python}
RAY_BIN=$(dirname "$RAY_PYTHON")/ray
RAY_TEMP_DIR=${HPCORCH_RAY_TEMP_DIR:-/tmp/hpcorch-ray}
RAY_PORT=${HPCORCH_RAY_PORT:-6379}
RAY_DASHBOARD_PORT=${HPCORCH_RAY_DASHBOARD_PORT:-8265}
RAY_NUM_CPUS=${HPCORCH_RAY_NUM_CPUS:-$(nproc)}
RAY_TIMEOUT=${HPCORCH_RAY_TIMEOUT:-60}
RAY_DASHBOARD_URL=http://127.0.0.1:$RAY_DASHBOARD_PORT
# stdio of `ray start` and of the daemons it leaves behind (never the caller's pipes).
RAY_START_LOG=$RAY_TEMP_DIR/hpcorch-ray-start.log

# Without this Ray ignores --node-ip-address 127.0.0.1 and binds the routable address
# (notes/ray.md); with it every listener is on loopback.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_USAGE_STATS_ENABLED=0
# The Jobs API runs arbitrary code: never leave it open, even on loopback.
export RAY_AUTH_MODE=token

_ray_prog=${0##*/}
log() { printf '%s: %s\n' "${_ray_prog%.sh}" "$*" >&2; }

# now_us, elapsed_s, inns and wait_for come from scripts/lib/netns.sh.

# The dashboard answers its public GCS health check (no token needed).
ray_healthy() {
    inns curl -fsS --max-time 2 -o /dev/null "$RAY_DASHBOARD_URL/api/gcs_healthz" 2>/dev/null
}

# Pids of the head that uses RAY_TEMP_DIR and RAY_PORT, and of all their
# descendants (workers and agents rename themselves, e.g. `ray::IDLE`, so they
# are found through their parents). The daemons name the session directory
# under the temp dir (or, for the client server, the GCS address) on their
# command line. The patterns reach awk through its environment, never its argv,
# so the search does not find itself. Zombies (PID 1 here does not reap) are
# skipped: they hold nothing and cannot be signalled. Other Ray instances on the
# machine are left alone.
ray_pids() {
    ps -eo pid=,ppid=,stat=,args= |
        HP_TMP="$RAY_TEMP_DIR/session_" HP_TMPFLAG="--temp-dir=$RAY_TEMP_DIR " \
            HP_GCS="--address=127.0.0.1:$RAY_PORT " HP_SELF=$$ awk '
        {
            pid = $1; ppid[pid] = $2; stat[pid] = $3
            line = $0 " "
            if (index(line, ENVIRON["HP_TMP"]) || index(line, ENVIRON["HP_TMPFLAG"]) ||
                (index(line, "ray.util.client.server") && index(line, ENVIRON["HP_GCS"])))
                root[pid] = 1
            pids[++n] = pid
        }
        END {
            for (i = 1; i <= n; i++) {
                p = pids[i]; q = p; hops = 0
                if (p == ENVIRON["HP_SELF"] || stat[p] ~ /^Z/) continue
                while (q != "" && q > 1 && hops++ < 64) {
                    if (q in root) { print p; break }
                    q = ppid[q]
                }
            }
        }'
}
