"""Launch wrappers: how one run fans out into MPI ranks (direct | mpirun | srun).

The provider says where resources come from; the wrapper says how a run's
command becomes N ranks there; the container wrapper says what it runs in.
They compose inside out: `srun ... apptainer exec IMG python train.py ...`.
See `wrappers` (argv rendering), `hosts` (host lists and slot placement for
provider=mpi), `failure` (naming the rank, host and stderr of a failure) and
`rankenv` (the launchers' rank variables: what a container needs passed, and where
a rank finds its place).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcorch.launch.failure import parse_report, rank_failure
    from hpcorch.launch.hosts import (
        Host,
        Placement,
        SlotPool,
        is_local_host,
    )
    from hpcorch.launch.rankenv import RANK_ENV_NAMES, RANK_ENV_PREFIXES, RankSource
    from hpcorch.launch.wrappers import (
        JOB_ENV,
        Launcher,
        LaunchOptions,
        choose_launcher,
        launch_argv,
        mpirun_argv,
        preflight,
        require_mpirun,
        shim_argv,
        slurm_allocation_args,
        srun_argv,
        wrap,
    )

# Names resolve on first use (PEP 562): the rank shim and the worker inside every job
# import `hpcorch.launch.rankenv`, and loading the whole package for it (the wrappers,
# failure parsing and through it the store) doubled the shim's start-up (0.15 -> 0.33 s).
_EXPORTS: dict[str, str] = {
    "parse_report": "failure",
    "rank_failure": "failure",
    "Host": "hosts",
    "Placement": "hosts",
    "SlotPool": "hosts",
    "is_local_host": "hosts",
    "RANK_ENV_NAMES": "rankenv",
    "RANK_ENV_PREFIXES": "rankenv",
    "RankSource": "rankenv",
    "JOB_ENV": "wrappers",
    "Launcher": "wrappers",
    "LaunchOptions": "wrappers",
    "choose_launcher": "wrappers",
    "launch_argv": "wrappers",
    "mpirun_argv": "wrappers",
    "preflight": "wrappers",
    "require_mpirun": "wrappers",
    "shim_argv": "wrappers",
    "slurm_allocation_args": "wrappers",
    "srun_argv": "wrappers",
    "wrap": "wrappers",
}

__all__ = [
    "JOB_ENV", "RANK_ENV_NAMES", "RANK_ENV_PREFIXES", "Host", "Launcher", "LaunchOptions",
    "Placement", "RankSource", "SlotPool", "choose_launcher", "is_local_host", "launch_argv",
    "mpirun_argv", "parse_report", "preflight", "rank_failure", "require_mpirun", "shim_argv",
    "slurm_allocation_args", "srun_argv", "wrap",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
