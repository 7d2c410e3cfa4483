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

from hpcorch.launch.failure import parse_report, rank_failure
from hpcorch.launch.hosts import Host, Placement, SlotPool, is_local_host
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

__all__ = [
    "JOB_ENV", "RANK_ENV_NAMES", "RANK_ENV_PREFIXES", "Host", "Launcher", "LaunchOptions",
    "Placement", "RankSource", "SlotPool", "choose_launcher", "is_local_host", "launch_argv",
    "mpirun_argv", "parse_report", "preflight", "rank_failure", "require_mpirun", "shim_argv",
    "slurm_allocation_args", "srun_argv", "wrap",
]
