"""The process pool local and mpi share: pluggable admission, argv and failure hook.

Real child processes (`sh -c ...`), started and reaped by the pool; no engine needed.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hpcorch.providers.local import LocalProvider
from hpcorch.providers.mpi import MpiProvider, MpiSettings
from hpcorch.providers.processes import CoreAdmission, ProcessPool, job_id
from hpcorch.spec import FailureContext, Resources, RunHandle, RunSpec, RunState, RunStatus
from hpcorch.testing import contract_spec


class _Gate:
    """Admits at most `limit` runs at once and logs every call, in order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: set[str] = set()
        self.log: list[tuple[str, str]] = []

    def admit(self, job: str, spec: RunSpec) -> bool:
        ok = len(self.held) < self.limit
        self.log.append(("admit" if ok else "refuse", job))
        if ok:
            self.held.add(job)
        return ok

    def release(self, job: str) -> None:
        self.log.append(("release", job))
        self.held.discard(job)


def _script(spec: RunSpec) -> list[str]:
    """A run's command: exit with the code in its overrides (e.g. ('rc=3',))."""
    rc = next((o.split("=", 1)[1] for o in spec.overrides if o.startswith("rc=")), "0")
    return ["sh", "-c", f"echo bye from {spec.num} >&2; exit {rc}"]


def _settle(pool: ProcessPool, handles: list[RunHandle], timeout: float = 30) -> list[RunStatus]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = pool.status(handles)
        if all(s.state.terminal for s in states):
            return states
        pool.wait(0.2)
    raise AssertionError(f"runs still going after {timeout} s: {pool.status(handles)}")


def test_core_admission_caps_a_big_run_and_keeps_order(tmp_path: Path) -> None:
    cores = CoreAdmission(2)
    big = replace(contract_spec(tmp_path, 0), resources=Resources(tasks=8))
    one = contract_spec(tmp_path, 1)
    assert cores.slots(big) == 2 and cores.slots(one) == 1
    assert cores.admit("a", big) and not cores.admit("b", one)  # a big run still starts alone
    cores.release("a")
    assert cores.admit("b", one) and cores.admit("c", one) and not cores.admit("d", one)
    cores.release("unknown")  # releasing what was never admitted is harmless


def test_pool_admits_in_order_and_releases_after_the_failure_hook(tmp_path: Path) -> None:
    gate = _Gate(limit=1)
    seen: list[tuple[int, bool]] = []

    def failure(spec: RunSpec, context: FailureContext) -> FailureContext:
        seen.append((spec.num, job_id(spec) in gate.held))  # still held while it is named
        return replace(context, reason=f"hook named run {spec.num}")

    pool = ProcessPool("p", gate, _script, failure=failure, poll_interval=0.01)
    specs = [replace(contract_spec(tmp_path, n), overrides=(f"rc={rc}",))
             for n, rc in enumerate((3, 0))]
    handles = pool.submit(specs)
    assert [h.job_id for h in handles] == [job_id(s) for s in specs]
    # Gate: one at a time. Asked right after submit, before anything is reaped: asking
    # `status` here raced with the first run's exit (`sh` can end before the call, and
    # then the second is rightly admitted), under load in the full suite.
    assert gate.held == {job_id(specs[0])} and ("refuse", job_id(specs[1])) in gate.log
    states = _settle(pool, handles)
    assert [s.state for s in states] == [RunState.FAILED, RunState.SUCCEEDED]
    failed = states[0].context
    assert failed is not None and failed.exit_code == 3 and failed.provider == "p"
    assert failed.reason == "hook named run 0" and "bye from 0" in failed.stderr_tail
    assert seen == [(0, True)]  # the hook ran for the failure only, before the release
    first, second = (job_id(s) for s in specs)
    assert gate.log[0] == ("admit", first) and ("refuse", second) in gate.log
    assert gate.log.index(("release", first)) < gate.log.index(("admit", second))
    assert gate.log[-1] == ("release", second) and pool.idle and not gate.held
    pool.close()


def test_cancelled_runs_are_released_and_not_blamed(tmp_path: Path) -> None:
    gate = _Gate(limit=1)
    blamed: list[int] = []

    def failure(spec: RunSpec, context: FailureContext) -> FailureContext:
        blamed.append(spec.num)
        return context

    pool = ProcessPool("p", gate, lambda spec: ["sleep", "30"], failure=failure)
    handles = pool.submit([contract_spec(tmp_path, 0), contract_spec(tmp_path, 1)])
    pool.cancel(handles)
    states = pool.status(handles)
    assert [s.state for s in states] == [RunState.CANCELLED, RunState.CANCELLED]
    context = states[1].context
    assert context is not None and "before it started" in context.reason
    assert not blamed and not gate.held and pool.idle


def test_providers_compose_the_pool_instead_of_inheriting() -> None:
    """Issue 11: no provider inherits another's private methods."""
    assert not issubclass(MpiProvider, LocalProvider)
    assert LocalProvider not in inspect.getmro(MpiProvider)
    local, mpi = LocalProvider(), MpiProvider(MpiSettings())
    assert isinstance(local.processes, ProcessPool) and isinstance(mpi.processes, ProcessPool)
    assert isinstance(local.processes.admission, CoreAdmission)
    assert mpi.processes.admission is mpi.slots and mpi.processes.executor is None


def test_pool_start_failure_gives_the_admission_back(tmp_path: Path) -> None:
    gate = _Gate(limit=1)
    pool = ProcessPool("p", gate, lambda spec: [str(tmp_path / "no-such-program")])
    with pytest.raises(OSError):
        pool.submit([contract_spec(tmp_path, 0)])
    job = job_id(contract_spec(tmp_path, 0))
    assert gate.log == [("admit", job), ("release", job)] and not gate.held
