"""`provider=slurm` settings: a typed, validated view of the `provider` config node.

Resources (nodes, tasks, cpus, gpus, memory, time) come from each run's
`Resources`; these settings say how and where the cluster runs them. Every
value is checked before anything is submitted, so a typo fails on the login
node, not after an hour in the queue.
"""

from __future__ import annotations

import difflib
import functools
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import submitit

from hpcorch.errors import ConfigError
from hpcorch.settings import require

#: sbatch options hpcorch sets itself (from the settings above or from Resources);
#: `extra` may not set them, so one value never has two sources.
MANAGED_OPTIONS: dict[str, str] = {
    "job_name": "use provider.job_name (hpcorch appends .hpcorch-<sweep id>-<token>)",
    "name": "use provider.job_name (hpcorch appends .hpcorch-<sweep id>-<token>)",
    "partition": "use provider.partition",
    "account": "use provider.account",
    "qos": "use provider.qos",
    "time": "use provider.time_min or resources.time_min",
    "constraint": "use provider.constraint",
    "exclusive": "use provider.exclusive",
    "exclude": "use provider.exclude",
    "nodes": "use resources.nodes",
    "ntasks_per_node": "use resources.tasks_per_node",
    "cpus_per_task": "use resources.cpus",
    "gpus_per_node": "use resources.gpus",
    "num_gpus": "use resources.gpus",
    "mem": "use resources.mem_gb",
    "setup": "use provider.setup",
    "srun_args": "use provider.srun_args",
    "use_srun": "use provider.srun",
    "array_parallelism": "use provider.array_throttle",
    "signal_delay_s": "use provider.signal_grace_s",
    "teardown": "not supported: a packed task's runs end before the job does",
    "stderr_to_stdout": "not supported: every run keeps its stdout and stderr apart",
    "additional_parameters": "write the sbatch options themselves under provider.extra",
    "folder": "set by hpcorch (<sweep dir>/.hpcorch/slurm)",
    "map_count": "set by hpcorch (the array size)",
}

#: What `provider.job_name` may be: sbatch takes any name, squeue and sacct show it
#: best plain; no `.`, which separates it from hpcorch's part of the job name.
JOB_NAME_RE = re.compile(r"[A-Za-z0-9_+-]{1,64}")

#: submitit parameters that are not sbatch options: hpcorch sets what they do itself.
_NOT_SBATCH = frozenset({"folder", "command", "map_count", "additional_parameters",
                         "teardown", "stderr_to_stdout"})


class OfflineSlurmExecutor(submitit.SlurmExecutor):
    """submitit's SlurmExecutor where `srun` may be missing (a laptop validating a config
    or rendering a dry run): only its parameter checks are used, nothing is submitted."""

    @classmethod
    def affinity(cls) -> int:
        return 1


@functools.lru_cache(maxsize=1)
def sbatch_parameters() -> frozenset[str]:
    """The sbatch options submitit names itself (underscore form), as its public
    `update_parameters` lists them when refusing an unknown one (never mirrored here)."""
    probe = OfflineSlurmExecutor(folder="/nonexistent")
    try:
        probe.update_parameters(**{"hpcorch probe": None})
    except ValueError as exc:
        names = re.findall(r"^\s*- (\w+) \(default", str(exc), flags=re.M)
        return frozenset(names) - _NOT_SBATCH
    return frozenset()  # pragma: no cover - a submitit that accepts anything


def check_with_submitit(named: Mapping[str, Any], additional: Mapping[str, Any],
                        prefix: str = "provider.extra") -> None:
    """Let submitit's public `update_parameters` judge `extra`; its refusal becomes one
    ConfigError naming the setting, the value and submitit's reason."""
    for key, value in {**named, "additional_parameters": dict(additional)}.items():
        try:
            OfflineSlurmExecutor(folder="/nonexistent").update_parameters(**{key: value})
        except (ValueError, TypeError, AssertionError) as exc:
            shown = additional if key == "additional_parameters" else value
            where = prefix if key == "additional_parameters" else f"{prefix}.{key}"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(where, shown, f"refused by submitit ({reason}); any sbatch "
                              "option by its long name is allowed, with a string, a number "
                              "or true") from None


