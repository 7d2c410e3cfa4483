"""Submitting one job array: its files, then `sbatch` with retries that never submit twice.

Before sbatch runs, every file a task reads is on disk: each run's spec (the
orchestrator writes it; direct callers may not), the map file (array index ->
runs) and the rendered script. A transient failure (the controller busy or
unreachable) is retried with exponential backoff and jitter, after asking
squeue whether the failed-looking submission got through after all (a timed-out
sbatch may have been accepted): the job name, unique per array, finds it.
"""

from __future__ import annotations

import logging
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcorch.errors import ProviderError
from hpcorch.providers.slurm.script import ArrayPlan, map_data, render_script
from hpcorch.providers.slurm.settings import SlurmSettings
from hpcorch.store.records import atomic_write_json, atomic_write_text, meta_dir, spec_path

log = logging.getLogger("hpcorch.slurm")

#: sbatch errors worth another try: the controller was busy, not the request wrong.
TRANSIENT_ERRORS = ("socket timed out", "resource temporarily unavailable",
                    "unable to contact slurm controller", "connection refused",
                    "temporarily unable to accept job", "slurm_persist_conn")

#: Runs one Slurm command (argv in, CompletedProcess out; raises TimeoutExpired).
SlurmCall = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def write_array_files(plan: ArrayPlan, settings: SlurmSettings, python: str) -> dict[str, Any]:
    """Write what the array's tasks read (spec files, map file) and its script; the map."""
    Path(plan.log_dir).mkdir(parents=True, exist_ok=True)
    for spec in plan.runs:
        path = spec_path(spec.run_dir)
        if not path.exists():  # the orchestrator writes it; direct callers may not
            atomic_write_json(path, spec.to_dict())
        meta_dir(spec.run_dir).mkdir(parents=True, exist_ok=True)
    data = map_data(plan, settings)
    atomic_write_json(plan.map_path, data)
    atomic_write_text(plan.script_path, render_script(plan, settings, python))
    return data


def sbatch(plan: ArrayPlan, slurm: SlurmCall, retries: int, sleep: Callable[[float], None],
           timeout_s: float, provider: str = "slurm") -> str:
    """`sbatch --parsable` the array's script; its job id. Transient failures are retried
    up to `retries` times; anything else (or the last try) raises ProviderError."""
    argv = ["sbatch", "--parsable", plan.script_path]
    for attempt in range(retries + 1):
        try:
            done = slurm(argv)
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(argv, 1, "", "sbatch: Socket timed out "
                                               f"(no answer in {timeout_s:.0f} s)")
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().split(";", 1)[0]
        transient = any(t in done.stderr.lower() for t in TRANSIENT_ERRORS)
        if not transient or attempt == retries:
            raise ProviderError(provider, f"submitting {plan.job_name} failed"
                                f"{f' after {attempt + 1} tries' if attempt else ''}",
                                argv=argv, returncode=done.returncode,
                                stderr_tail=done.stderr or done.stdout)
        # A timed-out sbatch may have been accepted: never submit the same array twice.
        earlier = find_by_name(slurm, plan.job_name)
        if earlier:
            return earlier
        delay = min(30.0, 2.0 ** attempt) * random.uniform(0.5, 1.5)
        log.warning("sbatch failed transiently (%s); retry %d/%d in %.1f s",
                    done.stderr.strip().splitlines()[-1:], attempt + 1, retries, delay)
        sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def find_by_name(slurm: SlurmCall, job_name: str) -> str | None:
    """The job id of this user's queued or running job of that exact name, if any."""
    done = slurm(["squeue", "--me", "-h", "--name", job_name, "-o", "%F"])
    ids = [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()]
    return ids[0] if done.returncode == 0 and ids else None
