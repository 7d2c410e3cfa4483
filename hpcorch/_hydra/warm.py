"""Hydra patched for warm workers: compositions cached across the runs a worker forks,
the throw-away mode probe skipped, and a script's config composed without running it.

A forked run executes `python train.py ...` exactly (argv, Hydra's CLI, its
RUN mode), but composing its config from scratch costs ~0.15-0.25 s, most of
a short run. Runs of a sweep differ in values, rarely in config groups, so
the composition (defaults tree, merged files) is cached in the worker per
search path, config name and group choices, and each run applies its own
overrides on a copy: hpcorch's launcher composer (`CachedComposer`, proven
key for key equal to Hydra's `load_configuration`, the function behind both
`load_sweep_config` and a RUN-mode composition) does exactly that. The cache
is filled in the worker before it forks (hpcorch.worker.warm.warm_up), so every
child inherits it. Anything unusual (multirun, no launcher plugin) goes to Hydra.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from typing import Any

_COMPOSERS: dict[tuple[str, str], Any] = {}
_INSTALLED = False
_IN_CHILD = False


def mark_child() -> None:
    """In a forked run: compose on the cached config itself (the child's own copy of it),
    sparing a deep copy; the worker's cache is never touched."""
    global _IN_CHILD
    _IN_CHILD = True


def install() -> bool:
    """Route RUN-mode compositions through the cache (idempotent). False when unavailable."""
    global _INSTALLED
    if _INSTALLED:
        return True
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode
        from hydra_plugins.hpcorch_launcher._compose import CachedComposer
        from omegaconf import OmegaConf
    except ImportError:
        return False
    original = ConfigLoaderImpl.load_configuration

    def load_configuration(self: Any, config_name: Any, overrides: list[str], run_mode: Any,
                           from_shell: bool = True, validate_sweep_overrides: bool = True) -> Any:
        if run_mode != RunMode.RUN or config_name is None:
            return original(self, config_name, overrides, run_mode, from_shell,
                            validate_sweep_overrides)
        # Hydra's own checks first, with its own messages.
        self.ensure_main_config_source_available()
        if validate_sweep_overrides:
            parsed = OverridesParser.create().parse_overrides(overrides=list(overrides))
            self.validate_sweep_overrides_legal(overrides=parsed, run_mode=run_mode,
                                                from_shell=from_shell)
        key = (repr([(e.provider, e.path) for e in self.config_search_path.get_path()]),
               str(config_name))
        composer = _COMPOSERS.get(key)
        if composer is None:
            # An empty master: no extra hydra overrides, no resolver cache to copy
            # (a fresh `python train.py` has none either).
            master = OmegaConf.create({"hydra": {"overrides": {"hydra": []},
                                                 "job": {"config_name": config_name}}})
            composer = _COMPOSERS[key] = CachedComposer(self, master)
        composer._loader = self  # this process's loader, for the rare uncached fallback
        return composer.load(list(overrides), reuse=_IN_CHILD)

    ConfigLoaderImpl.load_configuration = load_configuration  # type: ignore[method-assign]
    _INSTALLED = True
    return True


def skip_mode_probe() -> None:
    """Spare a forked run Hydra's first, throw-away composition (`Hydra.get_mode`).

    Hydra composes a run's whole config twice: once only to read `hydra.mode`.
    A job's argv states `hydra.mode=RUN`, which is what that composition would
    return (about 40% of a trivial run's CPU time); without it, Hydra's own way.
    """
    from hydra._internal.hydra import Hydra
    from hydra.types import RunMode

    if getattr(Hydra.get_mode, "_hpcorch", False):
        return
    original = Hydra.get_mode

    def get_mode(self: Hydra, config_name: str | None, overrides: list[str]) -> object:
        if "hydra.mode=RUN" in overrides:
            return RunMode.RUN
        return original(self, config_name, overrides)

    get_mode._hpcorch = True  # type: ignore[attr-defined]
    Hydra.get_mode = get_mode  # type: ignore[method-assign]


def compose_without_running(script: str, args: Sequence[str], cwd: str) -> None:
    """Execute `python SCRIPT ARGS` with Hydra's run() reduced to composing the config:
    nothing runs, no directory or log is written; the composition cache is filled."""
    try:
        from hydra._internal.hydra import Hydra
        from hydra.types import RunMode
    except ImportError:
        return
    original = Hydra.run

    def compose_only(self: Any, config_name: Any, task_function: Any, overrides: Any,
                     with_log_configuration: bool = True) -> None:
        self.compose_config(config_name=config_name, overrides=overrides,
                            with_log_configuration=False, run_mode=RunMode.RUN)

    argv, here, out, err = sys.argv, os.getcwd(), sys.stdout, sys.stderr
    try:
        skip_mode_probe()
        Hydra.run = compose_only  # type: ignore[method-assign,assignment]
        os.chdir(cwd)
        sys.argv = [script, *args]
        with open(os.devnull, "w") as devnull:
            sys.stdout = sys.stderr = devnull
            runpy.run_path(script, run_name="__main__")
    except BaseException:  # noqa: BLE001 - a warm-up only: the real run reports any error
        pass
    finally:
        Hydra.run = original  # type: ignore[method-assign]
        sys.argv, sys.stdout, sys.stderr = argv, out, err
        os.chdir(here)
