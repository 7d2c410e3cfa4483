"""Claims about how hpcorch uses the real Slurm, each with a test that fails if it stops
being true (issue 10, point 9): packed runs are forked from one warmed interpreter per
array task, and a sweep with more tasks than the cluster's own MaxArraySize is split
into several arrays (without any user cap).
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from tests.integration.slurm_support import records, require_slurm, run_app, submitted_scripts

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

FAST = ("provider.query_interval=1.0", "hpcorch.progress=off")

#: Reports what the run's process saw at its first line: whether Hydra was imported
#: before the script imported it (only in a fork of an interpreter that imported the app
#: already), and its parent process (the array task it was forked from or started by).
PROBE_APP = '''
import os, sys
PREIMPORTED = "hydra" in sys.modules and "omegaconf" in sys.modules
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\\0")
    return {"x": float(cfg.x), "pid": float(os.getpid()), "ppid": float(os.getppid()),
            "preimported": float(PREIMPORTED),
            # submitit starts every array task: `python -u -m submitit.core._submit DIR`.
            "parent_is_task": float(b"submitit.core._submit" in parent)}

if __name__ == "__main__":
    main()
'''

CONFIG = "defaults:\n  - hpcorch: default\n  - _self_\nx: 0\n"


@pytest.fixture(autouse=True)
def _needs_slurm() -> None:
    require_slurm()


@pytest.fixture
def probe_app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "conf").mkdir(parents=True)
    (app / "probe.py").write_text(PROBE_APP)
    (app / "conf" / "config.yaml").write_text(CONFIG)
    return app


def _by_task(recs: list[dict]) -> dict[str, list[dict]]:
    """The records of each array task (job id `ARRAY_INDEX`)."""
    tasks: dict[str, list[dict]] = defaultdict(list)
    for rec in recs:
        tasks[rec["job_id"]].append(rec["metrics"])
    return dict(tasks)


def test_packed_runs_are_forked_from_one_warmed_interpreter_per_task(probe_app: Path) -> None:
    done = run_app(probe_app, "provider=slurm", "provider.pack=3", "x=0,1,2,3,4,5",
                   "hydra.sweep.dir=out", *FAST, script="probe.py")
    assert done.returncode == 0, done.stderr[-3000:]
    recs = records(probe_app / "out")
    assert [r["state"] for r in recs] == ["SUCCEEDED"] * 6
    tasks = _by_task(recs)
    assert sorted(len(runs) for runs in tasks.values()) == [3, 3]  # two tasks of three
    for runs in tasks.values():
        # Hydra was already imported when each run's script began: a fork of the warm
        # interpreter, not a cold `python probe.py` (which a fall-back would start).
        assert [m["preimported"] for m in runs] == [1.0] * 3, runs
        assert len({m["ppid"] for m in runs}) == 1  # one interpreter per task ...
        assert {m["parent_is_task"] for m in runs} == {1.0}  # ... the array task's
        assert len({m["pid"] for m in runs}) == 3  # ... forked once per run
    assert len({runs[0]["ppid"] for runs in tasks.values()}) == 2


def test_without_warm_packed_runs_start_cold(probe_app: Path) -> None:
    """The control: the check above tells a cold start from a fork."""
    done = run_app(probe_app, "provider=slurm", "provider.pack=2", "provider.warm=false",
                   "x=0,1", "hydra.sweep.dir=out", *FAST, script="probe.py")
    assert done.returncode == 0, done.stderr[-3000:]
    [runs] = _by_task(records(probe_app / "out")).values()
    assert [m["preimported"] for m in runs] == [0.0, 0.0], runs


def _cluster_max_array_size() -> int:
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                           timeout=30, check=True).stdout
    return int(next(line.split("=", 1)[1] for line in shown.splitlines()
                    if line.startswith("MaxArraySize")))


def test_the_clusters_max_array_size_splits_a_sweep(tmp_path: Path) -> None:
    """One run more than the test cluster's MaxArraySize (201, scripts/slurm-up.sh), no
    provider.max_array_size: two arrays, the first as large as the cluster allows. The
    runs are trivial commands (the provider's contract runs), so 202 tasks stay cheap."""
    from hpcorch.providers.slurm.provider import SlurmProvider
    from hpcorch.providers.slurm.settings import SlurmSettings
    from hpcorch.testing import contract_spec, wait_terminal

    limit = _cluster_max_array_size()
    assert limit <= 400, (f"MaxArraySize={limit}: this test expects the test cluster's 201 "
                          "(run scripts/slurm-up.sh)")
    specs = [contract_spec(tmp_path, num) for num in range(limit + 1)]
    provider = SlurmProvider(SlurmSettings(query_interval=1.0))
    provider.check()
    try:
        handles = provider.submit(specs)
        statuses = wait_terminal(provider, handles, timeout=900)
    finally:
        provider.close()
    assert {s.state.value for s in statuses} == {"SUCCEEDED"}
    arrays = defaultdict(list)
    for handle in handles:
        array_id, _, index = handle.job_id.partition("_")
        arrays[array_id].append(int(index) if index else None)
    # The last run alone: submitit submits a batch of one as a plain job (no `_0`).
    assert sorted(len(indices) for indices in arrays.values()) == [1, limit]
    assert [None] in arrays.values()
    assert max(i for indices in arrays.values() for i in indices if i is not None) == limit - 1
    scripts = submitted_scripts(tmp_path / "sweep")
    lines = sorted(line for s in scripts for line in s.read_text().splitlines()
                   if line.startswith("#SBATCH --array="))
    assert len(scripts) == 2 and lines == [f"#SBATCH --array=0-{limit - 1}%{limit}"]
