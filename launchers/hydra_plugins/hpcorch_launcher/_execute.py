"""What a sweep's batch and a single run share: validate the settings, set the sweep up
(code version, snapshot, container), then submit, watch and report through the
orchestrator (or render for a dry run, or detach)."""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import filter_overrides
from omegaconf import DictConfig, OmegaConf

from hpcorch.containers import sweep_context
from hpcorch.containers.base import PassedVariables
from hpcorch.containers.context import ExecutionContext, load_settings
from hpcorch.containers.settings import ContainerSettings
from hpcorch.identity import app_code_version, run_key, short_hash
from hpcorch.orchestrate.detach import announce_detached, start_background_resume
from hpcorch.orchestrate.retry import policy_dict
from hpcorch.orchestrate.snapshot import snapshot_code
from hpcorch.orchestrate.summary import report
from hpcorch.orchestrate.sweep import Orchestrator
from hpcorch.providers import create_provider
from hpcorch.repro.fingerprint import fingerprint
from hpcorch.repro.settings import job_env_pairs
from hpcorch.settings import HpcorchSettings, parse_settings
from hpcorch.spec import Resources, RunSpec
from hpcorch.store.index import StoreIndex, open_index
from hpcorch.store.ledger import SweepInfo, read_ledger, write_ledger
from hpcorch.store.records import RunRecord
from hpcorch.worker.callback import plain

log = logging.getLogger("hydra_plugins.hpcorch_launcher._core")


@dataclass(frozen=True)
class SweepSetup:
    """What every run of a sweep (or a single run) shares, validated before anything exists."""

    settings: HpcorchSettings
    provider_settings: dict[str, Any]
    provider_cls: type
    resources: Resources
    sweep_dir: str
    sweep_id: str
    code: str
    container: ExecutionContext
    index: StoreIndex
    """The index, its home checked before anything was launched."""
    script: str
    """The app's script the jobs run: in the code snapshot, else the live one."""
    cwd: str

    def spec(self, *, task: dict[str, Any], overrides: Sequence[str], num: int, run_dir: str,
             seed: int, command: Sequence[str], stage: str = "main",
             upstream: Sequence[tuple[str, str, str]] = ()) -> RunSpec:
        """The RunSpec of one run (its command wrapped by the container, if any);
        `stage`, `upstream`: its pipeline stage and the (stage, key, dir) runs it consumes."""
        spec = RunSpec(
            run_key=run_key(task, code_version=self.code, seed=seed,
                            image=self.container.image, exclude=self.settings.key_exclude,
                            upstream=[key for _, key, _ in upstream]),
            sweep_id=self.sweep_id,
            num=num,
            overrides=tuple(overrides),
            config=task,
            seed=seed,
            run_dir=run_dir,
            command=tuple(command),
            resources=self.resources,
            workdir=self.cwd,
            code_version=self.code,
            env=job_env_pairs(self.settings.repro),  # threads pinned at start
            stage=stage,
            upstream=tuple(upstream),
            priority=run_priority(task, self.settings.priority),
            retry=policy_dict(self.settings.retry),
        )
        return self.container.wrap(spec)  # inside out: providers add srun/mpirun around it


def run_priority(task: dict[str, Any], default: int) -> int:
    """A run's `hpcorch.priority` as its own config resolved it (so one sweep can give
    each run its own, `hpcorch.priority='${...}'`), else the sweep's."""
    node = task.get("hpcorch")
    value = node.get("priority", default) if isinstance(node, dict) else default
    if isinstance(value, bool) or not isinstance(value, int):
        from hpcorch.errors import ConfigError

        raise ConfigError("hpcorch.priority", value, "must be an integer (higher runs first)")
    return value


