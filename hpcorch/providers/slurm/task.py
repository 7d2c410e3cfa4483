"""What one Slurm array task runs: its run(s), from the spec files, each with its own logs.

submitit starts every task (`python -u -m submitit.core._submit <folder>`) and
calls the pickled `SubmititTask(map_file)(index)`. The map file (written by the
Slurm provider) lists the runs of every array index. For each run of this task:
start its portable command (or, with pack > 1 and `warm`, fork an interpreter
that already imported the app), stdout/stderr to `<run_dir>/.hpcorch/`, and
keep a small task-state file there (`slurm.json`: job id, node, exit code) so
the provider learns how the run ended without asking the scheduler. The run's
record is written by the Hydra callback inside the run, as on every provider.

Time limits: Slurm sends submitit's SIGUSR2 to this process `grace_s` before the
limit; the run gets hpcorch.checkpoint's SIGUSR1. What happens then is
`timeout_decision`'s choice, as submitit does it: with `requeue_on_timeout:
checkpointed` (the default) only a run that can resume (hpcorch.checkpoint: it
saved a checkpoint, or it catches the signal) gets the signal and, once it saved
or stopped to resume, the task is requeued while the run's time-limit requeues
(`TaskState.timeouts`; preemptions do not count) are below max_requeues. The
requeue is submitit's own: its signal handler checkpoints this Checkpointable
(same map file, same index) and runs `scontrol requeue`; the task then starts
again with the runs that have not finished (they find their checkpoints in
their run directories). Any other run keeps running into its limit and ends
TIMEOUT, instead of being started from zero again. `always` requeues every run,
`never` none. SIGTERM (scancel, preemption, `scontrol requeue`) is forwarded
too, and the task leaves the verdict to the scheduler: a preempted job is always
requeued (the job asks for --requeue).
"""

from __future__ import annotations

import dataclasses
import gc
import importlib
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import submitit

from hpcorch import checkpoint
from hpcorch.jobenv import RANK_SOURCES_ENV, RESTART_ENV, job_environment
from hpcorch.launch.rankenv import PMIX_RANK_ENV, RankSource, encode_sources
from hpcorch.spec import RunSpec
from hpcorch.worker import array_task
from hpcorch.worker.forked import (
    become_run,
    exit_with,
    run_script_as_main,
    signal_run,
    skip_mode_probe,
)
from hpcorch.worker.timeouts import TimeoutAction, timeout_decision
from hpcorch.worker.warm import warm_script

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
#: Seconds between two checks of a running child (signals interrupt the wait anyway).
_WAIT_STEP_S = 0.05


