"""What every runtime shares: the pinned image identity, the run to wrap, mounts and variables.

A runtime turns a `ContainerRun` (pure data: argv inside, working directory,
mounts, variables) and an `ImageIdentity` into the argv that starts it, so
the same run renders for podman, docker and apptainer from one description.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hpcorch.containers.inside import IMAGE_DIGEST_ENV, IMAGE_ENV, RUNTIME_ENV
from hpcorch.containers.settings import Bind, ContainerSettings
from hpcorch.errors import ConfigError, HpcorchError
from hpcorch.jobenv import JOB_ID_ENV, PROVIDER_ENV, RANK_SOURCES_ENV, RESTART_ENV, job_variables
from hpcorch.launch import RANK_ENV_NAMES, RANK_ENV_PREFIXES
from hpcorch.spec import RunSpec

__all__ = ["IMAGE_DIGEST_ENV", "IMAGE_ENV", "RUNTIME_ENV", "ContainerError", "ContainerRun",
           "ImageIdentity", "PassedVariables", "container_run"]

#: Host variables every run may need at run time, whatever the provider: the job
#: contract's per-start values (set by array tasks on the compute node) and the GPU
#: allocation. Their values are only known when the job starts, so they are passed by name.
PASS_NAMES: tuple[str, ...] = (PROVIDER_ENV, JOB_ID_ENV, RESTART_ENV, RANK_SOURCES_ENV,
                               "CUDA_VISIBLE_DEVICES", "TZ")


@dataclass(frozen=True)
class PassedVariables:
    """Engine and launcher variables a run in a container needs, passed from the host:
    by prefix where the runtime takes patterns (podman), by name where it does not
    (docker). The provider declares its engine's (`Capabilities.container_env_*`); the
    MPI launcher's (hpcorch.launch.RANK_ENV_*) are always added."""

    prefixes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def patterns(self) -> tuple[str, ...]:
        """What podman's `--env` takes: `PREFIX*` for every prefix, and each name that no
        prefix covers (e.g. Grid Engine's JOB_ID)."""
        prefixes = (*RANK_ENV_PREFIXES, *self.prefixes)
        loose = [n for n in (*RANK_ENV_NAMES, *self.names) if not n.startswith(prefixes)]
        return (*(p + "*" for p in prefixes), *loose)

    def all_names(self) -> tuple[str, ...]:
        """Every variable by name (docker expands the patterns into these)."""
        return tuple(dict.fromkeys((*RANK_ENV_NAMES, *self.names)))


#: A provider whose runs need no engine variables inside (the launcher's still pass).
NO_ENGINE_VARIABLES = PassedVariables()


class ContainerError(HpcorchError):
    """The container runtime or image cannot run the sweep; raised before anything is submitted."""


@dataclass(frozen=True)
class ImageIdentity:
    """An image reference resolved, once per sweep, to the content every run uses."""

    runtime: str
    reference: str
    """What the configuration named (`hpcorch:latest`, `/images/x.sif`)."""
    digest: str
    """`sha256:<hex>`: the image ID (OCI config digest) or the SIF file's content hash.
    Part of every run key and written into every record."""
    run_ref: str
    """What the commands name: the image ID, or the content-addressed SIF path."""
    repo_digest: str = ""
    """The registry manifest digest, when the image came from one."""
    pinned: bool = True
    """False only in a dry run that could not resolve the image (nothing is submitted)."""


