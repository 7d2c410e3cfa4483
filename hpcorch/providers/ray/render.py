"""What the Ray provider submits, written out before anything is: the runs' checks, the
batch file of a sweep job, and the dry-run rendering of every Jobs API submission."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from hpcorch.errors import ConfigError
from hpcorch.providers.ray import naming
from hpcorch.providers.ray.naming import task_name, task_options
from hpcorch.providers.ray.settings import RaySettings
from hpcorch.spec import RunSpec
from hpcorch.store.records import META_DIR, spec_path

#: runtime_env fields with which Ray itself starts its workers inside an image.
CONTAINER_ENV_KEYS = ("image_uri", "container")


def check_spec(spec: RunSpec, settings: RaySettings) -> None:
    """Refuse, before submission, a run Ray cannot hold as hpcorch starts it."""
    res = spec.resources
    if getattr(res, "tasks", 1) > 1 or res.nodes > 1:
        raise ConfigError("resources.tasks", getattr(res, "tasks", 1),
                          "provider=ray runs one process per run; multi-rank (MPI) runs "
                          "need provider=mpi or provider=slurm")
    if spec.image:
        # hpcorch's container already wraps the run's command (podman run ... python
        # train.py): a Ray worker inside Ray's own container would have to start it.
        for key in CONTAINER_ENV_KEYS:
            if key in settings.runtime_env:
                raise ConfigError(f"provider.runtime_env.{key}", settings.runtime_env[key],
                                  "must be left out with container=... (hpcorch runs each "
                                  "run inside the pinned image itself); use one of the two")


def batch_file(specs: Sequence[RunSpec], sid: str) -> str:
    """Where a sweep job's list of spec files is written (the driver reads it)."""
    return str(Path(specs[0].run_dir).parent / META_DIR / f"ray-{sid}.json")


def render_submissions(runs: Sequence[RunSpec], settings: RaySettings, python: str) -> str:
    """The Jobs API submissions `RayProvider.submit` would make (entrypoints, resources,
    metadata), exactly."""
    where = settings.address or "(a Ray started for this sweep)"
    lines = [f"# provider=ray address={where} mode={settings.mode}"
             f" warm={settings.warm}"]
    if settings.mode == "sweep" and settings.warm and any(s.image for s in runs):
        lines.append("# runs inside a container start cold: a task runs the wrapped "
                     "command as a fresh process (a fork of the warm worker would run on "
                     "the host)")
    for spec in runs:
        check_spec(spec, settings)
    if settings.mode == "sweep":
        for group in naming.by_sweep(runs):
            sid = naming.batch_submission_id(group)
            entry = naming.entrypoint(python, "batch", batch_file(group, sid))
            lines.append(f"# sweep job {sid}: entrypoint {entry}")
            for spec in group:
                lines.append(f"#   task {task_name(spec)} {json.dumps(task_options(spec))} "
                             f"key={spec.run_key} dir={spec.run_dir}")
                lines.append(f"(cd {shlex.quote(spec.workdir or spec.run_dir)} && "
                             f"{shlex.join(spec.command)})")
    else:
        for spec in runs:
            sid = naming.run_submission_id(spec)
            lines.append(f"# job {sid} {json.dumps(naming.entrypoint_resources(spec))} "
                         f"dir={spec.run_dir}")
            lines.append(naming.entrypoint(python, "run", str(spec_path(spec.run_dir)),
                                           sid))
    return "\n".join(lines) + "\n"