@dataclass(frozen=True)
class TaskState(array_task.TaskState):
    """`<run_dir>/.hpcorch/slurm.json`: how far one run got in one Slurm job (`job_id`
    `123_4`: the array task that ran it)."""

    timeouts: int = 0
    """How often this array task was requeued at this run's time limit (the budget of
    `max_requeues`; SLURM_RESTART_COUNT also counts preemptions)."""


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
        self.timeouts = 0  # the current run's time-limit requeues so far
        self.requeue: TimeoutAction | None = None
        self.deadline = float("inf")
        self.warm: str | None = None

    # -- signals -------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stop_signal is not None:
            return
        self.stop_signal = signum
        if signum == PREEMPT_SIGNAL:
            usage = checkpoint.usage(self.current.run_dir) if self.current else checkpoint.Usage()
            action, why = timeout_decision(
                str(self.map.get("requeue_on_timeout", "checkpointed")), self.timeouts,
                int(self.map.get("max_requeues", 0)), usage)
            if action is TimeoutAction.EXPIRE:
                # Let the time limit end it (TIMEOUT): keep running, do not signal the run
                # (a run that does not catch the signal would die of it).
                self.stop_signal = None
                print(f"hpcorch: time limit near for job {self.job_id}: {why}",
                      file=sys.stderr, flush=True)
                return
            self.requeue = action
            # Give the run most of the grace period to save its checkpoint.
            self.deadline = time.monotonic() + max(1.0, float(self.map.get("grace_s", 60)) - 5)
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        if self.child is not None:
            signal_run(self.child, RUN_SIGNAL if signum == PREEMPT_SIGNAL else signum)

    # -- the task --------------------------------------------------------------
    def _prepare(self, specs: Sequence[RunSpec]) -> None:
        self.warm = _warm_script(specs, self.map) if len(specs) > 1 else None
        if self.warm is not None:
            _warm_up(self.warm, [a for a in specs[0].command[2:] if "=" in a and a[0] != "-"])

    def _finish(self, specs: Sequence[RunSpec], status: int) -> int:
        if self.requeue is TimeoutAction.REQUEUE_IF_SAVED and not self._resumable(specs):
            return self._expire()
        if self.requeue is not None:
            return self._requeue()
        return super()._finish(specs, status)

    def _base_state(self, spec: RunSpec, started: float) -> TaskState:
        previous = read_task_state(spec.run_dir)
        self.timeouts = previous.timeouts if previous and previous.job_id == self.job_id else 0
        return TaskState(self.job_id, array_task.TaskStatus.RUNNING, self.node, self.restart,
                         timeouts=self.timeouts, started=started)

    def _resumable(self, specs: Sequence[RunSpec]) -> bool:
        """The stopped run saved a checkpoint or stopped itself to be resumed."""
        stopped = self.current or (specs[0] if specs else None)
        return self.stopped_rc == checkpoint.EXIT_RESUME or (
            stopped is not None and checkpoint.usage(stopped.run_dir).saved)

    def _expire(self) -> int:
        """Wait for the time limit to end this task (TIMEOUT), as for a run not requeued."""
        # Slurm's SIGTERM at the limit ends it; installed before the notice, so a SIGTERM
        # right after it is not swallowed by the forwarding handler.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print(f"hpcorch: job {self.job_id}: the run saved no checkpoint when told of its time "
              "limit: not requeued", file=sys.stderr, flush=True)
        end = time.monotonic() + float(self.map.get("grace_s", 60)) + 120
        while time.monotonic() < end:
            time.sleep(0.5)
        return 128 + int(PREEMPT_SIGNAL)

    def _start(self, spec: RunSpec, out_fd: int, err_fd: int) -> int:
        env = run_environment(spec, self.job_id, self.restart)
        cwd = spec.workdir or spec.run_dir
        if self.warm is not None:
            return _fork_warm(spec, env, cwd, out_fd, err_fd)
        argv = self._argv(spec)
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out_fd, stderr=err_fd, start_new_session=True)
        return proc.pid

    def _argv(self, spec: RunSpec) -> list[str]:
        return step_argv(spec, self.map)

    def _wait(self, child: Any) -> int:
        """Wait for the child (polling, so signals and the requeue deadline are seen)."""
        while True:
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > self.deadline:
                self._forward(signal.SIGKILL)
            time.sleep(_WAIT_STEP_S)

    def _requeue(self) -> int:
        print(f"hpcorch: requeueing job {self.job_id} (time-limit requeue {self.timeouts + 1} "
              f"of {self.map.get('max_requeues')})", file=sys.stderr, flush=True)
        if self.current is not None:  # spend the run's budget before Slurm starts it again
            state = read_task_state(self.current.run_dir)
            if state is not None:
                write_task_state(self.current.run_dir,
                                 dataclasses.replace(state, timeouts=self.timeouts + 1))
        if self.submitit_requeue is None:
            print("hpcorch: not started by submitit: cannot requeue", file=sys.stderr, flush=True)
            return self._expire()
        try:
            self.submitit_requeue(int(PREEMPT_SIGNAL), None)
        except SystemExit:
            # submitit requeued the job and exits. Slurm now ends this attempt (SIGTERM,
            # then SIGKILL) and starts the task again later; exiting first could race the
            # requeue with an end of its own.
            end = time.monotonic() + float(self.map.get("requeue_wait_s", 30))
            while time.monotonic() < end:
                time.sleep(0.5)
            return 0
        except Exception as exc:  # noqa: BLE001 - its budget is spent, or scontrol failed
            print(f"hpcorch: submitit did not requeue job {self.job_id}: {exc}",
                  file=sys.stderr, flush=True)
            return self._expire()
        print("hpcorch: submitit did not requeue this process (not rank 0)", file=sys.stderr,
              flush=True)
        return self._expire()


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


#: What every run of a Hydra app imports after its script's own imports (measured: about
#: a third of a trivial run's CPU time when left to each fork).
_WARM_MODULES = (
    "hydra._internal.hydra", "hydra._internal.config_loader_impl",
    "hydra._internal.defaults_list", "hydra.core.override_parser.overrides_parser",
    "hydra._internal.core_plugins.basic_launcher", "hydra._internal.core_plugins.basic_sweeper",
    "hydra._internal.core_plugins.file_config_source",
    "hydra._internal.core_plugins.importlib_resources_config_source",
    "hydra._internal.core_plugins.structured_config_source", "omegaconf._impl", "yaml",
    "antlr4.LL1Analyzer", "importlib.readers", "numpy", "numpy.random", "hpcorch.conf",
    "hpcorch.worker.callback",
)


def _warm_up(script: str, overrides: list[str]) -> None:
    """Import what every run of the app imports, once, before forking per run; parse one
    run's overrides so the forks inherit the override parser's warm (ANTLR DFA) caches."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__hpcorch_warm__")
        for name in _WARM_MODULES:
            importlib.import_module(name)
        from hydra.core.plugins import Plugins

        Plugins.instance()
        skip_mode_probe()
        from hydra.core.override_parser.overrides_parser import OverridesParser

        OverridesParser.create().parse_overrides(overrides)
        from hpcorch.identity import script_directory
        from hpcorch.repro import fingerprint as fp

        fp.distributions()
        fp._cpu_model()
        fp._git(script_directory(script))
    except Exception:  # noqa: BLE001 - warming is an optimisation; the runs still run
        traceback.print_exc()


def _fork_warm(spec: RunSpec, env: dict[str, str], cwd: str, out_fd: int, err_fd: int) -> int:
    """Fork; the child runs the app's script as `__main__` with this run's argv."""
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()  # a collection in the child must not copy all inherited memory
    pid = os.fork()
    if pid:
        gc.unfreeze()
        return pid

    def body() -> int:
        become_run(out_fd, err_fd, env, cwd,
                   signals=(PREEMPT_SIGNAL, RUN_SIGNAL, signal.SIGTERM, signal.SIGINT))
        return run_script_as_main(list(spec.command[1:]))

    exit_with(body)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `python -m hpcorch.providers.slurm.task MAP_FILE`."""
    return array_task.task_main(argv, "hpcorch.providers.slurm.task", ArrayTask)


if __name__ == "__main__":
    sys.exit(main())
