#!/usr/bin/env bash
# Install Open MPI from Debian's packages for hpcorch's MPI runs and tests, and
# check that it starts ranks. Idempotent: when everything is there it only checks
# (well under 1 s). mpi4py comes with the Python extra:  pip install -e '.[mpi]'.
#
#   scripts/mpi-up.sh                 # install if missing, check mpirun
#   PYTHON=.venv/bin/python scripts/mpi-up.sh   # also run a 2-rank mpi4py allreduce
#
# Run it before scripts/slurm-up.sh starts slurmd (srun --mpi=pmix needs the
# libpmix2 that Open MPI brings to be there when slurmd starts).
set -euo pipefail

# gcc + libc6-dev: hpcorch compiles its loopback bind shim with them (hpcorch/launch/
# loopback.py), so that a single-host mpirun listens on loopback only.
PKGS=(openmpi-bin libopenmpi-dev gcc libc6-dev)

missing=()
for pkg in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "mpi-up: ${missing[*]} missing and not root: run as root (or sudo)" >&2
        exit 1
    fi
    echo "mpi-up: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

if ! command -v mpirun >/dev/null 2>&1; then
    echo "mpi-up: mpirun is not on PATH after installing ${PKGS[*]}" >&2
    exit 1
fi
version=$(mpirun --version 2>/dev/null | head -n 1)
case "$version" in
    *"Open MPI"*) ;;
    *) echo "mpi-up: 'mpirun' is not Open MPI's ($version); hpcorch drives Open MPI" >&2
       exit 1 ;;
esac

if [ -n "${PYTHON:-}" ]; then
    # The same flags hpcorch adds for a run on this machine: root only when root,
    # transports on loopback/shared memory only.
    root=()
    [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
    out=$(mpirun -n 2 "${root[@]}" --bind-to none --mca btl self,vader \
          --mca oob_tcp_if_include lo "$PYTHON" -c \
          'from mpi4py import MPI; c = MPI.COMM_WORLD; print(f"sum={c.allreduce(c.rank + 1)};", flush=True)') || {
        echo "mpi-up: a 2-rank mpi4py allreduce failed (pip install -e '.[mpi]'?)" >&2
        exit 1
    }
    # mpirun may merge the two ranks' lines, so count the tokens, not the lines.
    [ "$(echo "$out" | grep -o 'sum=[0-9]*;' | sort | uniq -c | tr -s ' ')" = " 2 sum=3;" ] || {
        echo "mpi-up: 2-rank allreduce gave '$out', expected 3 on both ranks" >&2
        exit 1
    }
fi
echo "mpi-up: $version ready"
