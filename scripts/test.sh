#!/usr/bin/env bash
# The README's test command (and what CI runs): install and start everything the
# tests need on a fresh Debian 12 machine (as root), then run the whole suite.
#
#   bash scripts/test.sh                  # everything
#   bash scripts/test.sh -m "not slurm"   # extra arguments go to pytest
#
# Each bring-up script is idempotent and fast when its service is already up.
# The tests, and every engine they talk to (Slurm, Ray, MPI, Podman), run in a
# private network namespace that holds only loopback (scripts/in-netns.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

step() { printf '\n== %s\n' "$*" >&2; }
t0=$(date +%s)

step "git and a Python 3 venv"
if ! command -v git >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends git python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'

step "Open MPI (before slurmd, which needs its PMIx)"
PYTHON=.venv/bin/python scripts/mpi-up.sh
step "Slurm with accounting, in the loopback-only namespace"
scripts/slurm-up.sh
# Jobs left over from an interrupted earlier run (slurmctld keeps its state) must not
# hold the test cluster's two CPUs.
scripts/in-netns.sh scancel --quiet --user="$(id -un)" || true
step "Grid Engine in the loopback-only namespace"; scripts/sge-up.sh
step "Podman and the project image"
scripts/podman-up.sh
step "Ray head on 127.0.0.1"
scripts/ray-up.sh

step "tests (setup took $(( $(date +%s) - t0 )) s)"
exec scripts/in-netns.sh .venv/bin/python -m pytest -p no:cacheprovider "$@"
