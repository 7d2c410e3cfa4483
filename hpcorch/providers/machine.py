"""What this one machine can hold: its usable cores, and how many ranks may share them."""

from __future__ import annotations

import os
from collections.abc import Sequence

from hpcorch.errors import ConfigError
from hpcorch.spec import Resources, RunSpec


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
