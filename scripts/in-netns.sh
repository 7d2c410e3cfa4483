#!/usr/bin/env bash
# Run a command inside the private network namespace of the local Slurm
# cluster (default name "hpcorch", override with HPCORCH_NETNS), keeping the
# current working directory and environment:
#
#   scripts/in-netns.sh sbatch --wrap 'hostname' -o /tmp/x_%j.out
#   scripts/in-netns.sh sacct -n -X
#   scripts/in-netns.sh python -m pytest tests/
#
# Creates the namespace if missing. When already inside it, just runs CMD.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/netns.sh
. "$here/lib/netns.sh"

if [ $# -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

if hpcorch_netns_inside; then
    exec "$@"
fi
hpcorch_netns_ensure
exec nsenter --net="$HPCORCH_NETNS_PATH" -- "$@"
