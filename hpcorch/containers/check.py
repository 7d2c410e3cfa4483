"""The preflight: run `hpcorch container check --inside` in the pinned image, judge the answer.

It proves, once per sweep and before anything is submitted, that the image
has Python, has the same hpcorch as the submitting side (version and code),
and can import the research code, and it turns each way of failing into one
clear error (no Python, no hpcorch, other version or code, code that does
not import). It also finds out whether the image holds MPI.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
from dataclasses import dataclass, field, replace
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
class MpiReport:
    """What MPI an image holds (empty strings: none)."""

    mpi4py: str = ""
    """The mpi4py version, or ''."""
    libmpi: str = ""
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
    mpi: MpiReport = field(default_factory=MpiReport)
    """The image's MPI (multi-rank runs need it)."""

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
        out.append(f"mpi       {self.mpi.describe()}")
        return out


def check_argv(python: str, app: str | None) -> tuple[str, ...]:
    """The command run inside the image: IMAGE_PROBE, then `hpcorch container check
    --inside --json` in the same interpreter (one container start for both)."""
    argv = (python, "-c", IMAGE_PROBE + _THEN_CHECK, "container", "check", "--inside", "--json")
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
    probe = _parse(done.stdout, PROBE_KEY)
    data = _parse(done.stdout, "python")
    if data is None or probe is None:
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
    files = probe.get(PROBE_KEY)
    differ = differing_files(files if isinstance(files, dict) else {}, _own_code())
    if differ:
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise ContainerError(
            f"{where} holds other hpcorch code than the submitting side ({hpcorch.__version__} "
            f"at {os.path.dirname(os.path.abspath(hpcorch.__file__))}): {len(differ)} file(s) "
            f"differ ({shown}); rebuild the image (containers/build.sh)")
    return replace(report, mpi=MpiReport(mpi4py=str(probe.get("mpi4py", "")),
                                         libmpi=str(probe.get("libmpi", ""))))


def code_hashes(root: str) -> dict[str, str]:
    """sha256 of every .py file of a package directory, by path relative to it.

    Its source is also sent into the image (IMAGE_PROBE), so both sides hash alike.
    """
    import hashlib
    import os

    out = {}
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(base, name)
                with open(path, "rb") as handle:
                    out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


#: Run inside the image before hpcorch's own check, with the standard library only (so it
#: works with any hpcorch there): the image's hpcorch code, and whether it holds MPI. MPI
#: itself is never started (importing mpi4py.MPI would initialise it). The version alone
#: does not tell: an image built before hpcorch's code changed has the same version, and
#: its worker then fails every run after submission (seen: "the job exited 0 but wrote no
#: run record": its RunSpec lacked a field) or, worse, seeds or records differently.
IMAGE_PROBE = inspect.getsource(code_hashes) + """
import ctypes.util, importlib.metadata, importlib.util, json
mpi4py = ""
if importlib.util.find_spec("mpi4py") is not None:
    try:
        mpi4py = importlib.metadata.version("mpi4py")
    except Exception:
        mpi4py = "?"
found = importlib.util.find_spec("hpcorch")
roots = list(found.submodule_search_locations or []) if found else []
print(json.dumps({"mpi4py": mpi4py, "libmpi": ctypes.util.find_library("mpi") or "",
                  "hpcorch_files": code_hashes(roots[0]) if roots else {}}), flush=True)
"""
#: The probe's own line is the JSON object with this key.
PROBE_KEY = "hpcorch_files"
#: After the probe: `python -m hpcorch ARGS` (what the image's hpcorch says of itself).
_THEN_CHECK = """
import runpy, sys
sys.argv = ["hpcorch", *sys.argv[1:]]
runpy.run_module("hpcorch", run_name="__main__", alter_sys=True)
"""


@functools.lru_cache(maxsize=1)
def _own_code() -> dict[str, str]:
    return code_hashes(os.path.dirname(os.path.abspath(hpcorch.__file__)))


def differing_files(image: dict[str, str], here: dict[str, str]) -> list[str]:
    """hpcorch files that differ between the image and this side (or exist on one only)."""
    return sorted(k for k in set(image) | set(here) if image.get(k) != here.get(k))


def _parse(stdout: str, key: str) -> dict[str, Any] | None:
    """The last JSON object line of `stdout` that has `key`."""
    for line in reversed((stdout or "").strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and key in value:
                return value
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
