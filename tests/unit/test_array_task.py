"""The scheduler-independent array task (hpcorch.worker.array_task): its task-state file."""

from __future__ import annotations

import json
from pathlib import Path

from hpcorch.worker.array_task import TaskState, TaskStateFile, TaskStatus


def test_states_are_an_enum_stored_as_plain_strings(tmp_path: Path) -> None:
    states = TaskStateFile("x.json", TaskState)
    (tmp_path / ".hpcorch").mkdir()
    states.write(tmp_path, TaskState("9.1", "EXITED", "n1", exit_code=0))
    assert json.loads(states.path(tmp_path).read_text())["state"] == "EXITED"
    back = states.read(tmp_path)
    assert back is not None and back.state is TaskStatus.EXITED and back.exited
    assert back == TaskState("9.1", TaskStatus.EXITED, "n1", exit_code=0)


def test_a_missing_file_or_an_unknown_state_reads_as_none(tmp_path: Path) -> None:
    states = TaskStateFile("x.json", TaskState)
    (tmp_path / ".hpcorch").mkdir()
    assert states.read(tmp_path) is None
    states.path(tmp_path).write_text('{"job_id": "9.1", "state": "EXPLODED"}')
    assert states.read(tmp_path) is None
    states.path(tmp_path).write_text('{"job_id": "9.1", "state": "STOPPED", "extra": 1}')
    stopped = states.read(tmp_path)
    assert stopped is not None and stopped.state is TaskStatus.STOPPED and not stopped.exited
