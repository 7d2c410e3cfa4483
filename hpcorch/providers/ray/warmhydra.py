"""Hydra composition cached across the runs a Ray worker forks.

A forked run executes `python train.py ...` exactly (argv, Hydra's CLI, its
RUN mode), but composing its config from scratch costs ~0.15-0.25 s, most of
a short run. Runs of a sweep differ in values, rarely in config groups, so
the composition (defaults tree, merged files) is cached in the worker per
search path, config name and group choices, and each run applies its own
overrides on a copy: hpcorch's launcher composer (`CachedComposer`, proven
key for key equal to Hydra's `load_configuration`, the function behind both
`load_sweep_config` and a RUN-mode composition) does exactly that. The cache
is filled in the worker before it forks (see execute.warm_up), so every child
inherits it. Anything unusual (multirun, no launcher plugin) goes to Hydra.
"""

from __future__ import annotations

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
