"""What one Slurm array task runs: its run(s), from the spec files, each with its own logs.

submitit starts every task (`python -u -m submitit.core._submit <folder>`) and
calls the pickled `SubmititTask(map_file)(index)`. The map file (written by the
Slurm provider) lists the runs of every array index. For each run of this task:
start its portable command (or, with pack > 1 and `warm`, fork an interpreter
that already imported the app), stdout/stderr to `<run_dir>/.hpcorch/`, and
keep a small task-state file there (`slurm.json`: job id, node, exit code) so
the provider learns how the run ended without asking the scheduler. The run's
record is written by the Hydra callback inside the run, as on every provider.

Time limits (hpcorch.worker.array_task decides, for every scheduler alike):
Slurm sends submitit's SIGUSR2 to this process `grace_s` before the limit; a run
told of it gets hpcorch.checkpoint's SIGUSR1. A requeue is submitit's own: its
signal handler checkpoints this Checkpointable (same map file, same index) and
runs `scontrol requeue`. SIGTERM (scancel, preemption, `scontrol requeue`) is
forwarded too, and the task leaves the verdict to the scheduler: a preempted
job is always requeued (the job asks for --requeue).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import submitit

from hpcorch import checkpoint
from hpcorch.jobenv import RANK_SOURCES_ENV, RESTART_ENV, job_environment
from hpcorch.launch.rankenv import PMIX_RANK_ENV, RankSource, encode_sources
from hpcorch.spec import RunSpec
from hpcorch.worker import array_task
from hpcorch.worker.forked import signal_run
from hpcorch.worker.warm import fork_run, warm_script, warm_up

TASK_STATE_FILE = "slurm.json"
#: The signal Slurm sends before the time limit (`--signal=B:USR2@grace`): submitit's.
PREEMPT_SIGNAL = signal.SIGUSR2
# Where a rank of an srun step finds its place. SLURM_NTASKS alone is not enough: a
# batch script sees the allocation's task count but runs as one process; only a step
# (srun) sets SLURM_STEP_NUM_TASKS.
_SRUN_NODE = {"local_rank": "SLURM_LOCALID", "tasks_per_node": "SLURM_STEP_TASKS_PER_NODE",
              "node_id": "SLURM_NODEID"}
#: srun's rank variables, PMIx's first (--mpi=pmix); `name` is the record's ranks.launcher.
SRUN_RANK_SOURCES = (
    RankSource("pmix", PMIX_RANK_ENV, ("SLURM_STEP_NUM_TASKS",), **_SRUN_NODE),
    RankSource("slurm", "SLURM_PROCID", ("SLURM_STEP_NUM_TASKS",), **_SRUN_NODE),
)
#: What the run gets instead: hpcorch.checkpoint's "save now" signal.
RUN_SIGNAL = checkpoint.STOP_SIGNALS[0]
#: submitit's handler of PREEMPT_SIGNAL (checkpoint this task, then requeue it).
Requeue = Callable[[int, Any], None]

#: `<run_dir>/.hpcorch/slurm.json`: how far one run got in one Slurm job (`job_id`
#: `123_4`: the array task that ran it).
TaskState = array_task.TaskState
_STATE_FILE = array_task.TaskStateFile(TASK_STATE_FILE, TaskState)


#: Where a run's task-state file lives; read it (None when missing or unreadable);
#: write it atomically.
task_state_path = _STATE_FILE.path
read_task_state = _STATE_FILE.read
write_task_state = _STATE_FILE.write


class ArrayTask(array_task.ArrayTaskRunner[TaskState]):
    """Runs the runs of one array index, forwarding Slurm's signals to them."""

    state_file = _STATE_FILE
    signals = (PREEMPT_SIGNAL, signal.SIGTERM, signal.SIGINT)
    limit_signal = PREEMPT_SIGNAL
    run_signal = RUN_SIGNAL

    def __init__(self, map_path: str, env: dict[str, str] | None = None,
                 index: int | None = None, requeue: Requeue | None = None) -> None:
        super().__init__(map_path)
        self.env = dict(os.environ if env is None else env)
        array_id = self.env.get("SLURM_ARRAY_JOB_ID", "")
        self.index = int(self.env.get("SLURM_ARRAY_TASK_ID", "0")) if index is None else index
        self.job_id = f"{array_id}_{self.index}" if array_id else self.env.get("SLURM_JOB_ID", "")
        self.submitit_requeue = requeue
        self.restart = int(self.env.get("SLURM_RESTART_COUNT", "0") or 0)
        self.node = self.env.get("SLURMD_NODENAME") or socket.gethostname()
        self.entries = list(self.map["tasks"][self.index])
        self.child: int | None = None
        self.warm: str | None = None

    def _prepare(self, specs: Sequence[RunSpec]) -> None:
        self.warm = _warm_script(specs, self.map) if len(specs) > 1 else None
        if self.warm is not None:
            warm_up(self.warm, specs[0])

    def _start(self, spec: RunSpec, out_fd: int, err_fd: int) -> int:
        env = run_environment(spec, self.job_id, self.restart)
        cwd = spec.workdir or spec.run_dir
        if self.warm is not None:
            return fork_run(spec, self.warm, env, out_fd, err_fd,
                            signals=(PREEMPT_SIGNAL, RUN_SIGNAL, signal.SIGTERM, signal.SIGINT))
        argv = step_argv(spec, self.map)
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out_fd, stderr=err_fd, start_new_session=True)
        return proc.pid

    def _signal_child(self, signum: int) -> None:
        if self.child is not None:
            signal_run(self.child, signum)

    def _poll(self, child: Any) -> int | None:
        done, status = os.waitpid(child, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if done else None

    def _requeue_task(self) -> int:
        """submitit's own checkpoint-and-requeue (this Checkpointable, `scontrol requeue`)."""
        if self.submitit_requeue is None:
            return self._expire("not started by submitit: cannot requeue")
        try:
            self.submitit_requeue(int(PREEMPT_SIGNAL), None)
        except SystemExit:  # submitit requeued the job and exits
            return self.wait_to_be_ended()
        except Exception as exc:  # noqa: BLE001 - its budget is spent, or scontrol failed
            return self._expire(f"submitit did not requeue job {self.job_id}: {exc}")
        return self._expire("submitit did not requeue this process (not rank 0)")


class SubmititTask(submitit.helpers.Checkpointable):
    """What submitit runs in every task of an array: hpcorch's ArrayTask for that index of
    the map file. A Checkpointable: submitit's default `checkpoint` resubmits this same
    task and index, and the task skips the runs that have already finished."""

    def __init__(self, map_path: str) -> None:
        self.map_path = map_path

    def __call__(self, index: int) -> int:
        """Run the runs of array index `index`; the task exits with the first failing
        run's code (sacct shows FAILED), as a job of the runs themselves would."""
        # submitit installed its checkpoint-and-requeue handler before calling this; the
        # task takes the signal over and calls that handler only when it decides to
        # requeue (submitit would requeue any job that is not done, checkpoint or not).
        handler = signal.getsignal(PREEMPT_SIGNAL)
        task = ArrayTask(self.map_path, index=index,
                         requeue=handler if callable(handler) else None)
        code = task.run()
        if code:
            sys.exit(code)
        return code


def run_environment(spec: RunSpec, job_id: str, restart: int) -> dict[str, str]:
    """The environment one run starts with: the job contract's (hpcorch.jobenv), with the
    array task's job id (`123_4`) and SLURM_RESTART_COUNT as HPCORCH_JOB_ID and
    HPCORCH_RESTART_COUNT, so the run (and every srun rank: srun exports ALL) reads
    neither from Slurm's own variables."""
    env = job_environment(spec, job_id=job_id)
    env[RESTART_ENV] = str(restart)
    env[RANK_SOURCES_ENV] = encode_sources(SRUN_RANK_SOURCES)
    return env


def step_argv(spec: RunSpec, task_map: Mapping[str, Any],
              python: str = sys.executable) -> list[str]:
    """The argv an array task starts one run with (the provider renders the same): the
    run's command, under srun (hpcorch.launch's wrapper, --mpi=pmix) when it has several
    ranks. --overcommit exactly when the allocation got it (from the same `node_cpus`),
    --label so a failed rank's stderr lines can be told from the others'."""
    mode = task_map.get("srun", "auto")
    if mode == "never" or (mode == "auto" and spec.resources.tasks <= 1):
        return list(spec.command)
    from hpcorch.launch.wrappers import Launcher, LaunchOptions, srun_argv, wrap

    options = LaunchOptions.here("slurm", slots=task_map.get("node_cpus"), label=True,
                                 python=python)
    argv = wrap(spec.command, spec.resources, options, Launcher.SRUN,
                env_names=[k for k, _ in spec.env])
    cut = len(srun_argv(spec.resources, options))
    return [*argv[:cut], *task_map.get("srun_args", []), *argv[cut:]]


def _warm_script(specs: Sequence[RunSpec], task_map: dict[str, Any]) -> str | None:
    """The app script when the task may run its runs as warm forks (hpcorch.worker.warm's
    rule), else None: warm packing off, or every run under srun."""
    if not task_map.get("warm", True) or task_map.get("srun") == "always":
        return None
    return warm_script(specs)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `python -m hpcorch.providers.slurm.task MAP_FILE`."""
    return array_task.task_main(argv, "hpcorch.providers.slurm.task", ArrayTask)


if __name__ == "__main__":
    sys.exit(main())
