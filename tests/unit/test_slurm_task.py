"""The array task (hpcorch.providers.slurm.task) without Slurm: environment faked.

Slurm sends submitit's SIGUSR2 to the task, the run sees hpcorch.checkpoint's SIGUSR1. The
requeue is submitit's own handler: here a recording stand-in (installed on SIGUSR2 as
submitit's `_submit` installs its own, before calling `SubmititTask(map)(index)`) that
requeues (SystemExit, as submitit's does) or refuses (an exception, as submitit's does when
the job's budget is spent). tests/unit/test_slurm_submitit.py runs submitit's real one."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcorch import checkpoint
from hpcorch.providers.slurm.task import TaskState, read_task_state, write_task_state
from hpcorch.spec import RunSpec
from hpcorch.worker.timeouts import TimeoutAction, timeout_decision

HANG = ("import os, signal, sys, time\n"
        "def bye(sig, frame):\n"
        "    open(os.path.join(os.environ['RUN_DIR'], 'got-signal'), 'w').write(str(sig))\n"
        "    sys.exit(75)\n"
        "signal.signal(signal.SIGUSR1, bye)\n"
        "open(os.path.join(os.environ['RUN_DIR'], 'started'), 'w').close()\n"
        "time.sleep(60)\n")


def write_task(tmp_path: Path, scripts: list[list[str]], **map_values: object) -> Path:
    """Spec files for the given `python -c` scripts, grouped per array index, and a map file."""
    tasks = []
    num = 0
    for group in scripts:
        entries = []
        for code in group:
            run_dir = tmp_path / "sweep" / str(num)
            (run_dir / ".hpcorch").mkdir(parents=True)
            spec = RunSpec(run_key=f"k{num}", sweep_id="sw", num=num, overrides=(), config={},
                           seed=num, run_dir=str(run_dir), command=(sys.executable, "-c", code),
                           env=(("RUN_DIR", str(run_dir)),), workdir=str(tmp_path))
            (run_dir / ".hpcorch" / "spec.json").write_text(spec.to_json())
            entries.append({"num": num, "run_key": spec.run_key, "run_dir": str(run_dir)})
            num += 1
        tasks.append(entries)
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"version": 1, "tasks": tasks, "max_requeues": 1, "grace_s": 10,
                                "requeue_wait_s": 0, **map_values}))
    return path


#: What submitit's `_submit` does before calling the task, with a stand-in for its
#: checkpoint-and-requeue handler that records each call.
DRIVER = """\
import json, signal, sys
import submitit
from hpcorch.providers.slurm.task import SubmititTask
map_path, index, mode, log = sys.argv[1:5]
def checkpoint_and_try_requeue(signum, frame):
    with open(log, "a") as f:
        f.write(json.dumps({"signum": signum}) + "\\n")
    if mode == "refuses":
        raise submitit.core.utils.UncompletedJobError(
            "Job not requeued because: timed-out too many times.")
    sys.exit(-1)  # requeued: submitit's handler exits
signal.signal(signal.SIGUSR2, checkpoint_and_try_requeue)
SubmititTask(map_path)(int(index))
"""


def start(tmp_path: Path, map_path: Path, index: int, restart: int = 0,
          requeue: str = "requeues") -> subprocess.Popen[str]:
    """The task of array index `index`: under a submitit-like driver whose handler
    `requeues` or `refuses`, or (`none`) as `python -m hpcorch.providers.slurm.task MAP`."""
    env = {**os.environ, "SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": str(index),
           "SLURM_JOB_ID": str(1000 + index), "SLURM_RESTART_COUNT": str(restart),
           "SLURMD_NODENAME": "node7"}
    if requeue == "none":
        argv = [sys.executable, "-m", "hpcorch.providers.slurm.task", str(map_path)]
    else:
        driver = tmp_path / "driver.py"
        driver.write_text(DRIVER)
        argv = [sys.executable, str(driver), str(map_path), str(index), requeue,
                str(tmp_path / "requeue.log")]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def requeue_calls(tmp_path: Path) -> list[int]:
    """The signal numbers submitit's (stand-in) handler was called with, in order."""
    log = tmp_path / "requeue.log"
    if not log.exists():
        return []
    return [json.loads(line)["signum"] for line in log.read_text().splitlines()]


def test_each_run_gets_its_logs_state_and_the_task_its_exit_code(tmp_path: Path) -> None:
    ok = "print('hello from run')"
    fail = "import sys; print('bad things', file=sys.stderr); sys.exit(3)"
    map_path = write_task(tmp_path, [[ok], [fail, ok]])
    assert start(tmp_path, map_path, 0, requeue="none").wait(60) == 0
    assert start(tmp_path, map_path, 1).wait(60) == 3  # the packed task reports its failure
    runs = [tmp_path / "sweep" / str(n) for n in range(3)]
    assert (runs[0] / ".hpcorch/stdout.log").read_text() == "hello from run\n"
    assert "bad things" in (runs[1] / ".hpcorch/stderr.log").read_text()
    states = [read_task_state(r) for r in runs]
    assert [(s.job_id, s.state, s.exit_code, s.node) for s in states if s] == [
        ("42_0", "EXITED", 0, "node7"), ("42_1", "EXITED", 3, "node7"),
        ("42_1", "EXITED", 0, "node7")]  # the run after the failing one still ran


