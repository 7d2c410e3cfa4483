"""Which rank is this process? Rank detection, per-rank devices, rank files and the rank shim.

A run with more than one rank is started by a launcher (mpirun, srun) that
tells every process its place through environment variables; which ones
depends on the launcher, so detection tries them in a fixed order:

    Open MPI's mpirun   OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK / _LOCAL_SIZE
    a scheduler's own  the provider's rank sources, given in the job contract
    step launcher      (HPCORCH_RANK_SOURCES, set by its array task: Slurm's srun)
    MPICH's hydra       PMI_RANK / PMI_SIZE / MPI_LOCALRANKID / MPI_LOCALNRANKS

Nothing here imports MPI: research code asks `current()` and imports mpi4py
only when `size > 1`. Every rank writes a small rank file (`hpcorch.rankfiles`,
core: host, local rank, the devices it saw, how it ended); rank 0 puts them
into the run record and the launch layer reads them to name the rank and host
of a failure.

Run as a module it is the rank shim, the innermost launch wrapper when a run
declares GPUs: it gives each rank its own devices, then execs the command.

    python -m hpcorch.worker.ranks --gpus 2 [--rank-devices '0;1'] -- python train.py ...
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from hpcorch.jobenv import PROVIDER_ENV, RANK_SOURCES_ENV
from hpcorch.launch.rankenv import MPICH, OPEN_MPI, decode_sources, detect
from hpcorch.rankfiles import (
    DEVICES_ENV,
    RankInfo,
    RankState,
    devices_for,
    ranks_dir,
    read_rank_files,
    write_rank_file,
)

# Importable from here for the code inside the job (callback, tests) that already does.
__all__ = ["PROVIDER_ENV", "RankInfo", "RankState", "current", "devices_for", "job_error",
           "job_finished", "job_started", "main", "mpi_library", "prepare_hydra", "ranks_dir",
           "read_rank_files", "shim_devices", "with_ranks", "write_rank_file"]



def current(environ: Mapping[str, str] | None = None) -> RankInfo:
    """This process's rank, from the first launcher whose variables are all present:
    mpirun's, then the provider's own (HPCORCH_RANK_SOURCES), then MPICH's."""
    env = os.environ if environ is None else environ
    sources = (OPEN_MPI, *decode_sources(env.get(RANK_SOURCES_ENV, "")), MPICH)
    return detect(env, sources, socket.gethostname())


# -- inside a Hydra job (called by hpcorch.worker.callback) ------------------------
def prepare_hydra(config: Any, info: RankInfo | None = None) -> None:
    """Keep ranks other than 0 off rank 0's Hydra outputs, before Hydra writes them.

    Called from the callback's on_run_start, which gets the very config the job
    then runs with: ranks > 0 skip `.hydra/` and log to their own file
    (`.hpcorch/ranks/rank.<r>.log`) instead of the run's log and console.
    """
    info = info or current()
    if not info.multi or info.is_root:
        return
    from omegaconf import open_dict, read_write

    log_file = ranks_dir(str(config.hydra.run.dir)) / f"rank.{info.rank}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.output_subdir = None
        logging_cfg = config.hydra.job_logging
        handlers = logging_cfg.get("handlers") if logging_cfg is not None else None
        if not handlers:
            return
        files = [name for name, h in handlers.items() if h is not None and "filename" in h]
        for name in files:
            handlers[name].filename = str(log_file)
        if logging_cfg.get("root") is not None and "handlers" in logging_cfg.root:
            logging_cfg.root.handlers = [h for h in logging_cfg.root.handlers if h in files]


def job_started(run_dir: str) -> RankInfo:
    """This rank's info; in a multi-rank run its rank file is written now."""
    info = current()
    if info.multi:
        write_rank_file(run_dir, info, RankState.RUNNING)
        _abort_on_failing_exit()
    return info


def _abort_on_failing_exit() -> None:
    """`sys.exit(non-zero)` in research code bypasses Hydra's error handling (SystemExit is
    not an Exception), and at exit MPI_Finalize would wait forever for ranks blocked in a
    collective: such an exit ends with MPI_Abort instead, so the whole run fails."""
    original = sys.exit
    if getattr(original, "__hpcorch__", False):
        return

    def exit(status: str | int | None = None) -> NoReturn:
        if status not in (None, 0):
            mpi = sys.modules.get("mpi4py.MPI")
            if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
                _abort_at_exit(mpi)
        original(status)

    exit.__hpcorch__ = True  # type: ignore[attr-defined]
    sys.exit = exit  # type: ignore[assignment]


