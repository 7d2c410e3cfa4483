"""The data that crosses layer boundaries: run specs, resources, handles and states.

Everything here is a frozen dataclass or an enum and round-trips through JSON,
because a RunSpec is what a job receives instead of a pickled process.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class RunState(str, Enum):
    """Where a run is in its life. Terminal states never change again (except on rerun)."""

    PENDING = "PENDING"
    """Planned, not yet handed to a provider."""
    SUBMITTED = "SUBMITTED"
    """Accepted by the provider, waiting for resources."""
    RUNNING = "RUNNING"
    """Executing."""
    SUCCEEDED = "SUCCEEDED"
    """Finished and wrote its record; never run again unless forced."""
    FAILED = "FAILED"
    """Finished with an error; carries a FailureContext."""
    CANCELLED = "CANCELLED"
    """Stopped by a person or by an interrupted sweep; resume runs it again."""
    TIMEOUT = "TIMEOUT"
    """Killed at its time limit."""
    PREEMPTED = "PREEMPTED"
    """Taken off its resources and requeued by the engine; not a failure."""
    SKIPPED = "SKIPPED"
    """Not run because an identical run (same run key) already SUCCEEDED."""
    UNKNOWN = "UNKNOWN"
    """The engine no longer knows the job and no record says how it ended."""

    @property
    def terminal(self) -> bool:
        """True when the run will not change state by itself any more."""
        return self in _TERMINAL

    @property
    def ok(self) -> bool:
        """True for the states whose results can be used."""
        return self in (RunState.SUCCEEDED, RunState.SKIPPED)


_TERMINAL = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.TIMEOUT,
        RunState.SKIPPED,
        RunState.UNKNOWN,
    }
)


#: The least memory a run may ask for: 1 MiB, the unit schedulers count in.
MIN_MEM_GB = 1 / 1024


@dataclass(frozen=True)
class Resources:
    """What one run needs. Providers translate it into their own terms."""

    cpus: int = 1
    """CPU cores per task."""
    gpus: int = 0
    """GPUs per node."""
    mem_gb: float | None = None
    """Memory per node in GiB; None leaves it to the provider's default."""
    time_min: int = 60
    """Wall-clock limit in minutes."""
    nodes: int = 1
    """Nodes the ranks are spread over."""
    tasks: int = 0
    """Total ranks (`resources.tasks=N`); 0 means nodes * tasks_per_node. More than one
    rank makes the run an MPI program (see hpcorch.launch)."""
    tasks_per_node: int = 0
    """Most ranks on one node; 0 means ceil(tasks / nodes), or 1 when tasks is 0 too."""
    oversubscribe: bool = False
    """Allow more ranks than the machine has usable cores (local provider); off, a run of
    more ranks than cores is refused before anything starts."""

    def __post_init__(self) -> None:
        # Normalise once, so every consumer sees concrete counts and a spec read back
        # from JSON (both already set) stays exactly the same.
        if self.nodes >= 1 and self.tasks >= 0 and self.tasks_per_node >= 0:
            per_node = self.tasks_per_node or -(-self.tasks // self.nodes) or 1
            object.__setattr__(self, "tasks_per_node", per_node)
            object.__setattr__(self, "tasks", self.tasks or self.nodes * per_node)

    def validate(self, prefix: str) -> None:
        """Range checks, called by parse_settings: counts positive and consistent, memory
        and time limits that a scheduler reads as what was meant (`--mem=0` is a whole
        node's memory, `--time=0` no limit at all)."""
        import math

        from hpcorch.errors import ConfigError

        for key in ("cpus", "nodes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{prefix}.{key}", getattr(self, key), "must be >= 1")
        # Negative counts first: they keep __post_init__ from deriving the other count,
        # which would then be blamed with its harmless 0.
        for key in ("tasks_per_node", "tasks"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{prefix}.{key}", getattr(self, key),
                                  "must be >= 1, or 0 to derive it from the other counts")
        if self.gpus < 0:
            raise ConfigError(f"{prefix}.gpus", self.gpus, "must be >= 0")
        if self.mem_gb is not None and not (math.isfinite(self.mem_gb)
                                            and self.mem_gb >= MIN_MEM_GB):
            raise ConfigError(f"{prefix}.mem_gb", self.mem_gb,
                              "must be a finite number of GiB of at least 1/1024 (1 MiB), "
                              "or null for the provider's default")
        if self.time_min < 1:
            raise ConfigError(f"{prefix}.time_min", self.time_min,
                              "must be a whole number of minutes >= 1")
        if not self.nodes <= self.tasks <= self.nodes * self.tasks_per_node:
            raise ConfigError(f"{prefix}.tasks", self.tasks,
                              f"must be between nodes ({self.nodes}) and nodes * tasks_per_node "
                              f"({self.nodes * self.tasks_per_node}): every node runs >= 1 rank")

    def ranks_per_node(self) -> tuple[int, ...]:
        """How the ranks fill the nodes: tasks_per_node each, the remainder on the last."""
        counts: list[int] = []
        left = self.tasks
        for _ in range(self.nodes):
            counts.append(min(self.tasks_per_node, left - (self.nodes - len(counts) - 1)))
            left -= counts[-1]
        return tuple(counts)


def fields_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a dict for serialising: nested dataclasses become dicts, every other
    value is shared, not copied (`dataclasses.asdict` deep-copies a run's whole config,
    a large part of a short run's bookkeeping)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = fields_dict(value)
        out[f.name] = value
    return out


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to run one job anywhere, as data.

    `command` is the portable artifact: the argv that runs this job from a
    fresh process (`python train.py <overrides> hydra.run.dir=<run_dir>`).
    """

    run_key: str
    sweep_id: str
    num: int
    overrides: tuple[str, ...]
    config: dict[str, Any]
    seed: int
    run_dir: str
    command: tuple[str, ...]
    resources: Resources = field(default_factory=Resources)
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    """Directory the command starts in (the submitting directory); empty = run_dir."""
    image: str | None = None
    code_version: str = ""
    stage: str = "main"
    upstream: tuple[tuple[str, str, str], ...] = ()
    """The upstream runs this run consumes in a pipeline: (stage, run key, run dir) each.
    Their keys are part of this run's key; the job checks their records before it starts."""
    priority: int = 0
    """Submission order: higher first (`hpcorch.priority`, per sweep, stage or run)."""
    attempt: int = 0
    """0 for the first attempt; each retry or re-run of a failed run adds one."""
    retry: dict[str, Any] = field(default_factory=dict)
    """The retry policy this run was planned under (`hpcorch.retry`), kept in its record."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (sharing this spec's values); `RunSpec.from_dict` reverses it."""
        return fields_dict(self)

    def to_json(self) -> str:
        """Canonical JSON text of this spec."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Rebuild a spec written by `to_dict` (lists become tuples again)."""
        values = dict(data)
        values["resources"] = Resources(**values.get("resources", {}))
        for name in ("overrides", "command"):
            values[name] = tuple(values.get(name, ()))
        values["upstream"] = tuple(
            (str(st), str(key), str(d)) for st, key, d in values.get("upstream", ()))
        values["env"] = tuple((str(k), str(v)) for k, v in values.get("env", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class ResourceLimits:
    """The most a provider's engine can give one run (`Provider.limits`); None: no limit
    known. A run that could never fit is refused before submission, and the retry
    policy's escalation never goes above them."""

    where: str
    """What the limits are of, for messages: `partition debug`, `this machine`."""
    max_mem_gb: float | None = None
    """Memory of one node (Slurm: MaxMemPerNode, else the largest node's RealMemory)."""
    max_time_min: int | None = None
    """Longest time limit (Slurm: the partition's MaxTime)."""
    max_cpus: int | None = None
    """CPUs of the largest node (cpus per task x tasks per node must fit)."""
    max_nodes: int | None = None
    """Nodes one run may span."""

    def violations(self, resources: Resources) -> list[tuple[str, object, str]]:
        """(setting, value, allowed) for every way `resources` can never fit."""
        found: list[tuple[str, object, str]] = []
        if self.max_mem_gb is not None and resources.mem_gb is not None \
                and resources.mem_gb > self.max_mem_gb + 1e-9:
            found.append(("resources.mem_gb", resources.mem_gb,
                          f"{self.where} allows at most {self.max_mem_gb:g} GiB per node"))
        if self.max_time_min is not None and resources.time_min > self.max_time_min:
            found.append(("resources.time_min", resources.time_min,
                          f"{self.where} allows at most {self.max_time_min} minutes"))
        # CPUs of one task only: more ranks than cores is the provider's call (Slurm
        # overcommits them, provider=local asks for resources.oversubscribe).
        if self.max_cpus is not None and resources.cpus > self.max_cpus:
            found.append(("resources.cpus", resources.cpus,
                          f"{self.where} has at most {self.max_cpus} CPUs per node"))
        if self.max_nodes is not None and resources.nodes > self.max_nodes:
            found.append(("resources.nodes", resources.nodes,
                          f"{self.where} allows at most {self.max_nodes} nodes"))
        return found


@dataclass(frozen=True)
class RunHandle:
    """How a provider finds one submitted run again."""

    provider: str
    run_key: str
    job_id: str


class FailureClass(str, Enum):
    """Why a run failed, as the retry policy reads it (`hpcorch.retry`)."""

    OOM = "OOM"
    """Killed for memory: the engine's limit or the kernel's OOM killer (MemoryError too)."""
    TIMEOUT = "TIMEOUT"
    """Reached its time limit without a checkpoint to resume from."""
    PREEMPTED = "PREEMPTED"
    """Taken off its resources by the engine and not requeued by it."""
    NODE_FAIL = "NODE_FAIL"
    """Its node (or the engine's worker process) died under it."""
    APP_ERROR = "APP_ERROR"
    """The research code raised or exited non-zero."""
    SUBMIT_TRANSIENT = "SUBMIT_TRANSIENT"
    """The engine refused the submission for a passing reason (socket time-out)."""
    CANCELLED = "CANCELLED"
    """Stopped on request (a person, an interrupted sweep, a failed upstream run)."""
    LOST = "LOST"
    """The engine no longer knows the job and no record says how it ended."""
    OTHER = "OTHER"
    """None of the above could be told (the reason says what is known)."""


@dataclass(frozen=True)
class FailureContext:
    """Why a run did not succeed, with what a person needs to go and look."""

    provider: str
    job_id: str = ""
    node: str = ""
    exit_code: int | None = None
    signal: int | None = None
    reason: str = ""
    stderr_tail: str = ""
    failure_class: FailureClass | None = None
    """What kind of failure it was (None: not classified by the provider; the
    orchestrator then classifies it from the state and the record)."""
    peak_mem_gb: float | None = None
    """The most memory the run was seen to hold, where the engine measured it."""

    def __post_init__(self) -> None:
        if isinstance(self.failure_class, str) and not isinstance(self.failure_class,
                                                                  FailureClass):
            object.__setattr__(self, "failure_class", FailureClass(self.failure_class))

    def one_line(self) -> str:
        """`[local job=1234 node=host] exit=1: ValueError: ...`"""
        where = " ".join(
            p for p in (self.provider, f"job={self.job_id}" if self.job_id else "",
                        f"node={self.node}" if self.node else "") if p
        )
        how = []
        if self.exit_code is not None:
            how.append(f"exit={self.exit_code}")
        if self.signal is not None:
            how.append(f"signal={self.signal}")
        last = self.reason or (self.stderr_tail.strip().splitlines() or [""])[-1]
        return f"[{where}] {' '.join(how)}: {last}".replace(" :", ":")


@dataclass(frozen=True)
class RunStatus:
    """A provider's answer for one handle."""

    handle: RunHandle
    state: RunState
    context: FailureContext | None = None
