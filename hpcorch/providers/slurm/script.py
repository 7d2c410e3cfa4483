"""Plan job arrays for a batch of runs and render their sbatch scripts and map files.

One array per group of runs with equal Resources, split so that no array
index reaches MaxArraySize and the task count stays within MaxJobCount. Each
array task runs `pack` runs; which ones is written, as data, into a map file
next to the script (`<sweep dir>/.hpcorch/slurm/<token>.json`), which is also
how a later process finds the runs of a job it sees in squeue again.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hpcorch.errors import ConfigError
from hpcorch.identity import canonical_json, short_hash
from hpcorch.launch.wrappers import slurm_allocation_args
from hpcorch.providers import arrays
from hpcorch.providers.slurm.accounting import ClusterLimits
from hpcorch.providers.slurm.settings import (
    JOB_NAME_RE,
    SlurmSettings,
    normalized_extra,
    sbatch_parameters,
)
from hpcorch.providers.slurm.task import step_argv
from hpcorch.spec import Resources, RunSpec

SLURM_DIR = "slurm"
#: The signal a job gets `signal_grace_s` before its time limit (to the batch shell: B:);
#: submitit's own (its handler checkpoints and requeues).
PREEMPT_SIGNAL = "USR2"


@dataclass(frozen=True)
class ArrayPlan:
    """One sbatch submission: an array of tasks, each running one or more runs."""

    sweep_id: str
    token: str
    slurm_dir: str
    resources: Resources
    tasks: tuple[tuple[RunSpec, ...], ...]
    pack: int
    node_cpus: int | None = None
    """CPUs of the partition's largest node, when known: ranks beyond it need --overcommit."""
    name: str = ""
    """What squeue shows first (provider.job_name, else the Hydra job name)."""

    @property
    def job_name(self) -> str:
        """`<name>.hpcorch-<sweep id>-<token>`: what squeue shows; lookup searches the
        part from `hpcorch-` on."""
        ours = arrays.job_name(self.sweep_id, self.token)
        return f"{self.name}.{ours}" if self.name else ours

    @property
    def map_path(self) -> str:
        """The map file: array index -> the runs it executes."""
        return os.path.join(self.slurm_dir, f"{self.token}.json")

    @property
    def submitit_dir(self) -> str:
        """submitit's folder: its pickles and the sbatch script of every job it submitted."""
        return os.path.join(self.slurm_dir, "submitit")

    def task_job_id(self, job_id: str, index: int) -> str:
        """The job id of task `index` (`123_4`; the plain id of a single-task plan, which
        submitit submits as a plain job)."""
        return f"{job_id}_{index}" if len(self.tasks) > 1 else job_id

    @property
    def log_dir(self) -> str:
        """Slurm's own per-task logs (the runs log into their run directories)."""
        return os.path.join(self.slurm_dir, "logs")

    @property
    def runs(self) -> list[RunSpec]:
        """Every run of the array, in task order."""
        return [spec for task in self.tasks for spec in task]


def hpcorch_part(job_name: str) -> str:
    """`hpcorch-<sweep id>-<token>` of a job name, with or without the `<name>.` in front
    (older sweeps have none); "" for a job that is not hpcorch's."""
    if job_name.startswith(arrays.JOB_PREFIX):
        return job_name
    _, dot, ours = job_name.partition("." + arrays.JOB_PREFIX)
    return arrays.JOB_PREFIX + ours if dot else ""


def job_name_token(job_name: str) -> str | None:
    """The token of an hpcorch job name (None for any other job)."""
    return arrays.job_name_token(hpcorch_part(job_name))


def hydra_job_name(command: Sequence[str]) -> str:
    """The Hydra job name of a run's command, as sbatch and squeue show it well: the last
    `hydra.job.name=` override, else the app script's stem (Hydra's own default), else
    the module of `python -m`; characters other than letters, digits, _, + and - become _,
    at most 64 are kept; "" when the command names none."""
    name = ""
    for i, arg in enumerate(command):
        if arg.startswith("hydra.job.name="):
            name = arg.partition("=")[2]
        elif not name and i == 1 and arg.endswith(".py"):
            name = os.path.splitext(os.path.basename(arg))[0]
        elif not name and i == 2 and command[1] == "-m":
            name = arg.rsplit(".", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_+-]+", "_", name.strip("'\"")).strip("_")[:64]


