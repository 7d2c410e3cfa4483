"""The launcher's work: turn Hydra's job overrides into RunSpecs, orchestrate, hand back JobReturns.

Imported only when a sweep actually launches (see hpcorch_launcher.py).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import pickle
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    setup_globals,
)
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hpcorch_launcher._compose import CachedComposer
from hydra_plugins.hpcorch_launcher._runjob import run_job_in_child
from omegaconf import DictConfig, OmegaConf, open_dict

from hpcorch.containers import sweep_context
from hpcorch.errors import RunFailed
from hpcorch.identity import code_version, run_key, script_directory, short_hash
from hpcorch.orchestrate.detach import announce_detached, start_background_resume
from hpcorch.orchestrate.snapshot import snapshot_code
from hpcorch.orchestrate.summary import failure_message, report
from hpcorch.orchestrate.sweep import Orchestrator
from hpcorch.providers import create_provider
from hpcorch.repro.fingerprint import fingerprint
from hpcorch.repro.settings import job_env_pairs
from hpcorch.settings import HpcorchSettings, parse_settings
from hpcorch.spec import Resources, RunSpec
from hpcorch.store.index import StoreIndex, default_home
from hpcorch.store.ledger import SweepInfo, read_ledger, write_ledger
from hpcorch.store.records import RunRecord, meta_dir
from hpcorch.worker.callback import RETURN_PICKLE, plain, raw_overrides, seed_for, task_config

log = logging.getLogger(__name__)

_SAFE_OVERRIDE_VALUE = re.compile(r"^[\w/.\-:@+,]*$")


def hydra_quote(value: str) -> str:
    """Quote a value for Hydra's override grammar (not for a shell: argv never meets one)."""
    if _SAFE_OVERRIDE_VALUE.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class WarmExecutor:
    """Runs one spec inside a forked child of the launcher, exactly as the basic launcher would.

    The child composes its own job config (in parallel with its siblings) from
    the composition cache it inherited, modifying its private copy in place.
    """

    def __init__(
        self, hydra_context: HydraContext, task_function: TaskFunction, composer: CachedComposer,
        tasks: dict[int, DictConfig] | None = None,
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.composer = composer
        self.tasks = tasks or {}
        """Task configs planned by the launcher, by job number, where exactly Hydra's."""

    def __call__(self, spec: RunSpec) -> int:
        """Run the job; exit code 0 when the task function returned."""
        ret = run_job_in_child(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=job_config(self.composer, spec.overrides, spec.num, reuse=True),
            output_dir=spec.run_dir,
            plain=self.composer.plain_view(list(spec.overrides)),
            task_cfg=self.tasks.get(spec.num),
        )
        return 0 if ret.status == JobStatus.COMPLETED else 1


class LazyJobReturn(JobReturn):
    """A JobReturn whose `hydra_cfg` is composed only if somebody reads it."""

    def __init__(self, composer: CachedComposer, overrides: Sequence[str], num: int) -> None:
        super().__init__()
        self._lazy = (composer, tuple(overrides), num)
        self._hydra_cfg: DictConfig | None = None

    @property  # type: ignore[override]
    def hydra_cfg(self) -> DictConfig | None:
        """The job's Hydra config, as the basic launcher hands it back."""
        if self._hydra_cfg is None and getattr(self, "_lazy", None) is not None:
            composer, overrides, num = self._lazy
            cfg = job_config(composer, overrides, num)
            self._hydra_cfg = OmegaConf.create({"hydra": cfg.hydra})
        return self._hydra_cfg

    @hydra_cfg.setter
    def hydra_cfg(self, value: DictConfig | None) -> None:
        self._hydra_cfg = value


def job_config(
    composer: CachedComposer, overrides: Sequence[str], num: int, reuse: bool = False
) -> DictConfig:
    """The full config of job `num`, identical to the basic launcher's."""
    cfg = composer.load(list(overrides), reuse=reuse)
    # As the basic launcher sets them, but opening only `hydra.job`: opening the whole
    # config rewrites a cache in every node of it (in a forked job, a page copy each).
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.id = num
        cfg.hydra.job.num = num
    return cfg


def _provider_kwargs(cls: type, **available: Any) -> dict[str, Any]:
    params = inspect.signature(cls).parameters
    return {k: v for k, v in available.items() if k in params}


def _plan_job(
    composer: CachedComposer, master: DictConfig, overrides: Sequence[str], num: int, sweep_dir: str
) -> tuple[DictConfig, str, bool]:
    """(task config, run directory, whether that config is exactly the one the task function
    gets: unresolved, with the composed config's flags) of one job, cheaply where exact."""
    task = composer.task_view(list(overrides))
    subdir_node = master.hydra.sweep._get_node("subdir")
    simple_subdir = subdir_node is not None and subdir_node._value() == "${hydra.job.num}"
    if task is not None and simple_subdir:
        return task, os.path.join(sweep_dir, str(num)), True
    cfg = job_config(composer, overrides, num)
    saved = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(cfg)
        run_dir = os.path.abspath(
            os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))
        )
        task = cfg.copy()
        with open_dict(task):
            del task["hydra"]
        # Resolve now, while this job's Hydra config is the current one.
        return OmegaConf.create(task_config(cfg)), run_dir, False
    finally:
        HydraConfig.instance().cfg = saved