def hpcorch_node(config: DictConfig, name: str) -> Any:
    """hpcorch's `name` node (hpcorch, provider, resources, container) as plain data: the
    app's own (`- hpcorch: default` puts them at the config's root) with the launcher's
    (`hydra.launcher.<name>`, for any Hydra app) merged over it key by key, so
    `++hydra.launcher.hpcorch.dry_run=true` keeps the app's other hpcorch settings and
    a launcher `provider` with another name replaces the app's; None where neither is."""
    launcher = plain(OmegaConf.select(config, f"hydra.launcher.{name}", default=None))
    own = plain(config.get(name))
    if not isinstance(launcher, dict) or not isinstance(own, dict):
        return launcher if launcher is not None else own
    if name == "provider" and launcher.get("name", own.get("name")) != own.get("name"):
        return launcher  # another provider: none of the app's provider settings apply
    return _merged(own, launcher)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (_merged(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


@dataclass(frozen=True)
class Validated:
    """hpcorch's settings of one config, every one checked (no I/O, nothing created)."""

    settings: HpcorchSettings
    provider_settings: dict[str, Any]
    provider_cls: type
    resources: Resources
    container: ContainerSettings


def validate(config: DictConfig) -> Validated:
    """Check every hpcorch setting of `config`: one ConfigError naming the setting, its
    value and what is allowed, before anything is created or submitted.

    Works on any Hydra app: where the config has no `hpcorch`, `provider` or
    `resources` node (an app that never heard of hpcorch), the defaults apply,
    i.e. the local provider.
    """
    settings = parse_settings(HpcorchSettings, hpcorch_node(config, "hpcorch") or {}, "hpcorch")
    from hpcorch.providers import DEFAULT_PROVIDER, provider_class

    provider_settings = {"name": DEFAULT_PROVIDER, **(hpcorch_node(config, "provider") or {})}
    provider_cls = provider_class(str(provider_settings.get("name")))
    parse_settings(provider_cls.Settings, provider_settings, "provider")
    resources = parse_settings(Resources, hpcorch_node(config, "resources") or {}, "resources")
    check_resources = getattr(provider_cls, "check_resources", None)
    if callable(check_resources):  # what this provider can place (e.g. ranks on local cores)
        check_resources(resources)
    container = load_settings(hpcorch_node(config, "container"))
    return Validated(settings, provider_settings, provider_cls, resources, container)


def prepare(config: DictConfig, sweep_dir: str, *, can_fork: bool = True) -> SweepSetup:
    """Validate every hpcorch setting of `config` and set up what its runs share
    (`can_fork`: whether a local provider may fork this process for a run)."""
    checked = validate(config)
    settings, resources = checked.settings, checked.resources
    provider_settings, provider_cls = checked.provider_settings, checked.provider_cls
    caps = provider_cls.capabilities
    check_sweep_dir = getattr(provider_cls, "check_sweep_dir", None)
    if callable(check_sweep_dir):  # paths the provider cannot use, refused before any exist
        check_sweep_dir(sweep_dir)
    index = open_index(settings.home)
    cwd = str(config.hydra.runtime.cwd)
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    code = app_code_version(sys.argv[0])
    fingerprint()  # warm the fingerprint caches once; forked runs inherit them
    # Every run seeds numpy: import it once here, not once per forked run (~0.1-0.4 s each).
    importlib.import_module("numpy.random")
    # The container (if any) is checked and its image pinned once, before any spec exists.
    container = sweep_context(hpcorch_node(config, "container"), key=sweep_dir,
                              app=os.path.abspath(sys.argv[0]), workdir=cwd,
                              dry_run=settings.dry_run,
                              passed=PassedVariables(caps.container_env_prefixes,
                                                     caps.container_env_names))
    forks_submitter = caps.forks_submitter
    if settings.detach and forks_submitter:  # the runs outlive this process: none is a fork
        provider_settings = {**provider_settings, "warm": False}
    # Jobs that start a fresh interpreter run from a snapshot of the tracked code, so
    # edits made after submission never reach queued runs. Only warm forks of this
    # process (local, single-process, no image) execute the code already loaded here.
    forked = (can_fork and forks_submitter
              and provider_settings.get("warm", True) and resources.tasks <= 1
              and not container.image)
    script = os.path.abspath(sys.argv[0])
    if settings.snapshot and not forked:
        snapshot = snapshot_code(sys.argv[0], sweep_dir)
        if snapshot is not None:
            script = snapshot.script
        elif not settings.dry_run:
            print(f"hpcorch: no code snapshot ({script} is not a tracked file of a git "
                  "repository): jobs run the live tree, so edits made now reach queued runs",
                  file=sys.stderr, flush=True)
    return SweepSetup(settings=settings, provider_settings=provider_settings,
                      provider_cls=provider_cls, resources=resources, sweep_dir=sweep_dir,
                      sweep_id=short_hash(sweep_dir, 10), code=code, container=container,
                      index=index, script=script, cwd=cwd)


def execute(setup: SweepSetup, specs: list[RunSpec], *, argv: tuple[str, ...],
            executor: Any = None) -> list[RunRecord]:
    """Submit, watch and report `specs` (a sweep's batch, or a single run); exits for a dry
    run or a detached sweep. Records come back in `specs` order."""
    provider = create_provider(
        setup.provider_settings, **_provider_kwargs(setup.provider_cls, executor=executor)
    )
    previous = read_ledger(setup.sweep_dir)
    info = SweepInfo(
        sweep_id=setup.sweep_id,
        sweep_dir=setup.sweep_dir,
        provider=provider.name,
        created=previous.created if previous else time.time(),
        cwd=setup.cwd,
        argv=argv,
        app=os.path.abspath(argv[0]),
        provider_settings=setup.provider_settings,
        max_parallel=setup.settings.max_parallel,
    )
    info = (previous or info).with_specs(specs)
    settings = setup.settings

    if settings.dry_run:
        sys.stdout.write(provider.render(specs))
        sys.stdout.write(f"# dry run: {len(specs)} run(s) rendered, nothing submitted\n")
        sys.stdout.flush()
        raise SystemExit(0)

    log.info(f"Launching {len(specs)} jobs on provider={provider.name} (sweep {setup.sweep_id})")
    for spec in specs:
        log.info(f"\t#{spec.num} : {' '.join(filter_overrides(spec.overrides))}")
    provider.check()
    orchestrator = Orchestrator(
        provider, setup.index, rerun=settings.rerun, progress=settings.progress,
        max_parallel=settings.max_parallel,
    )
    if settings.detach:
        # The engine keeps the runs; with max_parallel someone must hold runs back and
        # submit them as others end: the background orchestrator, as for local runs.
        if getattr(provider, "detachable", False) and settings.max_parallel is None:
            done, _ = orchestrator.submit(info, specs)
            orchestrator.drain()  # runs a transient refusal held back
            provider.close()
        else:  # the runs would die with this process: a background orchestrator owns them
            write_ledger(info)
            orchestrator.index.put_sweep(info)
            start_background_resume(info, setup.index.home)
            done = {}
        announce_detached(info, len(specs), len(done))
        raise SystemExit(0)
    try:
        records = orchestrator.run(info, specs)
    finally:
        provider.close()
    report(records, setup.sweep_id, provider.name, settings.summary_metrics)
    return records


def _provider_kwargs(cls: type, **available: Any) -> dict[str, Any]:
    params = inspect.signature(cls).parameters
    return {k: v for k, v in available.items() if k in params}


def exit_status(exc: BaseException) -> int:
    """The exit status for one of hpcorch's errors: 2 bad input, 130 interrupted, else 1."""
    from hpcorch.errors import ConfigError
    from hpcorch.orchestrate.sweep import SweepInterrupted

    return 2 if isinstance(exc, ConfigError) else 130 if isinstance(exc, SweepInterrupted) else 1
