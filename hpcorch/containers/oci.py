"""Podman and Docker: resolve an image to its ID, render `podman|docker run` for a run.

The command names the image by its ID (`sha256:<config digest>`), never by
its tag, so every run of a sweep uses the image resolved when the sweep was
planned, even if the tag is rebuilt meanwhile.

Signals: the runtime client is the run's process (the provider signals its
process group); `--sig-proxy` forwards what it receives into the container,
where `--init` (catatonit / tini) hands it to the command, which the image's
`env` entrypoint exec'd: the Python process receives the SIGTERM/SIGUSR2.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

from hpcorch.containers.base import (
    ContainerError,
    ContainerRun,
    ImageIdentity,
)
from hpcorch.containers.settings import ContainerSettings
from hpcorch.runner import CommandRunner, run_command

#: Seconds a podman container may outlive its run's time limit: the bound on an
#: orphan when its podman client was killed with SIGKILL.
TIMEOUT_GRACE_S = 300
_MISSING_IMAGE = ("no such image", "image not known", "no such object", "not found")


class OciRuntime:
    """`container=podman` or `container=docker`."""

    def __init__(self, settings: ContainerSettings, runner: CommandRunner = run_command,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self.settings = settings
        self.name = settings.name
        self.executable = settings.executable or settings.name
        self._runner = runner
        self._which = which

    def check(self) -> None:
        """The runtime's binary is there (no I/O beyond a PATH lookup)."""
        if self._which(self.executable) is None:
            hint = ("run scripts/podman-up.sh (installs and configures Podman)"
                    if self.name == "podman" else "install Docker and start its daemon")
            raise ContainerError(f"container={self.name}: '{self.executable}' not found on PATH; "
                                 f"{hint}, or choose another runtime (container=none|podman|"
                                 "docker|apptainer)")

    def resolve(self, reference: str) -> ImageIdentity:
        """The image's ID (and registry digest, if any), from the local image store."""
        argv = [self.executable, "image", "inspect", "--format",
                "{{.Id}} {{json .RepoDigests}}", reference]
        try:
            done = self._runner(argv, timeout=60)
        except FileNotFoundError as exc:
            raise ContainerError(f"container={self.name}: cannot run {self.executable}: {exc}") \
                from exc
        if done.returncode != 0:
            err = (done.stderr or done.stdout).strip()
            if any(m in err.lower() for m in _MISSING_IMAGE):
                raise ContainerError(
                    f"container.image={reference!r}: no such image in {self.name}'s local "
                    f"store; build it with containers/build.sh (scripts/podman-up.sh here), "
                    f"or `{self.name} pull {reference}` where a registry is reachable")
            raise ContainerError(f"container={self.name}: {' '.join(argv)} rc={done.returncode}: "
                                 f"{err.splitlines()[-1] if err else ''}")
        image_id, _, repo = done.stdout.strip().partition(" ")
        hexid = image_id.removeprefix("sha256:")
        if len(hexid) != 64 or any(c not in "0123456789abcdef" for c in hexid):
            raise ContainerError(f"container={self.name}: unexpected image ID {image_id!r} "
                                 f"for {reference!r}")
        try:
            repo_digests = json.loads(repo) if repo else []
        except json.JSONDecodeError:
            repo_digests = []
        digest = f"sha256:{hexid}"
        return ImageIdentity(runtime=self.name, reference=reference, digest=digest,
                             run_ref=digest,
                             repo_digest=(repo_digests or [""])[0] or "")

    def argv(self, run: ContainerRun, identity: ImageIdentity) -> list[str]:
        """`podman|docker run ... IMAGE_ID <command>` for one run."""
        podman = self.name == "podman"
        argv = [self.executable, "run", "--rm", "--init", "--sig-proxy=true", "--pull=never",
                "--network", "host" if self.settings.network else "none", "--uts", "host"]
        if run.name and run.ranks <= 1:  # every rank of an MPI run starts its own container
            argv += ["--name", run.name]
            if podman:
                argv.append("--replace")  # a container left by a killed client of this attempt
        if podman and run.time_limit_s:
            argv += ["--timeout", str(run.time_limit_s + TIMEOUT_GRACE_S)]
        if run.ranks > 1:
            argv += ["--ipc", "host"]  # ranks in sibling containers share memory segments
        if not podman and os.geteuid() != 0:
            argv += ["--user", f"{os.getuid()}:{os.getgid()}"]  # files in the run dir stay yours
        argv += ["--workdir", run.workdir]
        for bind in run.binds:
            argv += ["--volume", f"{bind.source}:{bind.target}" + (":ro" if bind.read_only else "")]
        for key, value in run.env:
            argv += ["--env", f"{key}={value}"]
        for name in self._pass_names(run.pass_env, run.known_names):
            argv += ["--env", name]
        if run.gpus > 0:
            argv += list(self.settings.gpu_flags) or (
                ["--device", "nvidia.com/gpu=all"] if podman else ["--gpus", "all"])
        argv += list(self.settings.extra_args)
        argv.append(identity.run_ref)
        argv += list(run.argv)
        return argv

    def _pass_names(self, names: tuple[str, ...], known: tuple[str, ...]) -> list[str]:
        """Podman takes `PREFIX*` patterns as they are; docker needs the names spelled out
        (`known`: the names the patterns stand for)."""
        if self.name == "podman":
            return list(dict.fromkeys(names))
        out = [n for n in names if not n.endswith("*")]
        for pattern in (n[:-1] for n in names if n.endswith("*")):
            out += [n for n in known if n.startswith(pattern)]
        return list(dict.fromkeys(out))
