"""The Grid Engine array-task runner, run here as Grid Engine would (its environment faked)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hpcorch.providers.sge.script import map_data, plan_arrays
from hpcorch.providers.sge.settings import SgeSettings
from hpcorch.providers.sge.task import ArrayTask, TaskState, read_task_state, write_task_state
from hpcorch.spec import RunSpec
from hpcorch.store.records import atomic_write_json, meta_dir, spec_path


def spec(tmp_path: Path, num: int, code: str) -> RunSpec:
    run_dir = tmp_path / "sweep" / str(num)
    meta_dir(run_dir).mkdir(parents=True)
    made = RunSpec(run_key=f"key{num}", sweep_id="s1", num=num, overrides=(), config={},
                   seed=40 + num, run_dir=str(run_dir), command=(sys.executable, "-c", code),
                   env=(("PROBE", f"v{num}"),), workdir=str(tmp_path))
    atomic_write_json(spec_path(run_dir), made.to_dict())
    return made


def task_map(tmp_path: Path, specs: list[RunSpec], pack: int, **options: Any) -> str:
    settings = SgeSettings(pack=pack, **options)
    [plan] = plan_arrays(specs, settings)
    os.makedirs(plan.sge_dir)
    atomic_write_json(plan.map_path, map_data(plan, settings))
    return plan.map_path


def sge_env(task_id: int) -> dict[str, str]:
    return {**os.environ, "JOB_ID": "77", "SGE_TASK_ID": str(task_id), "HOSTNAME": "node7",
            "RESTARTED": "0"}


def test_each_run_of_a_task_gets_its_state_logs_and_environment(tmp_path: Path) -> None:
    code = ("import os, sys; print(os.environ['PROBE'], os.environ['HPCORCH_SEED']); "
            "print('err', file=sys.stderr); sys.exit(int(os.environ['PROBE'][1]))")
    specs = [spec(tmp_path, 0, code), spec(tmp_path, 1, code), spec(tmp_path, 2, code)]
    path = task_map(tmp_path, specs, pack=2)
    assert ArrayTask(path, sge_env(1)).run() == 1  # runs 0 and 1; the first failure's code
    first, second = (read_task_state(s.run_dir) for s in specs[:2])
    assert first is not None and second is not None
    assert (first.job_id, first.state, first.exit_code) == ("77.1", "EXITED", 0)
    assert first.node == "node7"
    assert (second.state, second.exit_code) == ("EXITED", 1)
    assert read_task_state(specs[2].run_dir) is None  # task 2's run
    out = (meta_dir(specs[1].run_dir) / "stdout.log").read_text()
    assert out == "v1 41\n"  # the run's own env and seed
    assert (meta_dir(specs[1].run_dir) / "stderr.log").read_text() == "err\n"
    assert ArrayTask(path, sge_env(2)).run() == 2
    third = read_task_state(specs[2].run_dir)
    assert third is not None and third.job_id == "77.2" and third.exit_code == 2


def test_a_rescheduled_task_skips_the_runs_it_finished(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'a').write('x')"
    specs = [spec(tmp_path, 0, code), spec(tmp_path, 1, code)]
    path = task_map(tmp_path, specs, pack=2)
    write_task_state(specs[0].run_dir, TaskState("77.1", "EXITED", exit_code=0))
    assert ArrayTask(path, {**sge_env(1), "RESTARTED": "1"}).run() == 0
    assert marker.read_text() == "x"  # only the second run ran again
    state = read_task_state(specs[1].run_dir)
    assert state is not None and state.restart == 1
    assert "restart 1 of job 77.1" in (meta_dir(specs[1].run_dir) / "stderr.log").read_text()


def test_a_command_that_cannot_start_is_exit_127(tmp_path: Path) -> None:
    made = spec(tmp_path, 0, "")
    broken = RunSpec.from_dict({**made.to_dict(), "command": ["/nonexistent/python"]})
    atomic_write_json(spec_path(made.run_dir), broken.to_dict())
    path = task_map(tmp_path, [broken], pack=1)
    assert ArrayTask(path, sge_env(1)).run() == 127
    state = read_task_state(made.run_dir)
    assert state is not None and state.exit_code == 127
    assert "cannot start" in (meta_dir(made.run_dir) / "stderr.log").read_text()


#: Catches hpcorch.checkpoint's signal, saves, and stops to be resumed (exit 75).
RESUMABLE = """
import time
from hpcorch import checkpoint
checkpoint.on_signal(lambda: checkpoint.save({"step": 1}))
open("started", "w").close()
for _ in range(1200):
    time.sleep(0.05)
"""


def short_limit(path: str, limit_s: float, grace_s: float) -> None:
    """The map file's time limit made short (a real one is at least a minute)."""
    from hpcorch.store.records import read_json

    data = read_json(path)
    atomic_write_json(path, {**data, "limit_s": limit_s, "grace_s": grace_s})


def test_time_limit_tells_a_resumable_run_and_requeues_by_exit_99(tmp_path: Path) -> None:
    """The task's own timer (not Grid Engine's s_rt, which would signal the run too): the
    run gets SIGUSR1, saves, stops; the task exits 99 (Grid Engine reschedules it) and
    the run's time-limit budget is spent."""
    run = spec(tmp_path, 0, RESUMABLE)
    path = task_map(tmp_path, [run], pack=1, max_requeues=2)
    short_limit(path, limit_s=4, grace_s=3)  # the timer fires after 1 s
    assert ArrayTask(path, sge_env(1)).run() == 99
    state = read_task_state(run.run_dir)
    assert state is not None and state.state == "STOPPED" and state.timeouts == 1
    from hpcorch import checkpoint

    assert checkpoint.usage(run.run_dir).saved  # saved when told, before it stopped


def test_time_limit_leaves_a_run_without_checkpoint_alone(tmp_path: Path) -> None:
    """A run that neither saved nor catches the signal is not signalled (it would start
    from zero again): it goes on, here to its own end, and no requeue is asked for."""
    code = "import time; time.sleep(2.5); print('done')"
    run = spec(tmp_path, 0, code)
    path = task_map(tmp_path, [run], pack=1)
    short_limit(path, limit_s=4, grace_s=3)
    assert ArrayTask(path, sge_env(1)).run() == 0
    state = read_task_state(run.run_dir)
    assert state is not None and (state.state, state.exit_code) == ("EXITED", 0)
    assert (meta_dir(run.run_dir) / "stdout.log").read_text() == "done\n"


def test_no_time_limit_requeue_once_the_budget_is_spent(tmp_path: Path) -> None:
    run = spec(tmp_path, 0, "import time; time.sleep(2.5)")
    path = task_map(tmp_path, [run], pack=1, max_requeues=1, requeue_on_timeout="always")
    short_limit(path, limit_s=4, grace_s=3)
    write_task_state(run.run_dir, TaskState("77.1", "STOPPED", timeouts=1))
    assert ArrayTask(path, sge_env(1)).run() == 0  # not signalled: ran to its end