def test_a_restarted_task_skips_runs_it_finished(tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [["print('once')", "print('twice?')"]])
    assert start(tmp_path, map_path, 0).wait(60) == 0
    second = tmp_path / "sweep/1/.hpcorch/stdout.log"
    second.write_text("")
    assert start(tmp_path, map_path, 0, restart=1).wait(60) == 0
    assert (tmp_path / "sweep/0/.hpcorch/stdout.log").read_text() == "once\n"
    assert second.read_text() == ""


def test_each_run_gets_the_job_contracts_job_id_and_restart_count(tmp_path: Path) -> None:
    show = ("import os; print(os.environ.get('HPCORCH_JOB_ID'), "
            "os.environ.get('HPCORCH_RESTART_COUNT'))")
    map_path = write_task(tmp_path, [[show], [show]])
    assert start(tmp_path, map_path, 0).wait(60) == 0
    assert start(tmp_path, map_path, 1, restart=2).wait(60) == 0
    assert (tmp_path / "sweep/0/.hpcorch/stdout.log").read_text() == "42_0 0\n"
    assert (tmp_path / "sweep/1/.hpcorch/stdout.log").read_text() == "42_1 2\n"


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.05)


def test_time_limit_signal_is_forwarded_then_the_task_requeues(tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [[HANG, "print('not reached')"]],
                          requeue_on_timeout="always")
    proc = start(tmp_path, map_path, 0)
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(30) == 0
    assert (tmp_path / "sweep/0/got-signal").read_text() == str(int(signal.SIGUSR1))
    assert requeue_calls(tmp_path) == [int(signal.SIGUSR2)]  # submitit's handler, once
    state = read_task_state(tmp_path / "sweep/0")
    assert state is not None and state.state == "STOPPED" and not state.exited
    assert read_task_state(tmp_path / "sweep/1") is None  # left for the next start


def test_no_requeue_left_lets_the_time_limit_decide(tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [[HANG]], requeue_on_timeout="always")
    # max_requeues=1 already spent by an earlier time-limit requeue of this run
    write_task_state(tmp_path / "sweep/0", TaskState("42_0", "STOPPED", timeouts=1))
    proc = start(tmp_path, map_path, 0, restart=1)
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    time.sleep(0.5)
    assert proc.poll() is None and not (tmp_path / "sweep/0/got-signal").exists()
    proc.send_signal(signal.SIGTERM)  # what Slurm sends at the limit
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert requeue_calls(tmp_path) == []
    state = read_task_state(tmp_path / "sweep/0")
    assert state is not None and state.state == "STOPPED"


# -- requeue on time limit only for runs that can resume (as submitit) -------------------
@pytest.mark.parametrize(("policy", "restart", "usage", "action"), [
    ("checkpointed", 0, checkpoint.Usage(), TimeoutAction.EXPIRE),
    ("checkpointed", 0, checkpoint.Usage(saved=True), TimeoutAction.REQUEUE),
    ("checkpointed", 0, checkpoint.Usage(handles_signals=True), TimeoutAction.REQUEUE_IF_SAVED),
    ("checkpointed", 2, checkpoint.Usage(saved=True), TimeoutAction.EXPIRE),  # budget spent
    ("always", 0, checkpoint.Usage(), TimeoutAction.REQUEUE),
    ("always", 2, checkpoint.Usage(), TimeoutAction.EXPIRE),
    ("never", 0, checkpoint.Usage(saved=True, handles_signals=True), TimeoutAction.EXPIRE),
])
def test_timeout_decision(policy: str, restart: int, usage: checkpoint.Usage,
                          action: TimeoutAction) -> None:
    got, why = timeout_decision(policy, restart, 2, usage)
    assert got is action and why


#: A run that uses hpcorch.checkpoint as documented: saves on the signal, stops to resume.
SAVES_ON_SIGNAL = ("import os, time\n"
                   "from hpcorch import checkpoint\n"
                   "checkpoint.on_signal(lambda: checkpoint.save({'step': 3}))\n"
                   "open(os.path.join(os.environ['RUN_DIR'], 'started'), 'w').close()\n"
                   "time.sleep(60)\n")
#: Saves a checkpoint now and then, catches no signal (SIGUSR1 then ends it).
SAVES_NOW_AND_THEN = ("import os, time\n"
                      "from hpcorch import checkpoint\n"
                      "checkpoint.save({'step': 1})\n"
                      "open(os.path.join(os.environ['RUN_DIR'], 'started'), 'w').close()\n"
                      "time.sleep(60)\n")
