"""The execution context of a sweep: validated once, image pinned once, every run wrapped.

The launcher calls `prepare_container` once per sweep, before any RunSpec is
built: it parses the `container` node, checks the runtime, resolves the image
to its digest, checks the image can run the code (`hpcorch container check`)
and returns an `ExecutionContext` whose `image` goes into every run key and
whose `wrap` rewrites each spec's command to run inside the pinned image.
Providers add their own launch wrappers (srun, mpirun) outside that command.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hpcorch.containers.apptainer import ApptainerRuntime
from hpcorch.containers.base import (
    NO_ENGINE_VARIABLES,
    ContainerError,
    ImageIdentity,
    PassedVariables,
    container_run,
)
from hpcorch.containers.check import CheckReport, run_check
from hpcorch.containers.oci import OciRuntime
from hpcorch.containers.settings import ContainerSettings
from hpcorch.errors import ConfigError
from hpcorch.runner import CommandRunner, run_command
from hpcorch.settings import parse_settings
from hpcorch.spec import RunSpec

log = logging.getLogger(__name__)

Runtime = OciRuntime | ApptainerRuntime


def load_settings(node: Mapping[str, Any] | None) -> ContainerSettings:
    """The `container` config node, validated (no I/O)."""
    return parse_settings(ContainerSettings, dict(node or {}), "container")


def make_runtime(settings: ContainerSettings, runner: CommandRunner = run_command,
                 which: Callable[[str], str | None] = shutil.which) -> Runtime:
    """The runtime object for `settings.name` (not none)."""
    if settings.name == "apptainer":
        return ApptainerRuntime(settings, runner, which)
    if settings.name in ("podman", "docker"):
        return OciRuntime(settings, runner, which)
    raise ContainerError(f"container={settings.name}: no runtime to make")


@dataclass(frozen=True)
class ExecutionContext:
    """What every run of one sweep executes in."""

    settings: ContainerSettings
    runtime: Runtime | None = None
    identity: ImageIdentity | None = None
    report: CheckReport | None = None
    passed: PassedVariables = NO_ENGINE_VARIABLES
    """The provider's engine variables a run needs inside (its Capabilities)."""

    @property
    def image(self) -> str | None:
        """The digest that goes into run keys and records; None without a container."""
        if self.identity is None or not self.identity.digest:
            return None
        return self.identity.digest

    def wrap(self, spec: RunSpec) -> RunSpec:
        """The spec with its command wrapped by the runtime and its image pinned."""
        if self.runtime is None or self.identity is None:
            return spec
        if spec.resources.tasks > 1:
            self._require_mpi(spec.resources.tasks)
        run = container_run(spec, self.settings, self.identity, self.passed)
        return dataclasses.replace(spec, command=tuple(self.runtime.argv(run, self.identity)),
                                   image=self.image)

    def _require_mpi(self, tasks: int) -> None:
        """Refuse a multi-rank run the image cannot hold: every rank runs inside the image,
        and without MPI there the ranks fail one by one after submission (measured: the
        hpcorch image has no mpi4py, and `train.py resources.tasks=2` died with
        ModuleNotFoundError on every provider)."""
        if self.report is None or self.report.mpi.present:
            return  # container.check=false or a dry run: not known, the run will tell
        assert self.identity is not None
        raise ConfigError(
            "resources.tasks", tasks,
            f"a run of {tasks} ranks inside container.image={self.identity.reference!r} "
            f"(container={self.settings.name}) needs MPI in the image, and it has "
            f"{self.report.mpi.describe()}; allowed: resources.tasks=1, container=none, or an "
            "image with MPI and mpi4py")


def prepare_container(node: Mapping[str, Any] | None, *, app: str | None = None,
                      workdir: str | None = None, dry_run: bool = False,
                      runner: CommandRunner = run_command,
                      which: Callable[[str], str | None] = shutil.which) -> ExecutionContext:
    """Validate, pin and check the sweep's container; raise ContainerError before submission.

    In a dry run a missing runtime or image is tolerated (the commands are
    still rendered, naming the reference) and the in-image check is skipped.
    """
    settings = load_settings(node)
    if settings.name == "none":
        return ExecutionContext(settings)
    assert settings.image is not None  # validate() guarantees it
    runtime = make_runtime(settings, runner, which)
    try:
        runtime.check()
    except ContainerError as exc:
        if not dry_run:
            raise
        log.warning(f"dry run: {exc}")
    try:
        identity = runtime.resolve(settings.image)  # a SIF resolves without apptainer
    except ContainerError as exc:
        if not dry_run:
            raise
        log.warning(f"dry run: image not pinned ({exc})")
        return ExecutionContext(settings, runtime, ImageIdentity(
            runtime=settings.name, reference=settings.image, digest="",
            run_ref=settings.image, pinned=False))
    if not dry_run:
        for i, bind in enumerate(settings.bind_list()):
            if not os.path.exists(bind.source):
                key = (f"container.binds[{i}]" if i < len(settings.binds)
                       else f"container.data[{i - len(settings.binds)}]")
                raise ContainerError(f"{key}={bind.source!r}: no such path on this machine")
    report = None
    if settings.check and not dry_run:
        report = run_check(runtime, identity, python=settings.python, app=app,
                           workdir=workdir, runner=runner)
    return ExecutionContext(settings, runtime, identity, report)


_SWEEP_CONTEXTS: dict[str, tuple[ExecutionContext, bool]] = {}


def sweep_context(node: Mapping[str, Any] | None, *, key: str, app: str | None = None,
                  workdir: str | None = None, dry_run: bool = False,
                  passed: PassedVariables = NO_ENGINE_VARIABLES) -> ExecutionContext:
    """`prepare_container`, once per sweep (`key`: its directory) in this process, so
    every batch of a sweep uses the image pinned for its first one; `passed`: the
    provider's engine variables (its Capabilities)."""
    settings = load_settings(node)
    cached = _SWEEP_CONTEXTS.get(key)
    if cached is not None and cached[0].settings == settings and (dry_run or not cached[1]):
        # The pinned image is the sweep's; the engine variables are this provider's (one
        # process may send the same sweep dir to another provider).
        return dataclasses.replace(cached[0], passed=passed)
    context = dataclasses.replace(
        prepare_container(node, app=app, workdir=workdir, dry_run=dry_run), passed=passed)
    _SWEEP_CONTEXTS[key] = (context, dry_run)
    return context