def _no_newline(key: str, value: str) -> None:
    # A newline would end the #SBATCH line and start a shell line in the script.
    require("\n" not in value and "\r" not in value, key, value, "must be a single line")


@dataclass(frozen=True)
class SlurmSettings:
    """`provider=slurm` settings (site profiles extend `provider/slurm.yaml`)."""

    name: Literal["slurm"] = "slurm"
    job_name: str | None = None
    """What squeue shows first (`--job-name=<job_name>.hpcorch-<sweep id>-<token>`; the
    rest finds a sweep's jobs again); null: the Hydra job name (the app script's stem, or
    `hydra.job.name` when given on the command line)."""
    partition: str | None = None
    """Partition (`--partition`); null: the cluster's default partition."""
    account: str | None = None
    """Account to charge (`--account`)."""
    qos: str | None = None
    """Quality of service (`--qos`)."""
    time_min: int | None = None
    """Time limit of one run in minutes; null: the run's `resources.time_min`. A packed
    array task gets `pack` times as long (`--time`)."""
    constraint: str | None = None
    """Node features (`--constraint`), e.g. `a100&ib`."""
    exclusive: bool = False
    """Whole nodes only (`--exclusive`)."""
    exclude: str | None = None
    """Nodes not to run on (`--exclude`), e.g. `node[01-04]`."""
    setup: tuple[str, ...] = ()
    """Shell lines run before the runs in every job (`module load ...`, env activation)."""
    srun: Literal["auto", "always", "never"] = "auto"
    """Start each run through srun: auto = only runs of more than one task (MPI)."""
    srun_args: tuple[str, ...] = ()
    """Extra srun arguments (an argv list, e.g. ['--mpi=pmix'])."""
    array_throttle: int | None = None
    """At most this many array tasks at once (`--array=...%N`); null: no limit."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More sbatch options by submitit's names, e.g. {mail_type: END, gres: 'gpu:1'}."""
    max_requeues: int = 3
    """How often a run that reaches its time limit is requeued to resume. Preemption does
    not count (SLURM_RESTART_COUNT does): a preempted job is always requeued."""
    requeue_on_timeout: Literal["checkpointed", "always", "never"] = "checkpointed"
    """Which runs that reach their time limit are requeued, as submitit does: checkpointed =
    only runs that can resume (they saved an hpcorch.checkpoint, or catch its signal and then
    save or stop), always = every run (one without a checkpoint starts from zero again),
    never = none; the others end TIMEOUT."""
    signal_grace_s: int = 90
    """Seconds before the time limit at which a job gets SIGUSR2 (submitit's signal; the run
    gets hpcorch.checkpoint's SIGUSR1) to save a checkpoint."""
    pack: int = 1
    """Runs per array task, one after the other: > 1 starts the app once per task and forks
    per run (for sweeps of many short runs)."""
    warm: bool = True
    """With pack > 1: import the app once and fork per run (else one interpreter per run)."""
    python: str | None = None
    """Interpreter that runs hpcorch's array task; null: the one submitting the sweep."""
    max_array_size: int | None = None
    """Lower the cluster's MaxArraySize (e.g. a QOS limit); null: the cluster's value."""
    poll_interval: float = 0.25
    """Seconds between checks of the runs' record files (cheap, no scheduler call)."""
    max_poll_interval: float = 2.0
    """The longest pause between two record-file checks."""
    query_interval: float = 5.0
    """Seconds before the first scheduler query (sacct/squeue) after a submission."""
    max_query_interval: float = 60.0
    """Scheduler queries back off (x1.5) up to this many seconds apart."""

    def validate(self, prefix: str) -> None:
        """Range checks and the `extra` / `setup` / `srun_args` checks."""
        require(self.max_requeues >= 0, f"{prefix}.max_requeues", self.max_requeues,
                "must be >= 0")
        for key in ("pack", "signal_grace_s"):
            value = getattr(self, key)
            require(value >= 1, f"{prefix}.{key}", value, "must be >= 1")
        for key in ("time_min", "array_throttle", "max_array_size"):
            value = getattr(self, key)
            require(value is None or value >= 1, f"{prefix}.{key}", value,
                    "must be a positive integer or null")
        for key in ("poll_interval", "query_interval"):
            value = getattr(self, key)
            require(value > 0, f"{prefix}.{key}", value, "must be > 0 seconds")
        require(self.max_poll_interval >= self.poll_interval, f"{prefix}.max_poll_interval",
                self.max_poll_interval, f"must be >= poll_interval ({self.poll_interval})")
        require(self.max_query_interval >= self.query_interval, f"{prefix}.max_query_interval",
                self.max_query_interval, f"must be >= query_interval ({self.query_interval})")
        for key in ("partition", "account", "qos", "constraint", "exclude", "python"):
            value = getattr(self, key)
            if value is not None:
                require(bool(value.strip()), f"{prefix}.{key}", value, "must not be empty")
                _no_newline(f"{prefix}.{key}", value)
        if self.job_name is not None:
            require(bool(JOB_NAME_RE.fullmatch(self.job_name)), f"{prefix}.job_name",
                    self.job_name, "must be 1-64 letters, digits, _, + or - (hpcorch appends "
                    ".hpcorch-<sweep id>-<token>), or null for the Hydra job name")
        for i, line in enumerate(self.setup):
            _check_setup_line(f"{prefix}.setup[{i}]", line)
        for i, arg in enumerate(self.srun_args):
            _no_newline(f"{prefix}.srun_args[{i}]", arg)
        normalized_extra(self.extra, f"{prefix}.extra")


