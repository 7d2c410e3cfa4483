"""Apptainer: pin a SIF file by its content hash, render `apptainer exec` as a user types it.

    apptainer exec --cleanenv --pwd DIR --bind DIR --env HPCORCH_SEED=7 IMG.sif python train.py

Identity: a SIF file has no registry digest, so its SHA-256 is the digest
(cached by path, size, mtime and inode: hashing a large image once per sweep
would be slow). The command names a content-addressed hard link next to the
file (`.hpcorch-sif/<hex>.sif`), so a SIF rebuilt in place mid-sweep does not
change what the remaining runs execute.

Environment: `--cleanenv` starts from nothing and the run's variables are
passed with `--env NAME=VALUE`. Multi-rank and GPU runs keep the host
environment instead (unless container.cleanenv says otherwise): their
PMIx/Open MPI variables and CUDA_VISIBLE_DEVICES exist only on the compute
node when the job starts, and `--env` needs values at render time.

Network: unprivileged Apptainer cannot take the network away (`--net` needs
root or a configured fakeroot), so runs share the host's network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from hpcorch.containers.base import ContainerError, ContainerRun, ImageIdentity
from hpcorch.containers.settings import ContainerSettings
from hpcorch.runner import CommandRunner, run_command
from hpcorch.store.records import atomic_write_json

PIN_DIR = ".hpcorch-sif"
_CHUNK = 1 << 20


def _cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hpcorch" / "sif-digests.json"


def file_digest(path: Path, cache: Path | None = None) -> str:
    """`sha256:<hex>` of a file, remembered by (path, size, mtime_ns, inode)."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"
    cache = cache or _cache_path()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return str(known[key])
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    value = f"sha256:{digest.hexdigest()}"
    known = {k: v for k, v in known.items() if not k.startswith(f"{path.resolve()}:")}
    known[key] = value
    try:
        atomic_write_json(cache, known)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return value


def pin_file(path: Path, digest: str) -> Path:
    """A hard link named by content next to `path` (the file itself when linking fails)."""
    pinned = path.parent / PIN_DIR / f"{digest.removeprefix('sha256:')}.sif"
    try:
        if not pinned.exists():
            pinned.parent.mkdir(exist_ok=True)
            os.link(path, pinned)
        return pinned
    except OSError:
        return path  # read-only image directory: still identified, not protected from rebuilds


class ApptainerRuntime:
    """`container=apptainer`."""

    name = "apptainer"

    def __init__(self, settings: ContainerSettings, runner: CommandRunner = run_command,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self.settings = settings
        self.executable = settings.executable or "apptainer"
        self._runner = runner
        self._which = which

    def check(self) -> None:
        """The apptainer binary is on PATH."""
        if self._which(self.executable) is None:
            raise ContainerError(
                f"container=apptainer: '{self.executable}' not found on PATH (load its module, "
                "e.g. `module load apptainer`); `hpcorch.dry_run=true` still renders the "
                "commands without it")

    def resolve(self, reference: str) -> ImageIdentity:
        """The SIF file's content hash and its pinned path."""
        path = Path(reference).expanduser()
        if not path.is_file():
            raise ContainerError(f"container.image={reference!r}: no such SIF file; build one "
                                 "with containers/build.sh on a machine with apptainer "
                                 "(it converts the OCI image)")
        digest = file_digest(path)
        return ImageIdentity(runtime=self.name, reference=reference, digest=digest,
                             run_ref=str(pin_file(path, digest)))

    def cleanenv(self, run: ContainerRun) -> bool:
        """Whether this run starts from a clean environment (see the module docstring)."""
        if self.settings.cleanenv is not None:
            return self.settings.cleanenv
        return run.ranks <= 1 and run.gpus <= 0

    def argv(self, run: ContainerRun, identity: ImageIdentity) -> list[str]:
        """`apptainer exec ... IMAGE.sif <command>` for one run."""
        argv = [self.executable, "exec"]
        if self.cleanenv(run):
            argv.append("--cleanenv")
        argv += ["--pwd", run.workdir]
        for bind in run.binds:
            same = bind.source == bind.target and not bind.read_only
            spec = bind.source if same else f"{bind.source}:{bind.target}"
            argv += ["--bind", spec + (":ro" if bind.read_only else "")]
        if run.gpus > 0:
            argv += list(self.settings.gpu_flags) or ["--nv"]
        for key, value in run.env:
            argv += ["--env", f"{key}={value}"]
        argv += list(self.settings.extra_args)
        argv.append(identity.run_ref)
        argv += list(run.argv)
        return argv
