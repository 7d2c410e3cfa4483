"""The Hydra callback that hpcorch's defaults install into every app.

Through Hydra's own callback mechanism a plain `@hydra.main` app gets, with
no hpcorch import: its per-run seed applied before the task function, and
its run record (state, metrics, return value, error, fingerprint, timings)
written atomically into the run directory after it. The same code runs in
a sweep's warm worker, in a cold `python train.py ...` job on any provider,
and in a plain single run.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from hpcorch.containers.inside import container_fingerprint
from hpcorch.identity import DEFAULT_KEY_EXCLUDE, app_code_version, run_key
from hpcorch.jobenv import JOB_ID_ENV, SPEC_ENV
from hpcorch.repro.determinism import run_facts, start_run
from hpcorch.repro.fingerprint import fingerprint
from hpcorch.repro.seeds import derive_seed
from hpcorch.repro.upstream import UpstreamNotReady, check_upstream
from hpcorch.spec import RunSpec, RunState, fields_dict
from hpcorch.store.records import (
    RETURN_PICKLE,
    ErrorInfo,
    RunRecord,
    jsonable,
    meta_dir,
    metrics_from,
    read_json,
    write_record,
)
from hpcorch.worker import ranks

CALLBACK_KEY = "hpcorch"
"""The key under `hydra.callbacks` that installs the worker callback."""
CALLBACK_TARGET = "hpcorch.worker.callback.HpcorchCallback"
"""Its `_target_`: hpcorch's defaults name it; the launcher adds it where they are absent."""


def plain(node: Any) -> Any:
    """A config node as plain, resolved Python data."""
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def task_config(config: DictConfig) -> dict[str, Any]:
    """The resolved config the task function sees (Hydra's node removed), as plain data.

    Resolved key by key so that Hydra's own node, whose sweep paths may not
    resolve outside a sweep, is never touched. HydraConfig must be set.
    """
    return {str(k): plain(config[k]) for k in config if k != "hydra"}


def raw_overrides(config: DictConfig, which: str) -> list[str]:
    """`hydra.overrides.<which>` as typed, never resolved (a value may be `${...}` text)."""
    value = OmegaConf.to_container(config.hydra.overrides[which], resolve=False)
    assert isinstance(value, list)
    return [str(v) for v in value]


def key_exclude(config: DictConfig) -> tuple[str, ...]:
    """The configured key exclusions (`hpcorch.key_exclude`), or the defaults."""
    value = OmegaConf.select(config, "hpcorch.key_exclude", default=None)
    return tuple(value) if value is not None else DEFAULT_KEY_EXCLUDE


def seed_for(config: DictConfig, overrides: list[str], parsed: Any = None) -> int:
    """This run's seed: explicit `seed=` override, else derived from base seed + overrides
    (`parsed`: the overrides already parsed, see derive_seed)."""
    # Validated (ConfigError naming `seed`) before anything is submitted: int() would turn
    # 1.5 into 1 and true into 1, and a negative seed fails every run at start-up.
    from hpcorch.repro.seeds import check_seed

    base = check_seed(OmegaConf.select(config, "seed", default=None))
    return derive_seed(base, overrides, key_exclude(config), parsed)


def _load_spec() -> RunSpec | None:
    path = os.environ.get(SPEC_ENV)
    if not path or not Path(path).exists():
        return None
    return RunSpec.from_dict(read_json(path))