def _check_setup_line(key: str, line: str) -> None:
    """A setup line is the user's own shell line: one line, with balanced quotes."""
    _no_newline(key, line)
    try:
        shlex.split(line, comments=True)
    except ValueError as exc:
        raise ConfigError(key, line, f"is not a complete shell line ({exc})") from None


def normalized_extra(extra: Mapping[str, Any], prefix: str = "provider.extra") -> dict[str, Any]:
    """`extra` with names in submitit's underscore form, validated; False/None dropped.

    Any sbatch option is allowed (those submitit names itself as its parameters, the
    rest as its `additional_parameters`), and submitit's `update_parameters` judges them.
    hpcorch refuses only what it sets itself (naming the setting to use instead), values
    that would not fit on one #SBATCH line, and near-misses of submitit's names (a typo
    would otherwise reach sbatch as an option of its own).
    """
    known = sbatch_parameters()
    out: dict[str, Any] = {}
    for raw_key, value in extra.items():
        key = str(raw_key).strip().lstrip("-").replace("-", "_")
        full = f"{prefix}.{raw_key}"
        if key in MANAGED_OPTIONS:
            raise ConfigError(full, value, f"not allowed in extra: {MANAGED_OPTIONS[key]}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise ConfigError(full, value, "must be an sbatch long option name (letters, "
                              "digits, - or _), e.g. reservation, gpu_bind, mail_type")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.85)
            if close:
                raise ConfigError(full, value, f"unknown sbatch option; did you mean "
                                  f"{', '.join(close)}? known to submitit: "
                                  f"{', '.join(sorted(known - set(MANAGED_OPTIONS)))}; any "
                                  "other sbatch option passes as additional_parameters")
        if value is None or value is False:
            continue
        if isinstance(value, (list, tuple, dict)):
            raise ConfigError(full, value, "must be a string, a number or true")
        _no_newline(full, str(value))
        out[key] = value
    check_with_submitit({k: v for k, v in out.items() if k in known},
                        {k: v for k, v in out.items() if k not in known}, prefix)
    return out
