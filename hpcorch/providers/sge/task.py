"""What one Grid Engine array task runs: its run(s), from the spec files, each with its own logs.

    python -m hpcorch.providers.sge.task <sweep dir>/.hpcorch/sge/<token>.json

The map file (written by the provider) lists the runs of every array task id.
For each run of this task, one after the other: start its portable command
(`spec.command`) with the run's environment, stdout/stderr appended to
`<run_dir>/.hpcorch/`, and keep a small task-state file there (`sge.json`:
job id, node, exit code) so the provider learns how the run ended without
asking the scheduler. The run's record is written by the Hydra callback
inside the run, as on every provider.

The run stays in the job's process group: Grid Engine ends a job (qdel, h_rt,
h_vmem) by signalling that group, and a run in a session of its own would
outlive its job. A signal this process gets (qsub -notify's SIGUSR1/SIGUSR2,
SIGTERM) is forwarded to the run; its state file then says STOPPED and the
scheduler's word (qacct) decides how the run ended.

Time limits (hpcorch.worker.array_task decides, as on Slurm): Grid Engine's
own warning (s_rt) would signal the whole process group, the run included,
whatever the task decides; so the task keeps its own timer instead (SIGALRM,
`grace_s` before `h_rt`, to this process only). A run told of its limit gets
hpcorch.checkpoint's SIGUSR1; a requeue is exit status 99, on which Grid
Engine reschedules the task (`RESTARTED=1`), and the task then runs the runs it
had not finished.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from hpcorch.jobenv import RESTART_ENV, job_environment
from hpcorch.spec import RunSpec
from hpcorch.worker import array_task
from hpcorch.worker.array_task import (
    ArrayTaskRunner,
    TaskState,
    TaskStateFile,
    TaskStatus,
)

__all__ = ["FORWARDED", "TASK_STATE_FILE", "ArrayTask", "TaskState", "TaskStatus",
           "read_task_state", "task_state_path", "write_task_state"]

TASK_STATE_FILE = "sge.json"
#: Signals forwarded to the running run.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
#: The task's own time-limit warning (a timer: Grid Engine's s_rt would hit the run too).
LIMIT_SIGNAL = signal.SIGALRM
#: The exit status on which Grid Engine reschedules a job (its documented convention).
RESCHEDULE_EXIT = 99

#: `<run_dir>/.hpcorch/sge.json`; its `job_id` is `123.4`, the array task that ran it.
_STATE_FILE = TaskStateFile(TASK_STATE_FILE, TaskState)


#: Where a run's task-state file lives; read it (None when missing or unreadable);
#: write it atomically.
task_state_path = _STATE_FILE.path
read_task_state = _STATE_FILE.read
write_task_state = _STATE_FILE.write


class ArrayTask(ArrayTaskRunner[TaskState]):
    """Runs the runs of one array task id, forwarding signals to them."""

    state_file = _STATE_FILE
    signals = (*FORWARDED, LIMIT_SIGNAL)
    limit_signal = LIMIT_SIGNAL

    def __init__(self, map_path: str, env: Mapping[str, str] | None = None) -> None:
        super().__init__(map_path)
        env = dict(os.environ if env is None else env)
        self.task_id = int(env["SGE_TASK_ID"])
        self.job_id = f"{env['JOB_ID']}.{self.task_id}"
        restarted = env.get("RESTARTED", "0")
        self.restart = int(restarted) if restarted.isdigit() else 0
        self.node = env.get("HOSTNAME") or socket.gethostname()
        self.entries = list(self.map["tasks"][self.task_id - 1])

    def _start(self, spec: RunSpec, out_fd: int, err_fd: int) -> subprocess.Popen[bytes]:
        # The run stays in the job's process group (see the module's docstring). Its job
        # id and restart count reach it as the job contract's names (hpcorch.jobenv).
        env = job_environment(spec, provider="sge", job_id=self.job_id)
        env[RESTART_ENV] = str(self.restart)
        return subprocess.Popen(
            list(spec.command), cwd=spec.workdir or spec.run_dir, env=env,
            stdin=subprocess.DEVNULL, stdout=out_fd, stderr=err_fd)

    def run(self) -> int:
        """Run this task's runs, with the time-limit timer set (`limit_s - grace_s` from
        now: the task starts right after its job)."""
        limit_s = float(self.map.get("limit_s") or 0)
        if limit_s > 0:
            signal.signal(LIMIT_SIGNAL, self._on_signal)  # before the timer can fire
            signal.setitimer(signal.ITIMER_REAL,
                             max(1.0, limit_s - float(self.map.get("grace_s", 60))))
        return super().run()

    def _signal_child(self, signum: int) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def _poll(self, child: Any) -> int | None:
        return child.poll()  # type: ignore[no-any-return]

    def _requeue_task(self) -> int:
        return RESCHEDULE_EXIT


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `python -m hpcorch.providers.sge.task MAP_FILE`."""
    return array_task.task_main(argv, "hpcorch.providers.sge.task", ArrayTask)


if __name__ == "__main__":
    sys.exit(main())