def launch(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """One batch of a sweep, start to finish."""
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    # Validate everything before anything starts.
    settings = parse_settings(HpcorchSettings, plain(config.get("hpcorch", {})) or {}, "hpcorch")
    provider_settings = plain(config.get("provider", {"name": "local"}))
    from hpcorch.providers import provider_class

    provider_cls = provider_class(str(provider_settings.get("name")))
    resources = parse_settings(Resources, plain(config.get("resources", {})) or {}, "resources")

    sweep_dir = os.path.abspath(str(config.hydra.sweep.dir))
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    sweep_id = short_hash(sweep_dir, 10)
    code = code_version(script_directory(sys.argv[0])).label()
    fingerprint()  # warm the fingerprint caches once; forked runs inherit them
    # Every run seeds numpy: import it once here, not once per forked run (~0.1-0.4 s each).
    importlib.import_module("numpy.random")
    # The container (if any) is checked and its image pinned once, before any spec exists.
    container = sweep_context(
        plain(config.get("container")),
        key=sweep_dir,
        app=os.path.abspath(sys.argv[0]),
        workdir=str(config.hydra.runtime.cwd),
        dry_run=settings.dry_run,
    )

    # Jobs that start a fresh interpreter run from a snapshot of the tracked code,
    # so edits made after submission never reach queued runs. Warm local runs
    # execute the code already loaded in this process and need none.
    warm_local = (
        provider_settings.get("name") == "local"
        and provider_settings.get("warm", True)
        and not settings.detach
    )
    snapshot = (
        snapshot_code(sys.argv[0], sweep_dir) if settings.snapshot and not warm_local else None
    )
    script = snapshot.script if snapshot else os.path.abspath(sys.argv[0])
    if settings.detach and provider_settings.get("name") == "local":
        provider_settings = {**provider_settings, "warm": False}

    composer = get_composer(hydra_context, config)
    tasks: dict[int, DictConfig] = {}
    exact_tasks: dict[int, DictConfig] = {}  # forked jobs hand these to the task function
    specs: list[RunSpec] = []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        task, run_dir, exact = _plan_job(composer, config, overrides, idx, sweep_dir)
        data = plain(task)
        seed = seed_for(task, list(overrides), composer.parsed(list(overrides)))
        spec = RunSpec(
            run_key=run_key(
                data,
                code_version=code,
                seed=seed,
                image=container.image,
                exclude=settings.key_exclude,
            ),
            sweep_id=sweep_id,
            num=idx,
            overrides=tuple(overrides),
            config=data,
            seed=seed,
            run_dir=run_dir,
            command=tuple(_cold_command(config, overrides, run_dir, script, idx)),
            resources=resources,
            workdir=str(config.hydra.runtime.cwd),
            code_version=code,
            env=job_env_pairs((data.get("hpcorch") or {}).get("repro")),
        )  # threads pinned at start
        spec = container.wrap(spec)  # inside out: providers add srun/mpirun around it
        tasks[idx] = task
        if exact:
            exact_tasks[idx] = task
        specs.append(spec)

    executor = WarmExecutor(hydra_context, task_function, composer, exact_tasks)
    provider = create_provider(
        provider_settings, **_provider_kwargs(provider_cls, executor=executor)
    )
    previous = read_ledger(sweep_dir)
    info = SweepInfo(
        sweep_id=sweep_id,
        sweep_dir=sweep_dir,
        provider=provider.name,
        created=previous.created if previous else time.time(),
        cwd=str(config.hydra.runtime.cwd),
        argv=tuple(sys.argv),
        app=os.path.abspath(sys.argv[0]),
        provider_settings=provider_settings,
    )
    info = (previous or info).with_specs(specs)

    if settings.dry_run:
        sys.stdout.write(provider.render(specs))
        sys.stdout.write(f"# dry run: {len(specs)} run(s) rendered, nothing submitted\n")
        sys.stdout.flush()
        raise SystemExit(0)

    log.info(f"Launching {len(specs)} jobs on provider={provider.name} (sweep {sweep_id})")
    for spec in specs:
        log.info(f"\t#{spec.num} : {' '.join(filter_overrides(spec.overrides))}")
    provider.check()
    home = Path(settings.home).expanduser() if settings.home else default_home()
    orchestrator = Orchestrator(
        provider, StoreIndex(home), rerun=settings.rerun, progress=settings.progress
    )
    if settings.detach:
        if getattr(provider, "detachable", False):  # the engine keeps the runs
            done, _ = orchestrator.submit(info, specs)
            provider.close()
        else:  # the runs would die with this process: a background orchestrator owns them
            write_ledger(info)
            orchestrator.index.put_sweep(info)
            start_background_resume(info, home)
            done = {}
        announce_detached(info, len(specs), len(done))
        raise SystemExit(0)
    try:
        records = orchestrator.run(info, specs)
    finally:
        provider.close()
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)

    report(records, sweep_id, provider.name, settings.summary_metrics)
    return [_job_return(rec, composer, tasks[rec.num], config) for rec in records]


