"""Submitting one job array through submitit, once, never twice.

Before sbatch runs, every file a task reads is on disk: each run's spec (the
orchestrator writes it; direct callers may not) and the map file (array index ->
runs). Then a fresh `submitit.SlurmExecutor` gets the array's parameters
(`update_parameters`, so every option a submitit user passes works as it does
there) and submits hpcorch's task (`SubmititTask`, a submitit Checkpointable):
`submit` for a single task, `map_array` for an array; submitit writes the
script, runs sbatch and pickles the task for each index.

A transient failure (the controller busy or unreachable) is not retried here:
after asking squeue whether the failed-looking submission got through after all
(a timed-out sbatch may have been accepted; the job name, unique per array, finds
it) it raises TransientSubmitError, and the orchestrator submits again later with
backoff (`hpcorch.retry.submit`) while it goes on watching the runs already in.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable
from typing import Any

import submitit

from hpcorch.errors import ProviderError, ProviderUnavailable, TransientSubmitError
from hpcorch.providers import arrays
from hpcorch.providers.slurm.script import ArrayPlan, executor_parameters, map_data
from hpcorch.providers.slurm.settings import OfflineSlurmExecutor, SlurmSettings
from hpcorch.providers.slurm.task import SubmititTask
from hpcorch.store.records import atomic_write_json

log = logging.getLogger("hpcorch.slurm")

#: sbatch errors worth another try: the controller was busy, not the request wrong.
TRANSIENT_ERRORS = ("socket timed out", "resource temporarily unavailable",
                    "unable to contact slurm controller", "connection refused",
                    "temporarily unable to accept job", "slurm_persist_conn")

#: Runs one Slurm command (argv in, CompletedProcess out; raises TimeoutExpired).
SlurmCall = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def write_array_files(plan: ArrayPlan, settings: SlurmSettings) -> dict[str, Any]:
    """Write what the array's tasks read (spec files, map file); the map."""
    arrays.write_task_inputs(plan.runs, plan.log_dir)
    data = map_data(plan, settings)
    atomic_write_json(plan.map_path, data)
    return data


def executor_for(plan: ArrayPlan, settings: SlurmSettings, python: str,
                 offline: bool = False) -> submitit.SlurmExecutor:
    """A submitit executor with this array's parameters (`offline`: one that needs no
    srun on PATH, to render a dry run on a laptop). The batch shell `exec`s the task's
    interpreter, so Slurm's signals reach it directly."""
    cls = OfflineSlurmExecutor if offline else submitit.SlurmExecutor
    # submitit counts time-limit requeues per job, hpcorch per run (max_requeues): the
    # job's budget must cover every run of a packed task.
    executor = cls(folder=plan.submitit_dir, max_num_timeout=settings.max_requeues * plan.pack,
                   python=f"exec {shlex.quote(python)}")
    executor.update_parameters(**executor_parameters(plan, settings, python))
    return executor


def submit_array(plan: ArrayPlan, settings: SlurmSettings, python: str,
                 find: Callable[[str], str | None], provider: str = "slurm") -> str:
    """Submit the array through submitit, once; its job id (`123`: the array's, or the
    plain job's of a single task). A transient sbatch failure whose array did get in
    (`find(job_name)`: the id of an open job of that name, from squeue) returns that id;
    one that did not raises TransientSubmitError (its `submitted` is for the caller to
    fill); anything else raises ProviderError."""
    task = SubmititTask(plan.map_path)
    executor = executor_for(plan, settings, python)
    try:
        if len(plan.tasks) == 1:
            return str(executor.submit(task, 0).job_id)
        jobs = executor.map_array(task, range(len(plan.tasks)))
        return str(jobs[0].job_id).split("_", 1)[0]
    except FileNotFoundError as exc:
        raise ProviderUnavailable(
            f"{provider}: `sbatch` not found on PATH; run on a login node with the Slurm "
            "client commands (locally: scripts/slurm-up.sh, then scripts/in-netns.sh CMD)"
        ) from exc
    except submitit.core.utils.UncompletedJobError as exc:  # submitit's FailedJobError
        cause = exc.__cause__
        argv = list(cause.cmd) if isinstance(cause, subprocess.CalledProcessError) \
            else ["sbatch"]
        returncode = cause.returncode if isinstance(cause, subprocess.CalledProcessError) \
            else None
        stderr = str(exc)
    if not any(t in stderr.lower() for t in TRANSIENT_ERRORS):
        raise ProviderError(provider, f"submitting {plan.job_name} failed", argv=argv,
                            returncode=returncode, stderr_tail=stderr)
    # A timed-out sbatch may have been accepted: never submit the same array twice.
    earlier = find(plan.job_name)
    if earlier:
        log.info("sbatch of %s failed transiently but the array got in as %s",
                 plan.job_name, earlier)
        return earlier
    raise TransientSubmitError(provider, f"submitting {plan.job_name} failed transiently "
                               "(nothing of it got in)", argv=argv, returncode=returncode,
                               stderr_tail=stderr)


def find_by_name(slurm: SlurmCall, job_name: str) -> str | None:
    """The job id of this user's queued or running job of that exact name, if any."""
    done = slurm(["squeue", "--me", "-h", "--name", job_name, "-o", "%F"])
    ids = [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()]
    return ids[0] if done.returncode == 0 and ids else None