def display_name(spec: RunSpec, settings: SlurmSettings) -> str:
    """The `<name>` of an array's job name: provider.job_name, else the Hydra job name."""
    name = settings.job_name or hydra_job_name(spec.command)
    return name if JOB_NAME_RE.fullmatch(name) else ""


def slurm_dir_for(specs: Sequence[RunSpec]) -> str:
    """`<sweep dir>/.hpcorch/slurm`: the sweep dir is the common parent of the run dirs."""
    return arrays.scheduler_dir_for(specs, SLURM_DIR)


def plan_arrays(specs: Sequence[RunSpec], settings: SlurmSettings,
                limits: ClusterLimits) -> list[ArrayPlan]:
    """Split a batch into arrays that the cluster accepts, one sbatch each."""
    if not specs:
        return []
    slurm_dir = slurm_dir_for(specs)
    if not slurm_dir.isprintable():  # it would end an #SBATCH line early
        raise ConfigError("hydra.sweep.dir", slurm_dir, "must not contain control characters "
                          "(newlines, tabs) to be usable in an sbatch script")
    max_tasks = min(limits.max_array_size, limits.max_job_count,
                    settings.max_array_size or limits.max_array_size)
    # Too many tasks for the controller: pack more runs per task rather than fail.
    pack = max(settings.pack, math.ceil(len(specs) / max(1, limits.max_job_count)))
    groups: dict[Resources, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.resources, []).append(spec)
    plans = []
    for resources, runs in groups.items():
        tasks = [tuple(runs[i:i + pack]) for i in range(0, len(runs), pack)]
        for start in range(0, len(tasks), max_tasks):
            chunk = tuple(tasks[start:start + max_tasks])
            first = chunk[0][0]
            digest = short_hash(canonical_json(
                [first.sweep_id, pack, [[(s.run_key, s.run_dir) for s in t] for t in chunk]]), 8)
            plans.append(ArrayPlan(first.sweep_id, f"a{first.num}x{digest}", slurm_dir,
                                   resources, chunk, pack, limits.node_cpus,
                                   display_name(first, settings)))
    return plans


def time_limit(plan: ArrayPlan, settings: SlurmSettings) -> int:
    """Minutes per array task: the per-run limit (provider.time_min, else the runs' own)
    times the runs of the fullest task, since a packed task runs its runs one by one."""
    per_run = settings.time_min or plan.resources.time_min
    return per_run * max(len(task) for task in plan.tasks)


def signal_grace(plan: ArrayPlan, settings: SlurmSettings) -> int:
    """Seconds before the limit for the checkpoint signal; at most half of a short limit."""
    return arrays.signal_grace(settings.signal_grace_s, time_limit(plan, settings) * 60)


def log_pattern(plan: ArrayPlan) -> str:
    """Slurm's own log of each task: `logs/%A_%a.log` for an array, `logs/%j.log` for a
    single task (submitit submits a batch of one as a plain job); either way
    `logs/<job id>.log`."""
    return os.path.join(plan.log_dir, "%A_%a.log" if len(plan.tasks) > 1 else "%j.log")


