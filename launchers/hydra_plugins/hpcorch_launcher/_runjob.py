"""Hydra's `run_job`, for a forked child that runs exactly one job.

Same steps, same files and the same JobReturn as `hydra.core.utils.run_job`
(Hydra 1.3); the differences are in copying and resolving. Hydra sets the
job's Hydra config twice (each a deep copy of Hydra's large node), the first
time only to resolve the job's directory, which the launcher already knows.
Hydra deep-copies the whole job config (Hydra's large node included) to
build the task config, then deep-copies Hydra's node again for the
JobReturn. Here the task config is copied without Hydra's node and Hydra's
node is not copied at all: the child owns the job's config and exits after
this one job. The YAML files are written by libyaml where it gives the same
bytes (see _yaml.py). The conformance tests
(tests/integration/test_hydra_conformance.py) compare every output file
with Hydra's basic launcher.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    _check_hydra_context,
    _flush_loggers,
    configure_log,
    env_override,
)
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hpcorch_launcher._plainhydra import PlainHydra, configure_job_log
from hydra_plugins.hpcorch_launcher._yaml import save_config
from omegaconf import DictConfig, OmegaConf, read_write


def _set_hydra_config(config: DictConfig) -> None:
    """`HydraConfig.set_config(config)` without its deep copy of Hydra's node.

    Hydra copies `config.hydra` into a config of its own and points the copy's
    parent back at `config`, so that interpolations resolve against the job's
    config. This child owns `config` and never changes it again: the node
    itself, read-only, under a root of its own, is the same view.
    """
    OmegaConf.set_readonly(config.hydra, True)
    view = DictConfig(content={})
    view.__dict__["_content"]["hydra"] = config._get_node("hydra")  # keeps its parent
    HydraConfig.instance().cfg = view  # type: ignore[assignment]


def changes_directory(chdir: bool | None) -> bool:
    """Whether a job runs in its output dir: `hydra.job.chdir`, or when unset Hydra's rule
    (apps below version_base 1.2 still change directory)."""
    if chdir is not None:
        return bool(chdir)
    from hydra import version

    return not version.base_at_least("1.2")


def run_job_in_child(task_function: TaskFunction, config: DictConfig, output_dir: str,
                     hydra_context: HydraContext, plain: PlainHydra | None = None,
                     task_cfg: DictConfig | None = None) -> JobReturn:
    """`hydra.core.utils.run_job` for a process that owns `config` and runs one job.

    `output_dir` is the job's absolute directory, `hydra.sweep.dir`/`hydra.sweep.subdir`
    as the launcher resolved them when it planned the job; `plain`, when given,
    converts Hydra's node for hydra.yaml and the logging set-up (see _plainhydra.py);
    `task_cfg`, when given, is the task config the launcher planned (`config` without
    Hydra's node), which this process owns too.
    """
    _check_hydra_context(hydra_context)
    callbacks = hydra_context.callbacks
    with read_write(config.hydra.runtime):
        config.hydra.runtime.output_dir = output_dir
    _set_hydra_config(config)

    ret = JobReturn()
    if task_cfg is None:
        task_cfg = OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"])
        # Hydra's copy keeps the root's flags: a struct config stays struct for the task.
        task_cfg._metadata.flags = dict(config._metadata.flags)
        task_cfg._invalidate_flags_cache()
    ret.cfg = task_cfg
    hydra_cfg = HydraConfig.instance().cfg
    assert isinstance(hydra_cfg, DictConfig)
    ret.hydra_cfg = hydra_cfg
    overrides = OmegaConf.to_container(config.hydra.overrides.task)
    assert isinstance(overrides, list)
    ret.overrides = overrides
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    chdir = changes_directory(hydra_cfg.hydra.job.chdir)
    if hydra_cfg.hydra.job.chdir is None and chdir:
        from hydra.core.utils import deprecation_warning

        deprecation_warning(
            message="Future Hydra versions will no longer change working directory at job "
                    "runtime by default.\nSee https://hydra.cc/docs/1.2/upgrades/1.1_to_1.2/"
                    "changes_to_job_working_dir/ for more information.", stacklevel=2)
    if chdir:
        os.chdir(output_dir)
        ret.working_dir = output_dir
    else:
        ret.working_dir = os.getcwd()
    log_conf = plain.job_logging(config) if plain is not None else None
    if log_conf is not None:
        configure_job_log(log_conf, config.hydra.verbose)
    else:
        configure_log(config.hydra.job_logging, config.hydra.verbose)
    if config.hydra.output_subdir is not None:
        hydra_output = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
        save_config(task_cfg, "config.yaml", hydra_output)
        save_config(hydra_cfg if plain is None else {"hydra": plain.hydra_data(config)},
                    "hydra.yaml", hydra_output)
        save_config(config.hydra.overrides.task, "overrides.yaml", hydra_output)
    with env_override(hydra_cfg.hydra.job.env_set):
        callbacks.on_job_start(config=config, task_function=task_function)
        try:
            ret.return_value = task_function(task_cfg)
            ret.status = JobStatus.COMPLETED
        except Exception as e:  # noqa: BLE001 - exactly Hydra's contract
            ret.return_value = e
            ret.status = JobStatus.FAILED
    ret.task_name = JobRuntime.instance().get("name")
    _flush_loggers()
    callbacks.on_job_end(config=config, job_return=ret)
    return ret
