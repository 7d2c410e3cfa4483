"""Plan Grid Engine job arrays for a batch of runs; render their qsub argv, script and map.

One array (`qsub -t 1-N`) per group of runs with equal Resources; each array
task runs `pack` runs, one after the other. Which runs, is written as data into
a map file next to the script (`<sweep dir>/.hpcorch/sge/<token>.json`); the
job's working directory is that folder, which is how a later process (`qstat
-j ID` shows it) finds the runs of a job it sees in qstat again.

Every qsub option goes on qsub's argv (a list, never a shell line); the job
script holds only shell lines: `provider.setup`, then hpcorch's task runner.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hpcorch.errors import ConfigError
from hpcorch.identity import canonical_json, short_hash
from hpcorch.providers import arrays
from hpcorch.providers.sge.settings import SgeSettings
from hpcorch.spec import Resources, RunSpec

SGE_DIR = "sge"
#: Characters Grid Engine refuses in a job name.
_BAD_NAME_CHARS = set("\n\t\r/:@\\*? ")


@dataclass(frozen=True)
class ArrayPlan:
    """One qsub submission: an array of tasks, each running one or more runs."""

    sweep_id: str
    token: str
    sge_dir: str
    resources: Resources
    tasks: tuple[tuple[RunSpec, ...], ...]
    pack: int

    @property
    def job_name(self) -> str:
        """`hpcorch-<sweep id>-<token>`: what qstat shows and lookup searches."""
        return arrays.job_name(self.sweep_id, self.token)

    @property
    def map_path(self) -> str:
        """The map file: array task id -> the runs it executes."""
        return os.path.join(self.sge_dir, f"{self.token}.json")

    @property
    def script_path(self) -> str:
        """Where the rendered job script is written before qsub reads it."""
        return os.path.join(self.sge_dir, f"{self.token}.sh")

    @property
    def log_dir(self) -> str:
        """Grid Engine's own per-task logs (the runs log into their run directories)."""
        return os.path.join(self.sge_dir, "logs")

    @property
    def runs(self) -> list[RunSpec]:
        """Every run of the array, in task order."""
        return [spec for task in self.tasks for spec in task]


def job_name_token(job_name: str, sweep_id: str | None = None) -> str | None:
    """The token of an hpcorch job name (of that sweep, when given); None for others."""
    return arrays.job_name_token(job_name, sweep_id, token_start="a")


def sge_dir_for(specs: Sequence[RunSpec]) -> str:
    """`<sweep dir>/.hpcorch/sge`: the sweep dir is the common parent of the run dirs."""
    return arrays.scheduler_dir_for(specs, SGE_DIR)


def check_runs(specs: Sequence[RunSpec]) -> None:
    """Refuse, before anything is submitted, what this provider cannot run as asked."""
    for spec in specs:
        res = spec.resources
        if res.nodes > 1 or res.tasks > 1:
            raise ConfigError("resources.tasks", res.tasks, "provider=sge runs one process "
                              "per run (no MPI launch): must be 1, with resources.nodes=1")
        if res.gpus:
            raise ConfigError("resources.gpus", res.gpus, "provider=sge asks for no GPUs "
                              "(sites name them differently): must be 0; ask for them with "
                              "provider.qsub_args, e.g. ['-l', 'gpu=1']")
        if _BAD_NAME_CHARS & set(spec.sweep_id):
            raise ConfigError("hpcorch sweep id", spec.sweep_id, "must not contain spaces or "
                              "any of / : @ \\ * ? to be usable in a Grid Engine job name")


def plan_arrays(specs: Sequence[RunSpec], settings: SgeSettings) -> list[ArrayPlan]:
    """Split a batch into arrays: one per group of runs with the same resources."""
    if not specs:
        return []
    check_runs(specs)
    sge_dir = sge_dir_for(specs)
    if not sge_dir.isprintable():  # it would end a comment line of the script early
        raise ConfigError("hydra.sweep.dir", sge_dir, "must not contain control characters")
    groups: dict[Resources, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.resources, []).append(spec)
    plans = []
    for resources, runs in groups.items():
        tasks = tuple(tuple(runs[i:i + settings.pack]) for i in range(0, len(runs), settings.pack))
        first = tasks[0][0]
        listed = [[(s.run_key, s.run_dir) for s in t] for t in tasks]
        digest = short_hash(canonical_json([first.sweep_id, settings.pack, listed]), 8)
        plans.append(ArrayPlan(first.sweep_id, f"a{first.num}x{digest}", sge_dir, resources,
                               tasks, settings.pack))
    return plans


