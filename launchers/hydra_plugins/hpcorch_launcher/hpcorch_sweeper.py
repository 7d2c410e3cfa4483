"""The `hydra/sweeper=hpcorch` plugin: Hydra's basic sweeper, minus a second composition,
plus hpcorch's checks of the whole sweep's settings before the first batch launches.

Hydra's BasicSweeper composes every job's config once just to validate the
batch, before the launcher composes it again. With the hpcorch launcher that
validation happens in the launcher's planning (every job is composed or
checked, and nothing is submitted if one fails), so it is skipped here; with
any other launcher the basic behaviour is kept.

This module also registers `hpcorch/_open_nodes` (first in hpcorch's defaults): it
leaves the `hpcorch`, `provider`, `resources` and `container` nodes open to Hydra, so
a mistyped `hpcorch.detatch=true` composes and hpcorch refuses it with its own message
naming the allowed keys (Hydra's "Key 'detatch' is not in struct" names none). Hydra
imports every public module of a plugin package when it scans for plugins, before any
config is composed, which is why this registration lives here.
"""

import sys
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

#: hpcorch's config nodes: open to Hydra's composition, validated by hpcorch itself.
OPEN_NODES = ("hpcorch", "provider", "resources", "container")


@dataclass
class HpcorchSweeperConf:
    """Same parameters as Hydra's basic sweeper."""

    _target_: str = "hydra_plugins.hpcorch_launcher.hpcorch_sweeper.HpcorchSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP007 - Hydra's structured configs need Optional
    params: Optional[dict[str, str]] = field(default=None)  # noqa: UP007
    jobs_file: Optional[str] = None  # noqa: UP007
    """Set by an hpcorch pipeline: launch exactly the jobs listed there (one batch)."""


def _register() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="hpcorch", node=HpcorchSweeperConf,
                provider="hpcorch")
    store.store(group="hpcorch", name="_open_nodes", package="_global_",
                node={name: {} for name in OPEN_NODES}, provider="hpcorch")
    # ConfigStore keeps only the root's flags; the nodes' own are set on the stored copy,
    # which every composition deep-copies (flags included) and merges the YAML into.
    stored = store.repo["hpcorch"]["_open_nodes.yaml"].node
    for name in OPEN_NODES:
        OmegaConf.set_struct(stored[name], False)


_register()


def check_sweep_settings(config: DictConfig) -> None:
    """Validate the master config's hpcorch nodes, the index home and the provider's
    resource limits, before any job is planned; raises HpcorchError (ConfigError)."""
    from hydra_plugins.hpcorch_launcher._execute import validate

    from hpcorch.store.index import open_index

    checked = validate(config)  # the launcher's own checks, once for the whole sweep
    if not checked.settings.dry_run:
        open_index(checked.settings.home)


class HpcorchSweeper(BasicSweeper):
    """BasicSweeper whose batch validation is left to the hpcorch launcher."""

    def __init__(self, max_batch_size: Optional[int] = None,  # noqa: UP007
                 params: Optional[dict[str, str]] = None,  # noqa: UP007
                 jobs_file: Optional[str] = None) -> None:  # noqa: UP007
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.jobs_file = jobs_file

    def split_arguments(self, overrides: Any, max_batch_size: Any) -> Any:  # type: ignore[override]
        """Hydra's expansion of the command line; a pipeline's listed jobs instead (the
        launcher reads their numbers and inputs from the same file)."""
        if not self.jobs_file:
            return BasicSweeper.split_arguments(overrides, max_batch_size)
        from hpcorch.orchestrate.pipeline.jobs import read_stage_jobs

        return [[list(job.overrides) for job in read_stage_jobs(self.jobs_file).jobs]]

    def sweep(self, arguments: list[str]) -> Any:
        """Check hpcorch's settings once, then sweep as Hydra's basic sweeper does."""
        from hydra_plugins.hpcorch_launcher._execute import exit_status

        from hpcorch.errors import HpcorchError

        if self._hpcorch_launches() and self.config is not None:
            try:
                check_sweep_settings(self.config)
            except HpcorchError as exc:
                # One line, exit 2, as the launcher reports bad input: nothing ran yet.
                print(f"hpcorch: error: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(exit_status(exc)) from None
        return super().sweep(arguments)

    def _hpcorch_launches(self) -> bool:
        from hydra_plugins.hpcorch_launcher.hpcorch_launcher import HpcorchLauncher

        return isinstance(getattr(self, "launcher", None), HpcorchLauncher)

    def validate_batch_is_legal(self, batch: Any) -> None:
        """Skip the throw-away composition when the hpcorch launcher will check the batch."""
        if self._hpcorch_launches():
            return
        super().validate_batch_is_legal(batch)