@dataclass(frozen=True)
class ContainerRun:
    """One command to run inside an image, as data."""

    argv: tuple[str, ...]
    workdir: str
    binds: tuple[Bind, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    """Variables set to these values inside (known when the sweep is planned)."""
    pass_env: tuple[str, ...] = ()
    """Host variables passed by name or PREFIX* pattern (known only when the job starts)."""
    known_names: tuple[str, ...] = ()
    """The variables the patterns stand for, by name (for runtimes without patterns)."""
    gpus: int = 0
    ranks: int = 1
    time_limit_s: int | None = None
    name: str = ""
    """A name for the container (podman), unique per run attempt."""


def inner_argv(command: Sequence[str], python: str) -> tuple[str, ...]:
    """The run's command with the submitting interpreter replaced by the image's."""
    argv = list(command)
    if argv and (argv[0] == sys.executable
                 or os.path.basename(argv[0]).startswith("python")):
        argv[0] = python
    return tuple(argv)


def command_paths(command: Sequence[str]) -> list[str]:
    """Host directories the command refers to: its script's and its --config-dir ones."""
    paths = []
    if len(command) > 1 and command[1].startswith("/") and command[1].endswith(".py"):
        paths.append(os.path.dirname(command[1]))
    for i, arg in enumerate(command[:-1]):
        if arg in ("--config-dir", "-cd") and command[i + 1].startswith("/"):
            paths.append(command[i + 1])
    return paths


#: Mount targets that would hide the image's own system (or the host's, read-write).
_SYSTEM_PATHS = frozenset({"/", "/bin", "/dev", "/etc", "/lib", "/lib64", "/opt", "/proc",
                           "/sbin", "/sys", "/usr", "/var"})


#: Characters that end a path inside a mount argument, by runtime: `--volume SRC:DST[:ro]`
#: (podman, docker) splits on ':', `--bind SRC[:DST][:ro][,SRC...]` (apptainer) also on
#: ','. A run directory holding one is mounted wrongly or not at all (measured with
#: podman: "incorrect volume format", exit 125, only once the run had started).
MOUNT_SEPARATORS: dict[str, tuple[str, ...]] = {"apptainer": (":", ","),
                                                 "podman": (":",), "docker": (":",)}


def require_mountable(key: str, path: str, runtime: str, what: str) -> None:
    """ConfigError unless `runtime` can mount `path` (`what`, set by `key`) at its own path."""
    bad = [c for c in MOUNT_SEPARATORS.get(runtime, (":", ",")) if c in path]
    if bad:
        raise ConfigError(key, path, f"{what} cannot be mounted into the container: "
                                     f"container={runtime} splits mount arguments on "
                                     f"{' and '.join(repr(c) for c in bad)}; allowed: a path "
                                     f"without {' or '.join(repr(c) for c in bad)}, or "
                                     "container=none")


def plan_binds(spec: RunSpec, extra: Sequence[Bind], runtime: str = "") -> tuple[Bind, ...]:
    """Every mount of a run: its working directory, script and config directories and run
    directory read-write at their own paths, then `extra`; nested duplicates dropped.
    With `runtime`, a path that runtime cannot mount is refused (ConfigError)."""
    workdir = spec.workdir or spec.run_dir
    own = [("hydra.runtime.cwd", workdir, "the directory the sweep started in"),
           *(("app", p, "the app's script or config directory")
             for p in command_paths(spec.command)),
           ("hydra.sweep.dir", spec.run_dir, "the run directory (hydra.sweep.dir/subdir)")]
    if runtime:
        for key, path, what in own:
            require_mountable(key, path, runtime, what)
    wanted = [Bind(p, p) for _, p, _ in own]
    wanted += list(extra)
    for bind in wanted:
        if os.path.normpath(bind.target) in _SYSTEM_PATHS:
            raise ContainerError(
                f"refusing to mount {bind.source} at {bind.target} inside the container: it "
                "would hide the image's system; run the sweep from the project directory")
    kept: list[Bind] = []
    for bind in wanted:
        covered = any(k.source == k.target and bind.source == bind.target
                      and k.read_only == bind.read_only
                      and (bind.source + "/").startswith(k.source.rstrip("/") + "/")
                      for k in kept)
        if not covered and bind not in kept:
            kept.append(bind)
    return tuple(kept)


def run_env(spec: RunSpec, identity: ImageIdentity) -> tuple[tuple[str, str], ...]:
    """The variables a run needs inside, with the values the provider would give it."""
    env = dict(spec.env)
    env.update({
        **job_variables(spec),
        IMAGE_ENV: identity.reference,
        IMAGE_DIGEST_ENV: identity.digest,
        RUNTIME_ENV: identity.runtime,
    })
    return tuple(sorted(env.items()))


def container_run(spec: RunSpec, settings: ContainerSettings, identity: ImageIdentity,
                  passed: PassedVariables = NO_ENGINE_VARIABLES) -> ContainerRun:
    """The `ContainerRun` of one spec under these settings, passing `passed` from the host."""
    return ContainerRun(
        argv=inner_argv(spec.command, settings.python),
        workdir=spec.workdir or spec.run_dir,
        binds=plan_binds(spec, settings.bind_list(), settings.name),
        env=run_env(spec, identity),
        pass_env=(*PASS_NAMES, *passed.patterns(), *settings.env),
        known_names=passed.all_names(),
        gpus=spec.resources.gpus,
        ranks=spec.resources.tasks,
        time_limit_s=spec.resources.time_min * 60,
        name=f"hpcorch-{spec.sweep_id}-{spec.num}-{spec.attempt}",
    )
