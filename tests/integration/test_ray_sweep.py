"""`python train.py -m provider=ray ...` as a user runs it, against the real local Ray head.

Same run keys and metrics as provider=local; every run in the dashboard's own
jobs API (authenticated with Ray's token) with its metadata; `hpcorch logs`;
and the no-address mode that starts and stops a Ray of its own.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
from pathlib import Path

import pytest

from tests.integration.helpers import hpcorch_cli, records, run
from tests.integration.ray_support import (  # noqa: F401 - fixture
    dashboard_get,
    ray_url,
    token_headers,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.ray]


def sweep(app_dir: Path, name: str, *args: str, home: str) -> tuple[Path, str]:
    sweep_dir = app_dir / "multirun" / name
    proc = run(app_dir, "-m", *args, "epochs=5", "lr=0.1,0.01", f"hydra.sweep.dir={sweep_dir}",
               "hpcorch.progress=off", script="train.py",
               env={"HPCORCH_HOME": str(app_dir / home)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sweep_dir, proc.stdout + proc.stderr


def test_ray_sweep_equals_local_and_shows_in_the_dashboard(app_dir: Path, ray_url: str) -> None:  # noqa: F811
    local_dir, _ = sweep(app_dir, "local", "provider=local", home="home-local")
    ray_dir, out = sweep(app_dir, "ray", "provider=ray", f"provider.address={ray_url}",
                         home="home-ray")
    local, remote = records(local_dir), records(ray_dir)
    assert [r["state"] for r in remote] == ["SUCCEEDED", "SUCCEEDED"]
    assert [r["run_key"] for r in remote] == [r["run_key"] for r in local]
    assert [r["metrics"] for r in remote] == [r["metrics"] for r in local]
    assert all(r["metrics"] for r in remote)
    # The summary names each run's Ray job id; the dashboard URL is printed.
    sid = remote[0]["job_id"].split("#")[0]
    assert sid.startswith("hpcorch-") and sid in out
    assert [r["job_id"] for r in remote] == [f"{sid}#0", f"{sid}#1"]
    assert f"{ray_url}/#/jobs/{sid}" in out

    # The dashboard's own API, authenticated as Ray's SDK does (and closed without a token).
    with pytest.raises(urllib.error.HTTPError) as denied:
        dashboard_get("/api/jobs/")
    assert denied.value.code in (401, 403)

    def listed_jobs() -> dict[str, dict]:  # type: ignore[type-arg]
        return {j["submission_id"]: j for j in dashboard_get("/api/jobs/", token_headers())
                if j.get("submission_id")}

    # The driver exits right after its last run wrote its record: wait for it.
    wait_until(lambda: listed_jobs()[sid]["status"] == "SUCCEEDED", 60, "the sweep job ends")
    jobs = listed_jobs()
    meta = jobs[sid]["metadata"]
    assert meta["hpcorch_sweep_id"] == remote[0]["sweep_id"]
    listed = json.loads(meta["hpcorch_runs"])
    assert [(r["num"], r["run_key"]) for r in listed] == [(r["num"], r["run_key"]) for r in remote]
    assert [r["overrides"] for r in listed] == [" ".join(r["overrides"]) for r in remote]
    assert ["lr=0.1" in r["overrides"].split() for r in listed] == [True, False]
    # Each run is its own named task of that job, findable in the dashboard.
    job_id = jobs[sid]["job_id"]
    tasks = dashboard_get(f"/api/v0/tasks?limit=1000&filter_keys=job_id&filter_predicates=%3D"
                          f"&filter_values={job_id}&detail=false", token_headers())
    names = {t["name"]: t["state"] for t in tasks["data"]["result"]["result"]}
    for rec in remote:
        assert names[f"run-{rec['num']}-{rec['run_key'][:12]}"] == "FINISHED"

    # `hpcorch logs` prints the run's own output (kept in the run directory).
    logs = hpcorch_cli(app_dir, "--home", str(app_dir / "home-ray"), "logs",
                       f"{remote[0]['sweep_id']}/0")
    assert logs.returncode == 0, logs.stderr
    assert "epoch 4 train_loss" in logs.stdout


def test_one_job_per_run_lists_every_run_with_metadata(app_dir: Path, ray_url: str) -> None:  # noqa: F811
    ray_dir, _ = sweep(app_dir, "jobs", "provider=ray", f"provider.address={ray_url}",
                       "provider.mode=job", "+provider.metadata.team=vision", home="home-jobs")
    remote = records(ray_dir)
    assert [r["state"] for r in remote] == ["SUCCEEDED", "SUCCEEDED"]
    jobs = {j["submission_id"]: j for j in dashboard_get("/api/jobs/", token_headers())
            if j.get("submission_id")}
    for rec in remote:
        wait_until(lambda rec=rec: {j["submission_id"]: j for j in dashboard_get(
            "/api/jobs/", token_headers())}[rec["job_id"]]["status"] == "SUCCEEDED", 60)
        jobs = {j["submission_id"]: j for j in dashboard_get("/api/jobs/", token_headers())
                if j.get("submission_id")}
        job = jobs[rec["job_id"]]
        assert job["status"] == "SUCCEEDED" and job["driver_exit_code"] == 0
        meta = job["metadata"]
        assert meta["hpcorch_sweep_id"] == rec["sweep_id"] and meta["team"] == "vision"
        assert (meta["hpcorch_run_num"], meta["hpcorch_run_key"]) == (str(rec["num"]),
                                                                      rec["run_key"])
        assert meta["hpcorch_overrides"] == " ".join(rec["overrides"])


def _ray_dirs() -> set[str]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found.update(re.findall(r"/tmp/hpcorch-ray-\w+", cmdline))
    return found


def test_no_address_starts_and_stops_its_own_ray(app_dir: Path, ray_url: str) -> None:  # noqa: F811
    before = _ray_dirs()
    ray_dir, out = sweep(app_dir, "own", "provider=ray", home="home-own")
    assert [r["state"] for r in records(ray_dir)] == ["SUCCEEDED", "SUCCEEDED"]
    started = re.search(r"started a Ray head for this sweep: dashboard (http://[\d.:]+)", out)
    assert started and started.group(1) != ray_url
    # Gone afterwards: no process of it left, its temp dir removed.
    wait_until(lambda: _ray_dirs() <= before, 60, "the sweep's own Ray stops")
    assert not [d for d in os.listdir("/tmp") if f"/tmp/{d}" not in before
                and d.startswith("hpcorch-ray-")]


def test_unsatisfiable_resources_are_reported_not_pending(app_dir: Path, ray_url: str) -> None:  # noqa: F811
    proc = run(app_dir, "-m", "provider=ray", f"provider.address={ray_url}", "resources.gpus=64",
               "epochs=1", f"hydra.sweep.dir={app_dir}/multirun/gpus", "hpcorch.progress=off",
               script="train.py", env={"HPCORCH_HOME": str(app_dir / "home-gpus")})
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "infeasible" in text and "64 GPU" in text
    [rec] = records(app_dir / "multirun" / "gpus")
    assert rec["state"] == "FAILED" and "64 GPU" in rec["failure"]["reason"]


def test_unreachable_address_fails_fast_naming_it(app_dir: Path) -> None:
    pytest.importorskip("ray")
    proc = run(app_dir, "-m", "provider=ray", "provider.address=http://127.0.0.1:9", "epochs=1",
               f"hydra.sweep.dir={app_dir}/multirun/down", script="train.py")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "http://127.0.0.1:9" in text and "scripts/ray-up.sh" in text
    assert not records(app_dir / "multirun" / "down")


def test_detached_sweep_lives_in_the_cluster_then_wait_and_cancel(tmp_path: Path,
                                                                 ray_url: str) -> None:  # noqa: F811
    from tests.integration.helpers import write_probe_app

    app = write_probe_app(tmp_path / "probe")
    env = {"HPCORCH_HOME": str(tmp_path / "home")}
    home = ["--home", str(tmp_path / "home")]
    # A detached sweep returns at once; its runs go on in Ray; `hpcorch wait` collects them.
    done_dir = tmp_path / "multirun" / "done"
    proc = run(app, "-m", "provider=ray", f"provider.address={ray_url}", "hpcorch.detach=true",
               "x=1,2", f"hydra.sweep.dir={done_dir}", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    waited = hpcorch_cli(app, *home, "wait", str(done_dir))
    assert waited.returncode == 0, waited.stdout[-2000:] + waited.stderr[-2000:]
    recs = records(done_dir)
    assert [r["state"] for r in recs] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(r["job_id"].startswith("hpcorch-") for r in recs)
    # `hpcorch cancel` stops the Ray job of a detached sweep and records its runs CANCELLED.
    slow_dir = tmp_path / "multirun" / "slow"
    proc = run(app, "-m", "provider=ray", f"provider.address={ray_url}", "hpcorch.detach=true",
               "x=1,2", "sleep=300", f"hydra.sweep.dir={slow_dir}", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wait_until(lambda: len(list(slow_dir.glob("*/started"))) == 2, 120, "both runs started")
    cancelled = hpcorch_cli(app, *home, "cancel", str(slow_dir))
    assert cancelled.returncode == 0, cancelled.stdout[-2000:] + cancelled.stderr[-2000:]
    assert [r["state"] for r in records(slow_dir)] == ["CANCELLED", "CANCELLED"]
    sid = json.loads((slow_dir / "0" / ".hpcorch" / "ray.json").read_text())["submission_id"]
    wait_until(lambda: {j.get("submission_id"): j for j in dashboard_get(
        "/api/jobs/", token_headers())}[sid]["status"] == "STOPPED", 60, "the Ray job stops")
    # Nothing of the runs outlives them, not even a process a run started itself.
    # 180 s, not 60: on a loaded CI machine Ray's stop reaches the task late; the grandchild
    # sleeps 300 s, so one that truly outlives its run still fails the test.
    wait_until(lambda: not _processes_with(f"probe-grandchild {app}"), 180, "no orphans")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if marker in cmdline and "\nState:\tZ" not in (entry / "status").read_text():
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found
