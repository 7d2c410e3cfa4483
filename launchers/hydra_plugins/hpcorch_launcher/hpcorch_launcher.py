"""The `hydra/launcher=hpcorch` plugin. Light on purpose: Hydra imports this module
for plugin discovery in every app, so the heavy work lives in `_core`."""


import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class HpcorchLauncherConf:
    """Launcher config. An app that opted in (`- hpcorch: default`) sets hpcorch's nodes at
    its root (`provider=slurm`); any other Hydra app sets them here, on the launcher, as
    Hydra's launcher plugins are set: `+hydra/launcher/provider=slurm`,
    `hydra.launcher.resources.cpus=2`, `hydra.launcher.hpcorch.rerun=true`. Being Hydra's
    settings, they never enter the task config, its overrides or its run keys. Where both
    are set, the launcher's node wins."""

    _target_: str = "hydra_plugins.hpcorch_launcher.hpcorch_launcher.HpcorchLauncher"
    provider: Any = None
    resources: Any = None
    container: Any = None
    hpcorch: Any = None


ConfigStore.instance().store(group="hydra/launcher", name="hpcorch", node=HpcorchLauncherConf,
                             provider="hpcorch")


class HpcorchLauncher(Launcher):
    """Hands a sweep's jobs to hpcorch's orchestrator and the selected provider."""

    def __init__(self, **_settings: Any) -> None:
        # The settings (HpcorchLauncherConf) are read from the sweep's config in launch().
        # Hydra scans plugin modules without registering them, so no PEP 563 here.
        self._context: "tuple[HydraContext, TaskFunction, DictConfig] | None" = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        """Hydra's two-phase init: remember what launch() needs."""
        self._context = (hydra_context, task_function, config)

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        """Run one batch of the sweep; JobReturns come back in sweep order."""
        from hydra_plugins.hpcorch_launcher import _core

        if self._context is None:
            raise RuntimeError("HpcorchLauncher.launch() called before setup()")
        hydra_context, task_function, config = self._context
        from hpcorch.errors import HpcorchError

        try:
            return _core.launch(hydra_context, task_function, config, job_overrides,
                                initial_job_idx)
        except HpcorchError as exc:
            # One clear line instead of a stack trace: these errors are about the
            # user's input or environment, and say what to do.
            print(f"hpcorch: error: {exc}", file=sys.stderr, flush=True)
            from hydra_plugins.hpcorch_launcher._execute import exit_status

            raise SystemExit(exit_status(exc)) from None
