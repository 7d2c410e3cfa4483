"""`provider=ray` settings, validated before anything starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hpcorch.jobenv import JOB_ENV
from hpcorch.settings import require

#: runtime_env keys hpcorch sets itself and so refuses from the config.
RESERVED_ENV_VARS = JOB_ENV


def runtime_env_fields() -> frozenset[str]:
    """The public runtime_env keys of the installed Ray (derived, never hand-mirrored)."""
    from ray.runtime_env import RuntimeEnv

    return frozenset(k for k in RuntimeEnv.known_fields if not k.startswith("_"))


@dataclass(frozen=True)
class RaySettings:
    """`provider=ray`: where the Ray cluster is and how a sweep is laid onto it."""

    name: Literal["ray"] = "ray"
    address: str | None = None
    """The cluster's dashboard / Jobs API (`http://127.0.0.1:8265`), `auto` (the local
    cluster, found as `ray.init(address="auto")` does; RAY_ADDRESS is honoured), or null:
    start a Ray head for this sweep and stop it afterwards."""
    mode: Literal["sweep", "job"] = "sweep"
    """sweep: one Ray job per batch whose driver runs every run as a named task (fast);
    job: one Ray job per run (seconds of start-up each; every run is a dashboard job)."""
    warm: bool = True
    """mode=sweep: start each run by forking a warm Ray worker (milliseconds) instead of
    a fresh `python train.py ...` (an interpreter start-up per run)."""
    runtime_env: dict[str, Any] = field(default_factory=dict)
    """Passed to Ray with every job (pip, working_dir, env_vars, ...); validated against
    the installed Ray's runtime_env fields."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Extra job metadata (strings), shown and searchable in the dashboard."""
    python: str | None = None
    """Interpreter the job's entrypoint runs with; null: this one (sys.executable)."""
    num_cpus: int | None = None
    """address=null: CPUs of the Ray started for the sweep; null: every usable core."""
    poll_interval: float = 0.5
    """Seconds between the first status queries (the orchestrator backs off; finished
    runs are seen sooner through their record files)."""
    max_poll_interval: float = 2.0
    """The longest wait between two status queries."""
    connect_timeout: float = 10.0
    """Seconds `check()` waits for the Jobs API (an unreachable address fails at once)."""
    start_timeout: float = 120.0
    """address=null: seconds the Ray started for the sweep may take to come up."""

    def validate(self, prefix: str) -> None:
        """Ranges, the address form and the runtime_env keys."""
        require(self.address is None or bool(self.address.strip()), f"{prefix}.address",
                self.address, "must be a URL like http://127.0.0.1:8265, 'auto', or null")
        if self.address is not None and "://" in self.address:
            scheme = self.address.split("://", 1)[0]
            require(scheme in ("http", "https", "ray"), f"{prefix}.address", self.address,
                    "must be an http(s):// dashboard URL, a ray:// client address, 'auto' "
                    "or host:port of the GCS")
        require(self.poll_interval > 0, f"{prefix}.poll_interval", self.poll_interval,
                "must be > 0")
        require(self.max_poll_interval >= self.poll_interval, f"{prefix}.max_poll_interval",
                self.max_poll_interval, f"must be >= poll_interval ({self.poll_interval})")
        require(self.connect_timeout > 0, f"{prefix}.connect_timeout", self.connect_timeout,
                "must be > 0")
        require(self.start_timeout > 0, f"{prefix}.start_timeout", self.start_timeout,
                "must be > 0")
        require(self.num_cpus is None or self.num_cpus >= 1, f"{prefix}.num_cpus", self.num_cpus,
                "must be a positive integer, or null for every usable core")
        for key, value in self.metadata.items():
            require(isinstance(value, (str, int, float, bool)), f"{prefix}.metadata.{key}", value,
                    "must be a string (or number)")
        self._validate_runtime_env(f"{prefix}.runtime_env")

    def _validate_runtime_env(self, prefix: str) -> None:
        allowed = runtime_env_fields()
        for key in self.runtime_env:
            require(key in allowed, f"{prefix}.{key}", self.runtime_env[key],
                    f"unknown runtime_env field; allowed: {', '.join(sorted(allowed))}")
        env_vars = self.runtime_env.get("env_vars", {})
        require(isinstance(env_vars, dict), f"{prefix}.env_vars", env_vars,
                "must be a mapping of names to strings")
        for name, value in env_vars.items():
            require(isinstance(value, str), f"{prefix}.env_vars.{name}", value, "must be a string")
            require(name not in RESERVED_ENV_VARS, f"{prefix}.env_vars.{name}", value,
                    "is set by hpcorch for every run (seeds and the spec path); leave it out")
        from ray.runtime_env import RuntimeEnv

        try:
            RuntimeEnv(**self.runtime_env)
        except Exception as exc:  # noqa: BLE001 - Ray's own validation, reported as config error
            require(False, prefix, self.runtime_env, f"Ray refuses it: {exc}")
