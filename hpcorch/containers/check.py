"""The preflight: run `hpcorch container check --inside` in the pinned image, judge the answer.

It proves, once per sweep and before anything is submitted, that the image
has Python, has the same hpcorch version as the submitting side, and can
import the research code, and it turns each way of failing into one clear
error (no Python, no hpcorch, other version, code that does not import).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Protocol

import hpcorch
from hpcorch.containers.base import (
    IMAGE_DIGEST_ENV,
    IMAGE_ENV,
    RUNTIME_ENV,
    ContainerError,
    ContainerRun,
    ImageIdentity,
)
from hpcorch.containers.settings import Bind
from hpcorch.runner import CommandRunner, run_command

CHECK_TIMEOUT_S = 300.0


class Runtime(Protocol):
    """What the preflight needs of a runtime (OciRuntime, ApptainerRuntime)."""

    @property
    def name(self) -> str: ...

    def argv(self, run: ContainerRun, identity: ImageIdentity) -> list[str]: ...


@dataclass(frozen=True)
class CheckReport:
    """What the image said about itself."""

    runtime: str
    image: str
    digest: str
    python: str
    executable: str
    hpcorch: str
    os_release: str
    app: str = ""
    app_ok: bool | None = None
    app_error: str = ""

    def lines(self) -> list[str]:
        """Human-readable lines, one fact each."""
        out = [f"runtime   {self.runtime}",
               f"image     {self.image}  ({self.digest})",
               f"os        {self.os_release or '?'}",
               f"python    {self.python}  ({self.executable})",
               f"hpcorch   {self.hpcorch}  (submitting side: {hpcorch.__version__})"]
        if self.app:
            out.append(f"app       {self.app}: "
                       + ("imports" if self.app_ok else f"does NOT import: {self.app_error}"))
        return out


def check_argv(python: str, app: str | None) -> tuple[str, ...]:
    """The command run inside the image."""
    argv = (python, "-m", "hpcorch", "container", "check", "--inside", "--json")
    return (*argv, "--app", app) if app else argv


def run_check(runtime: Runtime, identity: ImageIdentity, *, python: str = "python",
              app: str | None = None, workdir: str | None = None,
              runner: CommandRunner = run_command) -> CheckReport:
    """Run the check inside the image and raise ContainerError on any problem."""
    workdir = workdir or os.getcwd()
    binds = [Bind(workdir, workdir)]
    if app:
        app = os.path.abspath(app)
        app_dir = os.path.dirname(app)
        if not (app_dir + "/").startswith(workdir.rstrip("/") + "/"):
            binds.append(Bind(app_dir, app_dir, read_only=True))
    run = ContainerRun(argv=check_argv(python, app), workdir=workdir, binds=tuple(binds),
                       env=((IMAGE_ENV, identity.reference), (IMAGE_DIGEST_ENV, identity.digest),
                            (RUNTIME_ENV, identity.runtime)))
    argv = runtime.argv(run, identity)
    try:
        done = runner(argv, timeout=CHECK_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise ContainerError(f"container={runtime.name}: cannot run {argv[0]}: {exc}") from exc
    where = f"image {identity.reference!r} ({identity.digest})"
    data = _parse(done.stdout)
    if data is None:
        raise ContainerError(_diagnose(where, python, done.returncode, done.stderr or ""))
    report = CheckReport(runtime=runtime.name, image=identity.reference, digest=identity.digest,
                         python=str(data.get("python", "")),
                         executable=str(data.get("executable", "")),
                         hpcorch=str(data.get("hpcorch", "")),
                         os_release=str(data.get("os_release", "")),
                         app=str(data.get("app", "")), app_ok=data.get("app_ok"),
                         app_error=str(data.get("app_error", "")))
    if report.hpcorch != hpcorch.__version__:
        raise ContainerError(f"{where} has hpcorch {report.hpcorch}, the submitting side has "
                             f"{hpcorch.__version__}: rebuild the image (containers/build.sh)")
    if report.app and not report.app_ok:
        raise ContainerError(f"{where}: the research code {report.app} does not import inside "
                             f"the image: {report.app_error} (add its dependencies to "
                             "containers/requirements.txt and rebuild)")
    return report


#: Run inside the image by `probe_mpi`: standard library only, and MPI itself is never
#: initialised (importing mpi4py.MPI would start MPI). Works with any hpcorch in the image.
MPI_PROBE = (
    "import ctypes.util, importlib.metadata, importlib.util, json\n"
    "v = ''\n"
    "if importlib.util.find_spec('mpi4py') is not None:\n"
    "    try:\n"
    "        v = importlib.metadata.version('mpi4py')\n"
    "    except Exception:\n"
    "        v = '?'\n"
    "print(json.dumps({'mpi4py': v, 'libmpi': ctypes.util.find_library('mpi') or ''}))\n"
)


@dataclass(frozen=True)
class MpiReport:
    """What MPI an image holds (empty strings: none)."""

    mpi4py: str
    """The mpi4py version, or ''."""
    libmpi: str
    """The MPI library the dynamic linker finds (`libmpi.so.40`), or ''."""

    @property
    def present(self) -> bool:
        """Either half of MPI is there (research code may use MPI without mpi4py)."""
        return bool(self.mpi4py or self.libmpi)

    def describe(self) -> str:
        """`mpi4py 3.1.4, libmpi.so.40`, or `no MPI (neither mpi4py nor libmpi)`."""
        parts = [f"mpi4py {self.mpi4py}"] if self.mpi4py else []
        parts += [self.libmpi] if self.libmpi else []
        return ", ".join(parts) or "no MPI (neither mpi4py nor libmpi)"


def probe_mpi(runtime: Runtime, identity: ImageIdentity, *, python: str = "python",
              runner: CommandRunner = run_command) -> MpiReport:
    """Ask the image whether it holds MPI, without starting MPI (one short container run).

    A multi-rank run starts one process per rank inside the image, and those
    processes can only talk to each other through an MPI library in the image.
    """
    run = ContainerRun(argv=(python, "-c", MPI_PROBE), workdir="/",
                       env=((IMAGE_ENV, identity.reference), (IMAGE_DIGEST_ENV, identity.digest),
                            (RUNTIME_ENV, identity.runtime)))
    argv = runtime.argv(run, identity)
    try:
        done = runner(argv, timeout=CHECK_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise ContainerError(f"container={runtime.name}: cannot run {argv[0]}: {exc}") from exc
    data = _parse(done.stdout)
    if data is None:
        where = f"image {identity.reference!r} ({identity.digest})"
        raise ContainerError(_diagnose(where, python, done.returncode, done.stderr or ""))
    return MpiReport(mpi4py=str(data.get("mpi4py", "")), libmpi=str(data.get("libmpi", "")))


def _parse(stdout: str) -> dict[str, Any] | None:
    for line in reversed((stdout or "").strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _diagnose(where: str, python: str, returncode: int, stderr: str) -> str:
    """One sentence for each way the check can fail before it printed its report."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else f"exit status {returncode}"
    lowered = text.lower()
    if "no module named hpcorch" in lowered or "no module named 'hpcorch'" in lowered:
        return (f"{where} has Python but not hpcorch: build it from containers/Dockerfile "
                "(containers/build.sh) or install hpcorch into it")
    # runc says "executable file not found"; catatonit (podman --init) "failed to exec
    # pid1: No such file or directory"; tini (docker --init) "exec python failed: ...".
    missing = "not found" in lowered or "no such file" in lowered
    if returncode in (126, 127) or (missing and (python in text or "exec" in lowered)):
        return (f"{where} has no `{python}` (container.python): use an image with Python "
                f"and hpcorch (containers/Dockerfile): {last}")
    return f"`hpcorch container check` failed in {where} (exit {returncode}): {last}"