def time_limit_s(plan: ArrayPlan, settings: SgeSettings) -> int:
    """Seconds per array task (`h_rt`): the per-run limit times the fullest task's runs."""
    per_run = settings.time_min or plan.resources.time_min
    return per_run * 60 * max(len(task) for task in plan.tasks)


def h_vmem(resources: Resources) -> str | None:
    """`-l h_vmem` for `resources.mem_gb`: Grid Engine counts it per slot, so the run's
    memory is divided by its slots (rounded up to whole MiB)."""
    if not resources.mem_gb:
        return None
    return f"{math.ceil(resources.mem_gb * 1024 / max(1, resources.cpus))}M"


def qsub_argv(plan: ArrayPlan, settings: SgeSettings) -> list[str]:
    """The exact qsub command line of an array (an argv list; the script path last)."""
    res = plan.resources
    argv = ["qsub", "-terse", "-N", plan.job_name, "-t", f"1-{len(plan.tasks)}"]
    if settings.array_throttle:
        argv += ["-tc", str(settings.array_throttle)]
    # -V: the job starts with the submitter's environment (as on the other providers).
    # -r y: a task Grid Engine reschedules (host down, `qmod -rj`) starts again and runs
    # the runs it had not finished (the task runner skips those that had).
    argv += ["-wd", plan.sge_dir, "-o", os.path.join(plan.log_dir, "$JOB_ID.$TASK_ID.log"),
             "-j", "y", "-S", "/bin/bash", "-V", "-r", "y" if settings.rerun else "n",
             "-l", f"h_rt={time_limit_s(plan, settings)}"]
    mem = h_vmem(res) if settings.memory == "h_vmem" else None
    if mem:
        argv += ["-l", f"h_vmem={mem}"]
    if res.cpus > 1:
        argv += ["-pe", settings.pe, str(res.cpus)]
    if settings.queue:
        argv += ["-q", settings.queue]
    if settings.project:
        argv += ["-P", settings.project]
    return [*argv, *settings.qsub_args, plan.script_path]


def render_script(plan: ArrayPlan, settings: SgeSettings, python: str) -> str:
    """The exact job script of one array (qsub's options are on its argv, see above)."""
    runs = plan.runs
    lines = [
        "#!/bin/bash",
        f"# hpcorch sweep {plan.sweep_id}: {len(runs)} run(s) in {len(plan.tasks)} array "
        f"task(s), {plan.pack} per task",
        f"# submitted as: {_printable(shlex.join(qsub_argv(plan, settings)))}",
        "",
        f"# array task id -> runs (num run_key run_dir); as data in {plan.map_path}",
    ]
    for index, task in enumerate(plan.tasks, start=1):
        for spec in task:
            lines.append(f"#   {index}: #{spec.num} {spec.run_key} {_printable(spec.run_dir)}")
    if settings.setup:
        lines += ["", "# setup (provider.setup)", *settings.setup]
    lines += [
        "",
        "# Runs this task's run(s) from their spec files, each with its own logs and record.",
        f"exec {shlex.quote(python)} -m hpcorch.providers.sge.task {shlex.quote(plan.map_path)}",
        "",
    ]
    return "\n".join(lines)


def _printable(text: str) -> str:
    """Text safe inside a `#` comment line: control characters escaped, never a newline."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def signal_grace_s(plan: ArrayPlan, settings: SgeSettings) -> int:
    """Seconds before `h_rt` at which the task tells its run; at most half the limit."""
    return arrays.signal_grace(settings.signal_grace_s, time_limit_s(plan, settings))


def map_data(plan: ArrayPlan, settings: SgeSettings) -> dict[str, Any]:
    """The map file's content: what the array task (hpcorch.providers.sge.task) reads."""
    return {
        **arrays.map_header(plan.sweep_id, plan.job_name, plan.pack, plan.tasks),
        "limit_s": time_limit_s(plan, settings),
        "grace_s": signal_grace_s(plan, settings),
        "max_requeues": settings.max_requeues,
        "requeue_on_timeout": settings.requeue_on_timeout,
    }


def task_runs(data: dict[str, Any], task_id: int) -> list[tuple[str, str]]:
    """(run key, run dir) of each run that array task `task_id` (1-based) runs."""
    return arrays.task_runs(data, task_id - 1)
