"""The environment fingerprint: what software and machine produced a run.

Collected inside the job. The expensive, sweep-wide parts (installed
distributions, git state) are computed once per process and reused, and the
orchestrator passes the code version down in the RunSpec.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

import hpcorch
from hpcorch.identity import code_version, script_directory


@functools.lru_cache(maxsize=1)
def distributions() -> dict[str, str]:
    """Every installed distribution and its version, sorted by name."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
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


@functools.lru_cache(maxsize=1)
def _git(directory: str) -> dict[str, Any]:
    version = code_version(directory)
    return {"commit": version.commit, "dirty": version.dirty, "diff_hash": version.diff_hash,
            "root": version.root, "label": version.label()}


def fingerprint(code_dir: str | None = None) -> dict[str, Any]:
    """The fingerprint of this process's environment."""
    dists = distributions()
    packages_hash = hashlib.sha256(
        "\n".join(f"{k}=={v}" for k, v in dists.items()).encode()).hexdigest()[:16]
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "hpcorch": hpcorch.__version__,
        "packages": dists,
        "packages_hash": packages_hash,
        "git": _git(code_dir or script_directory(sys.argv[0])),
        "host": socket.gethostname(),
        "cpu": {"model": _cpu_model(), "count": os.cpu_count(),
                "machine": platform.machine()},
        "hash_seed": os.environ.get("PYTHONHASHSEED", ""),
        "hash_randomization": bool(sys.flags.hash_randomization),
    }
