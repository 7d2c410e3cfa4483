"""Per-job configs identical to Hydra's `load_sweep_config`, composed once per defaults list.

Hydra composes every job of a sweep from scratch (~70-85 ms each here): it
rebuilds the defaults tree and merges every config file again, although the
jobs of a sweep usually differ only in values. This composer caches the
merged config per distinct set of config-group choices and, for each job,
applies exactly the steps Hydra applies after composition (value overrides,
override bookkeeping, runtime fields, override_dirname, the master's resolver
cache). tests/unit/test_compose.py proves the result equals Hydra's own,
key for key, over value, group, add, delete and hydra overrides.
"""

from __future__ import annotations

import copy
import os
from typing import Any, NamedTuple

from hydra.core.override_parser.types import Override
from hydra.core.utils import JobRuntime
from hydra_plugins.hpcorch_launcher._plainhydra import PlainHydra
from omegaconf import DictConfig, OmegaConf, open_dict


class _Entry(NamedTuple):
    """A cached composition."""

    composed: DictConfig
    choices: dict[str, Any]
    sources: list[Any]
    task_base: DictConfig | None
    """The task part, or None when it interpolates Hydra's node."""
    prepared: DictConfig
    """The config with its job-independent Hydra fields already set (see `_prepare`)."""
    plain: PlainHydra
    """Plain-data views of the prepared Hydra node."""