def executor_parameters(plan: ArrayPlan, settings: SlurmSettings, python: str) -> dict[str, Any]:
    """What `SlurmExecutor.update_parameters` gets for one array: submitit's own parameters
    by their names, every other sbatch option under `additional_parameters` (which also
    override two submitit defaults: the checkpoint signal goes to the batch shell, where
    hpcorch's task runs without srun, and the log goes to `logs/`)."""
    res = plan.resources
    options: dict[str, Any] = {
        "job_name": plan.job_name,
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "time": time_limit(plan, settings),
    }
    # nodes / ntasks / cpus exactly as the srun launch wrapper (hpcorch.launch) expects them.
    for arg in slurm_allocation_args(res, plan.node_cpus):
        key, _, value = arg.lstrip("-").partition("=")
        options[key.replace("-", "_")] = int(value) if value.isdigit() else (value or True)
    options |= {
        "gpus_per_node": res.gpus or None,
        "mem": sbatch_mem(res.mem_gb) if res.mem_gb else None,
        "constraint": settings.constraint,
        "exclusive": True if settings.exclusive else None,
        "exclude": settings.exclude,
    }
    options.update(sorted(normalized_extra(settings.extra).items()))
    known = sbatch_parameters()
    named = {k: v for k, v in options.items() if v is not None and k in known}
    additional = {k: v for k, v in options.items() if v is not None and k not in known}
    grace = signal_grace(plan, settings)
    additional |= {
        "chdir": plan.slurm_dir,
        "output": log_pattern(plan),
        "signal": f"B:{PREEMPT_SIGNAL}@{grace}",
        # Always requeueable: a preempted job is requeued whatever max_requeues says (that
        # budget is for time limits, spent through submitit's checkpoint-and-requeue).
        "requeue": True,
    }
    return {
        **named,
        "signal_delay_s": grace,
        "array_parallelism": settings.array_throttle or len(plan.tasks),
        "use_srun": False,  # the task starts srun steps itself, for runs of several ranks
        "stderr_to_stdout": True,  # one task log; every run keeps its own two files
        "setup": setup_lines(plan, settings, python),
        "additional_parameters": additional,
    }


def sbatch_mem(mem_gb: float) -> str:
    """`--mem` of a memory in GB, as submitit's `mem_gb` gives it (whole GB, else MB)."""
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def setup_lines(plan: ArrayPlan, settings: SlurmSettings, python: str) -> list[str]:
    """The script's setup section: what the array runs (as comments), then provider.setup."""
    runs = plan.runs
    lines = [f"# hpcorch sweep {plan.sweep_id}: {len(runs)} run(s) in {len(plan.tasks)} "
             f"array task(s), {plan.pack} per task; submitit runs hpcorch's task for each "
             "index (hpcorch.providers.slurm.task.SubmititTask)",
             f"# array index -> runs (num run_key run_dir); as data in {plan.map_path}"]
    for index, task in enumerate(plan.tasks):
        for spec in task:
            lines.append(f"#   {index}: #{spec.num} {spec.run_key} {_printable(spec.run_dir)}")
    lines += _step_lines(plan, settings, python)
    if settings.setup:
        lines += ["# provider.setup", *settings.setup]
    return lines


def _step_lines(plan: ArrayPlan, settings: SlurmSettings, python: str) -> list[str]:
    """Comment lines with the exact srun step of every run that has several ranks."""
    task_map = map_data(plan, settings)
    steps = [(spec, step_argv(spec, task_map, python)) for spec in plan.runs]
    steps = [(spec, argv) for spec, argv in steps if argv != list(spec.command)]
    if not steps:
        return []
    lines = ["# MPI: the task starts each run as one srun step of this allocation, in the "
             "run's workdir, with HPCORCH_SPEC=<run_dir>/.hpcorch/spec.json (every rank reads "
             "the same seed)"]
    lines += [f"#   #{spec.num}: {_printable(shlex.join(argv))}" for spec, argv in steps]
    return lines


def _printable(text: str) -> str:
    """Text safe inside a `#` comment line: control characters escaped, never a newline."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def map_data(plan: ArrayPlan, settings: SlurmSettings) -> dict[str, Any]:
    """The map file's content: what the array task (hpcorch.providers.slurm.task) reads."""
    return {
        **arrays.map_header(plan.sweep_id, plan.job_name, plan.pack, plan.tasks),
        "warm": settings.warm,
        "srun": settings.srun,
        "srun_args": list(settings.srun_args),
        "max_requeues": settings.max_requeues,
        "requeue_on_timeout": settings.requeue_on_timeout,
        "grace_s": signal_grace(plan, settings),
        "node_cpus": plan.node_cpus,
    }


def task_runs(data: dict[str, Any], index: int) -> list[tuple[str, str]]:
    """(run key, run dir) of each run that array index `index` of a map file runs."""
    return arrays.task_runs(data, index)
