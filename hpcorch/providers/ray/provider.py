"""The Ray provider: runs land in a Ray cluster through Ray's Jobs API, one job per batch.

mode=sweep (default): a batch becomes ONE Ray job (its submission id derives
from the sweep id and the runs' keys) whose driver, inside the cluster, runs
every run as a named task `run-<num>-<key>` with the run's own resources, and
writes each run's outcome into its run directory. A run's job id is
`<submission id>#<num>`. Why (scripts/bench_ray.py, 50 trivial runs, 2 cores):
a Ray job costs seconds of start-up (a supervisor actor, a driver, its
workers), so a job per run took 7.4x hydra-ray-launcher's time; a task costs
milliseconds, and with warm tasks the sweep job beat the peer (0.81x).

mode=job: every run is its own Ray job (submission id `hpcorch-<run key>`)
whose entrypoint resources are the run's; each run is then a dashboard job.

Either way the sweep lives in the cluster (detaching is safe), status() asks
Ray ONE question per interval (get_job_info for one sweep job, else
list_jobs) and reads the outcome files, and the run's stdout/stderr land in
`<run_dir>/.hpcorch/` as for every provider.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hpcorch.errors import ProviderError, ProviderUnavailable
from hpcorch.providers.base import Capabilities
from hpcorch.providers.ray import cluster, naming
from hpcorch.providers.ray.execute import cancel_path, read_outcome
from hpcorch.providers.ray.naming import infeasible_reason
from hpcorch.providers.ray.render import batch_file, check_spec, render_submissions
from hpcorch.providers.ray.settings import RaySettings
from hpcorch.spec import (
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
    atomic_write_json,
    meta_dir,
    read_json,
    spec_path,
    tail_text,
)

log = logging.getLogger(__name__)

#: Lines of stderr a FailureContext carries.
TAIL_LINES = 20


class RayProvider:
    """Runs specs on a Ray cluster through the Jobs API (see the module docstring)."""

    Settings = RaySettings
    name = "ray"
    capabilities = Capabilities()
    """One process per run (multi-rank runs are refused); no engine variable a run in a
    container needs."""

    @property
    def detachable(self) -> bool:
        """Runs outlive this process on an existing cluster (not on a Ray started for us)."""
        return self.settings.address is not None

    def __init__(self, settings: RaySettings | None = None) -> None:
        self.settings = settings or RaySettings()
        self.poll_interval = self.settings.poll_interval
        self.max_poll_interval = self.settings.max_poll_interval
        self.python = self.settings.python or sys.executable
        self.url = ""
        self._client: Any = None
        self._head: cluster.LocalHead | None = None
        self._headers: dict[str, str] = {}
        self._run_dirs: dict[str, str] = {}  # job id -> run directory
        self._rejected: dict[str, RunStatus] = {}  # job id -> why it was never submitted
        self._stopping: set[str] = set()  # submission ids we asked Ray to stop

    # -- connection --------------------------------------------------------
    @property
    def dashboard_url(self) -> str:
        """The cluster's dashboard (empty before the first connection)."""
        return self.url

    @classmethod
    def dashboard_links(cls, provider_settings: Mapping[str, Any],
                        job_ids: Sequence[str]) -> list[str]:
        """The dashboard pages of a sweep's jobs (`hpcorch status`); none for a Ray that
        was started for the sweep: it is gone with it."""
        address = provider_settings.get("address")
        if not address:
            return []
        url = cluster.resolve_address(str(address))
        return [f"{url}/#/jobs/{job_id}" for job_id in sorted({j.split("#")[0] for j in job_ids})]

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        from ray.job_submission import JobSubmissionClient

        address = self.settings.address
        if address is None:
            self._head = cluster.LocalHead(self.settings.num_cpus, self.settings.start_timeout)
            self.url = self._head.start()
            log.info(f"started a Ray head for this sweep: dashboard {self.url}")
        else:
            self.url = cluster.resolve_address(address)
        self._headers = cluster.auth_headers()
        # Fast, clear failure first: the SDK's own connection check has no short timeout.
        cluster.http_get(self.url, "/api/version", self._headers, self.settings.connect_timeout)
        try:
            self._client = JobSubmissionClient(self.url, headers=self._headers)
        except Exception as exc:  # noqa: BLE001 - the SDK raises bare ConnectionError/RuntimeError
            raise ProviderUnavailable(f"[ray] cannot use the Jobs API at {self.url}: {exc}; "
                                      f"{cluster.START_HINT}") from None
        return self._client

    def check(self) -> None:
        """Reach the Jobs API with Ray's token (or start the sweep's own Ray); list jobs once."""
        self._list_jobs()

    def _list_jobs(self) -> dict[str, dict[str, Any]]:
        client = self._connect()
        try:
            jobs = client.list_jobs()
        except Exception as exc:  # noqa: BLE001
            raise ProviderUnavailable(f"[ray] list_jobs at {self.url} failed: {exc}") from None
        return {j.submission_id: j.model_dump(mode="json") for j in jobs if j.submission_id}

    def limits(self, resources: Resources) -> ResourceLimits:
        """CPUs and memory of the cluster's largest alive node, and how many nodes are
        alive (one state-API call); every field None when no node is listed yet."""
        self._connect()
        return naming.cluster_limits(
            cluster.node_resources(self.url, self._headers, self.settings.connect_timeout))

    # -- render ------------------------------------------------------------
    def render(self, runs: Sequence[RunSpec]) -> str:
        """The Jobs API submissions `submit` would make (entrypoints, resources, metadata)."""
        return render_submissions(runs, self.settings, self.python)

    # -- submit --------------------------------------------------------------
    def submit(self, runs: Sequence[RunSpec]) -> list[RunHandle]:
        """One Ray job per batch (mode=sweep) or per run (mode=job); idempotent per run key."""
        if not runs:
            return []
        for spec in runs:
            check_spec(spec, self.settings)
            # The job reads the run from this file (the orchestrator writes it too; a
            # direct caller may not have): data, never pickled state.
            atomic_write_json(spec_path(spec.run_dir), spec.to_dict())
        jobs = self._list_jobs()
        nodes = cluster.node_resources(self.url, self._headers, self.settings.connect_timeout)
        handles: dict[str, RunHandle] = {}
        feasible = []
        for spec in runs:
            # No node listed yet (a head still registering): the driver checks in the cluster.
            reason = infeasible_reason(spec, nodes) if nodes else ""
            if reason:
                handle = RunHandle(self.name, spec.run_key, f"not-submitted-{spec.run_key}")
                self._rejected[handle.job_id] = RunStatus(handle, RunState.FAILED, FailureContext(
                    self.name, job_id=handle.job_id, reason=reason))
                handles[spec.run_key] = handle
            else:
                feasible.append(spec)
        if self.settings.mode == "sweep":
            for group in naming.by_sweep(feasible):
                handles.update(self._submit_batch(group, jobs))
        else:
            for spec in feasible:
                handles[spec.run_key] = self._submit_run(spec, jobs)
        return [handles[s.run_key] for s in runs]

    def _submit_batch(self, specs: list[RunSpec], jobs: dict[str, dict[str, Any]]
                      ) -> dict[str, RunHandle]:
        base = naming.batch_submission_id(specs)
        batch = sorted(str(spec_path(s.run_dir)) for s in specs)
        sid = self._reusable(base, jobs, lambda meta: sorted(
            (read_json(meta["hpcorch_batch"]) or {}).get("specs", [])) == batch
        ) or naming.next_submission_id(base, jobs)
        for spec in specs:
            cancel_path(spec.run_dir).unlink(missing_ok=True)
            self._run_dirs[naming.task_job_id(sid, spec.num)] = spec.run_dir
        if sid not in jobs:
            batch_path = batch_file(specs, sid)
            atomic_write_json(batch_path, {
                "submission_id": sid, "warm": self.settings.warm,
                "specs": [str(spec_path(s.run_dir)) for s in specs]})
            self._submit_job(
                sid, naming.entrypoint(self.python, "batch", batch_path), specs[0],
                naming.sweep_metadata(specs, batch_path, self.settings.metadata), {})
        return {s.run_key: RunHandle(self.name, s.run_key, naming.task_job_id(sid, s.num))
                for s in specs}

    def _submit_run(self, spec: RunSpec, jobs: dict[str, dict[str, Any]]) -> RunHandle:
        base = naming.run_submission_id(spec)
        sid = self._reusable(base, jobs, lambda meta: meta.get("hpcorch_run_dir") == spec.run_dir
                             ) or naming.next_submission_id(base, jobs)
        self._run_dirs[sid] = spec.run_dir
        if sid not in jobs:
            self._submit_job(
                sid, naming.entrypoint(self.python, "run", str(spec_path(spec.run_dir)), sid), spec,
                naming.run_metadata(spec, self.settings.metadata),
                naming.entrypoint_resources(spec))
        return RunHandle(self.name, spec.run_key, sid)

    def _reusable(self, base: str, jobs: dict[str, dict[str, Any]],
                  same_runs: Callable[[dict[str, Any]], bool]) -> str | None:
        """The newest attempt of `base` still queued or running for these very run
        directories, and not being stopped by us: re-submitting it is a no-op."""
        attempts = naming.attempts_of(base, jobs)
        if not attempts or attempts[-1] in self._stopping:
            return None
        job = jobs[attempts[-1]]
        if naming.is_terminal(str(job.get("status"))):
            return None
        try:
            return attempts[-1] if same_runs(job.get("metadata") or {}) else None
        except (OSError, KeyError, ValueError):
            return None

    def _submit_job(self, sid: str, entrypoint: str, spec: RunSpec, metadata: dict[str, str],
                    resources: dict[str, Any]) -> None:
        client = self._connect()
        runtime_env = dict(self.settings.runtime_env)
        runtime_env["env_vars"] = naming.run_env_vars(spec, runtime_env.get("env_vars", {}))
        deadline = time.monotonic() + self.settings.start_timeout
        while True:
            try:
                client.submit_job(entrypoint=entrypoint, submission_id=sid, metadata=metadata,
                                  runtime_env=runtime_env, **resources)
                break
            except Exception as exc:  # noqa: BLE001 - the SDK raises RuntimeError for all
                text = str(exc)
                if "already exists" in text:
                    break  # a concurrent submitter won: same id, same runs
                if "No available agent" in text and time.monotonic() < deadline:
                    time.sleep(0.2)  # a head that just started: its job agent comes up
                    continue
                raise ProviderError(self.name, f"submit_job failed: {text}", job_id=sid) from None
        log.info(f"ray job {sid}: {self.url}/#/jobs/{sid}")

    # -- lookup / status -----------------------------------------------------------
    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        """Runs of hpcorch jobs (found by the run keys in their metadata) that are still
        queued or running. Finished ones are not returned: a failed or stopped run must
        run again, and a succeeded one may belong to another sweep with the same run key
        (whose run directory, and so record, is elsewhere)."""
        wanted = set(run_keys)
        if not wanted:
            return []
        found: dict[str, RunHandle] = {}
        jobs = sorted(self._list_jobs().items(), key=lambda kv: kv[1].get("start_time") or 0)
        for sid, job in jobs:
            meta = job.get("metadata") or {}
            if sweep_id is not None and meta.get("hpcorch_sweep_id") != sweep_id:
                continue  # another sweep's run of the same experiment
            if meta.get(naming.KIND_KEY) == "sweep":
                for run_dir, spec in self._batch_specs(meta):
                    if spec["run_key"] in wanted:
                        jid = naming.task_job_id(sid, int(spec["num"]))
                        self._run_dirs[jid] = run_dir
                        status = naming.task_run_status(RunHandle(self.name, spec["run_key"], jid),
                                                        job, read_outcome(run_dir), "")
                        if not status.state.terminal:
                            found[spec["run_key"]] = status.handle
            elif meta.get(naming.KIND_KEY) == "run" and meta.get("hpcorch_run_key") in wanted:
                status_text = str(job.get("status"))
                if not naming.is_terminal(status_text):
                    self._run_dirs[sid] = str(meta.get("hpcorch_run_dir", ""))
                    key = meta["hpcorch_run_key"]
                    found[key] = RunHandle(self.name, key, sid)
        return [found[k] for k in run_keys if k in found]

    @staticmethod
    def _batch_specs(meta: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(run dir, {num, run_key}) of every run of a sweep job, from its batch file."""
        try:
            batch = read_json(meta["hpcorch_batch"])
            out = []
            for path in batch["specs"]:
                spec = read_json(path)
                out.append((str(spec["run_dir"]), {"num": spec["num"], "run_key": spec["run_key"]}))
            return out
        except (OSError, KeyError, ValueError):
            return []

    def status(self, handles: Sequence[RunHandle]) -> list[RunStatus]:
        """ONE list_jobs call for all handles, plus each run's outcome file."""
        if not handles:
            return []
        pending = [h for h in handles if h.job_id not in self._rejected]
        jobs = self._jobs_of(pending)
        self._learn_run_dirs(pending, jobs)
        out = []
        for handle in handles:
            if handle.job_id in self._rejected:
                out.append(self._rejected[handle.job_id])
                continue
            sid, num = naming.split_job_id(handle.job_id)
            job = jobs.get(sid)
            run_dir = self._run_dirs.get(handle.job_id, "")
            outcome = read_outcome(run_dir) if run_dir else None
            mapper = naming.task_run_status if num is not None else naming.job_run_status
            status = mapper(handle, job, outcome, "")
            if status.state in (RunState.FAILED, RunState.CANCELLED) and status.context:
                tail = self._stderr_tail(run_dir, sid)
                context = dataclasses.replace(status.context, stderr_tail=tail)
                status = RunStatus(handle, status.state, naming.classified(status.state, context))
            out.append(status)
        return out

    def _jobs_of(self, handles: Sequence[RunHandle]) -> dict[str, dict[str, Any]]:
        """The jobs behind `handles` in ONE call: get_job_info for a single sweep job (the
        usual case, cheap for the dashboard), else list_jobs."""
        sids = {naming.split_job_id(h.job_id)[0] for h in handles}
        if len(sids) != 1:
            return self._list_jobs() if sids else {}
        [sid] = sids
        try:
            info = self._connect().get_job_info(sid)
        except Exception as exc:  # noqa: BLE001 - the SDK raises RuntimeError for 404 too
            if "does not exist" in str(exc) or "404" in str(exc):
                return {}
            raise ProviderUnavailable(f"[ray] get_job_info({sid}) at {self.url} failed: "
                                      f"{exc}") from None
        return {sid: info.model_dump(mode="json")}

    def _learn_run_dirs(self, handles: Sequence[RunHandle], jobs: dict[str, dict[str, Any]]
                        ) -> None:
        """Run directories of handles this object did not submit or look up (another
        process's), from their job's metadata: one batch file per sweep job."""
        for sid in {naming.split_job_id(h.job_id)[0] for h in handles
                    if h.job_id not in self._run_dirs and naming.split_job_id(h.job_id)[0] in jobs}:
            meta = jobs[sid].get("metadata") or {}
            if meta.get(naming.KIND_KEY) == "sweep":
                for run_dir, spec in self._batch_specs(meta):
                    self._run_dirs[naming.task_job_id(sid, int(spec["num"]))] = run_dir
            elif meta.get("hpcorch_run_dir"):
                self._run_dirs[sid] = str(meta["hpcorch_run_dir"])

    def _stderr_tail(self, run_dir: str, sid: str) -> str:
        text = tail_text(meta_dir(run_dir) / STDERR_FILE, TAIL_LINES) if run_dir else ""
        if text.strip():
            return text
        try:  # nothing on disk (the job never started the run): Ray's own job log
            logs = self._connect().get_job_logs(sid)
        except Exception:  # noqa: BLE001 - context is best effort
            return ""
        return "\n".join(str(logs).splitlines()[-TAIL_LINES:])

    # -- cancel / close -------------------------------------------------------------
    def cancel(self, handles: Sequence[RunHandle]) -> None:
        """stop_job for a job whose open runs are all cancelled; else cancel files that the
        sweep driver turns into task cancellations. Idempotent."""
        if not handles:
            return
        by_sid: dict[str, list[RunHandle]] = {}
        for handle in handles:
            if handle.job_id in self._rejected:
                continue
            by_sid.setdefault(naming.split_job_id(handle.job_id)[0], []).append(handle)
        if not by_sid:
            return
        jobs = self._list_jobs()
        for sid, group in by_sid.items():
            job = jobs.get(sid)
            if job is None or naming.is_terminal(str(job.get("status"))):
                continue
            if self._all_open_runs(sid, job, group):
                self._stop(sid)
            else:
                for handle in group:
                    run_dir = self._run_dirs.get(handle.job_id)
                    if run_dir:
                        path = cancel_path(run_dir)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(f"{time.time()}\n", encoding="utf-8")

    def _all_open_runs(self, sid: str, job: dict[str, Any], group: list[RunHandle]) -> bool:
        meta = job.get("metadata") or {}
        if meta.get(naming.KIND_KEY) != "sweep":
            return True
        cancelling = {h.run_key for h in group}
        for run_dir, spec in self._batch_specs(meta):
            if spec["run_key"] in cancelling:
                continue
            outcome = read_outcome(run_dir) or {}
            if outcome.get("submission_id") != sid or outcome.get("state") == "RUNNING":
                return False  # another run of this job is still open: keep the job
        return True

    def _stop(self, sid: str) -> None:
        self._stopping.add(sid)
        try:
            self._connect().stop_job(sid)
        except Exception as exc:  # noqa: BLE001 - stopping a job Ray forgot is not an error
            if "does not exist" not in str(exc):
                raise ProviderError(self.name, f"stop_job failed: {exc}", job_id=sid) from None

    def close(self) -> None:
        """Stop the Ray started for this sweep, if any. Jobs on an existing cluster live on."""
        head, self._head = self._head, None
        self._client = None
        if head is not None:
            head.stop()
