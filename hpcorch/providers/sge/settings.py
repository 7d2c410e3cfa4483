"""`provider=sge` settings: a typed, validated view of the `provider` config node.

Resources (slots, memory, run time) come from each run's `Resources`; these
settings say where and how Grid Engine runs them. Every value is checked
before anything is submitted.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from hpcorch.errors import ConfigError
from hpcorch.settings import require

#: qsub options hpcorch sets itself; `qsub_args` may not set them (one value, one source).
MANAGED_OPTIONS: dict[str, str] = {
    "-N": "set by hpcorch (the job name carries the sweep id)",
    "-t": "set by hpcorch (one array task per run, or per pack of runs)",
    "-tc": "use provider.array_throttle",
    "-q": "use provider.queue",
    "-P": "use provider.project",
    "-pe": "use resources.cpus (and provider.pe)",
    "-o": "set by hpcorch (per-task logs under <sweep dir>/.hpcorch/sge/logs)",
    "-e": "set by hpcorch (the run's stderr is <run dir>/.hpcorch/stderr.log)",
    "-j": "set by hpcorch",
    "-wd": "set by hpcorch",
    "-cwd": "set by hpcorch",
    "-b": "hpcorch submits a job script",
    "-S": "set by hpcorch (/bin/bash)",
    "-terse": "set by hpcorch",
    "-sync": "hpcorch watches jobs itself",
}


def _no_newline(key: str, value: str) -> None:
    # A newline in a job script line would start another shell command.
    require("\n" not in value and "\r" not in value, key, value, "must be a single line")


@dataclass(frozen=True)
class SgeSettings:
    """`provider=sge` settings (site profiles extend `provider/sge.yaml`)."""

    name: Literal["sge"] = "sge"
    queue: str | None = None
    """Cluster queue (`qsub -q`); null: any queue that fits."""
    project: str | None = None
    """Project to charge (`qsub -P`)."""
    pe: str = "smp"
    """Parallel environment for runs of `resources.cpus` > 1 (`-pe <pe> <cpus>`); it must
    place all slots on one host (allocation_rule $pe_slots)."""
    time_min: int | None = None
    """Run-time limit of one run in minutes; null: the run's `resources.time_min`. A packed
    array task gets `pack` times as long (`-l h_rt`)."""
    memory: Literal["h_vmem", "none"] = "h_vmem"
    """How `resources.mem_gb` is asked for: h_vmem (per slot, enforced as an address-space
    limit, RLIMIT_AS, and by execd on the job's summed use) or none (not asked for)."""
    setup: tuple[str, ...] = ()
    """Shell lines run before the runs in every job (`module load ...`, env activation)."""
    qsub_args: tuple[str, ...] = ()
    """More qsub options as an argv list, e.g. ['-l', 'arch=lx-amd64', '-m', 'e']."""
    array_throttle: int | None = None
    """At most this many array tasks at once (`qsub -tc N`); null: no limit."""
    rerun: bool = True
    """Let Grid Engine start a task again when it reschedules it (`qsub -r y`: its host
    went down, or `qmod -rj`); the runs it had finished are not run again."""
    max_requeues: int = 3
    """How often a run that reaches its time limit is requeued to resume (as on Slurm)."""
    requeue_on_timeout: Literal["checkpointed", "always", "never"] = "checkpointed"
    """Which runs that reach their time limit are requeued: checkpointed = only runs that
    can resume (they saved an hpcorch.checkpoint, or catch its signal and then save or
    stop), always = every run, never = none; the others end TIMEOUT."""
    signal_grace_s: int = 90
    """Seconds before the run-time limit (`h_rt`) at which a run gets hpcorch.checkpoint's
    SIGUSR1 to save a checkpoint (at most half the limit)."""
    pack: int = 1
    """Runs per array task, one after the other (for sweeps of many short runs)."""
    python: str | None = None
    """Interpreter that runs hpcorch's array task; null: the one submitting the sweep."""
    poll_interval: float = 0.25
    """Seconds between checks of the runs' task-state files (cheap, no scheduler call)."""
    max_poll_interval: float = 2.0
    """The longest pause between two task-state file checks."""
    query_interval: float = 2.0
    """Seconds before the first scheduler query (qstat) after a submission."""
    max_query_interval: float = 30.0
    """Scheduler queries back off (x1.5) up to this many seconds apart."""

    def validate(self, prefix: str) -> None:
        """Range checks and the `qsub_args` / `setup` checks."""
        require(self.pack >= 1, f"{prefix}.pack", self.pack, "must be >= 1")
        require(self.max_requeues >= 0, f"{prefix}.max_requeues", self.max_requeues,
                "must be >= 0")
        require(self.signal_grace_s >= 1, f"{prefix}.signal_grace_s", self.signal_grace_s,
                "must be >= 1")
        for key in ("time_min", "array_throttle"):
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
        for key in ("queue", "project", "pe", "python"):
            value = getattr(self, key)
            if value is not None:
                require(bool(value.strip()), f"{prefix}.{key}", value, "must not be empty")
                _no_newline(f"{prefix}.{key}", value)
                if key != "python":
                    require(" " not in value and not value.startswith("-"), f"{prefix}.{key}",
                            value, "must be one Grid Engine name (no spaces, no leading '-')")
        for i, line in enumerate(self.setup):
            key = f"{prefix}.setup[{i}]"
            _no_newline(key, line)
            try:
                shlex.split(line, comments=True)
            except ValueError as exc:
                raise ConfigError(key, line, f"is not a complete shell line ({exc})") from None
        for i, arg in enumerate(self.qsub_args):
            key = f"{prefix}.qsub_args[{i}]"
            _no_newline(key, arg)
            if arg in MANAGED_OPTIONS:
                raise ConfigError(key, arg, f"not allowed in qsub_args: {MANAGED_OPTIONS[arg]}")