def job_finished(run_dir: str, info: RankInfo, error: str | None) -> list[dict[str, Any]]:
    """Record how this rank ended; on success wait for every other rank (see below).

    A rank that failed returns at once and its process exits non-zero, which
    makes the launcher (mpirun; srun --kill-on-bad-exit) stop the whole run, so
    rank 0 never writes a SUCCEEDED record for a run one of whose ranks failed.
    Ranks that succeeded meet in a barrier when the research code already
    started MPI; after it every rank file is there and rank 0 returns them all.
    """
    if not info.multi:
        return []
    write_rank_file(run_dir, info, RankState.FAILED if error else RankState.SUCCEEDED,
                    error=error or "")
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        if error is None:
            mpi.COMM_WORLD.Barrier()
        else:
            _abort_at_exit(mpi)
    return read_rank_files(run_dir) if info.is_root else []


def _abort_at_exit(mpi: Any) -> None:
    """Make this process end with MPI_Abort instead of MPI_Finalize.

    Finalize waits for every rank; the others may be blocked in a collective
    that this failed rank will never join, and the run would hang instead of
    failing. Abort stops them all; the process still finishes normally first
    (rank 0 writes its record, Hydra prints the traceback).
    """
    try:
        from mpi4py.run import set_abort_status
    except ImportError:  # pragma: no cover - older mpi4py
        import atexit

        def abort() -> None:
            sys.stdout.flush()
            sys.stderr.flush()
            mpi.COMM_WORLD.Abort(1)

        atexit.register(abort)
    else:
        set_abort_status(1)


def job_error(job_return: Any) -> str | None:
    """'Type: message' of a failed Hydra job return; None when it completed."""
    from hydra.core.utils import JobStatus

    if job_return.status == JobStatus.COMPLETED:
        return None
    value = job_return._return_value  # the property would re-raise
    return f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else "failed"


def mpi_library() -> str:
    """The MPI library this process uses (first line of its version), if MPI is loaded."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return ""
    try:
        return str(mpi.Get_library_version()).replace("\0", "").strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - a fingerprint detail must never fail a run
        return ""


def with_ranks(record: Any, info: RankInfo, files: Sequence[Mapping[str, Any]]) -> Any:
    """Rank 0's run record with every rank's place and devices (fingerprint['ranks']) and,
    when rank 0 itself failed, a failure context naming it."""
    import dataclasses

    from hpcorch.spec import FailureContext

    keep = ("rank", "host", "local_rank", "local_size", "devices", "pid", "state")
    summary = {"size": info.size, "launcher": info.source, "mpi": mpi_library(),
               "ranks": [{k: f.get(k) for k in keep} for f in files]}
    updates: dict[str, Any] = {"fingerprint": {**record.fingerprint, "ranks": summary}}
    if not record.state.ok and record.failure is None:
        error = record.error
        what = f": {error.type}: {error.message}" if error is not None else ""
        updates["failure"] = FailureContext(
            provider=os.environ.get(PROVIDER_ENV, ""), job_id=record.job_id, node=info.host,
            reason=f"rank {info.rank} of {info.size} on {info.host}{what}",
            stderr_tail="\n".join((error.traceback if error else "").splitlines()[-20:]))
    return dataclasses.replace(record, **updates)


# -- the rank shim ------------------------------------------------------------
def shim_devices(info: RankInfo, gpus: int, rank_devices: str | None,
                 environ: Mapping[str, str]) -> tuple[str, ...]:
    """The devices the shim gives this rank.

    `rank_devices` ('0;1;2,3', one entry per global rank) comes from a provider
    that placed the ranks itself; otherwise the node's devices (what the
    scheduler already exported in CUDA_VISIBLE_DEVICES, else 0..gpus-1) are
    shared out by local rank.
    """
    if rank_devices:
        entries = rank_devices.split(";")
        if info.rank >= len(entries):
            raise SystemExit(f"hpcorch rank shim: --rank-devices has {len(entries)} entries, "
                             f"rank {info.rank} of {info.size} has none")
        return tuple(d for d in entries[info.rank].split(",") if d)
    inherited = [d for d in environ.get(DEVICES_ENV, "").split(",") if d]
    available = inherited or [str(i) for i in range(gpus)]
    return devices_for(info.local_rank, info.local_size, available)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m hpcorch.worker.ranks [--gpus N] [--rank-devices SPEC] -- COMMAND...`"""
    parser = argparse.ArgumentParser(
        prog="python -m hpcorch.worker.ranks",
        description="Give this rank its own devices, then exec COMMAND.")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per node declared by the run")
    parser.add_argument("--rank-devices", default=None,
                        help="device ids per global rank, ';'-separated (',' within a rank)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given after --")
    devices = shim_devices(current(), args.gpus, args.rank_devices, os.environ)
    if devices or args.gpus:
        os.environ[DEVICES_ENV] = ",".join(devices)
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
