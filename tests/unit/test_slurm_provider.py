"""The Slurm provider against a fake of the Slurm commands: the CommandRunner seam for
squeue/sacct/scancel/scontrol, and fake `sbatch`/`srun` executables first on PATH for
submitit (which runs `sbatch <script>` itself); they talk to FakeSlurm through files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hpcorch.errors import ProviderError, ProviderUnavailable, TransientSubmitError
from hpcorch.launch import Launcher
from hpcorch.providers.slurm.accounting import ClusterLimits
from hpcorch.providers.slurm.provider import SlurmProvider
from hpcorch.providers.slurm.settings import SlurmSettings
from hpcorch.providers.slurm.task import TaskState, write_task_state
from hpcorch.spec import FailureClass, Resources, RunHandle, RunSpec, RunState

#: The fake `sbatch` submitit runs: reads the #SBATCH lines of the script it is given,
#: takes the next queued error (null: none) from the control file, logs the call.
FAKE_SBATCH = """\
import json, sys
control_path, log_path = sys.argv[1], sys.argv[2]
script = sys.argv[-1]
options = dict(line[len("#SBATCH --"):].partition("=")[::2]
               for line in open(script).read().splitlines() if line.startswith("#SBATCH --"))
control = json.load(open(control_path))
error = control["errors"].pop(0) if control["errors"] else None
job = None
if error is None or control["accepted_despite_error"]:
    job = str(control["next_id"])
    control["next_id"] += 1
json.dump(control, open(control_path, "w"))
with open(log_path, "a") as log:
    log.write(json.dumps({"argv": ["sbatch", *sys.argv[3:]], "script": script,
                          "job_name": options.get("job-name"), "chdir": options.get("chdir"),
                          "array": options.get("array"), "job_id": job}) + "\\n")
if error is not None:
    print(error, file=sys.stderr)
    sys.exit(1)
