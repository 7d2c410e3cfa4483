"""Shared pieces of the MPI integration tests (local, provider=mpi, under Slurm)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
from typing import Any

#: A Hydra app whose `fail_rank` raises (or, with `exit_code`, calls sys.exit) while the
#: other ranks wait in a barrier: the run must fail, never hang.
CRASH_APP = '''
import hydra
from hpcorch.worker import ranks

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    from mpi4py import MPI

    me = ranks.current()
    if me.rank == cfg.fail_rank:
        if cfg.get("exit_code"):
            import sys

            print(f"exiting on rank {me.rank}", flush=True)
            sys.exit(cfg.exit_code)  # not an exception Hydra sees: must not hang the others
        raise RuntimeError(f"boom on rank {me.rank}")
    # The other ranks wait here forever, unless the failed rank's end stops them.
    MPI.COMM_WORLD.Barrier()
    return {"ok": 1.0}

if __name__ == "__main__":
    main()
'''


def mpi_available() -> bool:
    """Open MPI's mpirun and mpi4py are installed."""
    return shutil.which("mpirun") is not None and importlib.util.find_spec("mpi4py") is not None


def assert_ran_as_ranks(rec: dict, tasks: int, launcher: str) -> None:  # type: ignore[type-arg]
    """The record proves the run really ran as `tasks` MPI ranks, all succeeded."""
    ranks = rec["fingerprint"]["ranks"]
    assert ranks["size"] == tasks and ranks["launcher"] == launcher
    assert "Open MPI" in ranks["mpi"]
    assert [r["rank"] for r in ranks["ranks"]] == list(range(tasks))
    assert {r["state"] for r in ranks["ranks"]} == {"SUCCEEDED"}
    assert len({r["pid"] for r in ranks["ranks"]}) == tasks


def assert_rank_failure(rec: dict, provider: str, fail_rank: int) -> dict[str, Any]:  # type: ignore[type-arg]
    """A 2-rank CRASH_APP run whose rank `fail_rank` raised: FAILED, and its failure
    names the provider, this host, the rank and that rank's own error; returns it."""
    assert rec["state"] == "FAILED"
    failure: dict[str, Any] = rec["failure"]
    host = socket.gethostname()
    assert failure["provider"] == provider
    assert failure["node"] == host
    assert failure["reason"].startswith(f"rank {fail_rank} of 2 on {host}"), failure
    assert f"RuntimeError: boom on rank {fail_rank}" in failure["reason"]
    assert f"boom on rank {fail_rank}" in failure["stderr_tail"]
    return failure
