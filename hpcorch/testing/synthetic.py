"""Synthetic sweeps written to disk exactly as hpcorch writes them (ledger + run records).

For tests of anything that reads sweeps (baselines, drift, compare, diff) without
running an experiment; the records carry the same fields a worker writes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hpcorch.identity import run_key
from hpcorch.providers import DEFAULT_PROVIDER
from hpcorch.spec import RunSpec, RunState
from hpcorch.store.ledger import SweepInfo, write_ledger
from hpcorch.store.records import RunRecord, write_record

#: The split summary the example train.py records.
SPLIT: dict[str, Any] = {"salt": "two_moons", "items": 1000,
                         "counts": {"train": 698, "val": 149, "test": 153},
                         "membership_hash": "33a8d3dcd60f4bff"}
#: A small fingerprint with every kind of entry the checks look at.
FP: dict[str, Any] = {"python": "3.11.7", "packages": {"numpy": "2.4.6", "hydra-core": "1.3.8"},
                      "git": {"commit": "abc", "dirty": False, "root": "/x"}, "host": "vm",
                      "repro": {"splits": [SPLIT]}, "hash_seed": "1"}
_EXCLUDE = ("hydra", "hpcorch", "provider")


def make_sweep(sweep_dir: Path, runs: list[dict[str, Any]], sweep_id: str = "s1") -> Path:
    """Write a sweep. Each run is a dict: lr, seed, metrics, and optionally epochs, code,
    state, fingerprint, reused_from, no_record (planned in the ledger, never finished)."""
    specs = []
    for num, run in enumerate(runs):
        run_dir = sweep_dir / str(num)
        overrides = (f"lr={run['lr']}", f"seed={run['seed']}", "hpcorch.progress=off")
        config = {"lr": run["lr"], "epochs": run.get("epochs", 20), "seed": run["seed"],
                  "hpcorch": {"key_exclude": list(_EXCLUDE)}}
        key = run_key(config, code_version=run.get("code", "git:abc"), seed=run["seed"],
                      exclude=_EXCLUDE)
        specs.append(RunSpec(run_key=key, sweep_id=sweep_id, num=num, overrides=overrides,
                             config=config, seed=run["seed"], run_dir=str(run_dir),
                             command=("python", "train.py", *overrides,
                                      f"hydra.run.dir={run_dir}")))
        if run.get("no_record"):
            continue
        write_record(RunRecord(
            run_key=key, sweep_id=sweep_id, num=num,
            state=run.get("state", RunState.SUCCEEDED), run_dir=str(run_dir),
            overrides=overrides, seed=run["seed"], metrics=run["metrics"], config=config,
            fingerprint=copy.deepcopy(run.get("fingerprint", FP)),
            reused_from=run.get("reused_from", "")))
    write_ledger(SweepInfo(sweep_id, str(sweep_dir), DEFAULT_PROVIDER, 0.0, argv=(
        "train.py", "-m", "lr=0.1,0.05", "seed=1,2", f"hydra.sweep.dir={sweep_dir}",
        "hpcorch.rerun=true"), specs=tuple(specs)))
    return sweep_dir


def standard_runs() -> list[dict[str, Any]]:
    """Two lr values x two seeds, with metrics exactly representable in binary."""
    return [
        {"lr": 0.1, "seed": 1, "metrics": {"acc": 0.875, "loss": 0.25}},
        {"lr": 0.1, "seed": 2, "metrics": {"acc": 0.625, "loss": 0.5}},
        {"lr": 0.05, "seed": 1, "metrics": {"acc": 0.5, "loss": 1.0}},
        {"lr": 0.05, "seed": 2, "metrics": {"acc": 0.5, "loss": 1.0}},
    ]
