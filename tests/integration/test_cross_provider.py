"""Issue 6's proof: the same sweep on every provider gives the same results, checked by
`hpcorch compare` (runs matched by run key) against the local, single-process sweep.

Single-process runs must match exactly (same seed, same code, same arithmetic); multi-rank
runs (data-parallel SGD, gradients summed by an MPI allreduce) within 1e-9, because the
sum's rounding order differs. Needs the real Slurm (run inside its network namespace,
`scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_cross_provider.py`)
Open MPI with mpi4py, and the Ray head of scripts/ray-up.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, require_service
from tests.integration.mpi_support import mpi_available
from tests.integration.ray_support import HOW as RAY_HOW
from tests.integration.ray_support import RAY_URL, ray_available
from tests.integration.slurm_support import records, require_slurm, run_app
from tests.integration.test_sge_contract import require_sge

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.mpi, pytest.mark.ray,
              pytest.mark.sge]

SWEEP = ("lr=0.1,0.05", "epochs=3")
MULTI_RANK_TOLERANCE = 1e-9


def _need_mpi() -> None:
    require_service(mpi_available(), "Open MPI (mpirun) and mpi4py",
                    "run scripts/mpi-up.sh and pip install -e '.[mpi]'")


def _need_ray() -> None:
    require_service(ray_available(), f"a Ray head at {RAY_URL}", RAY_HOW)


def _need_slurm_and_mpi() -> None:
    require_slurm()
    _need_mpi()


@dataclass(frozen=True)
class Peer:
    """One provider configuration whose sweep must match the local reference sweep."""

    name: str
    overrides: tuple[str, ...]
    tolerance: float
    """0.0: identical metrics; else the largest absolute difference allowed."""
    requires: Callable[[], None]
    """Skip (developer machine) or fail (CI) when the engine is missing."""


PEERS = [
    Peer("slurm", ("provider=slurm",), 0.0, require_slurm),
    Peer("sge", ("provider=sge",), 0.0, require_sge),
    Peer("slurm-2-ranks", ("provider=slurm", "resources.tasks=2"), MULTI_RANK_TOLERANCE,
         _need_slurm_and_mpi),
    Peer("mpi", ("provider=mpi", "provider.hosts=[localhost]"), 0.0, _need_mpi),
    Peer("local-2-ranks", ("resources.tasks=2",), MULTI_RANK_TOLERANCE, _need_mpi),
    Peer("ray", ("provider=ray", f"provider.address={RAY_URL}"), 0.0, _need_ray),
]


def sweep(app: Path, name: str, *overrides: str, base: tuple[str, ...] = SWEEP) -> Path:
    """Run `base` with `overrides` into `app/multirun/NAME` (rerun: nothing is skipped)."""
    sweep_dir = app / "multirun" / name
    proc = run_app(app, *base, *overrides, f"hydra.sweep.dir={sweep_dir}",
                   "hpcorch.progress=off", "hpcorch.rerun=true")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = records(sweep_dir)
    assert [r["state"] for r in recs] == ["SUCCEEDED"] * 2, recs
    return sweep_dir


def compare(app: Path, a: Path, b: Path, *options: str) -> tuple[int, str, dict[str, Any]]:
    """`hpcorch compare A B OPTIONS --json FILE`: exit code, printed table, JSON report."""
    report = b.parent / f"compare-{b.name}.json"
    env = {**os.environ, "HPCORCH_HOME": str(app / ".hpcorch-home")}
    done = subprocess.run([sys.executable, "-m", "hpcorch", "compare", str(a), str(b),
                           *options, "--json", str(report)], cwd=app, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    data = json.loads(report.read_text()) if report.exists() else {}
    return done.returncode, done.stdout + done.stderr, data


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the example app for every sweep, so all share one code version."""
    target = tmp_path_factory.mktemp("cross") / "app"
    target.mkdir()
    shutil.copy(ROOT / "train.py", target / "train.py")
    shutil.copytree(ROOT / "conf", target / "conf")
    return target


@pytest.fixture(scope="module")
def reference(app: Path) -> Path:
    """The local, single-process sweep every other provider is compared against."""
    return sweep(app, "local", "provider=local")


@pytest.mark.parametrize("peer", PEERS, ids=[p.name for p in PEERS])
def test_same_sweep_same_results_on_every_provider(app: Path, reference: Path,
                                                   peer: Peer) -> None:
    peer.requires()
    observed = sweep(app, peer.name, *peer.overrides)
    # YAML 1.1 reads 1e-09 as text: written as 1.000000e-09 it is a float.
    options = ["--tolerance", f"default={{abs: {peer.tolerance:.6e}}}"] if peer.tolerance else []
    rc, out, report = compare(app, reference, observed, *options)
    assert rc == 0, out
    assert report["ok"] and report["failures"] == 0, out
    metrics = set(records(reference)[0]["metrics"])
    compared = [c for c in report["checks"] if c["metric"] in metrics]
    assert len(compared) == 2 * len(metrics), out  # every metric of both runs was compared
    assert {c["verdict"] for c in compared} == {"PASS"}
    # The same judgement made independently of hpcorch compare, from the records.
    ref = {r["run_key"]: r for r in records(reference)}
    got = {r["run_key"]: r for r in records(observed)}
    assert got.keys() == ref.keys()  # same run keys: provider and resources are not in them
    for key, rec in got.items():
        assert rec["seed"] == ref[key]["seed"]
        assert rec["metrics"].keys() == ref[key]["metrics"].keys()
        for metric, value in ref[key]["metrics"].items():
            if peer.tolerance:
                assert abs(rec["metrics"][metric] - value) <= peer.tolerance, (metric, rec)
            else:
                assert rec["metrics"][metric] == value, (metric, rec["metrics"], value)
    ranks = [r["fingerprint"].get("ranks", {}).get("size", 1) for r in got.values()]
    expected = 2 if "resources.tasks=2" in peer.overrides else 1
    assert ranks == [expected, expected]  # it really ran as that many ranks


def test_compare_catches_a_different_sweep(app: Path, reference: Path) -> None:
    """The check above can fail: a changed learning rate is not the same run."""
    other = sweep(app, "other-lr", "provider=local", base=("lr=0.2,0.05", "epochs=3"))
    rc, out, report = compare(app, reference, other)
    assert rc == 1, out
    verdicts = sorted({c["verdict"] for c in report["checks"]})
    assert verdicts == ["MISSING RUN", "PASS", "UNEXPECTED RUN"], out  # lr=0.05 still matches
