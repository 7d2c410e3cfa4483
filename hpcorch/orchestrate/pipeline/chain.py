"""Native dependencies: a stage submitted while its upstream stage is still queued.

Where a stage's provider can hold a submission until other jobs of its engine have
succeeded (`Capabilities.after_jobs`: Slurm's `--dependency=afterok:`) and can
detach (the engine keeps the runs), the pipeline submits that stage right after its
upstream stages, with the engine's dependency on their jobs: the engine starts it,
nobody has to watch. The driver still follows every stage to its end: an upstream
run that failed makes such a dependency one the engine can never satisfy, so the
driver cancels that submission, reports it, and submits the runs whose inputs did
succeed itself (the orchestrated way, which also mixes providers).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from hpcorch._hydra.sweep import hydra_quote, override_key
from hpcorch.orchestrate.pipeline.config import Stage
from hpcorch.providers import DEFAULT_PROVIDER, provider_class

#: Where a stage's multirun takes settings the driver adds (the launcher's nodes,
#: merged over the app's own: any Hydra app accepts them).
LAUNCHER_NODE = "++hydra.launcher"


def stage_provider(stage: Stage) -> str:
    """The provider a stage's overrides select (`provider=slurm`, or the launcher's
    `+hydra/launcher/provider=slurm`), else the default one."""
    name = DEFAULT_PROVIDER
    for override in stage.overrides:
        if override_key(override) in ("provider", "hydra/launcher/provider"):
            name = override.partition("=")[2]
    return name


def after_jobs_of(stage: Stage) -> Callable[[Sequence[str]], dict[str, Any]] | None:
    """The stage's provider's native dependency (see the module docstring), or None
    where it has none or cannot detach."""
    try:
        cls = provider_class(stage_provider(stage))
    except Exception:  # noqa: BLE001 - an unknown name is refused by the stage itself
        return None
    if not getattr(cls, "detachable", False):
        return None
    return cls.capabilities.after_jobs


def _flatten(prefix: str, node: Any) -> list[str]:
    if isinstance(node, dict):
        return [o for key, value in node.items() for o in _flatten(f"{prefix}.{key}", value)]
    return [f"{prefix}={hydra_quote(str(node))}"]


def dependency_overrides(after: Callable[[Sequence[str]], dict[str, Any]],
                         job_ids: Sequence[str]) -> list[str]:
    """The overrides that make a stage's submission wait on `job_ids`."""
    return _flatten(f"{LAUNCHER_NODE}.provider", after(list(job_ids))) if job_ids else []


def detach_override() -> str:
    """The override that makes a stage's multirun return once its runs are submitted."""
    return f"{LAUNCHER_NODE}.hpcorch.detach=true"


def hpcorch_command(*args: str) -> list[str]:
    """argv of `hpcorch ARGS` in this interpreter (to wait on or cancel a stage's sweep)."""
    return [sys.executable, "-m", "hpcorch", *args]
