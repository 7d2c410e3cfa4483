"""The provider conformance suite: every provider's tests subclass `ProviderContract`.

    class TestLocalContract(ProviderContract):
        @pytest.fixture
        def provider(self):
            return LocalProvider(LocalSettings(workers=2))

Runs are real commands (`python -c ...`) that exit 0, exit 1, or sleep until
cancelled; a provider that cannot run commands (the fake) reads the intended
behaviour from the spec's environment (`HPCORCH_CONTRACT_BEHAVIOUR`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from hpcorch.jobenv import CONTRACT_BEHAVIOUR_ENV
from hpcorch.providers.base import Capabilities, Provider
from hpcorch.spec import RunHandle, RunSpec, RunState, RunStatus

BEHAVIOUR_ENV = CONTRACT_BEHAVIOUR_ENV

_SCRIPTS = {
    "succeed": "print('contract run ok')",
    "fail": "import sys; print('contract run failing', file=sys.stderr); sys.exit(3)",
    "hang": "import time; time.sleep(600)",
}


def contract_spec(tmp_path: Path, num: int, behaviour: str = "succeed",
                  python: str = sys.executable) -> RunSpec:
    """A RunSpec whose command does what `behaviour` says."""
    run_dir = tmp_path / "sweep" / str(num)
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunSpec(run_key=f"contract{num:04d}{behaviour}", sweep_id="contract", num=num,
                   overrides=(f"n={num}",), config={"n": num}, seed=num, run_dir=str(run_dir),
                   command=(python, "-c", _SCRIPTS[behaviour]),
                   env=((BEHAVIOUR_ENV, behaviour),), workdir=str(tmp_path))


def wait_terminal(provider: Provider, handles: Sequence[RunHandle],
                  timeout: float = 120.0) -> list[RunStatus]:
    """Poll until every handle is terminal (or fail the test after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    interval = provider.poll_interval
    while True:
        statuses = provider.status(handles)
        if all(s.state.terminal for s in statuses):
            return statuses
        if time.monotonic() > deadline:
            pytest.fail(f"runs not terminal after {timeout}s: {[s.state for s in statuses]}")
        time.sleep(interval)
        interval = min(interval * 1.5, provider.max_poll_interval)


def wait_state(provider: Provider, handle: RunHandle, state: RunState,
               timeout: float = 120.0) -> None:
    """Poll until `handle` reaches `state`."""
    deadline = time.monotonic() + timeout
    while provider.status([handle])[0].state is not state:
        if time.monotonic() > deadline:
            pytest.fail(f"{handle} never reached {state.value}")
        time.sleep(provider.poll_interval)


class ProviderContract:
    """What every provider must do. Subclasses supply the `provider` fixture."""

    timeout: float = 120.0
    """Seconds a contract run may take on this provider."""

    @pytest.fixture
    def provider(self) -> Provider:  # pragma: no cover - always overridden
        raise NotImplementedError

    @pytest.fixture
    def make_spec(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        def make(num: int, behaviour: str = "succeed") -> RunSpec:
            return contract_spec(tmp_path, num, behaviour)
        return make

    def test_is_a_provider(self, provider: Provider) -> None:
        assert isinstance(provider, Provider)
        assert provider.name and provider.poll_interval > 0
        assert provider.max_poll_interval >= provider.poll_interval

    def test_check_passes(self, provider: Provider) -> None:
        provider.check()

    def test_render_names_every_run(self, provider: Provider, make_spec) -> None:  # type: ignore[no-untyped-def]
        specs = [make_spec(0), make_spec(1)]
        text = provider.render(specs)
        assert isinstance(text, str)
        for spec in specs:
            assert spec.run_dir in text or spec.run_key in text

    def test_empty_batch(self, provider: Provider) -> None:
        assert provider.submit([]) == []
        assert provider.status([]) == []
        provider.cancel([])

    def test_submit_runs_and_succeeds(self, provider: Provider, make_spec) -> None:  # type: ignore[no-untyped-def]
        specs = [make_spec(i) for i in range(3)]
        handles = provider.submit(specs)
        assert [h.run_key for h in handles] == [s.run_key for s in specs]
        assert len({h.job_id for h in handles}) == 3
        statuses = wait_terminal(provider, handles, self.timeout)
        assert [s.state for s in statuses] == [RunState.SUCCEEDED] * 3
        assert [s.handle for s in statuses] == handles

    def test_failure_carries_context(self, provider: Provider, make_spec) -> None:  # type: ignore[no-untyped-def]
        handles = provider.submit([make_spec(0, "fail"), make_spec(1)])
        statuses = wait_terminal(provider, handles, self.timeout)
        assert [s.state for s in statuses] == [RunState.FAILED, RunState.SUCCEEDED]
        context = statuses[0].context
        assert context is not None and context.provider == provider.name
        assert context.exit_code == 3
        assert "contract run failing" in context.stderr_tail

    def test_cancel_is_idempotent_and_final(self, provider: Provider, make_spec) -> None:  # type: ignore[no-untyped-def]
        [handle] = provider.submit([make_spec(0, "hang")])
        wait_state(provider, handle, RunState.RUNNING, self.timeout)
        provider.cancel([handle])
        provider.cancel([handle])
        [status] = wait_terminal(provider, [handle], self.timeout)
        assert status.state is RunState.CANCELLED

    def test_lookup_finds_open_submissions(self, provider: Provider, make_spec) -> None:  # type: ignore[no-untyped-def]
        spec = make_spec(0, "hang")
        [handle] = provider.submit([spec])
        try:
            found = provider.lookup([spec.run_key, "no-such-key"])
            assert [h.run_key for h in found] == [spec.run_key]
            assert provider.lookup([spec.run_key], sweep_id=spec.sweep_id) == found
            # the same experiment in another sweep directory: same key, not the same run
            assert provider.lookup([spec.run_key], sweep_id="another-sweep") == []
        finally:
            provider.cancel([handle])

    def test_unknown_handle_is_unknown(self, provider: Provider) -> None:
        handle = RunHandle(provider.name, "never-submitted", "999999999")
        [status] = provider.status([handle])
        assert status.state is RunState.UNKNOWN


class FakeProvider:
    """An in-memory provider for unit tests: runs nothing, follows each spec's
    `HPCORCH_CONTRACT_BEHAVIOUR` (succeed, fail, hang) one state per status call."""

    name = "fake"
    capabilities = Capabilities()
    poll_interval = 0.001
    max_poll_interval = 0.01

    def __init__(self) -> None:
        self.submitted: list[RunSpec] = []
        self.calls: dict[str, int] = {"submit": 0, "status": 0, "cancel": 0, "lookup": 0}
        self._state: dict[str, RunState] = {}
        self._specs: dict[str, RunSpec] = {}

    def check(self) -> None:
        """Always reachable."""

    def render(self, runs: Sequence[RunSpec]) -> str:
        """One line per run."""
        return "".join(f"fake run {s.run_key} in {s.run_dir}\n" for s in runs)

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """Accept the runs."""
        self.calls["submit"] += 1
        handles = []
        for spec in runs:
            job_id = f"fake-{len(self._specs)}"
            self._specs[job_id] = spec
            self._state[job_id] = RunState.SUBMITTED
            self.submitted.append(spec)
            handles.append(RunHandle(self.name, spec.run_key, job_id))
        return handles

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Open runs with these keys (of this sweep, when given)."""
        self.calls["lookup"] += 1
        wanted = set(run_keys)
        return [RunHandle(self.name, s.run_key, j) for j, s in self._specs.items()
                if s.run_key in wanted and not self._state[j].terminal
                and sweep_id in (None, s.sweep_id)]

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """Advance every run one step: SUBMITTED -> RUNNING -> outcome."""
        from hpcorch.spec import FailureContext

        self.calls["status"] += 1
        out = []
        for handle in handles:
            state = self._state.get(handle.job_id)
            if state is None:
                out.append(RunStatus(handle, RunState.UNKNOWN))
                continue
            behaviour = dict(self._specs[handle.job_id].env).get(BEHAVIOUR_ENV, "succeed")
            if state is RunState.SUBMITTED:
                state = RunState.RUNNING
            elif state is RunState.RUNNING and behaviour == "succeed":
                state = RunState.SUCCEEDED
            elif state is RunState.RUNNING and behaviour == "fail":
                state = RunState.FAILED
            self._state[handle.job_id] = state
            context = None
            if state is RunState.FAILED:
                context = FailureContext(self.name, job_id=handle.job_id, exit_code=3,
                                         stderr_tail="contract run failing")
            out.append(RunStatus(handle, state, context))
        return out

    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """Mark open runs CANCELLED."""
        self.calls["cancel"] += 1
        for handle in handles:
            if handle.job_id in self._state and not self._state[handle.job_id].terminal:
                self._state[handle.job_id] = RunState.CANCELLED

    def close(self) -> None:
        """Nothing to release."""
