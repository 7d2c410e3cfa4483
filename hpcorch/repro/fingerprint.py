"""The environment fingerprint: what software and machine produced a run.

Collected inside the job. The expensive, sweep-wide parts (installed
distributions, git state, GPU query) are computed once per process and
reused, and the orchestrator passes the code version down in the RunSpec.

Sections: python/platform, packages (every distribution and version), git
(commit, dirty-diff hash, hash of untracked source files), container (image
and digest, from HPCORCH_IMAGE / HPCORCH_IMAGE_DIGEST set by the container
layer), host, cpu, gpu (nvidia-smi, when present), mpi (when mpi4py is in use).
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import socket
import sys
from importlib import metadata
from pathlib import PurePosixPath
from typing import Any

import hpcorch
from hpcorch.identity import code_version, script_directory
from hpcorch.jobenv import IMAGE_DIGEST_ENV, IMAGE_ENV
from hpcorch.repro.seeds import STARTUP_HASH_SEED
from hpcorch.runner import CommandRunner, run_command

#: Untracked files that count as source: code and configuration, not data or outputs.
SOURCE_SUFFIXES = frozenset({
    ".py", ".pyx", ".pxd", ".pyi", ".c", ".cc", ".cpp", ".cxx", ".h", ".hpp", ".cu", ".cuh",
    ".f", ".f90", ".jl", ".r", ".sh", ".yaml", ".yml", ".toml", ".cfg", ".ini",
})
_MAX_SOURCE_BYTES = 1 << 20
_MAX_SOURCE_FILES = 5000
#: Directories hpcorch and Hydra write into a run directory: never source.
_OUTPUT_MARKERS = frozenset({".hpcorch", ".hydra"})


@functools.lru_cache(maxsize=1)
def distributions() -> dict[str, str]:
    """Every installed distribution and its version, sorted by name."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]  # None when a broken install lacks it
        if name:
            found[name.lower()] = dist.version
    return dict(sorted(found.items()))


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def untracked_sources(root: str, runner: CommandRunner = run_command) -> dict[str, Any]:
    """A hash of the untracked, not ignored, text source files of a git work tree.

    Hydra and hpcorch output directories (anything under a directory holding
    `.hydra` or `.hpcorch`) are left out, as are binary files and files over 1 MiB.
    """
    listed = runner(["git", "-C", root, "ls-files", "--others", "--exclude-standard", "-z"],
                    timeout=60)
    if listed.returncode != 0:
        return {"error": (listed.stderr or "").strip()[-200:]}
    paths = sorted(p for p in listed.stdout.split("\0") if p)
    run_dirs = {"/".join(parts[:i]) for parts in (PurePosixPath(p).parts for p in paths)
                for i, part in enumerate(parts) if part in _OUTPUT_MARKERS and i > 0}
    digest = hashlib.sha256()
    counted: list[str] = []
    skipped = 0
    for path in paths:
        pure = PurePosixPath(path)
        parts = pure.parts
        if pure.suffix.lower() not in SOURCE_SUFFIXES or pure.name == "multirun.yaml" \
                or any(part in _OUTPUT_MARKERS for part in parts) \
                or any("/".join(parts[:j]) in run_dirs for j in range(1, len(parts))):
            continue
        data = _read_text_source(os.path.join(root, path))
        if data is None or len(counted) >= _MAX_SOURCE_FILES:
            skipped += 1
            continue
        digest.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
        counted.append(path)
    return {"count": len(counted), "hash": digest.hexdigest()[:16] if counted else "",
            "files": counted[:20], "skipped": skipped}


def _read_text_source(path: str) -> bytes | None:
    try:
        if os.path.getsize(path) > _MAX_SOURCE_BYTES:
            return None
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    return None if b"\0" in data[:8192] else data


@functools.lru_cache(maxsize=1)
def _git(directory: str) -> dict[str, Any]:
    version = code_version(directory)
    info: dict[str, Any] = {"commit": version.commit, "dirty": version.dirty,
                            "diff_hash": version.diff_hash, "root": version.root,
                            "label": version.label()}
    if version.root:
        untracked = untracked_sources(version.root)
        info["untracked_count"] = untracked.get("count", 0)
        info["untracked_hash"] = untracked.get("hash", "")
        info["untracked_files"] = untracked.get("files", [])
    return info