print(f"Submitted batch job {job}")
"""


class FakeSlurm:
    """Answers sacct/squeue/scancel/scontrol (the injected runner) and, through the fake
    `sbatch` on PATH, submitit's submissions, from a table of job states."""

    def __init__(self, root: Path) -> None:
        self.calls: list[list[str]] = []
        self._states: dict[str, str] = {}  # "100_0" -> "RUNNING|0:0|vm"
        self._names: dict[str, tuple[str, str]] = {}  # array id -> (job name, workdir)
        self.max_rss: dict[str, str] = {}  # "100_0" -> sacct's MaxRSS of its batch step
        self.accounting = True
        self.bin = root / "fakebin"
        self.bin.mkdir()
        self.control = root / "sbatch-control.json"
        self.log = root / "sbatch-calls.jsonl"
        self._seen = 0
        self._write_control(errors=[], accepted_despite_error=False, next_id=100)
        (self.bin / "sbatch.py").write_text(FAKE_SBATCH)
        self._executable("sbatch", f'exec {sys.executable} {self.bin / "sbatch.py"} '
                         f'{self.control} {self.log} "$@"')
        self._executable("srun", 'echo "fake srun: not for unit tests" >&2; exit 1')
        for name in ("sacct", "squeue", "scancel", "scontrol"):  # never the real Slurm
            self._executable(name, f'echo "{name} must go through the runner" >&2; exit 1')

    def _executable(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def _write_control(self, **values: Any) -> None:
        data = json.loads(self.control.read_text()) if self.control.exists() else {}
        self.control.write_text(json.dumps({**data, **values}))

    @property
    def sbatch_errors(self) -> list[str | None]:
        return list(json.loads(self.control.read_text())["errors"])

    @sbatch_errors.setter
    def sbatch_errors(self, errors: list[str | None]) -> None:
        self._write_control(errors=list(errors))

    @property
    def accepted_despite_error(self) -> bool:
        return bool(json.loads(self.control.read_text())["accepted_despite_error"])

    @accepted_despite_error.setter
    def accepted_despite_error(self, value: bool) -> None:
        self._write_control(accepted_despite_error=value)

    def sbatch_calls(self) -> list[dict[str, Any]]:
        """Every sbatch submitit ran, in order (argv, script, job name, --array, job id)."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def _sync(self) -> None:
        """Learn the jobs the fake sbatch accepted since the last look."""
        calls = self.sbatch_calls()
        for call in calls[self._seen:]:
            job = call["job_id"]
            if job is None:
                continue
            self._names[job] = (call["job_name"], call["chdir"])
            if call["array"] is None:  # a plain job: submitit's single task
                self._states[job] = "PENDING|0:0|None assigned"
            else:
                size = int(call["array"].split("-")[1].split("%")[0]) + 1
                for i in range(size):
                    self._states[f"{job}_{i}"] = "PENDING|0:0|None assigned"
        self._seen = len(calls)

    @property
    def states(self) -> dict[str, str]:
        self._sync()
        return self._states

    @property
    def names(self) -> dict[str, tuple[str, str]]:
        self._sync()
        return self._names

    def __call__(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        self._sync()
        self.calls.append(argv)
        handler = getattr(self, "_" + argv[0])
        rc, out, err = handler(argv)
        return subprocess.CompletedProcess(argv, rc, out, err)

    def count(self, name: str) -> int:
        if name == "sbatch":
            return len(self.sbatch_calls())
        return sum(1 for c in self.calls if c[0] == name)

    def _scontrol(self, argv: list[str]) -> tuple[int, str, str]:
        storage = "slurmdbd" if self.accounting else "none"
        return 0, f"MaxArraySize = 1001\nAccountingStorageType = accounting_storage/{storage}\n", ""

    def _sacct(self, argv: list[str]) -> tuple[int, str, str]:
        if not self.accounting:
            return 1, "", "sacct: error: Slurm accounting storage is disabled\n"
        arrays = argv[argv.index("-j") + 1].split(",")
        lines = []
        for job_id, text in self.states.items():
            array = job_id.split("_")[0]
            if array in arrays:
                state, exit_code, node = text.split("|")
                name, workdir = self.names.get(array, ("x", "/"))
                lines.append(f"{job_id}|{state}|{exit_code}|{node}|None|{name}|Unknown||"
                             f"{workdir}")
                if job_id in self.max_rss:  # sacct has MaxRSS on the step lines only
                    lines.append(f"{job_id}.batch|{state}|{exit_code}|{node}||batch|Unknown|"
                                 f"{self.max_rss[job_id]}|")
        return 0, "\n".join(lines) + "\n", ""

    def _squeue(self, argv: list[str]) -> tuple[int, str, str]:
        if "--name" in argv:
            name = argv[argv.index("--name") + 1]
            ids = [a for a, (n, _) in self.names.items() if n == name]
            return 0, "".join(f"{a}\n" for a in ids), ""
        if "-O" in argv:
            arrays = argv[argv.index("-j") + 1].split(",")
            lines = []
            for job_id, text in self.states.items():
                array, _, task = job_id.partition("_")
                task = task or "N/A"  # a plain job
                if array in arrays:
                    state, _, node = text.split("|")
                    name, workdir = self.names.get(array, ("x", "/"))
                    lines.append(f"{array}|{task}|{job_id}|{state}|None|{node}|0|{name}|{workdir}")
            return 0, "\n".join(lines) + "\n", ""
        rows = [f"{j}|{text.split('|')[0]}|{self.names[j.split('_')[0]][0]}|"
                f"{self.names[j.split('_')[0]][1]}" for j, text in self.states.items()]
        return 0, "\n".join(rows) + "\n", ""

    def _scancel(self, argv: list[str]) -> tuple[int, str, str]:
        errors = []
        for job_id in argv[1:]:
            text = self.states.get(job_id)
            if text is None:
                errors.append(f"scancel: error: Kill job error on job id {job_id}: "
                              "Invalid job id specified")
            elif text.startswith(("PENDING", "RUNNING")):
                self.states[job_id] = "CANCELLED by 0|0:15|vm"
            else:
                errors.append(f"scancel: error: Kill job error on job id {job_id}: "
                              "Job/step already completing or completed")
        return (1 if errors else 0), "", "\n".join(errors)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    slurm = FakeSlurm(tmp_path)
    monkeypatch.setenv("PATH", f"{slurm.bin}{os.pathsep}{os.environ['PATH']}")
    return slurm


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(fake: FakeSlurm, clock: Clock, **settings: Any) -> SlurmProvider:
    return SlurmProvider(SlurmSettings(**settings), runner=fake, clock=clock)


def specs(tmp_path: Path, n: int) -> list[RunSpec]:
    out = []
    for num in range(n):
        run_dir = tmp_path / "sweep" / str(num)
        out.append(RunSpec(run_key=f"k{num}", sweep_id="sw", num=num, overrides=(), config={},
                           seed=num, run_dir=str(run_dir), command=("python", "-c", "pass")))
    return out


def test_one_sbatch_per_array_and_handles_in_order(tmp_path: Path, fake: FakeSlurm,
                                                     clock: Clock) -> None:
    provider = make(fake, clock, max_array_size=4)
    handles = provider.submit(specs(tmp_path, 10))
    assert fake.count("sbatch") == 3
    assert [h.job_id for h in handles][:5] == ["100_0", "100_1", "100_2", "100_3", "101_0"]
    assert [h.run_key for h in handles] == [f"k{i}" for i in range(10)]
    assert (tmp_path / "sweep/0/.hpcorch/spec.json").exists()  # written for the job


def test_transient_failure_of_a_later_array_raises_with_the_handles_already_in(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    """One try per array, no sleeping: the orchestrator backs off and submits the rest."""
    provider = make(fake, clock, max_array_size=2)
    fake.sbatch_errors = [None, "sbatch: error: Batch job submission failed: Socket timed out "
                                "on send/recv operation"]
    runs = specs(tmp_path, 5)  # arrays of 2, 2 and 1 runs
    with pytest.raises(TransientSubmitError) as err:
        provider.submit(runs)
    assert fake.count("sbatch") == 2 and len(fake.names) == 1  # the third never tried
    assert [(h.run_key, h.job_id) for h in err.value.submitted] == [("k0", "100_0"),
                                                                  ("k1", "100_1")]
    assert not any(c[0] == "scancel" for c in fake.calls)  # what got in stays in
    assert err.value.returncode == 1 and "Socket timed out" in str(err.value)
    assert str(err.value).startswith("[slurm] sbatch rc=1: submitting ")
    # The orchestrator submits the rest again: the same runs, the same arrays.
    rest = provider.submit(runs[2:])
    assert [h.job_id for h in rest] == ["101_0", "101_1", "102"]
    assert fake.count("sbatch") == 4


def test_transient_failure_of_the_first_array_raises_with_nothing_in(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    fake.sbatch_errors = ["sbatch: error: Resource temporarily unavailable"] * 10
    with pytest.raises(TransientSubmitError) as err:
        make(fake, clock).submit(specs(tmp_path, 3))
    assert err.value.submitted == [] and fake.count("sbatch") == 1
    assert isinstance(err.value, ProviderError)  # callers that know only ProviderError


def test_timed_out_sbatch_that_got_through_is_not_submitted_twice(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    fake.sbatch_errors = ["sbatch: error: Socket timed out on send/recv operation"]
    fake.accepted_despite_error = True
    handles = make(fake, clock).submit(specs(tmp_path, 2))
    assert fake.count("sbatch") == 1 and len(fake.names) == 1
    assert [h.job_id for h in handles] == ["100_0", "100_1"]
    assert fake.count("squeue") == 1  # find(job name) said it got in


def test_resubmission_after_a_refusal_finds_an_array_that_got_in_late(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    """squeue did not show it when sbatch failed; when the same runs come again, it does."""
    provider = make(fake, clock)
    runs = specs(tmp_path, 2)
    fake.sbatch_errors = ["sbatch: error: Socket timed out on send/recv operation"]
    fake.accepted_despite_error = True
    real_squeue = fake._squeue
    fake._squeue = lambda argv: (0, "", "")  # type: ignore[method-assign]
    with pytest.raises(TransientSubmitError):
        provider.submit(runs)
    fake._squeue = real_squeue  # type: ignore[method-assign]
    handles = provider.submit(runs)
    assert fake.count("sbatch") == 1 and [h.job_id for h in handles] == ["100_0", "100_1"]


def test_other_sbatch_errors_fail_at_once_with_argv_rc_and_stderr(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    fake.sbatch_errors = ["sbatch: error: invalid partition specified: gpux"]
    with pytest.raises(ProviderError) as err:
        make(fake, clock).submit(specs(tmp_path, 1))
    assert fake.count("sbatch") == 1
    [call] = fake.sbatch_calls()
    assert err.value.argv == ("sbatch", call["script"]) and err.value.returncode == 1
    assert Path(call["script"]).parent == tmp_path / "sweep/.hpcorch/slurm/submitit"
    assert "invalid partition" in str(err.value) and str(err.value).startswith("[slurm]")
    assert not isinstance(err.value, TransientSubmitError)


def test_failed_batch_cancels_what_it_submitted(tmp_path: Path, fake: FakeSlurm,
                                                clock: Clock) -> None:
    provider = make(fake, clock, max_array_size=2)
    fake.sbatch_errors = [None, "sbatch: error: QOSMaxSubmitJobPerUserLimit"]
    with pytest.raises(ProviderError):
        provider.submit(specs(tmp_path, 4))
    assert ["scancel", "100"] in fake.calls


def test_status_is_one_sacct_call_per_interval_with_backoff(tmp_path: Path, fake: FakeSlurm,
                                                            clock: Clock) -> None:
    provider = make(fake, clock, query_interval=5.0, max_query_interval=20.0)
    handles = provider.submit(specs(tmp_path, 50))
    assert {s.state for s in provider.status(handles)} == {RunState.SUBMITTED}
    assert fake.count("sacct") == 0  # just submitted: nothing to ask yet
    times = []
    for _ in range(200):  # 100 s of 0.5 s polls
        clock.now += 0.5
        before = fake.count("sacct")
        provider.status(handles)
        if fake.count("sacct") > before:
            times.append(clock.now - 1000)
    assert len(times) == 7, times  # 5, 12.5, 23.75, then every ~20 s
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g <= 20.0 * 1.1 + 0.5 for g in gaps) and gaps[0] < gaps[-1]
    assert all(len(c[c.index("-j") + 1].split(",")) == 1 for c in fake.calls if c[0] == "sacct")


def test_progress_in_the_files_defers_the_scheduler(tmp_path: Path, fake: FakeSlurm,
                                                    clock: Clock) -> None:
    provider = make(fake, clock, query_interval=5.0, max_query_interval=30.0)
    runs = specs(tmp_path, 40)
    handles = provider.submit(runs)
    for step in range(80):  # one run starts every 0.5 s: the jobs show progress by themselves
        clock.now += 0.5
        write_task_state(runs[step // 2].run_dir, TaskState(handles[step // 2].job_id, "RUNNING"))
        provider.status(handles)
    assert fake.count("sacct") == 1  # once per max_query_interval (30 s), not every 5-7 s
    for _ in range(25):  # quiet files: asked again at the latest 30 s after the last query
        clock.now += 1.0
        provider.status(handles)
    assert fake.count("sacct") == 2


def test_a_sigkilled_run_is_asked_of_the_scheduler_soon_despite_progress(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    """Only Slurm can say a SIGKILL was for memory: that answer must not wait 30 s, neither
    for the others' progress nor for a backoff that reached max_query_interval."""
    provider = make(fake, clock, query_interval=5.0, max_query_interval=30.0)
    runs = specs(tmp_path, 40)
    handles = provider.submit(runs)
    for handle in handles:
        fake.states[handle.job_id] = "RUNNING|0:0|c1"
    last = 0
    for _ in range(400):  # 200 s of quiet files: the queries back off to every ~30 s
        clock.now += 0.5
        provider.status(handles)
        if fake.count("sacct") > last:
            last, queried_at = fake.count("sacct"), clock.now
    clock.now = queried_at + 0.5  # just after a query: the next one is ~30 s away
    write_task_state(runs[0].run_dir, TaskState(handles[0].job_id, "EXITED", "c1", signal=9))
    fake.states[handles[0].job_id] = "OUT_OF_MEMORY|0:9|c1"
    for step in range(1, 12):  # 5.5 s in which the others keep showing progress
        clock.now += 0.5
        write_task_state(runs[step].run_dir, TaskState(handles[step].job_id, "RUNNING"))
        first = provider.status(handles)[0]
    assert fake.count("sacct") == last + 1  # within query_interval (5 s)
    assert first.state is RunState.FAILED and first.context is not None
    assert "memory limit" in first.context.reason


def test_sacct_lag_right_after_submission_is_not_asked_of_squeue(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    provider = make(fake, clock)
    handles = provider.submit(specs(tmp_path, 2))
    real_sacct = fake._sacct
    fake._sacct = lambda argv: (0, "", "")  # type: ignore[method-assign]  # dbd not updated yet
    clock.now += 6
    assert [s.state for s in provider.status(handles)] == [RunState.SUBMITTED] * 2
    assert fake.count("squeue") == 0
    fake._sacct = real_sacct  # type: ignore[method-assign]


def test_task_state_files_answer_without_the_scheduler(tmp_path: Path, fake: FakeSlurm,
                                                       clock: Clock) -> None:
    provider = make(fake, clock)
    runs = specs(tmp_path, 3)
    handles = provider.submit(runs)
    (Path(runs[1].run_dir) / ".hpcorch" / "stderr.log").write_text("boom\nValueError: x\n")
    write_task_state(runs[0].run_dir, TaskState("100_0", "EXITED", "vm", exit_code=0))
    write_task_state(runs[1].run_dir, TaskState("100_1", "EXITED", "vm", exit_code=3))
    write_task_state(runs[2].run_dir, TaskState("100_2", "RUNNING", "vm"))
    statuses = provider.status(handles)
    assert [s.state for s in statuses] == [RunState.SUCCEEDED, RunState.FAILED, RunState.RUNNING]
    context = statuses[1].context
    assert context is not None and (context.job_id, context.node, context.exit_code) == (
        "100_1", "vm", 3)
    assert context.stderr_tail.endswith("ValueError: x")
    assert context.failure_class is FailureClass.APP_ERROR
    assert fake.count("sacct") == 0


def test_task_state_of_an_earlier_submission_is_ignored(tmp_path: Path, fake: FakeSlurm,
                                                        clock: Clock) -> None:
    provider = make(fake, clock)
    runs = specs(tmp_path, 1)
    write_task_state(runs[0].run_dir, TaskState("7_0", "EXITED", "vm", exit_code=1))
    [handle] = provider.submit(runs)
    assert provider.status([handle])[0].state is RunState.SUBMITTED


def test_killed_jobs_come_from_sacct_with_context(tmp_path: Path, fake: FakeSlurm,
                                                  clock: Clock) -> None:
    provider = make(fake, clock)
    runs = specs(tmp_path, 3)
    handles = provider.submit(runs)
    write_task_state(runs[0].run_dir, TaskState("100_0", "RUNNING", "c1"))
    (Path(runs[0].run_dir) / ".hpcorch" / "stderr.log").write_text("allocating...\n")
    fake.states.update({"100_0": "OUT_OF_MEMORY|0:125|c1", "100_1": "TIMEOUT|0:0|c2",
                        "100_2": "REQUEUED|0:0|c3"})
    fake.max_rss["100_0"] = "524288K"
    clock.now += 60
    statuses = provider.status(handles)
    assert [s.state for s in statuses] == [RunState.FAILED, RunState.TIMEOUT, RunState.PREEMPTED]
    oom, timeout = statuses[0].context, statuses[1].context
    assert oom is not None and "memory" in oom.reason and oom.node == "c1"
    assert oom.stderr_tail == "allocating..." and oom.job_id == "100_0"
    assert oom.failure_class is FailureClass.OOM and oom.peak_mem_gb == 0.5
    assert timeout is not None and timeout.failure_class is FailureClass.TIMEOUT
    assert timeout.peak_mem_gb is None  # no step sampled: not known, not 0
    assert statuses[2].context is None  # requeued: coming back, not a failure


def test_sigkilled_run_waits_for_slurms_verdict(tmp_path: Path, fake: FakeSlurm,
                                                clock: Clock) -> None:
    provider = make(fake, clock)
    runs = specs(tmp_path, 1)
    [handle] = provider.submit(runs)
    write_task_state(runs[0].run_dir, TaskState("100", "EXITED", "c1", signal=9))
    fake.states["100"] = "OUT_OF_MEMORY|0:9|c1"
    clock.now += 60
    [status] = provider.status([handle])
    assert status.state is RunState.FAILED and status.context is not None
    assert status.context.reason == ("killed by Slurm for exceeding its memory limit "
                                     "(OUT_OF_MEMORY)") and status.context.signal == 9


def test_memory_kill_without_out_of_memory_is_read_from_the_task_log(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    """OverMemoryKill (no cgroups): sacct says only FAILED; slurmstepd's log line tells."""
    provider = make(fake, clock)
    runs = [dataclasses.replace(s, resources=Resources(mem_gb=0.25)) for s in specs(tmp_path, 2)]
    handles = provider.submit(runs)
    for run in runs:  # the whole step was killed: the task wrapper never wrote an exit
        write_task_state(run.run_dir, TaskState(f"100_{run.num}", "RUNNING", "c1"))
    logs = Path(fake.names["100"][1]) / "logs"
    (logs / "100_0.log").write_text("slurmstepd: error: Exceeded job memory limit\n")
    (logs / "100_1.log").write_text("slurmstepd: error: *** JOB 100 ON c1 CANCELLED ***\n")
    fake.states.update({"100_0": "FAILED|0:9|c1", "100_1": "FAILED|0:9|c1"})
    clock.now += 60
    killed, other = provider.status(handles)
    assert killed.state is other.state is RunState.FAILED
    assert killed.context is not None and other.context is not None
    assert killed.context.reason == ("killed by Slurm for exceeding its memory limit of 0.25 GB "
                                     "(resources.mem_gb) (FAILED, its Slurm log says: "
                                     "slurmstepd: error: Exceeded job memory limit)")
    assert "memory" not in other.context.reason
    assert killed.context.failure_class is FailureClass.OOM
    # SIGKILL with no memory evidence: a person, or the kernel's OOM killer; not told
    assert other.context.failure_class is FailureClass.OTHER


def test_without_accounting_one_squeue_call(tmp_path: Path, fake: FakeSlurm,
                                            clock: Clock) -> None:
    fake.accounting = False
    provider = make(fake, clock)
    handles = provider.submit(specs(tmp_path, 3))
    fake.states["100_1"] = "RUNNING|0:0|vm"
    clock.now += 60
    assert [s.state for s in provider.status(handles)] == [
        RunState.SUBMITTED, RunState.RUNNING, RunState.SUBMITTED]
    assert fake.count("sacct") == 0 and fake.count("squeue") == 1


def test_accounting_that_fails_switches_to_squeue(tmp_path: Path, fake: FakeSlurm,
                                                  clock: Clock) -> None:
    provider = make(fake, clock)
    handles = provider.submit(specs(tmp_path, 2))
    fake.accounting = False  # sacct now says disabled, scontrol was read while it was on
    clock.now += 60
    provider.status(handles)
    clock.now += 120
    provider.status(handles)
    assert fake.count("sacct") == 1 and fake.count("squeue") == 2


def test_unknown_job_is_unknown(fake: FakeSlurm, clock: Clock) -> None:
    provider = make(fake, clock)
    [status] = provider.status([RunHandle("slurm", "nope", "999999999")])
    assert status.state is RunState.UNKNOWN and status.context is not None
    assert status.context.failure_class is FailureClass.LOST
    assert status.context.job_id == "999999999" and "squeue" in status.context.reason
    assert fake.count("sacct") == 1 and fake.count("squeue") == 1


def test_cancel_is_one_call_idempotent_and_asks_again_soon(tmp_path: Path, fake: FakeSlurm,
                                                          clock: Clock) -> None:
    provider = make(fake, clock)
    handles = provider.submit(specs(tmp_path, 3))
    provider.cancel(handles)
    provider.cancel(handles)
    provider.cancel([RunHandle("slurm", "x", "555_0")])
    assert fake.count("scancel") == 3
    assert [s.state for s in provider.status(handles)] == [RunState.CANCELLED] * 3


def test_lookup_finds_open_jobs_through_their_map_files(tmp_path: Path, fake: FakeSlurm,
                                                        clock: Clock) -> None:
    runs = specs(tmp_path, 4)
    make(fake, clock, pack=2).submit(runs)
    fake.states["100_0"] = "COMPLETED|0:0|vm"  # runs 0 and 1 are done
    fresh = make(fake, clock)  # another process: knows nothing but Slurm and the files
    found = fresh.lookup(["k0", "k2", "k3", "missing"])
    assert [(h.run_key, h.job_id) for h in found] == [("k2", "100_1"), ("k3", "100_1")]
    assert fake.count("squeue") == 1
    fake.states["100_1"] = "FAILED|3:0|vm"
    clock.now += 60
    statuses = fresh.status(found)
    assert [s.state for s in statuses] == [RunState.FAILED, RunState.FAILED]


def test_lookup_by_sweep_reads_the_sweep_id_behind_the_job_name(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    runs = specs(tmp_path, 2)
    make(fake, clock, job_name="scan").submit(runs)
    assert fake.names["100"][0].startswith("scan.hpcorch-sw-")
    fresh = make(fake, clock)
    assert [h.job_id for h in fresh.lookup(["k0", "k1"], sweep_id="sw")] == ["100_0", "100_1"]
    assert fresh.lookup(["k0", "k1"], sweep_id="other") == []
    fake.names["100"] = ("hpcorch-sw-" + fake.names["100"][0].rsplit("-", 1)[1],
                         fake.names["100"][1])  # a job of an older hpcorch: no name first
    assert len(make(fake, clock).lookup(["k0"], sweep_id="sw")) == 1


def test_status_in_a_fresh_process_learns_run_dirs_from_the_map(
        tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    runs = specs(tmp_path, 1)
    [handle] = make(fake, clock).submit(runs)
    (Path(runs[0].run_dir) / ".hpcorch" / "stderr.log").write_text("Killed\n")
    fake.states["100"] = "CANCELLED by 0|0:15|vm"
    [status] = make(fake, clock).status([handle])
    assert status.state is RunState.CANCELLED and status.context is not None
    assert status.context.stderr_tail == "Killed"


def test_check_and_missing_commands(fake: FakeSlurm, clock: Clock) -> None:
    provider = make(fake, clock)
    provider.check()
    assert provider.cluster_limits.max_array_size == 1001 and fake.count("scontrol") == 1
    provider.cluster_limits  # noqa: B018 - cached: no second call
    assert fake.count("scontrol") == 1

    def missing(argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError(argv[0])

    with pytest.raises(ProviderUnavailable, match="not found on PATH"):
        SlurmProvider(runner=missing).check()
    down = SlurmProvider(runner=lambda argv, **_: subprocess.CompletedProcess(
        argv, 1, "", "slurm_load_ctl_conf error: Unable to contact slurm controller"))
    with pytest.raises(ProviderUnavailable, match="cannot reach slurmctld"):
        down.check()
    assert not down.cluster_limits.read_from_cluster  # a dry run still renders, with defaults


def test_render_is_what_submit_writes(tmp_path: Path, fake: FakeSlurm, clock: Clock) -> None:
    provider = make(fake, clock, max_array_size=2)
    runs = specs(tmp_path, 3)
    text = provider.render(runs)
    provider.submit(runs)
    folder = tmp_path / "sweep/.hpcorch/slurm/submitit"
    scripts = sorted(folder.glob("*_submission.sh"))  # what submitit wrote and submitted
    assert [s.name for s in scripts] == ["100_submission.sh", "101_submission.sh"]
    rendered = re.split(r"^# ==> ", text, flags=re.M)[1:]
    assert len(rendered) == 2
    for script, part in zip(scripts, rendered, strict=True):
        assert part.split(" <==\n", 1)[1] == script.read_text()  # byte for byte
    assert [c["array"] for c in fake.sbatch_calls()] == ["0-1%2", None]  # 2 tasks, then 1


def test_a_single_task_is_a_plain_job_found_again(tmp_path: Path, fake: FakeSlurm,
                                                  clock: Clock) -> None:
    """submitit submits a batch of one as a plain job: its id has no `_0`, and status and
    lookup find its run through index 0 of the map file."""
    runs = specs(tmp_path, 1)
    [handle] = make(fake, clock).submit(runs)
    assert handle.job_id == "100" and fake.sbatch_calls()[0]["array"] is None
    (Path(runs[0].run_dir) / ".hpcorch" / "stderr.log").write_text("Killed\n")
    fake.states["100"] = "RUNNING|0:0|vm"
    fresh = make(fake, clock)  # another process: only Slurm and the files
    [found] = fresh.lookup(["k0"])
    assert (found.run_key, found.job_id) == ("k0", "100")
    fake.states["100"] = "CANCELLED by 0|0:15|vm"
    clock.now += 60
    [status] = make(fake, clock).status([handle])
    assert status.state is RunState.CANCELLED and status.context is not None
    assert status.context.stderr_tail == "Killed" and status.context.job_id == "100"
    assert status.context.failure_class is FailureClass.CANCELLED


def test_unused_limits_injection(tmp_path: Path, fake: FakeSlurm) -> None:
    provider = SlurmProvider(SlurmSettings(), runner=fake, limits=ClusterLimits(max_array_size=2))
    provider.submit(specs(tmp_path, 5))
    assert fake.count("sbatch") == 3 and fake.count("scontrol") == 0


def test_capabilities_srun_for_ranks_and_slurms_variables_into_containers() -> None:
    caps = SlurmProvider.capabilities
    assert caps.launcher_for(4) is Launcher.SRUN and caps.launcher_for(1) is Launcher.DIRECT
    assert caps.container_env_prefixes == ("SLURM_",)
    # by name too (docker passes no patterns): every one a Slurm variable, the ids and the
    # restart count among them
    assert all(n.startswith(("SLURM_", "SLURMD_")) for n in caps.container_env_names)
    assert {"SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_PROCID",
            "SLURMD_NODENAME"} <= set(caps.container_env_names)
