"""`hpcorch verify`: re-run runs of a sweep from their RunSpec and demand identical metrics.

The ledger holds every run's portable command (`python train.py <overrides>
hydra.run.dir=<dir>`) and the directory it starts in. A sample of the sweep's
successful runs is run again, through a provider and the orchestrator like
any sweep, into fresh run directories of a new sweep (so the re-runs are
indexed and can be compared again later); the results are matched by run key
and any difference is reported as NONDETERMINISTIC.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hpcorch._hydra.sweep import hydra_quote
from hpcorch.errors import HpcorchError
from hpcorch.identity import short_hash
from hpcorch.orchestrate.sweep import Orchestrator
from hpcorch.providers import DEFAULT_PROVIDER, create_provider
from hpcorch.providers.base import Provider
from hpcorch.repro.drift import DriftReport, Verdict, compare_sweeps
from hpcorch.repro.results import SweepResults, load_directory
from hpcorch.repro.tolerances import ToleranceTable
from hpcorch.spec import RunHandle, RunSpec
from hpcorch.store.index import StoreIndex
from hpcorch.store.ledger import SweepInfo

_RUN_DIR_ARG = "hydra.run.dir="
_MODE_ARG = "hydra.mode="


def with_run_dir(command: Sequence[str], run_dir: str) -> tuple[str, ...]:
    """The command with its `hydra.run.dir=` pointed at `run_dir`, as one single run.

    `hydra.mode=RUN` is forced: a command recorded with the sweep's own
    `hydra.mode=MULTIRUN` would start a sweep of its own instead of one run.
    """
    where = [i for i, arg in enumerate(command) if arg.startswith(_RUN_DIR_ARG)]
    if not where:
        raise HpcorchError(f"the run's command has no {_RUN_DIR_ARG} argument, so it cannot be "
                           f"re-run into a fresh directory: {list(command)}")
    argv = [arg for arg in command if not arg.startswith(_MODE_ARG)]
    where = [i for i, arg in enumerate(argv) if arg.startswith(_RUN_DIR_ARG)]
    argv[where[-1]:where[-1] + 1] = [_MODE_ARG + "RUN", _RUN_DIR_ARG + hydra_quote(run_dir)]
    return tuple(argv)


def choose(specs: Sequence[RunSpec], sample: int | None, seed: int = 0) -> list[RunSpec]:
    """All specs, or a reproducible random sample of `sample` of them, in sweep order."""
    ordered = sorted(specs, key=lambda s: s.num)
    if sample is None or sample >= len(ordered):
        return ordered
    if sample < 1:
        raise HpcorchError(f"--sample={sample}: must be at least 1")
    return sorted(random.Random(seed).sample(ordered, sample), key=lambda s: s.num)


def fresh_specs(specs: Sequence[RunSpec], out_dir: str) -> list[RunSpec]:
    """The specs again, as runs of a new sweep in `out_dir` (same run keys, same seeds)."""
    sweep_id = short_hash(out_dir, 10)
    fresh = []
    for spec in specs:
        run_dir = os.path.join(out_dir, str(spec.num))
        fresh.append(dataclasses.replace(
            spec, sweep_id=sweep_id, run_dir=run_dir,
            command=with_run_dir(spec.command, run_dir), attempt=0))
    return fresh


class _FreshOnly:
    """A provider that never finds earlier submissions: a re-run must really run again."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner

    def lookup(self, run_keys: Sequence[str], sweep_id: str | None = None) -> list[RunHandle]:
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def verify_sweep(reference: SweepResults, info: SweepInfo, index: StoreIndex, *,
                 sample: int | None = None, seed: int = 0, out_dir: str | None = None,
                 provider_settings: Mapping[str, Any] | None = None) -> DriftReport:
    """Re-run (a sample of) a sweep's successful runs and compare them exactly."""
    succeeded = {r.num for r in reference.runs if r.state.ok}
    specs = choose([s for s in info.specs if s.num in succeeded], sample, seed)
    if not specs:
        raise HpcorchError(f"{reference.label}: no successful run to verify")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = os.path.abspath(out_dir or os.path.join(reference.sweep_dir, "verify", stamp))
    if Path(target).exists() and any(Path(target).iterdir()):
        raise HpcorchError(f"{target}: exists and is not empty; re-runs go into fresh directories")
    runs = fresh_specs(specs, target)
    settings = dict(provider_settings or info.provider_settings or {"name": DEFAULT_PROVIDER})
    provider = create_provider(settings)
    fresh = SweepInfo(sweep_id=runs[0].sweep_id, sweep_dir=target, provider=provider.name,
                      created=time.time(), cwd=info.cwd,
                      argv=("hpcorch", "verify", info.sweep_id), app=info.app,
                      provider_settings=settings, specs=tuple(runs))
    provider.check()
    try:
        Orchestrator(_FreshOnly(provider), index, rerun=True,  # type: ignore[arg-type]
                     progress="off").run(fresh, runs)
    finally:
        provider.close()
    chosen = {s.num for s in specs}
    original = dataclasses.replace(
        reference, runs=tuple(r for r in reference.runs if r.num in chosen))
    return compare_sweeps(original, load_directory(target), ToleranceTable(),
                          mismatch=Verdict.NONDETERMINISTIC, kind="verify")
