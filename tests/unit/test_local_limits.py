"""provider=local's memory limit, its limits and its failure classes: real child processes.

A run's child gets `resources.mem_gb` as RLIMIT_DATA (cold through Popen, warm in the
fork); a failed run's context carries its peak memory and, where the pool can tell,
OOM or CANCELLED.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hpcorch.providers import machine
from hpcorch.providers.kills import kill_reason, oom_killed
from hpcorch.providers.local import LocalProvider, LocalSettings
from hpcorch.providers.mpi import MpiProvider, MpiSettings
from hpcorch.spec import FailureClass, Resources, RunSpec, RunState
from hpcorch.testing import contract_spec, wait_state, wait_terminal

#: Prints the child's RLIMIT_DATA soft limit (-1: unlimited).
SHOW_LIMIT = "import resource; print(resource.getrlimit(resource.RLIMIT_DATA)[0])"


def _spec(tmp_path: Path, num: int, code: str, **resources: object) -> RunSpec:
    return replace(contract_spec(tmp_path, num), resources=Resources(**resources),  # type: ignore[arg-type]
                   command=(sys.executable, "-c", code))


def _stdout(spec: RunSpec) -> str:
    return (Path(spec.run_dir) / ".hpcorch" / "stdout.log").read_text()


def _run_command_in_child(spec: RunSpec) -> int:
    """A warm executor: what the forked child does is the spec's command's, but the
    rlimit it set is inherited by that command, so the command reports it."""
    return subprocess.run(list(spec.command), check=False).returncode


def test_memory_limit_bytes_only_for_one_rank_with_mem_gb() -> None:
    assert machine.memory_limit_bytes(Resources(mem_gb=0.25)) == 2**28
    assert machine.memory_limit_bytes(Resources()) is None
    assert machine.memory_limit_bytes(Resources(mem_gb=1.0, tasks=2)) is None


@pytest.mark.parametrize("warm", [False, True])
def test_a_run_starts_with_its_memory_limit_and_none_without(tmp_path: Path, warm: bool) -> None:
    provider = LocalProvider(LocalSettings(workers=2, warm=warm),
                             executor=_run_command_in_child)
    try:
        limited, free = _spec(tmp_path, 0, SHOW_LIMIT, mem_gb=0.5), _spec(tmp_path, 1, SHOW_LIMIT)
        statuses = wait_terminal(provider, provider.submit([limited, free]), 60)
    finally:
        provider.close()
    assert [s.state for s in statuses] == [RunState.SUCCEEDED] * 2, statuses
    assert int(_stdout(limited)) == 2**29
    assert int(_stdout(free)) == resource.getrlimit(resource.RLIMIT_DATA)[0]


def test_limit_memory_keeps_below_a_lower_hard_limit(tmp_path: Path) -> None:
    code = ("import resource; from hpcorch.providers.machine import limit_memory\n"
            "resource.setrlimit(resource.RLIMIT_DATA, (2**33, 2**33))\n"
            "limit_memory(2**34); print(resource.getrlimit(resource.RLIMIT_DATA))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == f"({2**33}, {2**33})"


def test_memory_error_is_oom_with_the_peak_memory(tmp_path: Path) -> None:
    hog = _spec(tmp_path, 0, "block = bytearray(64 * 2**20)\nfor i in range(0, len(block), "
                "4096):\n    block[i] = 1\nraise MemoryError", mem_gb=1.0)
    plain = _spec(tmp_path, 1, "raise ValueError('no')")
    provider = LocalProvider(LocalSettings(workers=2, warm=False))
    try:
        oom, app = wait_terminal(provider, provider.submit([hog, plain]), 60)
    finally:
        provider.close()
    assert oom.state is RunState.FAILED and oom.context is not None
    assert oom.context.failure_class is FailureClass.OOM, oom.context
    assert oom.context.peak_mem_gb is not None and 0.06 < oom.context.peak_mem_gb < 1.0
    assert app.state is RunState.FAILED and app.context is not None
    assert app.context.failure_class is None  # left to the orchestrator: APP_ERROR
    assert app.context.peak_mem_gb is not None


def test_only_the_last_traceback_counts(tmp_path: Path) -> None:
    """The stderr file collects every attempt: an earlier MemoryError is not this one's."""
    spec = _spec(tmp_path, 0, "raise KeyError('x')")
    stderr = Path(spec.run_dir) / ".hpcorch" / "stderr.log"
    stderr.parent.mkdir(parents=True, exist_ok=True)
    stderr.write_text("Traceback (most recent call last):\n  File x\nMemoryError\n")
    provider = LocalProvider(LocalSettings(workers=1, warm=False))
    try:
        [status] = wait_terminal(provider, provider.submit([spec]), 60)
    finally:
        provider.close()
    assert status.context is not None and "KeyError" in status.context.stderr_tail
    assert status.context.failure_class is None


def test_cancelled_run_is_classed_cancelled(tmp_path: Path) -> None:
    spec = _spec(tmp_path, 0, "import time; time.sleep(600)")
    provider = LocalProvider(LocalSettings(workers=1, warm=False))
    try:
        [handle] = provider.submit([spec])
        wait_state(provider, handle, RunState.RUNNING, 30)
        time.sleep(0.2)  # let the child reach its sleep: SIGTERM then ends it at once
        provider.cancel([handle])
        [status] = wait_terminal(provider, [handle], 30)
    finally:
        provider.close()
    assert status.state is RunState.CANCELLED and status.context is not None
    assert status.context.failure_class is FailureClass.CANCELLED


def test_oom_killed_needs_sigkill_and_a_grown_counter() -> None:
    kill = -signal.SIGKILL
    assert oom_killed(kill, 3, 4)
    assert not oom_killed(kill, 3, 3)
    assert not oom_killed(kill, None, 4)
    assert not oom_killed(-signal.SIGTERM, 3, 4)
    assert not oom_killed(1, 3, 4)
    assert "by the kernel's OOM killer" in kill_reason(kill, 3, 4, 2048)
    assert "not by hpcorch" in kill_reason(kill, 3, 3, None)


def test_memory_gb_reads_memtotal(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:         1000 kB\n")
    assert machine.memory_gb(meminfo) == pytest.approx(16384000 / 2**20)
    meminfo.write_text("MemFree: 1 kB\n")
    assert machine.memory_gb(meminfo) is None
    assert machine.memory_gb(tmp_path / "missing") is None


def test_local_limits_are_this_machine() -> None:
    limits = LocalProvider().limits(Resources())
    assert limits.where == "this machine" and limits.max_nodes == 1
    assert limits.max_cpus == machine.usable_cores()
    assert limits.max_mem_gb == machine.memory_gb()
    assert limits.max_mem_gb is not None and limits.max_mem_gb > 0
    too_much = Resources(mem_gb=limits.max_mem_gb * 2, cpus=limits.max_cpus + 1)
    assert [v[0] for v in limits.violations(too_much)] == ["resources.mem_gb", "resources.cpus"]
    # A run that opted into oversubscribing the cores is not capped by them.
    assert LocalProvider().limits(Resources(oversubscribe=True)).max_cpus is None


def test_mpi_limits_count_the_hosts() -> None:
    provider = MpiProvider(MpiSettings(hosts=("a:2", "b:2", "c")))
    limits = provider.limits(Resources())
    assert (limits.max_nodes, limits.max_mem_gb, limits.max_cpus) == (3, None, None)
    assert limits.violations(Resources(nodes=4, tasks=4))[0][0] == "resources.nodes"
