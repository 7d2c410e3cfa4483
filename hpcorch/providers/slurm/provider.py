"""The Slurm provider: job arrays in, one batched scheduler query per interval out.

- submit: one submitit submission (one sbatch) per array (plan_arrays splits
  at MaxArraySize and MaxJobCount, read once from `scontrol show config`;
  submitit's SlurmExecutor writes the script and runs sbatch); transient sbatch
  failures are tried once: after checking that the failed-looking submission did
  not get through after all, TransientSubmitError carries the handles of the batch's
  arrays that did, and the orchestrator submits the rest again with backoff.
- limits: the partition's MaxTime and memory and its largest node, read once
  (`scontrol show partition P -o`, `scontrol show node -o`).
- status: each run's task-state file first (written inside the job, no
  scheduler involved); for the rest ONE `sacct` call, at most every
  `query_interval` seconds and backing off, or ONE `squeue` when accounting
  is off. While the runs' files show progress, the scheduler is asked only
  every `max_query_interval` (it is needed for what files cannot tell: jobs
  killed for time or memory, cancelled, lost nodes). A job that neither
  sacct nor this process knows is asked of squeue once. Every failed run's
  context carries its FailureClass and, where sacct sampled it, its peak memory.
- lookup: `squeue` of this user's jobs named `[<name>.]hpcorch-<sweep id>-<token>`
  (`<name>`: provider.job_name, else the Hydra job name); the job's work dir holds
  the map file that says which run keys each array index runs.
- cancel: one `scancel` for every handle; cancelling what ended is fine.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpcorch.errors import ConfigError, ProviderError, ProviderUnavailable, TransientSubmitError
from hpcorch.launch import Launcher
from hpcorch.providers.arrays import JOB_PREFIX, cached_map
from hpcorch.providers.base import Capabilities
from hpcorch.providers.pacing import QueryPacing
from hpcorch.providers.slurm.accounting import (
    LOOKUP_FORMAT,
    NODE_CPUS_FORMAT,
    ClusterLimits,
    JobInfo,
    parse_config,
    parse_lookup,
    parse_node_cpus,
)
from hpcorch.providers.slurm.failure import describe, memory_kill
from hpcorch.providers.slurm.limits import read_limits
from hpcorch.providers.slurm.script import (
    ArrayPlan,
    hpcorch_part,
    job_name_token,
    plan_arrays,
    task_runs,
)
from hpcorch.providers.slurm.settings import SlurmSettings
from hpcorch.providers.slurm.submission import (
    executor_for,
    find_by_name,
    submit_array,
    write_array_files,
)
from hpcorch.providers.slurm.submitit_script import render as render_sbatch
from hpcorch.providers.slurm.task import TaskState, read_task_state
from hpcorch.providers.slurm.watch import JobWatch
from hpcorch.runner import CommandRunner, run_command
from hpcorch.spec import (
    FailureClass,
    FailureContext,
    ResourceLimits,
    Resources,
    RunHandle,
    RunSpec,
    RunState,
    RunStatus,
)
from hpcorch.store.records import (
    STDERR_FILE,
    meta_dir,
    tail_text,
)
from hpcorch.worker.array_task import TaskStatus

log = logging.getLogger("hpcorch.slurm")

#: Slurm's variables a run in a container may read, by name for runtimes that pass no
#: patterns (docker): the job and array ids, the restart count, the step's rank layout.
CONTAINER_ENV_NAMES: tuple[str, ...] = (
    "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
    "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS", "SLURM_JOB_NODELIST",
    "SLURM_STEP_ID", "SLURM_CPUS_PER_TASK", "SLURM_JOB_NUM_NODES", "SLURMD_NODENAME",
)

#: scancel complaints that mean "nothing left to cancel".
_ALREADY_GONE = ("already completing or completed", "invalid job id", "job/step already")
_COMMAND_TIMEOUT_S = 120.0
#: How long a run killed by SIGKILL that Slurm calls plain FAILED is asked about again,
#: before it counts as killed by something Slurm did not record.
SETTLE_S = 20.0


def after_arrays(job_ids: Sequence[str]) -> dict[str, Any]:
    """`--dependency=afterok:<array>:...` on the arrays (or plain jobs) holding `job_ids`
    (`123_4` is task 4 of array 123): the submission starts once all of them succeeded.
    Whole arrays keep the option short for 10^4 runs; a run still checks its own inputs."""
    arrays = dict.fromkeys(job_id.split("_", 1)[0] for job_id in job_ids)
    return {"extra": {"dependency": "afterok:" + ":".join(arrays)}}


class SlurmProvider:
    """Runs specs as Slurm job arrays (see the module docstring)."""

    Settings = SlurmSettings
    name = "slurm"
    capabilities = Capabilities(
        multi_rank=Launcher.SRUN,
        container_env_prefixes=("SLURM_",),
        container_env_names=CONTAINER_ENV_NAMES,
        after_jobs=after_arrays)
    """Ranks start as an srun step of the array task's allocation; Slurm's own variables
    reach a run in a container (its job id and restart count also come as HPCORCH_JOB_ID
    and HPCORCH_RESTART_COUNT); a pipeline stage can wait on its upstream arrays with
    `--dependency=afterok:`."""
    detachable = True
    """Array jobs live in Slurm: a detached sweep needs no process of ours."""

    def __init__(self, settings: SlurmSettings | None = None, *,
                 runner: CommandRunner = run_command, limits: ClusterLimits | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or SlurmSettings()
        self.poll_interval = self.settings.poll_interval
        self.max_poll_interval = self.settings.max_poll_interval
        self.python = self.settings.python or sys.executable
        self._runner = runner
        self._limits = limits
        self._resource_limits: ResourceLimits | None = None
        self._refused: set[str] = set()  # job names of arrays sbatch refused transiently
        self._clock = clock
        self._run_dirs: dict[str, dict[str, str]] = {}  # job id -> run key -> run dir
        self._maps: dict[str, dict[str, object]] = {}  # map file path -> its data
        self._watch = JobWatch(self._slurm, lambda: self.cluster_limits.accounting, clock)
        self._jobs = self._watch.jobs  # job id -> the scheduler's latest word
        self._pacing = QueryPacing(self.settings.query_interval,
                                   self.settings.max_query_interval, clock)
        self._sinfo_done = False
        self._settling: dict[str, float] = {}  # job id -> when its unexplained SIGKILL was seen
        self.calls: dict[str, int] = {}
        """How often each Slurm command ran (sbatch, sacct, squeue, scancel, scontrol)."""

    # -- contract ----------------------------------------------------------------
    @classmethod
    def check_sweep_dir(cls, sweep_dir: str) -> None:
        """Refuse, before anything is written, a sweep dir that cannot stand in an sbatch
        script (a control character would end an #SBATCH line early)."""
        if not sweep_dir.isprintable():
            raise ConfigError("hydra.sweep.dir", sweep_dir, "must not contain control "
                              "characters (newlines, tabs) with provider=slurm: it is written "
                              "into #SBATCH lines")

    def check(self) -> None:
        """Reach slurmctld (`scontrol show config`) and read the cluster's limits."""
        self._limits = self._read_limits(strict=True)

    def render(self, runs: Sequence[RunSpec]) -> str:
        """Every sbatch script `submit` would have submitit write and submit, exactly."""
        limits = self._limits_for(runs)
        plans = plan_arrays(runs, self.settings, limits)
        head = [f"# provider=slurm: {len(runs)} run(s) in {len(plans)} job array(s), one "
                f"submitit submission (sbatch) each; MaxArraySize={limits.max_array_size} "
                f"MaxJobCount={limits.max_job_count}"
                + ("" if limits.read_from_cluster else " (defaults: cluster not reachable)")]
        parts = ["\n".join(head) + "\n"]
        for plan in plans:
            executor = executor_for(plan, self.settings, self.python, offline=True)
            parts.append(f"# ==> {plan.job_name} (submitit folder {plan.submitit_dir}) <==\n")
            parts.append(render_sbatch(executor, len(plan.tasks)))
        return "".join(parts)

    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """One sbatch per array. A transient refusal raises TransientSubmitError with the
        handles of the arrays already in (they stay queued); any other failure cancels
        them (all or nothing) and raises ProviderError."""
        if not runs:
            return []
        plans = plan_arrays(runs, self.settings, self._limits_for(runs))
        handles: dict[str, RunHandle] = {}
        submitted: list[str] = []
        try:
            for plan in plans:
                array_id = self._submit_array(plan)
                submitted.append(array_id)
                self._watch.submitted[array_id] = self._clock()
                for index, task in enumerate(plan.tasks):
                    job_id = plan.task_job_id(array_id, index)
                    self._jobs[job_id] = JobInfo(job_id, "PENDING", name=plan.job_name,
                                                 workdir=plan.slurm_dir)
                    for spec in task:
                        self._run_dirs.setdefault(job_id, {})[spec.run_key] = spec.run_dir
                        handles[f"{spec.sweep_id}/{spec.num}"] = RunHandle(
                            self.name, spec.run_key, job_id)
        except TransientSubmitError as exc:
            # What got in stays in: the orchestrator watches it and submits the rest again.
            exc.submitted = [h for s in runs if (h := handles.get(f"{s.sweep_id}/{s.num}"))]
            if submitted:
                self._pacing.submitted()
            raise
        except BaseException:
            if submitted:
                try:
                    self._scancel(submitted)
                except ProviderError as exc:  # the first error is the one to report
                    log.warning("could not cancel arrays %s of a failed batch: %s",
                                submitted, exc)
            raise
        self._pacing.submitted()
        return [handles[f"{s.sweep_id}/{s.num}"] for s in runs]

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Open (queued or running) jobs of these run keys (of this sweep: its id is in
        the job name), found through squeue."""
        wanted = set(run_keys)
        if not wanted:
            return []
        done = self._slurm(["squeue", "--me", "-h", "-r", "-o", LOOKUP_FORMAT])
        if done.returncode != 0:
            raise ProviderError(self.name, "cannot list jobs", argv=done.args,
                                returncode=done.returncode, stderr_tail=done.stderr)
        found: dict[str, tuple[int, RunHandle]] = {}
        for job_id, job_name, workdir in parse_lookup(done.stdout):
            if sweep_id is not None and not hpcorch_part(job_name).startswith(
                    f"{JOB_PREFIX}{sweep_id}-"):
                continue
            for run_key, run_dir in self._runs_of(job_id, job_name, workdir):
                if run_key in wanted:
                    order = int(job_id.split("_", 1)[0])
                    if run_key not in found or order > found[run_key][0]:  # newest wins
                        found[run_key] = (order, RunHandle(self.name, run_key, job_id))
                    self._run_dirs.setdefault(job_id, {})[run_key] = run_dir
        return [found[k][1] for k in run_keys if k in found]

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """Task-state files first; then at most one scheduler query for what is still open."""
        out: list[RunStatus | None] = [None] * len(handles)
        hints: dict[int, TaskState | None] = {}
        for i, handle in enumerate(handles):
            run_dir = self._run_dir(handle)
            state = read_task_state(run_dir) if run_dir else None
            if state is not None and state.job_id != handle.job_id:
                state = None  # written by an earlier submission of the same run
            if state is not None:
                self._pacing.observe((handle.job_id, handle.run_key),
                                     (state.state, state.started, state.restart),
                                     verdict=state.exited and state.signal == 9)
            if state is not None and state.exited and state.signal != 9:
                out[i] = self._from_task_state(handle, state, run_dir or "")
            else:  # SIGKILL may be Slurm's (memory, time): its word decides
                hints[i] = state
        if hints:
            open_ids = [handles[i].job_id for i in hints]
            unknown = any(j not in self._jobs and j not in self._watch.gone for j in open_ids)
            awaiting = any(h is not None and h.exited for h in hints.values())
            if self._pacing.due(unknown, awaiting):
                self._query(open_ids)
            for i, state in hints.items():
                out[i] = self._from_scheduler(handles[i], state)
        return [s for s in out if s is not None]

    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """One scancel for all; already finished or unknown jobs are not an error."""
        ids = sorted({h.job_id for h in handles})
        if not ids:
            return
        self._scancel(ids)
        self._pacing.cancelled()

    def close(self) -> None:
        """Nothing to release; jobs belong to Slurm (an interrupted sweep cancels them)."""

    def limits(self, resources: Resources) -> ResourceLimits:
        """The most one run may get from the partition (provider.partition, else the
        default one): read once (`scontrol show partition P -o`, `scontrol show node -o`);
        every field None, with a warning, when Slurm cannot say. Never raises. The same
        for every `resources`: a Slurm partition has one set of limits."""
        if self._resource_limits is None:
            self._resource_limits = read_limits(self._slurm, self.settings.partition)
        return self._resource_limits

    # -- cluster limits ------------------------------------------------------------
    @property
    def cluster_limits(self) -> ClusterLimits:
        """MaxArraySize & co, read once (defaults, marked as such, when unreachable)."""
        if self._limits is None:
            self._limits = self._read_limits(strict=False)
        return self._limits

    def _limits_for(self, runs: Sequence[RunSpec]) -> ClusterLimits:
        """The limits, with the node size (one `sinfo`, once) when a run has several ranks:
        only then may a run need --overcommit (ranks beyond the cores of a node)."""
        limits = self.cluster_limits
        if limits.node_cpus is None and limits.read_from_cluster and not self._sinfo_done \
                and any(spec.resources.tasks > 1 for spec in runs):
            self._sinfo_done = True
            argv = ["sinfo", "-h", "-N", "-o", NODE_CPUS_FORMAT]
            if self.settings.partition:
                argv += ["-p", self.settings.partition]
            done = self._slurm(argv)
            cpus = parse_node_cpus(done.stdout, self.settings.partition) \
                if done.returncode == 0 else None
            if cpus is None:
                log.warning("cannot read the node size (`%s` rc=%s): no --overcommit for runs "
                            "of more ranks than cores", " ".join(argv), done.returncode)
            else:
                self._limits = limits = dataclasses.replace(limits, node_cpus=cpus)
        return limits

    def _read_limits(self, strict: bool) -> ClusterLimits:
        try:
            done = self._slurm(["scontrol", "show", "config"])
        except ProviderUnavailable:
            if strict:
                raise
            return ClusterLimits(read_from_cluster=False)
        if done.returncode != 0:
            if strict:
                raise ProviderUnavailable(
                    f"slurm: cannot reach slurmctld (`scontrol show config` rc="
                    f"{done.returncode}: {done.stderr.strip()[-300:]}); is Slurm up? "
                    "(locally: scripts/slurm-up.sh, and run inside scripts/in-netns.sh)")
            return ClusterLimits(read_from_cluster=False)
        return parse_config(done.stdout)

    # -- submission ----------------------------------------------------------------
    def _submit_array(self, plan: ArrayPlan) -> str:
        self._maps[plan.map_path] = write_array_files(plan, self.settings)
        if plan.job_name in self._refused:
            # Submitted again after a transient refusal (the same runs plan to the same
            # job name): it may have got in late, when squeue could not yet tell.
            earlier = find_by_name(self._slurm, plan.job_name)
            if earlier:
                self._refused.discard(plan.job_name)
                return earlier
        self.calls["sbatch"] = self.calls.get("sbatch", 0) + 1
        try:
            array_id = submit_array(plan, self.settings, self.python,
                                    lambda name: find_by_name(self._slurm, name), self.name)
        except TransientSubmitError:
            self._refused.add(plan.job_name)
            raise
        self._refused.discard(plan.job_name)
        return array_id

    def _scancel(self, ids: Sequence[str]) -> None:
        done = self._slurm(["scancel", *ids])
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.lower().splitlines() if ln.strip()]
            if not all(any(g in ln for g in _ALREADY_GONE) for ln in lines):
                raise ProviderError(self.name, "cancel failed", job_id=",".join(ids[:5]),
                                    argv=done.args, returncode=done.returncode,
                                    stderr_tail=done.stderr)

    # -- status ------------------------------------------------------------------------
    def _query(self, job_ids: Sequence[str]) -> None:
        self._watch.query(job_ids)
        self._pacing.queried()

    def _from_task_state(self, handle: RunHandle, state: TaskState, run_dir: str) -> RunStatus:
        if state.exit_code == 0 and state.signal is None:
            return RunStatus(handle, RunState.SUCCEEDED)
        context = FailureContext(provider=self.name, job_id=handle.job_id, node=state.node,
                                 exit_code=state.exit_code, signal=state.signal,
                                 stderr_tail=tail_text(meta_dir(run_dir) / STDERR_FILE))
        # The run's own exit decides; the scheduler's word, where heard, adds its peak memory.
        return RunStatus(handle, RunState.FAILED, describe(
            RunState.FAILED, run_dir, context, peak_from=self._jobs.get(handle.job_id)))

    def _from_scheduler(self, handle: RunHandle, hint: TaskState | None) -> RunStatus:
        info = self._jobs.get(handle.job_id)
        if info is None:
            state = RunState.UNKNOWN if handle.job_id in self._watch.gone \
                else RunState.SUBMITTED
            if hint is not None and hint.state is TaskStatus.RUNNING:
                state = RunState.RUNNING
            if state is RunState.UNKNOWN:
                return RunStatus(handle, state, FailureContext(
                    self.name, handle.job_id, reason="neither sacct nor squeue knows the job",
                    failure_class=FailureClass.LOST))
            return RunStatus(handle, state)
        self._learn_runs(handle.job_id, info)
        state, _ = info.run_state()
        if state is RunState.SUBMITTED and hint is not None and hint.state is TaskStatus.RUNNING \
                and not info.requeued:
            state = RunState.RUNNING  # the job said so before the scheduler's next answer
        if not state.terminal:
            return RunStatus(handle, state)
        if state is RunState.SUCCEEDED and (hint is None or not hint.exited):
            return RunStatus(handle, state)
        run_dir = self._run_dir(handle)
        stderr = tail_text(meta_dir(run_dir) / STDERR_FILE) if run_dir else ""
        context = info.context(stderr, handle.job_id)
        if hint is not None and hint.exited and hint.signal == signal.SIGKILL \
                and state is RunState.FAILED and memory_kill(info) is None \
                and self._settle(handle.job_id):
            # slurmctld records a cgroup memory kill as FAILED first and OUT_OF_MEMORY
            # a moment later (measured here: seconds); a run classified from the first
            # word would not be retried with more memory. Ask again for a while.
            return RunStatus(handle, RunState.RUNNING)
        if hint is not None and hint.exited:  # the run's own exit beats the task's
            context = FailureContext(context.provider, context.job_id, hint.node or context.node,
                                     hint.exit_code, hint.signal, context.reason, stderr)
            if state is RunState.SUCCEEDED:
                state = RunState.FAILED
        # FAILED: memory kills, ranks explained; every end: its FailureClass, peak memory
        return RunStatus(handle, state, describe(state, run_dir, context, info))

    def _settle(self, job_id: str) -> bool:
        """True while an unexplained SIGKILL of this job is younger than SETTLE_S."""
        first = self._settling.setdefault(job_id, self._clock())
        return self._clock() - first < SETTLE_S

    # -- map files -------------------------------------------------------------------
    def _runs_of(self, job_id: str, job_name: str, workdir: str) -> list[tuple[str, str]]:
        """(run key, run dir) of the runs one array task runs, from its map file."""
        token = job_name_token(job_name)
        if token is None:
            return []
        path = str(Path(workdir) / f"{token}.json")
        _, sep, index = job_id.partition("_")  # a plain job id: a single-task plan
        return task_runs(cached_map(self._maps, path), int(index) if sep else 0)

    def _learn_runs(self, job_id: str, info: JobInfo) -> None:
        """Handles from another process: find their run dirs through the job's map file."""
        if job_id not in self._run_dirs:
            self._run_dirs[job_id] = dict(self._runs_of(job_id, info.name, info.workdir))

    def _run_dir(self, handle: RunHandle) -> str:
        return self._run_dirs.get(handle.job_id, {}).get(handle.run_key, "")

    # -- commands ------------------------------------------------------------------------
    def _slurm(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        try:
            return self._runner(argv, timeout=_COMMAND_TIMEOUT_S)
        except FileNotFoundError as exc:
            raise ProviderUnavailable(
                f"slurm: `{argv[0]}` not found on PATH; run on a login node with the Slurm "
                "client commands (locally: scripts/slurm-up.sh, then scripts/in-netns.sh CMD)"
            ) from exc
