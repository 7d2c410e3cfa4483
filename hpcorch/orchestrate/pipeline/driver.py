"""Run a pipeline: each stage as its app's own hpcorch multirun, in dependency order.

A stage starts when its inputs have ended. Its runs whose required upstream runs did
not succeed are not submitted: they are recorded CANCELLED with the reason (`upstream
prepare #1 FAILED: ...`), and so, transitively, are theirs; independent branches go on.
Each stage runs through the same launcher, providers and records as any sweep, so
what already SUCCEEDED with the same run key is reused, an interrupted stage resumes
without submitting twice, and running the pipeline again runs only what did not
succeed (and what consumes it).

The driver's own state is its ledger (`<pipeline dir>/.hpcorch/pipeline.json`: the
pipeline as read, the stage-scoped overrides) and the record files, so any process
can look at, wait for, resume or cancel it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch._hydra.sweep import hydra_quote, override_key
from hpcorch.errors import ConfigError
from hpcorch.identity import short_hash
from hpcorch.jobenv import HOME_ENV
from hpcorch.orchestrate.detach import process_alive
from hpcorch.orchestrate.pipeline.chain import (
    after_jobs_of,
    dependency_overrides,
    detach_override,
    hpcorch_command,
    stage_provider,
)
from hpcorch.orchestrate.pipeline.config import PipelineConfig, Stage
from hpcorch.orchestrate.pipeline.jobs import (
    JOBS_SETTING,
    StageJob,
    jobs_path,
    write_stage_jobs,
)
from hpcorch.orchestrate.pipeline.plan import PipelinePlan, PlannedRun, graph_text, mermaid
from hpcorch.spec import FailureContext, RunState
from hpcorch.store.index import StoreIndex, open_index
from hpcorch.store.ledger import read_ledger
from hpcorch.store.records import (
    META_DIR,
    RunRecord,
    archive_record,
    atomic_write_text,
    read_record,
    write_record,
)

#: `<pipeline dir>/.hpcorch/stage.pid`: the stage process the driver is waiting on.
STAGE_PID_FILE = "stage.pid"
#: Overrides a stage's multirun needs on its command line too (the sweep-wide settings).
_SWEEP_WIDE = ("provider", "resources", "container", "hpcorch", "hydra")


@dataclass
class Outcome:
    """How one planned run ended (None: no record of its planned run key)."""

    run: PlannedRun
    run_key: str = ""
    run_dir: str = ""
    record: RunRecord | None = None
    job_id: str = ""
    """Its job's id while it is in flight in a chained stage."""

    @property
    def ok(self) -> bool:
        """Whether its results may be consumed."""
        return self.record is not None and self.record.state.ok

    @property
    def pending(self) -> bool:
        """Submitted and not ended yet (no final record of its run key)."""
        return bool(self.run_key) and (self.record is None or not self.record.state.terminal)


@dataclass
class StageResult:
    """What one stage's multirun did."""

    stage: str
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    returncode: int = 0
    started: float = 0.0


def stage_dir(config: PipelineConfig, stage: str) -> str:
    """`<pipeline dir>/<stage>`: the stage's sweep directory."""
    return os.path.join(config.directory, stage)


def stage_sweep_id(config: PipelineConfig, stage: str) -> str:
    """The sweep id the launcher gives the stage's multirun (from its directory)."""
    return short_hash(os.path.abspath(stage_dir(config, stage)), 10)


def stage_command(config: PipelineConfig, stage: Stage, *, dry_run: bool) -> list[str]:
    """argv of the stage's multirun: its app, hpcorch's launcher and sweeper, the
    listed-jobs file and the sweep-wide overrides (every job lists its own too)."""
    app = os.path.abspath(stage.app)
    if not os.path.isfile(app):
        raise ConfigError(f"stages.{stage.name}.app", stage.app,
                          f"a Hydra app script (not found from {os.getcwd()})")
    wide = [o for o in stage.overrides if override_key(o).split(".")[0].split("/")[0]
            in _SWEEP_WIDE and "," not in o.partition("=")[2]]
    argv = [sys.executable, app, "-m", "hydra/launcher=hpcorch", "hydra/sweeper=hpcorch",
            f"{JOBS_SETTING}={hydra_quote(str(jobs_path(config.directory, stage.name)))}",
            "hydra.sweep.dir=" + hydra_quote(stage_dir(config, stage.name)), *wide]
    if dry_run:
        # the launcher's node: set for any Hydra app, opted in to hpcorch or not
        argv.append("++hydra.launcher.hpcorch.dry_run=true")
    return argv


