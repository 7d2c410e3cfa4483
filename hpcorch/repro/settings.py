"""The `hpcorch.repro` config node: determinism options and default tolerances.

    hpcorch:
      repro:
        strict: false      # deterministic algorithms (torch), thread pools pinned
        threads: null      # pin thread pools to N; null: 1 when strict, else untouched
        tolerances: {}     # default per-metric tolerances for baseline check / compare

Lives under `hpcorch` so that it never enters a run key or a seed: it says how
a run is checked and pinned, not what it computes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpcorch.settings import parse_settings, require

#: Environment variables that size the thread pools of OpenMP, BLAS and numexpr.
THREAD_ENV_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)
#: cuBLAS needs a fixed workspace to be deterministic (read when cuBLAS initialises).
CUBLAS_ENV = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass(frozen=True)
class ReproSettings:
    """`hpcorch.repro` settings."""

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
        from hpcorch.repro.tolerances import parse_table

        require(self.threads is None or self.threads >= 1, f"{prefix}.threads", self.threads,
                "must be a positive integer, or null")
        parse_table(self.tolerances, f"{prefix}.tolerances")


def repro_settings(node: Any) -> ReproSettings:
    """Parse the `hpcorch.repro` node (a DictConfig, a mapping or None)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if node is None:
        return ReproSettings()
    if not isinstance(node, Mapping):
        from hpcorch.errors import ConfigError

        raise ConfigError("hpcorch.repro", node, "must be a mapping (strict, threads, tolerances)")
    return parse_settings(ReproSettings, dict(node), "hpcorch.repro")


def job_env_pairs(node: Any) -> tuple[tuple[str, str], ...]:
    """`ReproSettings.job_env()` as RunSpec.env pairs, from the `hpcorch.repro` node."""
    return tuple(sorted(repro_settings(node).job_env().items()))
