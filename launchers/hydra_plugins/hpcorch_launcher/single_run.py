"""Single runs (no `-m`) of an app that uses hpcorch's defaults: checked like a sweep,
and run where the provider says.

`python train.py provider=slurm` must not run on the login node. Hydra offers
single runs no launcher, so this callback (installed by `- hpcorch: default`)
takes over in `on_run_start`, before Hydra runs the task function: every
hpcorch setting is validated (one clear error, exit 2, nothing started); a
plain local run then goes on in this process as Hydra runs it; any other (a
provider other than local, several ranks, a container, detach or dry run) is
submitted as a sweep of one run through the same orchestrator, waited for and
reported, and this process exits with the run's outcome (0 succeeded, 1 not).
The submitted job runs the same app in RUN mode, where this callback sees the
job's spec and steps aside.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from hpcorch.errors import HpcorchError
from hpcorch.jobenv import in_planned_job
from hpcorch.worker.callback import raw_overrides, seed_for, task_config


class SingleRunCallback(Callback):
    """Validates a single run and, unless it runs here, submits it to its provider."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the run; for a run that belongs elsewhere, run it there and exit."""
        if in_planned_job():
            return  # this process is a job hpcorch planned: it runs here, as planned
        from hydra_plugins.hpcorch_launcher._execute import exit_status

        try:
            status = run_single(config)
        except HpcorchError as exc:
            # Hydra turns a callback's exception into a warning and goes on: exit instead.
            print(f"hpcorch: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(exit_status(exc)) from None
        if status is not None:
            raise SystemExit(status)


def runs_in_process(config: DictConfig) -> bool:
    """Whether the single run of `config` runs in this process, as Hydra runs it: a
    single-process local run with no image, not detached, not a dry run."""
    from hydra_plugins.hpcorch_launcher._execute import validate

    checked = validate(config)
    seed_for(config, raw_overrides(config, "task"))  # a bad seed is refused here too
    if not checked.settings.dry_run:  # the record is indexed: its home must be usable
        from hpcorch.store.index import open_index

        open_index(checked.settings.home)
    return (
        checked.provider_cls.capabilities.forks_submitter
        and checked.resources.tasks <= 1
        and checked.container.name == "none"
        and not checked.settings.detach
        and not checked.settings.dry_run
    )


def run_single(config: DictConfig) -> int | None:
    """Validate the run of `config`; None when it runs in this process, else submit it,
    wait for it (unless detached) and return the exit status."""
    if runs_in_process(config):
        return None
    from hydra_plugins.hpcorch_launcher._core import cold_command
    from hydra_plugins.hpcorch_launcher._execute import execute, prepare

    saved = HydraConfig.instance().cfg
    try:  # resolve the run's directory and task config as Hydra's run_job will
        HydraConfig.instance().set_config(config)
        run_dir = os.path.abspath(str(config.hydra.run.dir))
        task = task_config(config)
    finally:
        HydraConfig.instance().cfg = saved
    overrides = raw_overrides(config, "task")
    setup = prepare(config, run_dir, can_fork=False)
    spec = setup.spec(task=task, overrides=overrides, num=0, run_dir=run_dir,
                      seed=seed_for(config, overrides),
                      command=cold_command(config, overrides, run_dir, setup.script, None))
    [record] = execute(setup, [spec], argv=tuple(sys.argv))
    return 0 if record.state.ok else 1