#: Catches the signal, but ends without saving and without checkpoint.stop().
CATCHES_BUT_SAVES_NOTHING = ("import os, sys, time\n"
                             "from hpcorch import checkpoint\n"
                             "checkpoint.on_signal(lambda: sys.exit(1), exit_after=False)\n"
                             "open(os.path.join(os.environ['RUN_DIR'], 'started'), 'w').close()\n"
                             "time.sleep(60)\n")


def test_a_run_without_checkpoint_is_not_signalled_nor_requeued(tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [[HANG]])  # default policy: checkpointed
    proc = start(tmp_path, map_path, 0)
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    _wait_for_text(proc, "saved no checkpoint")
    assert proc.poll() is None and not (tmp_path / "sweep/0/got-signal").exists()
    proc.send_signal(signal.SIGTERM)  # what Slurm sends at the limit: TIMEOUT
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert requeue_calls(tmp_path) == []


def test_a_run_that_saves_on_the_signal_is_requeued(tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [[SAVES_ON_SIGNAL]])
    proc = start(tmp_path, map_path, 0)
    _wait_for(tmp_path / "sweep/0/started")
    assert checkpoint.usage(tmp_path / "sweep/0") == checkpoint.Usage(handles_signals=True)
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(30) == 0
    assert requeue_calls(tmp_path) == [int(signal.SIGUSR2)]  # submitit's handler, once
    assert checkpoint.usage(tmp_path / "sweep/0").saved


def test_preemption_requeues_do_not_spend_the_time_limit_budget(tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [[SAVES_ON_SIGNAL]])  # max_requeues=1
    proc = start(tmp_path, map_path, 0, restart=2)  # requeued twice after preemption
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(30) == 0
    assert requeue_calls(tmp_path) == [int(signal.SIGUSR2)]  # submitit's handler, once
    state = read_task_state(tmp_path / "sweep/0")
    assert state is not None and state.timeouts == 1 and state.restart == 2  # budget spent


def test_a_run_with_an_earlier_checkpoint_is_requeued(tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [[SAVES_NOW_AND_THEN]])
    proc = start(tmp_path, map_path, 0)
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    assert proc.wait(30) == 0
    assert requeue_calls(tmp_path) == [int(signal.SIGUSR2)]  # submitit's handler, once


def test_a_run_that_catches_the_signal_but_saves_nothing_is_not_requeued(
        tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [[CATCHES_BUT_SAVES_NOTHING]])
    proc = start(tmp_path, map_path, 0)
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    _wait_for_text(proc, "not requeued")
    assert _end_at_limit(proc) == -signal.SIGTERM
    assert requeue_calls(tmp_path) == []


def test_never_leaves_even_a_checkpointed_run_to_its_limit(tmp_path: Path) -> None:
    map_path = write_task(tmp_path, [[SAVES_NOW_AND_THEN]], requeue_on_timeout="never")
    proc = start(tmp_path, map_path, 0)
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    _wait_for_text(proc, "requeue_on_timeout=never")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert requeue_calls(tmp_path) == []


def _wait_for_text(proc: subprocess.Popen[str], text: str, timeout: float = 30.0) -> str:
    """Read the task's stderr until `text` appears (the task has decided); what it read."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{text!r} never appeared on the task's stderr: {seen[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"the task ended before saying {text!r}: {seen[-2000:]!r}")
            seen += chunk
    return seen.decode(errors="replace")


def _end_at_limit(proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
    """SIGTERM, as Slurm at the time limit, until the task ends (its notice on stderr comes
    a moment before it installs SIGTERM's default action); its return code."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the task outlived its time limit's SIGTERM")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    return proc.returncode


def test_a_requeue_submitit_refuses_lets_the_time_limit_end_the_task(tmp_path: Path) -> None:
    """submitit's handler raises when the job's own budget is spent: no requeue, TIMEOUT."""
    map_path = write_task(tmp_path, [[SAVES_ON_SIGNAL]])
    proc = start(tmp_path, map_path, 0, requeue="refuses")
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    _wait_for_text(proc, "submitit did not requeue job 42_0: Job not requeued because")
    assert requeue_calls(tmp_path) == [int(signal.SIGUSR2)]  # asked once, refused
    assert proc.poll() is None  # left to the time limit
    assert _end_at_limit(proc) == -signal.SIGTERM
    assert checkpoint.usage(tmp_path / "sweep/0").saved  # the run still saved on SIGUSR1


def test_a_task_not_started_by_submitit_cannot_requeue(tmp_path: Path) -> None:
    """`python -m hpcorch.providers.slurm.task MAP` has no submitit handler: it says so and
    leaves the run to its time limit instead of ending early as if requeued."""
    map_path = write_task(tmp_path, [[SAVES_ON_SIGNAL]])
    proc = start(tmp_path, map_path, 0, requeue="none")
    _wait_for(tmp_path / "sweep/0/started")
    proc.send_signal(signal.SIGUSR2)
    _wait_for_text(proc, "not started by submitit: cannot requeue")
    assert proc.poll() is None and requeue_calls(tmp_path) == []
    assert _end_at_limit(proc) == -signal.SIGTERM