_COMPOSERS: dict[int, CachedComposer] = {}


def get_composer(hydra_context: HydraContext, config: DictConfig) -> CachedComposer:
    """One composer per sweep (keyed by the master config), shared by sweeper and launcher."""
    key = id(config)
    if key not in _COMPOSERS:
        _COMPOSERS.clear()
        _COMPOSERS[key] = CachedComposer(hydra_context.config_loader, config)
    return _COMPOSERS[key]


#: Hydra overrides of the sweeping process that must not reach a single job's command:
#: the job runs in RUN mode, in its own run dir, with Hydra's default launcher/sweeper.
_SWEEP_ONLY = (
    "hydra.mode",
    "hydra.run.dir",
    "hydra.sweep.",
    "hydra/launcher",
    "hydra.launcher",
    "hydra/sweeper",
    "hydra.sweeper",
    "hydra.job.num",
    "hydra.job.id",
)


def _cold_command(
    config: DictConfig, overrides: Sequence[str], run_dir: str, script: str, num: int
) -> list[str]:
    """`python train.py <hydra overrides> <job overrides> hydra.run.dir=<run_dir>`.

    The job is a single run: `hydra.mode=RUN` is explicit, so the command can
    never start a sweep of its own, whatever the sweeping process was given.
    """
    argv = [sys.executable, script]
    for source in config.hydra.runtime.config_sources:
        if source.provider == "command-line":
            argv += ["--config-dir", str(source.path)]
    argv += ["--config-name", str(config.hydra.job.config_name)]
    argv += [
        o for o in raw_overrides(config, "hydra") if not o.lstrip("+~").startswith(_SWEEP_ONLY)
    ]
    argv += list(overrides)
    # The job's number and id are what the basic launcher gives the same job.
    argv += [
        "hydra.mode=RUN",
        "hydra.run.dir=" + hydra_quote(run_dir),
        f"hydra.job.num={num}",
        f"hydra.job.id={num}",
    ]
    return argv


def _job_return(
    record: RunRecord, composer: CachedComposer, task: DictConfig, master: DictConfig
) -> JobReturn:
    ret = LazyJobReturn(composer, record.overrides, record.num)
    ret.overrides = list(record.overrides)
    ret.cfg = task
    ret.working_dir = record.run_dir if master.hydra.job.chdir else str(master.hydra.runtime.cwd)
    ret.task_name = str(master.hydra.job.name)
    if record.state.ok:
        ret.status = JobStatus.COMPLETED
        ret.return_value = _return_value(record)
    else:
        ret.status = JobStatus.FAILED
        ret.return_value = RunFailed(failure_message(record))
    return ret


def _return_value(record: RunRecord) -> Any:
    for run_dir in (record.run_dir, record.reused_from):
        path = meta_dir(run_dir) / RETURN_PICKLE if run_dir else None
        if path is not None and path.exists():
            try:
                return pickle.loads(path.read_bytes())
            except Exception:  # noqa: BLE001 - fall back to the JSON form
                break
    return record.return_value