def collect(config: PipelineConfig, stage: str, runs: Sequence[PlannedRun]) -> dict[int, Outcome]:
    """Each planned run's outcome, from the stage's ledger (its run keys) and records."""
    ledger = read_ledger(stage_dir(config, stage))
    specs = {s.num: s for s in ledger.specs} if ledger else {}
    out = {}
    for run in runs:
        spec = specs.get(run.num)
        outcome = Outcome(run)
        here = read_record(os.path.join(stage_dir(config, stage), str(run.num)))
        if here is not None and here.state is RunState.CANCELLED and not here.run_key:
            outcome.record = here  # cancelled by the pipeline: its newest word on this run
        elif spec is not None:
            outcome.run_key, outcome.run_dir = spec.run_key, spec.run_dir
            if here is not None and here.run_key == spec.run_key:
                outcome.record = here
        out[run.num] = outcome
    return out


class PipelineDriver:
    """Runs a planned pipeline stage after stage (see the module docstring)."""

    def __init__(self, plan: PipelinePlan, *, env: dict[str, str] | None = None,
                 dry_run: bool = False, out: Any = None) -> None:
        self.plan = plan
        self.config = plan.config
        self.env = env
        self.dry_run = dry_run
        self.out = out or sys.stderr
        self.results: dict[str, StageResult] = {}
        self.in_flight: dict[str, bool] = {}
        """Stages submitted and left to their engine (chained), not followed to their end yet."""
        self.resubmitted: set[str] = set()
        self.waited_on: dict[str, set[str]] = {}
        """The in-flight upstream stages a chained stage's submission waits on."""
        """Chained stages cancelled and submitted again: what waited on them must be too."""
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = ""

    def say(self, text: str) -> None:
        """A notice on stderr (stdout belongs to the research code)."""
        print(f"hpcorch: {text}", file=self.out, flush=True)

    # -- one stage ---------------------------------------------------------
    def inputs_of(self, run: PlannedRun) -> tuple[list[tuple[str, str, str]], str, list[str]]:
        """(the upstream runs `run` consumes, why it must not run ("" when it may), the
        job ids of those still in flight, which a chained submission waits on)."""
        consumed: list[tuple[str, str, str]] = []
        waits: list[str] = []
        when = {n.stage: n.when for n in self.plan.needs_of(run.stage)}
        for up_stage, up_num in run.inputs:
            outcome = self.results[up_stage].outcomes[up_num]
            if outcome.ok:
                consumed.append((up_stage, outcome.run_key, outcome.run_dir))
            elif up_stage in self.in_flight and outcome.pending:
                consumed.append((up_stage, outcome.run_key, outcome.run_dir))
                waits.append(outcome.job_id)
            elif when[up_stage] == "success":
                return [], f"upstream {up_stage} #{up_num} {_how(outcome)}", []
        return consumed, "", waits

    def cancel_run(self, run: PlannedRun, reason: str) -> RunRecord:
        """Record `run` CANCELLED with `reason`, keeping another run's record archived."""
        run_dir = os.path.join(stage_dir(self.config, run.stage), str(run.num))
        if read_record(run_dir) is not None:
            archive_record(run_dir)
        record = RunRecord(run_key="", sweep_id=stage_sweep_id(self.config, run.stage),
                           num=run.num, state=RunState.CANCELLED, run_dir=run_dir,
                           overrides=run.overrides, ended=time.time(),
                           failure=FailureContext(provider="pipeline", reason=reason))
        write_record(record)
        return record

    def run_stage(self, stage: Stage, *, chained: bool = False) -> StageResult:
        """Cancel the runs whose inputs failed, launch the others and collect them all;
        `chained`: submit and return, the engine holding the runs on their inputs' jobs."""
        result = StageResult(stage.name, started=time.time())
        jobs, cancelled, waits = [], 0, []
        for run in self.plan.runs[stage.name]:
            consumed, why, run_waits = self.inputs_of(run)
            if why and not self.dry_run:
                self.cancel_run(run, why)
                cancelled += 1
            else:
                jobs.append(StageJob(run.num, _task_overrides(run.overrides), tuple(consumed)))
                waits += run_waits
                self.waited_on.setdefault(stage.name, set()).update(
                    u for u, _ in run.inputs if u in self.in_flight)
        if cancelled:
            self.say(f"stage {stage.name}: {cancelled} run(s) not started (an upstream run "
                     "did not succeed): recorded CANCELLED")
        if jobs:
            write_stage_jobs(jobs_path(self.config.directory, stage.name), stage.name, jobs)
            argv = stage_command(self.config, stage, dry_run=self.dry_run)
            after = after_jobs_of(stage)
            if chained and after is not None:
                argv += [detach_override(), *dependency_overrides(after, list(dict.fromkeys(
                    waits)))]
            how = (f", after {len(set(waits))} upstream job(s) by the engine's dependency"
                   if chained and waits else ", submitted, followed later" if chained else "")
            self.say(f"stage {stage.name}: {len(jobs)} run(s) ({stage.app}{how})")
            result.returncode = self._run_child(argv)
        result.outcomes = self._outcomes(stage.name)
        return result

    def _outcomes(self, stage: str) -> dict[int, Outcome]:
        runs = self.plan.runs[stage]
        if self.dry_run:  # nothing ran: the planned directories; keys and job ids unknown
            return {r.num: Outcome(r, "(planned)", os.path.join(stage_dir(self.config, stage),
                                                                str(r.num)), None,
                                   job_id=f"<{stage} job>") for r in runs}
        outcomes = collect(self.config, stage, runs)
        if stage in self.in_flight:
            jobs = {row.num: row.job_id for row in self._index().runs(
                stage_sweep_id(self.config, stage))}
            for outcome in outcomes.values():
                outcome.job_id = jobs.get(outcome.run.num, "")
        return outcomes

    def _index(self) -> StoreIndex:
        return open_index((self.env or {}).get(HOME_ENV))

    # -- chained stages ----------------------------------------------------
    def chainable(self, stage: Stage) -> bool:
        """Whether `stage` can be submitted now and left to its engine: its provider has
        native dependencies and detaches, and each upstream stage has ended or is in
        flight on the same provider with the job id of every run still open known."""
        if after_jobs_of(stage) is None:
            return False
        for need in stage.needs:
            if need.stage not in self.in_flight:
                continue
            if stage_provider(self.config.stage(need.stage)) != stage_provider(stage):
                return False
            if any(o.pending and not o.job_id
                   for o in self.results[need.stage].outcomes.values()):
                return False
        return True

    def settle(self, name: str) -> None:
        """Follow an in-flight stage to its end (its upstream stages first). If an input
        of it did not succeed, its submission waits on a dependency the engine can never
        satisfy: cancel it, say so, and run the stage the orchestrated way."""
        if name not in self.in_flight:
            return
        stage = self.config.stage(name)
        for need in stage.needs:
            self.settle(need.stage)
        # The dependency names whole upstream arrays: one run of them that did not
        # succeed (or their resubmission) leaves it never satisfied.
        broken = [up for up in self.waited_on.get(name, ()) if up in self.resubmitted or any(
            not o.ok for o in self.results[up].outcomes.values())]
        del self.in_flight[name]
        if self.dry_run:
            return
        if broken:
            self.say(f"stage {name}: its submission waits on {', '.join(broken)} runs that did "
                     "not succeed or were submitted again, a dependency the engine can never "
                     "satisfy: cancelling it; the runs whose inputs succeeded are submitted "
                     "again")
            self._run_child(hpcorch_command("cancel", stage_dir(self.config, name)))
            self.resubmitted.add(name)
            self.results[name] = self.run_stage(stage)
            return
        submitted = {num: o.job_id for num, o in self.results[name].outcomes.items()}
        self._run_child(hpcorch_command("wait", stage_dir(self.config, name), "--progress",
                                        "off"))
        self.results[name].outcomes = self._outcomes(name)
        # `hpcorch wait` retries what its policy grants (a memory kill, a time limit): a
        # retried run is a new job, one the dependents' submissions never named.
        if any(o.record is not None and submitted.get(num) and o.record.job_id
               and o.record.job_id != submitted[num]
               for num, o in self.results[name].outcomes.items()):
            self.resubmitted.add(name)

    def _run_child(self, argv: list[str]) -> int:
        env = {**os.environ, **(self.env or {})}
        self._child = subprocess.Popen(argv, env=env)
        if not self.dry_run:  # a driver killed outright leaves it running: the next waits
            atomic_write_text(self._stage_pid, f"{self._child.pid}\n")
        try:
            code = self._child.wait()
        finally:
            self._child = None
        if self._stopping:
            raise KeyboardInterrupt(self._stopping)
        return code

    @property
    def _stage_pid(self) -> Path:
        return Path(self.config.directory) / META_DIR / STAGE_PID_FILE

    def _await_left_stage(self) -> None:
        """A stage process an earlier driver left (killed with SIGKILL) still owns its
        runs: let it finish them (and write their records) instead of running them twice."""
        pid = process_alive(self._stage_pid)
        if pid is None or pid == os.getpid():
            return
        self.say(f"a stage process an earlier driver started (pid {pid}) is still running: "
                 "waiting for it to finish its runs")
        while process_alive(self._stage_pid) == pid:
            time.sleep(0.5)

    def _forward(self, signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: the running stage cancels and records its open runs, then we
        stop. The stage's process is only signalled here: `_run_child`'s wait (which this
        handler interrupted, holding Popen's wait lock) sees it end, then stops us."""
        self._stopping = signal.Signals(signum).name
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            return
        raise KeyboardInterrupt(self._stopping)

    # -- the whole pipeline ------------------------------------------------
    def run(self) -> int:
        """Run every stage; 0 when every run succeeded, 1 if some did not, 2 bad input,
        130 interrupted (`hpcorch resume` finishes it)."""
        if self.dry_run:
            sys.stdout.write(graph_text(self.plan) + "\n" + mermaid(self.plan) + "\n")
            sys.stdout.flush()
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if not self.dry_run:
                self._await_left_stage()
            for stage in self.config.stages:
                chained = self.chainable(stage)
                if not chained:
                    for need in stage.needs:
                        self.settle(need.stage)
                else:
                    self.in_flight[stage.name] = True
                result = self.run_stage(stage, chained=chained)
                self.results[stage.name] = result
                if result.returncode in (2, 130) or result.returncode < 0:
                    self.say(f"stage {stage.name} stopped (exit {result.returncode}): the "
                             "pipeline stops here")
                    return 2 if result.returncode == 2 else 130
            for stage in self.config.stages:
                self.settle(stage.name)
        except KeyboardInterrupt:
            self.say("pipeline interrupted: finished runs are kept; `hpcorch resume "
                     f"{self.config.directory}` finishes it")
            return 130
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        if self.dry_run:
            return 0
        self.say(summary_line(self.config, self.results))
        ok = all(o.ok for r in self.results.values() for o in r.outcomes.values())
        return 0 if ok else 1


def _task_overrides(overrides: Sequence[str]) -> tuple[str, ...]:
    """A job's own overrides: Hydra's (`hydra...`, `+hydra/launcher/provider=`) are the
    multirun's, on its command line, as Hydra's sweepers never hand them to a job."""
    return tuple(o for o in overrides if not override_key(o).startswith("hydra"))


def _how(outcome: Outcome) -> str:
    record = outcome.record
    if record is None:
        return "has no record (it did not run)"
    reason = record.failure.one_line() if record.failure else (
        f"{record.error.type}: {record.error.message}" if record.error else "")
    return f"{record.state.value}: {reason}" if reason else record.state.value


def summary_line(config: PipelineConfig, results: dict[str, StageResult]) -> str:
    """`pipeline example: prepare 2 succeeded (2 reused), train 4 succeeded, ...`."""
    parts = []
    for stage in config.stages:
        result = results.get(stage.name)
        if result is None:
            continue
        counts: dict[str, int] = {}
        reused = 0
        for outcome in result.outcomes.values():
            record = outcome.record
            state = "MISSING" if record is None else (
                "SUCCEEDED" if record.state.ok else record.state.value)
            counts[state] = counts.get(state, 0) + 1
            if record is not None and record.state.ok and (
                    record.reused_from or (record.ended or 0) < result.started):
                reused += 1
        text = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        parts.append(f"{stage.name} {text}" + (f" ({reused} reused)" if reused else ""))
    return f"pipeline {config.name}: " + "; ".join(parts)

