"""The launcher's work: turn Hydra's job overrides into RunSpecs, orchestrate, hand back JobReturns.

Imported only when a sweep actually launches (see hpcorch_launcher.py).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    setup_globals,
)
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hpcorch_launcher._compose import CachedComposer
from hydra_plugins.hpcorch_launcher._execute import execute, prepare
from hydra_plugins.hpcorch_launcher._runjob import changes_directory, run_job_in_child
from omegaconf import DictConfig, OmegaConf, open_dict

from hpcorch._hydra.sweep import hydra_quote
from hpcorch.errors import RunFailed
from hpcorch.orchestrate.pipeline.jobs import JOBS_SETTING, StageJobs, read_stage_jobs
from hpcorch.orchestrate.summary import failure_message
from hpcorch.spec import RunSpec
from hpcorch.store.records import RETURN_PICKLE, RunRecord, meta_dir
from hpcorch.worker.callback import (
    CALLBACK_KEY,
    CALLBACK_TARGET,
    HpcorchCallback,
    plain,
    raw_overrides,
    seed_for,
    task_config,
)

log = logging.getLogger(__name__)

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


def install_worker_callback(hydra_context: HydraContext, config: DictConfig) -> list[str]:
    """Make sure every job runs hpcorch's worker callback (seeds, record), also in an app
    whose config never installed it: added to this process's callbacks (forked jobs
    inherit them); returns the override that adds it to a fresh-process job's command."""
    if worker_callback_configured(config):
        return []
    callbacks = getattr(hydra_context.callbacks, "callbacks", None)
    if isinstance(callbacks, list) and not any(isinstance(c, HpcorchCallback) for c in callbacks):
        callbacks.append(HpcorchCallback())
    return [f"++hydra.callbacks.{CALLBACK_KEY}._target_={CALLBACK_TARGET}"]


def worker_callback_configured(config: DictConfig) -> bool:
    """Whether `hydra.callbacks` already holds hpcorch's worker callback."""
    node = OmegaConf.select(config, "hydra.callbacks", default=None) or {}
    return any(OmegaConf.select(c, "_target_", default=None) == CALLBACK_TARGET
               for c in node.values())


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
    setup = prepare(config, os.path.abspath(str(config.hydra.sweep.dir)))
    extra = install_worker_callback(hydra_context, config)

    composer = get_composer(hydra_context, config)
    tasks: dict[int, DictConfig] = {}
    exact_tasks: dict[int, DictConfig] = {}  # forked jobs hand these to the task function
    specs: list[RunSpec] = []
    listed = listed_jobs(config)
    for offset, overrides in enumerate(job_overrides):
        # A pipeline stage's job keeps its planned number (its directory) and inputs.
        job = listed.jobs[initial_job_idx + offset] if listed else None
        idx = job.num if job else initial_job_idx + offset
        task, run_dir, exact = _plan_job(composer, config, overrides, idx, setup.sweep_dir)
        specs.append(setup.spec(
            task=plain(task), overrides=overrides, num=idx, run_dir=run_dir,
            seed=seed_for(task, list(overrides), composer.parsed(list(overrides))),
            command=cold_command(config, [*extra, *overrides], run_dir, setup.script, idx),
            stage=listed.stage if listed else "main", upstream=job.upstream if job else ()))
        tasks[idx] = task
        if exact:
            exact_tasks[idx] = task

    executor = WarmExecutor(hydra_context, task_function, composer, exact_tasks)
    try:
        records = execute(setup, specs, argv=tuple(sys.argv), executor=executor)
    finally:
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return [_job_return(rec, composer, tasks[rec.num], config) for rec in records]


def listed_jobs(config: DictConfig) -> StageJobs | None:
    """The jobs a pipeline listed for this multirun (`hydra.sweeper.jobs_file`), or None."""
    path = OmegaConf.select(config, JOBS_SETTING, default=None)
    return read_stage_jobs(path) if path else None


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


def cold_command(
    config: DictConfig, overrides: Sequence[str], run_dir: str, script: str, num: int | None
) -> list[str]:
    """`python train.py <hydra overrides> <job overrides> hydra.run.dir=<run_dir>`.

    The job is a single run: `hydra.mode=RUN` is explicit, so the command can
    never start a sweep of its own, whatever the sweeping process was given.
    `num` is the job's number in its sweep (None: a single run, numbered by Hydra).
    """
    argv = [sys.executable, script]
    for source in config.hydra.runtime.config_sources:
        if source.provider == "command-line":
            argv += ["--config-dir", str(source.path)]
    if config.hydra.job.config_name is not None:  # an app without a primary config has none
        argv += ["--config-name", str(config.hydra.job.config_name)]
    argv += [
        o for o in raw_overrides(config, "hydra") if not o.lstrip("+~").startswith(_SWEEP_ONLY)
    ]
    argv += list(overrides)
    argv += ["hydra.mode=RUN", "hydra.run.dir=" + hydra_quote(run_dir)]
    if num is not None:  # the job's number and id, as the basic launcher gives them
        argv += [f"hydra.job.num={num}", f"hydra.job.id={num}"]
    return argv


def _job_return(
    record: RunRecord, composer: CachedComposer, task: DictConfig, master: DictConfig
) -> JobReturn:
    ret = LazyJobReturn(composer, record.overrides, record.num)
    ret.overrides = list(record.overrides)
    ret.cfg = task
    chdir = changes_directory(master.hydra.job.chdir)
    ret.working_dir = record.run_dir if chdir else str(master.hydra.runtime.cwd)
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
