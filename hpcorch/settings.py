"""Typed settings parsed from config nodes, with errors that name key, value and what is allowed.

Hydra hands us plain mappings; each layer declares a frozen dataclass of the
settings it accepts and `parse_settings` turns the mapping into it, refusing
unknown keys (with a did-you-mean) and wrong types before anything runs. A
field typed as another settings dataclass is a nested node, parsed the same
way under its dotted key (`hpcorch.repro.strict`).

`hpcorch`'s own node and its `repro` node live here, in core, so that every
layer reads them typed from one parse (`HpcorchSettings.repro` is a
`ReproSettings`); `hpcorch.repro.settings` re-exports the latter.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from hpcorch.errors import ConfigError
from hpcorch.identity import DEFAULT_KEY_EXCLUDE
from hpcorch.spec import Resources
from hpcorch.tolerance import parse_table

T = TypeVar("T")


def parse_settings(cls: type[T], values: Mapping[str, Any], prefix: str,
                   ignore: tuple[str, ...] = ()) -> T:
    """Build `cls` (a dataclass) from `values`, validating every key and value.

    `prefix` is the config path of the node (e.g. `provider`), used in messages.
    Keys in `ignore` are accepted and dropped. A field whose type is a dataclass is
    parsed recursively from its mapping (prefix `prefix.key`; absent: its defaults).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in ignore:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{prefix}.{key}", value,
                              f"unknown setting; {hint}allowed: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(f"{prefix}.{key}", value, hints[key])
    instance = cls(**kwargs)
    check = getattr(instance, "validate", None)
    if callable(check):
        check(prefix)
    return instance


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if origin in (tuple, list):
        return f"a list of {_describe(get_args(tp)[0])}"
    if origin in (dict, Mapping):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "must be a mapping of settings: "
                              + ", ".join(sorted(f.name for f in dataclasses.fields(tp))))
        return parse_settings(tp, value, key)
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(key, value, f"must be {_describe(tp)}")
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(key, value, f"must be {_describe(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(key, value, "must be null")
    if tp is Any:
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, f"must be {_describe(tp)}")
        inner = get_args(tp)[0]
        return tuple(_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(key, value, "must be a mapping")
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, value, "must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "must be a string")
    return value


def require(condition: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(key, value, allowed) unless `condition` holds."""
    if not condition:
        raise ConfigError(key, value, allowed)


#: Environment variables that size the thread pools of OpenMP, BLAS and numexpr.
THREAD_ENV_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)
#: cuBLAS needs a fixed workspace to be deterministic (read when cuBLAS initialises).
CUBLAS_ENV = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass(frozen=True)
class ReproSettings:
    """`hpcorch.repro` settings: determinism options and default tolerances.

    Under `hpcorch` so that they never enter a run key or a seed: they say how a
    run is checked and pinned, not what it computes.
    """

    strict: bool = False
    """Ask for bitwise determinism: torch deterministic algorithms, cuDNN without
    benchmarking, a fixed cuBLAS workspace, thread pools pinned (to `threads`, or 1)."""
    threads: int | None = None
    """Pin OpenMP/BLAS/torch thread pools to this many threads; null: 1 if strict, else leave."""
    tolerances: dict[str, Any] = field(default_factory=dict)
    """Default per-metric tolerances for `hpcorch baseline check` and `hpcorch compare`."""

    @property
    def pinned_threads(self) -> int | None:
        """The thread count to pin, or None to leave thread pools alone."""
        if self.threads is not None:
            return self.threads
        return 1 if self.strict else None

    def job_env(self) -> dict[str, str]:
        """Variables a job should start with: they only work if set before libraries load."""
        env: dict[str, str] = {}
        if self.pinned_threads is not None:
            env.update({var: str(self.pinned_threads) for var in THREAD_ENV_VARS})
        if self.strict:
            env[CUBLAS_ENV[0]] = CUBLAS_ENV[1]
        return env

    def validate(self, prefix: str) -> None:
        """threads >= 1; every tolerance well formed."""
        require(self.threads is None or self.threads >= 1, f"{prefix}.threads", self.threads,
                "must be a positive integer, or null")
        parse_table(self.tolerances, f"{prefix}.tolerances")


@dataclass(frozen=True)
class RetrySettings:
    """`hpcorch.retry`: how often a failed run is run again, by why it failed.

    Each failure class has its own budget; a retry of a memory kill raises only the
    memory, one of a time-limit kill only the time, both within the limits the provider
    reads from its engine (`Provider.limits`). A run that reached its time limit with a
    checkpoint is requeued by its provider instead (`provider.max_requeues`): not a retry.
    """

    memory: int = 1
    """Retries of a run killed for memory (OOM), each with more memory."""
    memory_factor: float = 2.0
    """A memory retry asks at least this many times the memory of the failed attempt."""
    peak_factor: float = 1.25
    """... and at least this many times the peak the engine measured, where it did."""
    time: int = 1
    """Retries of a run killed at its time limit with no checkpoint, each with more time."""
    time_factor: float = 2.0
    """A time retry asks this many times the time limit of the failed attempt."""
    preempted: int = 3
    """Runs again, same resources, after a preemption or node failure: a budget of its own."""
    app_error: int = 0
    """Retries of a run whose research code raised or exited non-zero (off by default:
    the same code fails the same way)."""
    submit: int = 4
    """Submissions tried again after a transient refusal (sbatch's socket time-outs)."""
    backoff_s: float = 2.0
    """First delay before a submission is tried again; doubled each time, full jitter."""
    backoff_max_s: float = 60.0
    """The longest delay before a submission is tried again."""

    def validate(self, prefix: str) -> None:
        """Budgets >= 0, factors > 1, delays > 0 and ordered."""
        for key in ("memory", "time", "preempted", "app_error", "submit"):
            require(getattr(self, key) >= 0, f"{prefix}.{key}", getattr(self, key),
                    "must be a number of retries >= 0")
        for key in ("memory_factor", "time_factor"):
            require(getattr(self, key) > 1, f"{prefix}.{key}", getattr(self, key),
                    "must be > 1 (a retry with no more than before fails the same way)")
        require(self.peak_factor >= 1, f"{prefix}.peak_factor", self.peak_factor,
                "must be >= 1")
        require(self.backoff_s > 0, f"{prefix}.backoff_s", self.backoff_s, "must be > 0")
        require(self.backoff_max_s >= self.backoff_s, f"{prefix}.backoff_max_s",
                self.backoff_max_s, f"must be >= backoff_s ({self.backoff_s:g})")


@dataclass(frozen=True)
class HpcorchSettings:
    """The `hpcorch` config node: how a sweep is orchestrated, whatever the provider."""

    rerun: bool = False
    """Run again even the runs whose run key already SUCCEEDED."""
    detach: bool = False
    """Return right after submission; follow the sweep with `hpcorch status|wait`."""
    dry_run: bool = False
    """Print what would be submitted and submit nothing."""
    progress: Literal["auto", "on", "off"] = "auto"
    """Live progress display: auto shows it only on a terminal."""
    home: str | None = None
    """Where the index lives (default: $HPCORCH_HOME or ./.hpcorch)."""
    key_exclude: tuple[str, ...] = field(default=DEFAULT_KEY_EXCLUDE)
    """Top-level config keys left out of run keys and seeds (they say where, not what)."""
    summary_metrics: int = 6
    """How many metrics the summary table shows per run."""
    snapshot: bool = True
    """Run fresh-interpreter jobs from a copy of the git-tracked code in the sweep dir."""
    repro: ReproSettings = field(default_factory=ReproSettings)
    """Determinism options and default tolerances (the `hpcorch.repro` node)."""
    retry: RetrySettings = field(default_factory=RetrySettings)
    """Which failed runs are run again, and how (the `hpcorch.retry` node)."""
    priority: int = 0
    """Submission order among runs: higher first. Per sweep, per pipeline stage, or per
    run (`hpcorch.priority=${...}` resolves in each run's own config)."""
    max_parallel: int | None = None
    """At most this many runs of the sweep queued or running at once, on any provider;
    null: no limit beyond the provider's own."""

    def validate(self, prefix: str) -> None:
        """Range checks beyond types."""
        require(self.max_parallel is None or self.max_parallel >= 1,
                f"{prefix}.max_parallel", self.max_parallel,
                "must be a positive integer, or null for no limit")
        require(self.summary_metrics >= 0, f"{prefix}.summary_metrics", self.summary_metrics,
                "must be >= 0")
        require("hydra" in self.key_exclude, f"{prefix}.key_exclude", list(self.key_exclude),
                "must contain 'hydra' (Hydra's bookkeeping is never part of a run key)")


def validate_config_nodes(cfg: Mapping[str, Any],
                          nodes: Mapping[str, type] | None = None) -> None:
    """Validate hpcorch's nodes of a composed config (a plain mapping), as a sweep does.

    `hpcorch` and `resources` are always checked; `nodes` adds more (config key ->
    settings dataclass), e.g. `{"provider": provider_class(name).Settings}` where the
    caller may import providers. hpcorch's config nodes are open to Hydra (a mistyped
    `hpcorch.detatch=true` composes), so this is where a typo becomes one ConfigError
    naming the key and the allowed ones. Raises ConfigError; returns nothing.
    """
    checks: dict[str, type] = {"hpcorch": HpcorchSettings, "resources": Resources,
                               **(nodes or {})}
    for name, cls in checks.items():
        value = cfg.get(name)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            allowed = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
            raise ConfigError(name, value, f"must be a mapping of settings: {allowed}")
        parse_settings(cls, value, name)
