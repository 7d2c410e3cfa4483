"""A sweep's results as the reproducibility checks see them, read from the run records.

A sweep is named by its id (or unique prefix) in the index, or by its
directory. Directories are read from their ledger and run records, so a
sweep copied elsewhere (or never indexed) can be checked too: run directories
are found relative to the sweep directory, wherever it now lies.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcorch.errors import StoreError
from hpcorch.identity import DEFAULT_KEY_EXCLUDE
from hpcorch.repro.upstream import UpstreamRun
from hpcorch.spec import RunState
from hpcorch.store.index import StoreIndex
from hpcorch.store.ledger import SweepInfo, ledger_path, read_ledger
from hpcorch.store.records import META_DIR, RECORD_FILE, RunRecord, read_record

#: The group key of a run without any overrides but its seed.
NO_OVERRIDES = "(no overrides)"


@dataclass(frozen=True)
class RunResult:
    """One run of a sweep: what it was, how it ended, what it measured, where it ran."""

    num: int
    run_key: str
    group: str
    """Its overrides without the seed and the where-it-ran keys: the baseline key."""
    state: RunState
    run_dir: str
    overrides: tuple[str, ...] = ()
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    reused_from: str = ""
    failure: str = ""

    @property
    def splits(self) -> list[dict[str, Any]]:
        """The data splits the run made (counts and membership hashes)."""
        repro = self.fingerprint.get("repro") or {}
        return list(repro.get("splits") or [])

    @property
    def label(self) -> str:
        """`#3 lr=0.1 seed=2`."""
        return f"#{self.num} {' '.join(self.overrides) or NO_OVERRIDES}"


@dataclass(frozen=True)
class SweepResults:
    """Every planned run of a sweep, with or without a record."""

    sweep_id: str
    sweep_dir: str
    provider: str
    runs: tuple[RunResult, ...]
    argv: tuple[str, ...] = ()

    def groups(self) -> dict[str, list[RunResult]]:
        """Runs by group key (overrides without seed), in sweep order."""
        out: dict[str, list[RunResult]] = {}
        for run in self.runs:
            out.setdefault(run.group, []).append(run)
        return out

    @property
    def label(self) -> str:
        """`sweep 1a2b3c on local (/path)`."""
        return f"sweep {self.sweep_id} on {self.provider or '?'} ({self.sweep_dir})"


def group_key(overrides: Sequence[str], exclude: Iterable[str] = DEFAULT_KEY_EXCLUDE) -> str:
    """The overrides that define the experiment, seed excluded, sorted by key.

    Split at the first `=` rather than by Hydra's grammar parser: an override's
    key never contains `=`, the values are the launcher's own (already
    normalised) text, and the parser costs ~9 ms per run on a 1000-run sweep.
    """
    from hpcorch.repro.seeds import SEED_OVERRIDE_KEY

    dropped = set(exclude)
    items = []
    for text in overrides:
        head, eq, value = text.partition("=")
        delete = head.startswith("~")
        key = head.lstrip("+~").split("@")[0]
        if key == SEED_OVERRIDE_KEY or key.split(".")[0].split("/")[0] in dropped:
            continue
        shown = f"~{key}" + (f"={value}" if eq else "") if delete else f"{key}={value}"
        items.append((key, shown))
    return " ".join(text for _, text in sorted(items)) or NO_OVERRIDES


def _exclude(config: dict[str, Any]) -> tuple[str, ...]:
    """The run's own `hpcorch.key_exclude` (what it left out of its key), else the defaults."""
    node = config.get("hpcorch")
    value = node.get("key_exclude") if isinstance(node, dict) else None
    return tuple(value) if value else DEFAULT_KEY_EXCLUDE


def result_from_record(record: RunRecord, run_dir: str) -> RunResult:
    """The RunResult of a record (found in `run_dir`, which may differ from record.run_dir)."""
    failure = ""
    if record.error is not None:
        failure = f"{record.error.type}: {record.error.message}"
    elif record.failure is not None:
        failure = record.failure.one_line()
    return RunResult(
        num=record.num, run_key=record.run_key,
        group=group_key(record.overrides, _exclude(record.config)), state=record.state,
        run_dir=run_dir, overrides=tuple(record.overrides), seed=record.seed,
        metrics=dict(record.metrics), config=dict(record.config),
        fingerprint=dict(record.fingerprint), reused_from=record.reused_from, failure=failure)


def _relocated(run_dir: str, recorded_sweep_dir: str, sweep_dir: Path) -> str:
    """Where a run directory of a moved sweep lies now."""
    try:
        rel = os.path.relpath(run_dir, recorded_sweep_dir)
    except ValueError:
        return run_dir
    if rel.startswith(".."):
        return run_dir
    return str(sweep_dir / rel)