class HpcorchCallback(Callback):
    """Seeds before the job, writes the run record after it."""

    def __init__(self, **_: Any) -> None:
        self._started = 0.0
        self._seed = 0
        self._seeded: list[str] = []
        self._spec: RunSpec | None = None
        self._rank = ranks.RankInfo()

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In a multi-rank run, keep ranks > 0 off rank 0's Hydra outputs (see ranks.py)."""
        ranks.prepare_hydra(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Apply the run's seed to random, numpy, PYTHONHASHSEED (and torch if in use)."""
        self._started = time.time()
        self._spec = _load_spec()
        if self._spec is not None and self._spec.upstream:
            # Whatever ordered this job (a scheduler's dependency, the pipeline's
            # orchestrator), it never starts on an upstream run that did not succeed.
            # SystemExit, not an exception: Hydra turns a callback's exceptions into
            # warnings and would start the research code anyway.
            try:
                check_upstream(self._spec.upstream)
            except UpstreamNotReady as exc:
                print(f"hpcorch: error: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
        overrides = raw_overrides(config, "task")
        self._seed = self._spec.seed if self._spec else seed_for(config, overrides)
        self._seeded = start_run(self._seed, OmegaConf.select(config, "hpcorch.repro"))
        self._rank = ranks.job_started(str(HydraConfig.get().runtime.output_dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """Write the run record atomically into the run directory."""
        ended = time.time()
        run_dir = str(HydraConfig.get().runtime.output_dir)
        rank_files = ranks.job_finished(run_dir, self._rank, ranks.job_error(job_return))
        if not self._rank.is_root:
            return  # only rank 0 writes the record (and metrics)
        spec = self._spec
        cfg = task_config(config)
        fp = fingerprint()
        # A single run's code version is the planner's rule too, so its key is the same.
        code = spec.code_version if spec else app_code_version(sys.argv[0])
        key = run_key(
            cfg,
            code_version=code,
            seed=self._seed,
            image=spec.image if spec else None,
            exclude=key_exclude(config),
            upstream=[key for _, key, _ in spec.upstream] if spec else (),
        )
        ok = job_return.status == JobStatus.COMPLETED
        value = job_return._return_value  # the property would re-raise a failure
        error = None
        if not ok and isinstance(value, BaseException):
            error = ErrorInfo(
                type(value).__name__, str(value), "".join(traceback.format_exception(value))
            )
        returned = jsonable(value) if ok else None
        if ok and returned is not None and not _json_exact(value):
            _save_pickle(run_dir, value)
        hydra_job = HydraConfig.get().job
        record = RunRecord(
            # The planner's key is the run's identity (the orchestrator matches records by
            # it); a job that computed another one says so in a warning below.
            run_key=spec.run_key if spec else key,
            sweep_id=spec.sweep_id if spec else "",
            num=spec.num
            if spec
            else int(OmegaConf.select(config, "hydra.job.num", default=0) or 0),
            state=RunState.SUCCEEDED if ok else RunState.FAILED,
            run_dir=os.path.abspath(run_dir),
            overrides=tuple(raw_overrides(config, "task")),
            seed=self._seed,
            metrics=metrics_from(value) if ok else {},
            return_value=returned,
            error=error,
            job_id=spec_job_id(spec),
            provider=os.environ.get(ranks.PROVIDER_ENV, ""),
            node=socket.gethostname(),
            started=self._started,
            ended=ended,
            code_version=code,
            config=cfg,
            fingerprint={
                **fp,
                "job_name": hydra_job.name,
                "repro": run_facts(),
                "container": {**fp.get("container", {}), **container_fingerprint()},
            },
            seeded=tuple(run_facts()["seeded"]),  # torch may have been seeded late
            attempt=spec.attempt if spec else 0,
            resources=fields_dict(spec.resources) if spec else {},
            retry=dict(spec.retry) if spec else {},
        )
        if spec is not None and spec.run_key != key:
            # The job computed another identity than the planner: say so, never hide it.
            record = _with_warning(record, f"run key mismatch: planned {spec.run_key}, ran {key}")
        if self._rank.multi:
            record = ranks.with_ranks(record, self._rank, rank_files)
        write_record(record)


def spec_job_id(spec: RunSpec | None) -> str:
    """The engine's job id as the job sees it: HPCORCH_JOB_ID (hpcorch.jobenv), which every
    provider sets for the runs it starts; "" outside a provider's job."""
    return os.environ.get(JOB_ID_ENV, "")


def _json_exact(value: Any) -> bool:
    import json

    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def _save_pickle(run_dir: str, value: Any) -> None:
    """Keep a return value JSON cannot hold exactly, so the launcher can hand it back."""
    try:
        data = pickle.dumps(value)
    except Exception:  # noqa: BLE001 - an unpicklable value just is not kept
        return
    path = meta_dir(run_dir) / RETURN_PICKLE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _with_warning(record: RunRecord, message: str) -> RunRecord:
    import dataclasses

    fp = dict(record.fingerprint)
    fp.setdefault("warnings", []).append(message)
    return dataclasses.replace(record, fingerprint=fp)
