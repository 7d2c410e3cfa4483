"""The Grid Engine provider: job arrays in, one batched scheduler query per interval out.

- submit: one `qsub -terse -t 1-N` per array (one array per group of runs
  with equal resources); a failed qsub deletes the arrays of the batch that
  did go in (all or nothing).
- status: each run's task-state file first (written inside the job, no
  scheduler involved); for the rest ONE `qstat -xml -g d` per interval
  (backing off), and `qacct -j` once per array whose tasks left qstat and
  whose end the files cannot tell (time and memory limits, qdel): records
  of finished tasks are final and kept.
- lookup: `qstat -xml` of this user's `hpcorch-<sweep>-*` jobs, then ONE
  `qstat -j ID,... -xml` for their working directories, which hold the map
  files that say which run keys each task runs.
- cancel: one `qdel` for every handle; a task deleted while still pending
  leaves no accounting record, so its run directory gets a CANCELLED state.
"""

from __future__ import annotations

import getpass
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hpcorch.errors import ProviderError, ProviderUnavailable
from hpcorch.providers.arrays import cached_map, write_task_inputs
from hpcorch.providers.base import Capabilities
from hpcorch.providers.pacing import QueryPacing
from hpcorch.providers.sge.accounting import (
    AcctRecord,
    QstatTask,
    error_reason,
    latest_records,
    parse_job_dirs,
    parse_qacct,
    parse_qstat,
    parse_terse,
)
from hpcorch.providers.sge.failure import explain_exit, from_accounting
from hpcorch.providers.sge.script import (
    ArrayPlan,
    job_name_token,
    map_data,
    plan_arrays,
    qsub_argv,
    render_script,
    task_runs,
)
from hpcorch.providers.sge.settings import SgeSettings
from hpcorch.providers.sge.task import TaskState, TaskStatus, read_task_state, write_task_state
from hpcorch.runner import CommandRunner, run_command
from hpcorch.spec import FailureContext, RunHandle, RunSpec, RunState, RunStatus
from hpcorch.store.records import (
    STDERR_FILE,
    atomic_write_json,
    atomic_write_text,
    meta_dir,
    read_json,
    spec_path,
    tail_text,
)

log = logging.getLogger("hpcorch.sge")

#: Seconds a task may be missing from both qstat and qacct before it is given up on
#: (just submitted: not yet in qstat; just ended: its record not yet flushed).
_GRACE_S = 60.0
_COMMAND_TIMEOUT_S = 120.0
_GONE = ("does not exist", "not found")


