"""A pipeline as any process finds it: its ledger, its plan again, its stages' states.

The ledger (`<pipeline dir>/.hpcorch/pipeline.json`) holds the pipeline file's data as
it was read and the stage-scoped overrides, so `hpcorch resume` runs the same plan
even if the file was edited since, and `status` needs nothing but the directory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpcorch.errors import ConfigError, StoreError
from hpcorch.orchestrate.detach import orchestrator_alive
from hpcorch.orchestrate.pipeline.config import PipelineConfig, pipeline_from
from hpcorch.orchestrate.pipeline.driver import collect, stage_sweep_id
from hpcorch.orchestrate.pipeline.plan import PipelinePlan, plan_pipeline
from hpcorch.store.index import StoreIndex
from hpcorch.store.records import META_DIR, atomic_write_json, read_json

LEDGER_FILE = "pipeline.json"


def ledger_path(directory: str | Path) -> Path:
    """`<pipeline dir>/.hpcorch/pipeline.json`."""
    return Path(directory) / META_DIR / LEDGER_FILE


def is_pipeline(ref: str) -> bool:
    """Whether `ref` (a directory, or `pipelines/<ref>` here) holds a pipeline ledger."""
    return any(ledger_path(d).exists() for d in (ref, os.path.join("pipelines", ref)))


@dataclass(frozen=True)
class PipelineLedger:
    """What `hpcorch pipeline run` was given."""

    raw: dict[str, Any]
    cli: tuple[str, ...]
    directory: str
    cwd: str
    source: str
    created: float

    def config(self) -> PipelineConfig:
        """The pipeline, checked again from the data it was started with."""
        return pipeline_from(self.raw, self.cli, source=self.source, directory=self.directory)


def write_pipeline_ledger(config: PipelineConfig, raw: dict[str, Any]) -> PipelineLedger:
    """Record the pipeline in its directory (keeping the first start's time)."""
    path = ledger_path(config.directory)
    created = time.time()
    if path.exists():
        created = float(read_json(path).get("created", created))
    ledger = PipelineLedger(raw=raw, cli=config.cli, directory=config.directory,
                            cwd=os.getcwd(), source=config.source, created=created)
    atomic_write_json(path, {"raw": raw, "cli": list(config.cli), "directory": config.directory,
                             "cwd": ledger.cwd, "source": config.source, "created": created})
    return ledger


def read_pipeline_ledger(ref: str) -> PipelineLedger:
    """The ledger of the pipeline in directory `ref` (or `pipelines/<ref>`)."""
    for directory in (ref, os.path.join("pipelines", ref)):
        path = ledger_path(directory)
        if path.exists():
            data = read_json(path)
            return PipelineLedger(raw=data["raw"], cli=tuple(data.get("cli", ())),
                                  directory=data["directory"], cwd=data.get("cwd", ""),
                                  source=data.get("source", ""),
                                  created=float(data.get("created", 0)))
    raise StoreError(f"{ref}: no pipeline there (no .hpcorch/{LEDGER_FILE}; "
                     "`hpcorch pipeline run FILE` starts one)")


def read_pipeline_file(path: str) -> dict[str, Any]:
    """The YAML data of a pipeline file, for the ledger."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("pipeline", path, f"a readable YAML file ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("pipeline", path, "a YAML mapping with `stages:`")
    return data


def stage_states(plan: PipelinePlan, index: StoreIndex | None = None) -> list[dict[str, Any]]:
    """Per stage: its planned runs and how many are in each state: a record's, else what
    the index last heard of a submitted run (SUBMITTED, RUNNING), else NOT STARTED."""
    rows = []
    for stage in plan.config.stages:
        runs = plan.runs[stage.name]
        counts: dict[str, int] = {}
        known = {(r.num, r.run_key): r.state.value for r in index.runs(
            stage_sweep_id(plan.config, stage.name))} if index is not None else {}
        for outcome in collect(plan.config, stage.name, runs).values():
            record = outcome.record
            state = record.state.value if record is not None else known.get(
                (outcome.run.num, outcome.run_key), "NOT STARTED")
            counts[state] = counts.get(state, 0) + 1
        rows.append({"stage": stage.name, "app": stage.app, "runs": len(runs),
                     "states": counts,
                     "needs": {n.stage: n.mode for n in stage.needs}})
    return rows


def pipeline_status(ledger: PipelineLedger, index: StoreIndex | None = None
                    ) -> tuple[list[dict[str, Any]], int | None]:
    """(per-stage states, the pid of the driver still running it, or None)."""
    plan = plan_pipeline(ledger.config())
    return stage_states(plan, index), orchestrator_alive(ledger.directory)
