"""Submitting one job array through submitit, with retries that never submit twice.

Before sbatch runs, every file a task reads is on disk: each run's spec (the
orchestrator writes it; direct callers may not) and the map file (array index ->
runs). Then a fresh `submitit.SlurmExecutor` gets the array's parameters
(`update_parameters`, so every option a submitit user passes works as it does
there) and submits hpcorch's task (`SubmititTask`, a submitit Checkpointable):
`submit` for a single task, `map_array` for an array; submitit writes the
script, runs sbatch and pickles the task for each index.

A transient failure (the controller busy or unreachable) is retried with
exponential backoff and jitter, after asking squeue whether the failed-looking
submission got through after all (a timed-out sbatch may have been accepted):
the job name, unique per array, finds it.
"""

from __future__ import annotations

import logging
import random
import shlex
import subprocess
from collections.abc import Callable
from typing import Any

import submitit

from hpcorch.errors import ProviderError, ProviderUnavailable
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
                 find: Callable[[str], str | None], sleep: Callable[[float], None],
                 provider: str = "slurm") -> str:
    """Submit the array through submitit; its job id (`123`: the array's, or the plain
    job's of a single task). Transient sbatch failures are retried up to
    `settings.submit_retries` times; anything else (or the last try) raises ProviderError.
    `find(job_name)`: the id of an open job of that name (squeue), if any."""
    task = SubmititTask(plan.map_path)
    retries = settings.submit_retries
    for attempt in range(retries + 1):
        executor = executor_for(plan, settings, python)  # fresh: submitit throttles reuse
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
        transient = any(t in stderr.lower() for t in TRANSIENT_ERRORS)
        if not transient or attempt == retries:
            raise ProviderError(provider, f"submitting {plan.job_name} failed"
                                f"{f' after {attempt + 1} tries' if attempt else ''}",
                                argv=argv, returncode=returncode, stderr_tail=stderr)
        # A timed-out sbatch may have been accepted: never submit the same array twice.
        earlier = find(plan.job_name)
        if earlier:
            return earlier
        delay = min(30.0, 2.0 ** attempt) * random.uniform(0.5, 1.5)
        log.warning("sbatch failed transiently (%s); retry %d/%d in %.1f s",
                    stderr.strip().splitlines()[-1:], attempt + 1, retries, delay)
        sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def find_by_name(slurm: SlurmCall, job_name: str) -> str | None:
    """The job id of this user's queued or running job of that exact name, if any."""
    done = slurm(["squeue", "--me", "-h", "--name", job_name, "-o", "%F"])
    ids = [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()]
    return ids[0] if done.returncode == 0 and ids else None
