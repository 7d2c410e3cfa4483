"""The fingerprint's MPI section from the real mpi4py and Open MPI (a singleton process)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import require_service

pytestmark = [pytest.mark.integration, pytest.mark.mpi]


def test_mpi_vendor_and_version_are_fingerprinted_when_mpi4py_is_used() -> None:
    require_service(importlib.util.find_spec("mpi4py") is not None, "mpi4py",
                    "pip install 'hpcorch[mpi]' with Open MPI installed")
    script = ("import json\nfrom mpi4py import MPI\nfrom hpcorch.repro.fingerprint import "
              "fingerprint\nprint(json.dumps(fingerprint()['mpi']))\n")
    # A singleton MPI process inside the tests' loopback-only network namespace needs
    # Open MPI told to use loopback (what hpcorch's launch wrappers pass to mpirun).
    env = {**os.environ, "OMPI_MCA_oob_tcp_if_include": "lo", "OMPI_MCA_btl": "self,vader"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["vendor"] and info["vendor_version"] and info["standard"]
    assert info["library"] and "\0" not in info["library"]
    assert info["world_size"] == 1
    without = subprocess.run([sys.executable, "-c", script.replace("from mpi4py import MPI\n",
                                                                   "")],
                             capture_output=True, text=True, timeout=120, check=False)
    assert json.loads(without.stdout.strip().splitlines()[-1]) == {}
