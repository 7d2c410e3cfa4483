"""The `hydra/sweeper=hpcorch` plugin: Hydra's basic sweeper, minus a second composition.

Hydra's BasicSweeper composes every job's config once just to validate the
batch, before the launcher composes it again. With the hpcorch launcher that
validation happens in the launcher's planning (every job is composed or
checked, and nothing is submitted if one fails), so it is skipped here; with
any other launcher the basic behaviour is kept.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class HpcorchSweeperConf:
    """Same parameters as Hydra's basic sweeper."""

    _target_: str = "hydra_plugins.hpcorch_launcher.hpcorch_sweeper.HpcorchSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP007 - Hydra's structured configs need Optional
    params: Optional[dict[str, str]] = field(default=None)  # noqa: UP007


ConfigStore.instance().store(group="hydra/sweeper", name="hpcorch", node=HpcorchSweeperConf,
                             provider="hpcorch")


class HpcorchSweeper(BasicSweeper):
    """BasicSweeper whose batch validation is left to the hpcorch launcher."""

    def validate_batch_is_legal(self, batch: Any) -> None:
        """Skip the throw-away composition when the hpcorch launcher will check the batch."""
        from hydra_plugins.hpcorch_launcher.hpcorch_launcher import HpcorchLauncher

        if isinstance(getattr(self, "launcher", None), HpcorchLauncher):
            return
        super().validate_batch_is_legal(batch)
