"""What this one machine can hold: its usable cores, its memory, how many ranks may share
them, and the memory limit a run started here gets."""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from pathlib import Path

from hpcorch.errors import ConfigError
from hpcorch.spec import ResourceLimits, Resources, RunSpec

#: Where the kernel says how much memory this machine has.
MEMINFO = Path("/proc/meminfo")


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_rank_count(resources: Resources, cores: int | None = None) -> None:
    """ConfigError when a run asks for more ranks than this machine's usable cores,
    unless it opted in with `resources.oversubscribe=true`: hundreds of full Python
    ranks on a few cores thrash the machine long before anything finishes."""
    usable = cores or usable_cores()
    if resources.tasks > usable and not resources.oversubscribe:
        raise ConfigError("resources.tasks", resources.tasks,
                          f"provider=local has {usable} usable core(s): at most {usable} "
                          "ranks, or set resources.oversubscribe=true to start more ranks "
                          "than cores")


def check_ranks(runs: Sequence[RunSpec], cores: int | None = None) -> None:
    """`check_rank_count` for every planned run."""
    for resources in {spec.resources for spec in runs}:
        check_rank_count(resources, cores)


def memory_gb(meminfo: Path = MEMINFO) -> float | None:
    """This machine's memory (MemTotal) in GiB; None when /proc/meminfo is not readable."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        words = value.split()
        if name == "MemTotal" and words and words[0].isdigit():
            return int(words[0]) / 2**20  # kB (KiB, despite the name) -> GiB
    return None


def machine_limits(resources: Resources) -> ResourceLimits:
    """The most one run started on this machine can get: its memory, its usable cores
    (no cap when the run opted into `resources.oversubscribe`), one node."""
    return ResourceLimits(where="this machine", max_mem_gb=memory_gb(),
                          max_cpus=None if resources.oversubscribe else usable_cores(),
                          max_nodes=1)


def memory_limit_bytes(resources: Resources) -> int | None:
    """The RLIMIT_DATA a run started here gets: `resources.mem_gb` GiB, for a run of one
    rank; None (no limit) when mem_gb is None or the run has several ranks.

    RLIMIT_DATA counts the heap and private writable mappings (Linux >= 4.7), not the
    mapped libraries RLIMIT_AS would count, so importing numpy or torch stays cheap; a
    run that asks for more gets MemoryError. Ranks under mpirun are left unlimited: an
    rlimit is per process, so it would bind mpirun's own daemons as well as each rank,
    and a share of mem_gb per rank is not what a person reads `mem_gb` (per node) as."""
    if resources.mem_gb is None or resources.tasks > 1:
        return None
    return int(resources.mem_gb * 2**30)


def limit_memory(limit: int | None) -> None:
    """Set this process's RLIMIT_DATA (soft and hard) to `limit` bytes; nothing for None.
    Called in a run's child before the job runs; never raises above an existing lower
    hard limit (an unprivileged process may only lower it)."""
    if limit is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
