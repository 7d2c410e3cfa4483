"""The execution context: what a run executes in (none, podman, docker, apptainer).

A container wraps the run's portable command inside out, and providers add
their launch wrappers outside it:

    srun ... podman run --rm --init ... sha256:<image id> python train.py <overrides> ...

    from hpcorch.containers import prepare_container
    context = prepare_container(cfg.container, app="train.py")   # once per sweep
    spec = context.wrap(spec)                                     # every run

Modules: settings (the `container` node), base (identity, mounts, variables),
oci (podman/docker), apptainer, check (the in-image preflight), context (the
launcher's entry point), inside (what a process learns about its image),
buildctx (the image's build context), signals (helpers for signal tests).
"""

from __future__ import annotations

from hpcorch.containers.base import ContainerError, ContainerRun, ImageIdentity
from hpcorch.containers.context import (
    ExecutionContext,
    load_settings,
    make_runtime,
    prepare_container,
    sweep_context,
)
from hpcorch.containers.settings import Bind, ContainerSettings

__all__ = [
    "Bind",
    "ContainerError",
    "ContainerRun",
    "ContainerSettings",
    "ExecutionContext",
    "ImageIdentity",
    "load_settings",
    "make_runtime",
    "prepare_container",
    "sweep_context",
]