class SgeProvider:
    """Runs specs as Grid Engine job arrays (see the module docstring)."""

    Settings = SgeSettings
    name = "sge"
    capabilities = Capabilities(
        container_env_prefixes=("SGE_",),
        container_env_names=("JOB_ID", "SGE_TASK_ID", "NSLOTS", "RESTARTED"))
    """Grid Engine's own variables reach a run in a container (its job id and restart
    count also come as HPCORCH_JOB_ID and HPCORCH_RESTART_COUNT)."""
    detachable = True
    """Array jobs live in Grid Engine: a detached sweep needs no process of ours."""

    def __init__(self, settings: SgeSettings | None = None, *,
                 runner: CommandRunner = run_command,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or SgeSettings()
        self.poll_interval = self.settings.poll_interval
        self.max_poll_interval = self.settings.max_poll_interval
        self.python = self.settings.python or sys.executable
        self._runner = runner
        self._clock = clock
        self._user = getpass.getuser()
        self._run_dirs: dict[str, dict[str, str]] = {}  # task id -> run key -> run dir
        self._maps: dict[str, dict[str, object]] = {}  # map file path -> its data
        self._open: dict[str, QstatTask] = {}  # task id -> qstat's latest word
        self._acct: dict[str, AcctRecord] = {}  # task id -> its final accounting record
        self._errored: dict[str, RunStatus] = {}  # task id -> FAILED in an error state
        self._first_seen: dict[str, float] = {}  # job number -> clock when first known here
        # Grid Engine keeps the fixed spacing of its queries (no jitter), as before sharing.
        self._pacing = QueryPacing(self.settings.query_interval,
                                   self.settings.max_query_interval, clock, jitter=0.0)
        self.calls: dict[str, int] = {}
        """How often each Grid Engine command ran (qsub, qstat, qacct, qdel)."""

    # -- contract ----------------------------------------------------------------
    def check(self) -> None:
        """Reach sge_qmaster (`qstat`)."""
        done = self._sge(["qstat", "-xml", "-u", self._user])
        if done.returncode != 0:
            raise ProviderUnavailable(
                f"sge: cannot reach sge_qmaster (`qstat` rc={done.returncode}: "
                f"{done.stderr.strip()[-300:]}); is Grid Engine up? (locally: "
                "scripts/sge-up.sh, and run inside scripts/in-netns.sh)")

    def render(self, runs: Sequence[RunSpec]) -> str:
        """Every job script `submit` would write, with the qsub argv that submits it."""
        plans = plan_arrays(runs, self.settings)
        parts = [f"# provider=sge: {len(runs)} run(s) in {len(plans)} job array(s), one "
                 "`qsub -terse ... SCRIPT` each\n"]
        for plan in plans:
            parts.append(f"# ==> {plan.script_path} <==\n")
            parts.append(render_script(plan, self.settings, self.python))
        return "".join(parts)

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """One qsub per array; all or nothing (arrays of a failed batch are deleted)."""
        plans = plan_arrays(runs, self.settings)  # refuses what cannot run, first
        by_key: dict[tuple[str, str], RunHandle] = {}
        submitted: list[str] = []
        try:
            for plan in plans:
                number = self._submit_array(plan)
                submitted.append(number)
                self._first_seen[number] = self._clock()
                for task_id, task in enumerate(plan.tasks, start=1):
                    job_id = f"{number}.{task_id}"
                    for spec in task:
                        by_key[(spec.run_key, spec.run_dir)] = RunHandle(self.name,
                                                                         spec.run_key, job_id)
                        self._run_dirs.setdefault(job_id, {})[spec.run_key] = spec.run_dir
        except BaseException:
            if submitted:
                self._qdel(submitted)
            raise
        self._pacing.submitted()
        return [by_key[(s.run_key, s.run_dir)] for s in runs]

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Open jobs of this user whose map files list these run keys (newest job wins)."""
        wanted = set(run_keys)
        if not wanted:
            return []
        tasks = self._qstat()
        if tasks is None:
            raise ProviderError(self.name, "cannot list jobs", argv=["qstat", "-xml"])
        ours = {t.job_id: t for t in tasks.values() if job_name_token(t.name, sweep_id)}
        numbers = sorted({j.split(".")[0] for j in ours}, key=int)
        dirs: dict[str, tuple[str, str]] = {}
        if numbers:
            done = self._sge(["qstat", "-j", ",".join(numbers), "-xml"])
            dirs = parse_job_dirs(done.stdout) if done.returncode == 0 else {}
        found: dict[str, tuple[int, RunHandle]] = {}
        for job_id, task in ours.items():
            number, _, task_id = job_id.partition(".")
            _, workdir = dirs.get(number, ("", ""))
            for run_key, run_dir in self._runs_of(task.name, workdir, int(task_id)):
                self._run_dirs.setdefault(job_id, {})[run_key] = run_dir
                if run_key in wanted and (run_key not in found or int(number) > found[run_key][0]):
                    found[run_key] = (int(number), RunHandle(self.name, run_key, job_id))
        self._open.update(tasks)
        for job_id in ours:
            self._first_seen.setdefault(job_id.split(".")[0], self._clock())
        return [found[k][1] for k in run_keys if k in found]

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """Task-state files first; then at most one qstat (and qacct for what left it)."""
        out: list[RunStatus | None] = [None] * len(handles)
        hints: dict[int, TaskState | None] = {}
        for i, handle in enumerate(handles):
            run_dir = self._run_dir(handle)
            state = read_task_state(run_dir) if run_dir else None
            if state is not None and state.job_id != handle.job_id:
                state = None  # written by an earlier submission of the same run
            if state is not None and state.exited and state.signal != 9:
                out[i] = self._from_file(handle, state, run_dir)
            else:  # SIGKILL may be Grid Engine's (h_rt, h_vmem, qdel): its word decides
                hints[i] = state
        if hints:
            job_ids = [handles[i].job_id for i in hints]
            unknown = any(j.split(".")[0] not in self._first_seen for j in job_ids)
            if self._pacing.due(unknown_jobs=unknown):
                self._query(job_ids)
            for i, state in hints.items():
                out[i] = self._from_scheduler(handles[i], state)
        return [s for s in out if s is not None]

    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """One qdel for all; finished or unknown tasks are not an error."""
        ids = sorted({h.job_id for h in handles})
        if not ids:
            return
        self._qdel(ids)
        for handle in handles:  # a pending task leaves no record: say so in its run dir
            run_dir = self._run_dir(handle)
            if run_dir and Path(meta_dir(run_dir)).is_dir():
                state = read_task_state(run_dir)
                if state is None or state.job_id != handle.job_id:
                    write_task_state(run_dir, TaskState(handle.job_id, TaskStatus.CANCELLED))
        self._pacing.cancelled()

    def close(self) -> None:
        """Nothing to release; jobs belong to Grid Engine (an interrupted sweep deletes them)."""

    # -- submission ----------------------------------------------------------------
    def _submit_array(self, plan: ArrayPlan) -> str:
        write_task_inputs(plan.runs, plan.log_dir)
        data = map_data(plan, self.settings)
        atomic_write_json(plan.map_path, data)
        self._maps[plan.map_path] = data
        atomic_write_text(plan.script_path, render_script(plan, self.settings, self.python))
        argv = qsub_argv(plan, self.settings)
        done = self._sge(argv)
        number = parse_terse(done.stdout) if done.returncode == 0 else None
        if number is None:
            raise ProviderError(self.name, f"submitting {plan.job_name} failed", argv=argv,
                                returncode=done.returncode, stderr_tail=done.stderr or done.stdout)
        return number

    def _qdel(self, ids: Sequence[str]) -> None:
        done = self._sge(["qdel", *ids])
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr + done.stdout).lower().splitlines() if ln.strip()]
            bad = [ln for ln in lines if "denied" in ln or "error" in ln or "does not" in ln]
            if not all(any(g in ln for g in _GONE) for ln in bad):
                raise ProviderError(self.name, "cancel failed", job_id=",".join(ids[:5]),
                                    argv=done.args, returncode=done.returncode,
                                    stderr_tail=done.stderr or done.stdout)

    # -- status ------------------------------------------------------------------------
    def _qstat(self) -> dict[str, QstatTask] | None:
        done = self._sge(["qstat", "-xml", "-g", "d", "-u", self._user])
        if done.returncode != 0:
            log.warning("qstat failed (rc=%s): %s", done.returncode, done.stderr.strip()[-200:])
            return None
        try:
            return parse_qstat(done.stdout)
        except Exception as exc:  # noqa: BLE001 - a garbled answer: ask again next time
            log.warning("cannot parse qstat -xml: %s", exc)
            return None

    def _query(self, job_ids: Sequence[str]) -> None:
        tasks = self._qstat()
        if tasks is not None:
            self._open = tasks
            for job_id in tasks:
                self._first_seen.setdefault(job_id.split(".")[0], self._clock())
            # Tasks that left qstat: their accounting, one qacct per array (final, kept).
            numbers = sorted({j.split(".")[0] for j in job_ids
                              if j not in tasks and j not in self._acct}, key=int)
            for number in numbers:
                done = self._sge(["qacct", "-j", number])
                if done.returncode == 0:
                    records = latest_records(parse_qacct(done.stdout))
                    self._acct.update(records)
                    if records:
                        self._first_seen.setdefault(number, self._clock())
        self._pacing.queried()

    def _from_file(self, handle: RunHandle, state: TaskState, run_dir: str) -> RunStatus:
        if state.exit_code == 0 and state.signal is None:
            return RunStatus(handle, RunState.SUCCEEDED)
        context = FailureContext(self.name, handle.job_id, state.node, state.exit_code,
                                 state.signal, "", tail_text(meta_dir(run_dir) / STDERR_FILE))
        return RunStatus(handle, RunState.FAILED, explain_exit(context, _spec(run_dir)))

    def _from_scheduler(self, handle: RunHandle, hint: TaskState | None) -> RunStatus:
        job_id = handle.job_id
        run_dir = self._run_dir(handle)
        if job_id in self._errored:
            return self._errored[job_id]
        task = self._open.get(job_id)
        if task is not None:
            state = task.run_state()
            if state is RunState.FAILED:
                # An error before the job ran (Eqw) holds it in the queue for good: report
                # it, and delete it so that it does not wait there for a person.
                status = RunStatus(handle, state, FailureContext(
                    self.name, job_id, task.node, reason=f"Grid Engine put the job in error "
                    f"state {task.state} before it ran ({self._error_reason(job_id)}); it was "
                    "deleted"))
                self._qdel([job_id])
                self._errored[job_id] = status
                return status
            if state is RunState.SUBMITTED and hint is not None \
                    and hint.state is TaskStatus.RUNNING:
                state = RunState.RUNNING  # the job said so before the scheduler's next answer
            return RunStatus(handle, state)
        record = self._acct.get(job_id)
        if record is not None:
            stderr = tail_text(meta_dir(run_dir) / STDERR_FILE) if run_dir else ""
            state, context = from_accounting(record, _spec(run_dir) if run_dir else None,
                                             stderr)
            if hint is not None and hint.exited:  # the run's own exit beats the task's
                context = FailureContext(self.name, job_id, hint.node or context.node,
                                         hint.exit_code, hint.signal, context.reason, stderr)
                if state is RunState.SUCCEEDED:
                    state = RunState.FAILED
            return RunStatus(handle, state, context if state is not RunState.SUCCEEDED
                             else None)
        if hint is not None and hint.state is TaskStatus.CANCELLED:
            return RunStatus(handle, RunState.CANCELLED, FailureContext(
                self.name, job_id, reason="deleted (qdel) before it started"))
        number = job_id.split(".")[0]
        seen = self._first_seen.get(number)
        if seen is None and hint is not None:
            # Its own file proves the job existed (another process submitted it): give its
            # accounting record the same grace as a job submitted here.
            seen = self._first_seen[number] = self._clock()
        if seen is None or self._clock() - seen > _GRACE_S:
            if hint is not None:  # it ran, left qstat, and qacct never heard of it
                return RunStatus(handle, RunState.FAILED, FailureContext(
                    self.name, job_id, hint.node, hint.exit_code, hint.signal,
                    "the job left Grid Engine without an accounting record (qacct -j "
                    f"{number}: not found)", tail_text(meta_dir(run_dir) / STDERR_FILE)))
            return RunStatus(handle, RunState.UNKNOWN)
        if hint is not None and hint.state in (TaskStatus.RUNNING, TaskStatus.STOPPED,
                                                TaskStatus.EXITED):
            return RunStatus(handle, RunState.RUNNING)  # ended: its record is on its way
        return RunStatus(handle, RunState.SUBMITTED)

    def _error_reason(self, job_id: str) -> str:
        """`qstat -j`'s "error reason" line of a job in an error state (asked once)."""
        number = job_id.split(".")[0]
        done = self._sge(["qstat", "-j", number])
        return error_reason(done.stdout) or f"`qstat -j {number}` said nothing more"

    # -- map files -------------------------------------------------------------------
    def _runs_of(self, job_name: str, workdir: str, task_id: int) -> list[tuple[str, str]]:
        """(run key, run dir) of the runs one array task runs, from its map file."""
        token = job_name_token(job_name)
        if token is None or not workdir:
            return []
        path = str(Path(workdir) / f"{token}.json")
        return task_runs(cached_map(self._maps, path), task_id)

    def _run_dir(self, handle: RunHandle) -> str:
        return self._run_dirs.get(handle.job_id, {}).get(handle.run_key, "")

    # -- commands ------------------------------------------------------------------------
    def _sge(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        try:
            return self._runner(argv, timeout=_COMMAND_TIMEOUT_S)
        except FileNotFoundError as exc:
            raise ProviderUnavailable(
                f"sge: `{argv[0]}` not found on PATH; run on a submit host with the Grid "
                "Engine client commands (locally: scripts/sge-up.sh, then "
                "scripts/in-netns.sh CMD)") from exc


def _spec(run_dir: str) -> RunSpec | None:
    try:
        return RunSpec.from_dict(read_json(spec_path(run_dir)))
    except (OSError, ValueError, TypeError):
        return None