def _task_base(cfg: DictConfig) -> DictConfig | None:
    """The composed config without `hydra`, or None if it interpolates Hydra's node
    (then only a full composition resolves it exactly)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    raw.pop("hydra", None)
    if "${hydra" in repr(raw):
        return None
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]
    return task


class CachedComposer:
    """`load(job_overrides)` == `config_loader.load_sweep_config(master, job_overrides)`."""

    def __init__(self, config_loader: Any, master: DictConfig) -> None:
        self._loader = config_loader
        self._master = master
        self._config_name = master.hydra.job.config_name
        # Not list(...): iterating a ListConfig would resolve `${...}` inside override text.
        self._hydra_overrides = [str(o) for o in OmegaConf.to_container(
            master.hydra.overrides.hydra, resolve=False)]  # type: ignore[union-attr]
        self._repo: Any = None
        self._cache: dict[tuple[str, ...], _Entry] = {}
        self._parsed: dict[tuple[str, ...], list[Override]] = {}
        self._keys: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.compositions = 0
        """How many full compositions were needed (the rest were cache hits)."""

    def load(self, job_overrides: list[str], *, reuse: bool = False) -> DictConfig:
        """The job's config, as Hydra's basic launcher would compose it.

        With `reuse=True` the cached composition itself is modified instead of
        a copy: only for a forked child that runs exactly one job.
        """
        if self._needs_hydra(job_overrides):
            # A job that changes the search path needs a fresh repository: let Hydra do it.
            return self._loader.load_sweep_config(self._master, list(job_overrides))
        parsed, repo, entry = self._entry(job_overrides)
        if not self._touches_hydra(job_overrides):
            # Nothing the job sets can change the job-independent fields: start from them
            # (the sweep's own Hydra overrides are already applied there).
            cfg = entry.prepared if reuse else copy.deepcopy(entry.prepared)
            self._apply_job(cfg, parsed, repo, first=len(self._hydra_overrides))
        else:  # Hydra's order exactly: the job's own values first
            cfg = entry.composed if reuse else copy.deepcopy(entry.composed)
            self._apply_job(cfg, parsed, repo)
            self._prepare(cfg, entry.choices, entry.sources)
        return self._finish(cfg, parsed)

    def parsed(self, job_overrides: list[str]) -> list[Override]:
        """The job's own overrides as Hydra's parser returns them (parsed once per job)."""
        return self._parse(job_overrides)[0][len(self._hydra_overrides):]

    def plain_view(self, job_overrides: list[str]) -> PlainHydra | None:
        """Plain-data views of the job's Hydra node, exact for the config `load` returns
        for it; None when the job's overrides touch Hydra's node."""
        if self._needs_hydra(job_overrides) or self._touches_hydra(job_overrides):
            return None
        return self._entry(job_overrides)[2].plain

    def task_view(self, job_overrides: list[str]) -> DictConfig | None:
        """The job's task config (no `hydra` node), built without composing Hydra's node.

        This is the cheap path the launcher plans with. It returns None when it
        cannot be exact: when the app's config interpolates Hydra's node or a
        job overrides Hydra settings; then the caller uses `load`.
        """
        if self._needs_hydra(job_overrides) or self._touches_hydra(job_overrides):
            return None
        parsed, repo, entry = self._entry(job_overrides)
        task_base = entry.task_base
        if task_base is None:
            return None
        task = copy.deepcopy(task_base)
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o in parsed[len(self._hydra_overrides):]
             if not o.is_sweep_override() and not self._is_group(repo, o)], task)
        OmegaConf.copy_cache(from_config=self._master, to_config=task)
        return task

    @staticmethod
    def _needs_hydra(job_overrides: list[str]) -> bool:
        return any(o.split("=", 1)[0].lstrip("+~") == "hydra.searchpath" for o in job_overrides)

    @staticmethod
    def _touches_hydra(job_overrides: list[str]) -> bool:
        return any(o.split("=", 1)[0].lstrip("+~").startswith("hydra") for o in job_overrides)

    def _entry(self, job_overrides: list[str]) -> tuple[list[Override], Any, _Entry]:
        parsed, repo = self._parse(job_overrides)
        key = self._keys.get(tuple(job_overrides))
        if key is None:  # the job's group choices, remembered like its parsed overrides
            key = tuple(o.input_line for o in parsed if self._is_group(repo, o))
            self._keys[tuple(job_overrides)] = key
        if key not in self._cache:
            self._cache[key] = self._compose(repo, parsed)
            self.compositions += 1
        return parsed, repo, self._cache[key]

    # -- the steps of ConfigLoaderImpl._load_configuration_impl -------------
    def _parse(self, job_overrides: list[str]) -> tuple[list[Override], Any]:
        """The sweep's Hydra overrides and the job's, parsed once per job: the launcher
        plans every job before it forks, so a forked job finds its overrides parsed."""
        key = tuple(job_overrides)
        parsed = self._parsed.get(key)
        if parsed is None:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            overrides = self._hydra_overrides + list(job_overrides)
            parsed = OverridesParser.create().parse_overrides(overrides=overrides)
            self._parsed[key] = parsed
            if self._repo is None:
                _, self._repo = self._loader._parse_overrides_and_create_caching_repo(
                    self._config_name, overrides)
        return parsed, self._repo

    @staticmethod
    def _is_group(repo: Any, override: Override) -> bool:
        if override.is_sweep_override():
            return False
        return repo.group_exists(override.key_or_group) and not isinstance(override.value(), dict)

    def _compose(self, repo: Any, parsed: list[Override]) -> _Entry:
        from hydra._internal.defaults_list import create_defaults_list

        defaults_list = create_defaults_list(repo=repo, config_name=self._config_name,
                                             overrides_list=parsed, prepend_hydra=True,
                                             skip_missing=False)
        cfg = self._loader._compose_config_from_defaults_list(defaults=defaults_list.defaults,
                                                              repo=repo)
        OmegaConf.set_struct(cfg, True)
        OmegaConf.set_readonly(cfg.hydra, False)
        choices = dict(defaults_list.overrides.known_choices)
        sources = list(repo.get_sources())
        prepared = copy.deepcopy(cfg)
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        sweep_hydra = parsed[:len(self._hydra_overrides)]  # the same for every job
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o in sweep_hydra if not o.is_sweep_override() and not self._is_group(repo, o)],
            prepared)
        self._prepare(prepared, choices, sources)
        return _Entry(cfg, choices, sources, _task_base(cfg), prepared, PlainHydra(prepared))

    def _apply_job(self, cfg: DictConfig, parsed: list[Override], repo: Any,
                   first: int = 0) -> None:
        """The value overrides from `parsed[first:]`, and the record of every override
        in `hydra.overrides`."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        config_overrides = [o for o in parsed[first:]
                            if not o.is_sweep_override() and not self._is_group(repo, o)]
        ConfigLoaderImpl._apply_overrides_to_config(config_overrides, cfg)
        for override in parsed:
            if override.is_hydra_override():
                cfg.hydra.overrides.hydra.append(override.input_line)
            else:
                cfg.hydra.overrides.task.append(override.input_line)

    def _prepare(self, cfg: DictConfig, choices: dict[str, Any], sources: list[Any]) -> None:
        """The runtime fields that are the same for every job of one composition."""
        from hydra import __version__, version
        from hydra.conf import ConfigSourceInfo

        with open_dict(cfg.hydra):
            cfg.hydra.runtime.choices.update(choices)
            for key in cfg.hydra.job.env_copy:
                cfg.hydra.job.env_set[key] = os.environ[key]
        cfg.hydra.runtime.version = __version__
        cfg.hydra.runtime.version_base = version.getbase()
        cfg.hydra.runtime.cwd = os.getcwd()
        cfg.hydra.runtime.config_sources = [
            ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider) for x in sources]
        if "name" not in cfg.hydra.job:
            cfg.hydra.job.name = JobRuntime().get("name")
        cfg.hydra.job.config_name = self._config_name

    def _finish(self, cfg: DictConfig, parsed: list[Override]) -> DictConfig:
        """The job's `override_dirname` and the master's resolver cache."""
        from hydra._internal.config_loader_impl import get_overrides_dirname

        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=[o for o in parsed if not o.is_hydra_override()],
            kv_sep=cfg.hydra.job.config.override_dirname.kv_sep,
            item_sep=cfg.hydra.job.config.override_dirname.item_sep,
            exclude_keys=cfg.hydra.job.config.override_dirname.exclude_keys,
        )
        OmegaConf.copy_cache(from_config=self._master, to_config=cfg)
        return cfg