def load_directory(directory: str | Path) -> SweepResults:
    """A sweep from its directory: the ledger's specs and their records (or records alone)."""
    sweep_dir = Path(directory).resolve()
    info = read_ledger(sweep_dir) if ledger_path(sweep_dir).exists() else None
    if info is None:
        return _from_records_only(sweep_dir)
    runs = []
    for spec in info.specs:
        run_dir = _relocated(spec.run_dir, info.sweep_dir, sweep_dir)
        record = read_record(run_dir)
        if record is None:
            runs.append(RunResult(
                num=spec.num, run_key=spec.run_key,
                group=group_key(spec.overrides, _exclude(spec.config)), state=RunState.UNKNOWN,
                run_dir=run_dir, overrides=spec.overrides, seed=spec.seed,
                config=dict(spec.config), failure="no run record (never ran or still running)"))
        else:
            runs.append(result_from_record(record, run_dir))
    return SweepResults(info.sweep_id, str(sweep_dir), info.provider, tuple(runs), info.argv)


def _from_records_only(sweep_dir: Path) -> SweepResults:
    paths = sorted(sweep_dir.glob(f"*/{META_DIR}/{RECORD_FILE}"))
    if not paths:
        raise StoreError(f"{sweep_dir}: neither a sweep ledger ({META_DIR}/sweep.json) nor run "
                         "records found: not an hpcorch sweep directory")
    records = [(r, str(p.parent.parent)) for p in paths
               if (r := read_record(p.parent.parent)) is not None]
    runs = sorted((result_from_record(r, d) for r, d in records), key=lambda r: r.num)
    sweep_id = records[0][0].sweep_id if records else ""
    provider = records[0][0].provider if records else ""
    return SweepResults(sweep_id or sweep_dir.name, str(sweep_dir), provider, tuple(runs))


def load_sweep(ref: str, index: StoreIndex) -> SweepResults:
    """A sweep by directory, or by id / unique id prefix in the index."""
    if os.path.isdir(ref):
        return load_directory(ref)
    found = index.sweep(ref)
    if os.path.isdir(found["sweep_dir"]):
        loaded = load_directory(found["sweep_dir"])
        return loaded if loaded.provider else SweepResults(
            loaded.sweep_id, loaded.sweep_dir, found["provider"], loaded.runs, loaded.argv)
    raise StoreError(f"sweep {found['sweep_id']}: its directory {found['sweep_dir']} is gone")


def load_ledger(ref: str, index: StoreIndex) -> SweepInfo:
    """The ledger of a sweep named by directory or id (for re-running its specs)."""
    directory = ref if os.path.isdir(ref) else index.sweep(ref)["sweep_dir"]
    info = read_ledger(directory)
    if info is None:
        raise StoreError(f"{ledger_path(directory)}: no sweep ledger: the specs to re-run are "
                         "unknown")
    return info


def upstream_results(runs: Sequence[UpstreamRun], *, across: Sequence[str] = ("shard",),
                     metrics: Sequence[str] | None = None) -> SweepResults:
    """Upstream runs as hpcorch's checks see a sweep (`hpcorch.repro.baselines`,
    `drift.check_baseline`): grouped by their overrides without the seed, the keys in
    `across` and their where-it-runs keys; with `metrics` only, if given (a run that
    reported none of one is refused, naming it)."""
    results = []
    for run in runs:
        wanted = list(run.metrics) if metrics is None else list(metrics)
        lacking = [m for m in wanted if m not in run.metrics]
        if lacking:
            raise ValueError(
                f"metrics={wanted}: upstream {run.stage} #{run.num} ({run.dir}) reported no "
                f"{', '.join(lacking)}; it reported: {', '.join(sorted(run.metrics)) or 'none'}")
        node = run.config.get("hpcorch")
        own = node.get("key_exclude") if isinstance(node, dict) else None
        results.append(RunResult(
            num=run.num, run_key=run.run_key,
            group=group_key(run.overrides, (*(own or DEFAULT_KEY_EXCLUDE), *across)),
            state=RunState.SUCCEEDED,  # check_upstream() lets only usable runs through
            run_dir=str(run.dir), overrides=run.overrides, seed=run.seed,
            metrics={m: float(run.metrics[m]) for m in wanted}, config=run.config,
            fingerprint=run.fingerprint))
    stages = sorted({r.stage for r in runs})
    where = os.path.commonpath([r.run_dir for r in results]) if results else ""
    return SweepResults(sweep_id="+".join(stages), sweep_dir=where, provider="pipeline",
                        runs=tuple(results))