def container_info(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The image the run executes in, as the container layer announces it ('' outside one)."""
    env = os.environ if environ is None else environ
    return {"image": env.get(IMAGE_ENV, ""), "digest": env.get(IMAGE_DIGEST_ENV, "")}


_CUDA_VERSION = re.compile(r"CUDA Version:\s*([0-9.]+)")


def gpu_info(runner: CommandRunner = run_command, which: Any = shutil.which) -> dict[str, Any]:
    """GPU models, driver and CUDA version from nvidia-smi ({} when there is none)."""
    if which("nvidia-smi") is None:
        return {}
    query = runner(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader,nounits"], timeout=30)
    if query.returncode != 0:
        return {"error": (query.stderr or query.stdout or "").strip()[-200:]}
    rows = [[c.strip() for c in line.split(",")] for line in query.stdout.splitlines()
            if line.strip()]
    info: dict[str, Any] = {
        "count": len(rows),
        "models": sorted({r[0] for r in rows}),
        "driver": sorted({r[1] for r in rows if len(r) > 1}),
        "memory_mib": sorted({r[2] for r in rows if len(r) > 2}),
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    for key in ("driver", "memory_mib"):
        info[key] = info[key][0] if len(info[key]) == 1 else ",".join(info[key])
    header = runner(["nvidia-smi"], timeout=30)
    found = _CUDA_VERSION.search(header.stdout or "")
    info["cuda"] = found.group(1) if found else ""
    return info


def prime_caches(code_dir: str) -> None:
    """Compute the parts of the fingerprint every run of a sweep shares (installed
    distributions, CPU model, the code's git state) once, in a process whose forks are
    the runs (a warm worker): each run then reads them from the cache it inherits."""
    distributions()
    _cpu_model()
    _git(code_dir)


@functools.lru_cache(maxsize=1)
def _gpu() -> dict[str, Any]:
    return gpu_info()


def torch_info() -> dict[str, Any]:
    """torch's build (CUDA, cuDNN) when the run imported torch ({} otherwise; never imports it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    info: dict[str, Any] = {"version": str(getattr(torch, "__version__", ""))}
    try:
        info["cuda"] = str(torch.version.cuda or "")
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        info["cudnn"] = str(cudnn or "")
        info["cuda_available"] = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001 - a broken torch build must not lose the record
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def mpi_info(modules: dict[str, Any] | None = None) -> dict[str, Any]:
    """MPI vendor, library version and world size when the run uses mpi4py ({} otherwise)."""
    mods = sys.modules if modules is None else modules
    mpi = mods.get("mpi4py.MPI")
    if mpi is None:
        return {}
    info: dict[str, Any] = {"mpi4py": str(getattr(mods.get("mpi4py"), "__version__", ""))}
    try:
        name, version = mpi.get_vendor()
        info["vendor"] = str(name)
        info["vendor_version"] = ".".join(str(v) for v in version)
        library = str(mpi.Get_library_version()).replace("\0", "").strip()  # C string's NUL
        info["library"] = library.splitlines()[0] if library else ""
        info["standard"] = ".".join(str(v) for v in mpi.Get_version())
        if mpi.Is_initialized() and not mpi.Is_finalized():
            info["world_size"] = int(mpi.COMM_WORLD.Get_size())
    except Exception as exc:  # noqa: BLE001 - report what could not be read
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def packages_hash(dists: dict[str, str]) -> str:
    """A short hash of the whole `name==version` list."""
    return hashlib.sha256("\n".join(f"{k}=={v}" for k, v in dists.items()).encode()
                          ).hexdigest()[:16]


def fingerprint(code_dir: str | None = None) -> dict[str, Any]:
    """The fingerprint of this process's environment."""
    dists = distributions()
    gpu = dict(_gpu())
    if torch_info():
        gpu["torch"] = torch_info()
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "hpcorch": hpcorch.__version__,
        "packages": dists,
        "packages_hash": packages_hash(dists),
        "git": _git(code_dir or script_directory(sys.argv[0])),
        "container": container_info(),
        "host": socket.gethostname(),
        "cpu": {"model": _cpu_model(), "count": os.cpu_count(),
                "machine": platform.machine()},
        "gpu": gpu,
        "mpi": mpi_info(),
        "hash_seed": STARTUP_HASH_SEED,
        "hash_seed_fixed": STARTUP_HASH_SEED not in ("", "random"),
        "hash_randomization": bool(sys.flags.hash_randomization),
    }
