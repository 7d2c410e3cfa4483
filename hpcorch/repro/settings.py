"""The `hpcorch.repro` config node: determinism options and default tolerances.

    hpcorch:
      repro:
        strict: false      # deterministic algorithms (torch), thread pools pinned
        threads: null      # pin thread pools to N; null: 1 when strict, else untouched
        tolerances: {}     # default per-metric tolerances for baseline check / compare

Lives under `hpcorch` so that it never enters a run key or a seed: it says how
a run is checked and pinned, not what it computes. The class is defined in core
(`hpcorch.settings`), where `HpcorchSettings.repro` holds it typed; a sweep's
planner reads that object. A job process, which has only its config, parses
the node once with `repro_settings`.
"""

from __future__ import annotations

from typing import Any

from hpcorch.settings import (
    CUBLAS_ENV,
    THREAD_ENV_VARS,
    HpcorchSettings,
    ReproSettings,
    parse_settings,
)

__all__ = ["CUBLAS_ENV", "THREAD_ENV_VARS", "ReproSettings", "job_env_pairs", "repro_settings"]


def repro_settings(node: Any) -> ReproSettings:
    """The `hpcorch.repro` node (a ReproSettings, a DictConfig, a mapping or None), typed."""
    if isinstance(node, ReproSettings):
        return node
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if node is None:
        return ReproSettings()
    # Parsed as the sweep parses it, nested in `hpcorch`: the same keys in the same messages.
    return parse_settings(HpcorchSettings, {"repro": node}, "hpcorch").repro


def job_env_pairs(settings: ReproSettings) -> tuple[tuple[str, str], ...]:
    """`settings.job_env()` as RunSpec.env pairs (sorted: a RunSpec is compared and hashed)."""
    return tuple(sorted(settings.job_env().items()))
