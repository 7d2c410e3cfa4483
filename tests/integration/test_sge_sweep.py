"""`python train.py -m provider=sge ...` end to end on the real local Grid Engine.

Needs scripts/sge-up.sh, and the tests inside its network namespace
(`scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_sge_sweep.py`).
Grid Engine schedules about one task per second: every sweep here is a few runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import write_probe_app
from tests.integration.slurm_support import records, run_app, wait_for
from tests.integration.test_container_podman import IMAGE, image_id  # noqa: F401 - fixture
from tests.integration.test_container_providers import assert_inside_with_same_metrics
from tests.integration.test_sge_contract import require_sge

pytestmark = [pytest.mark.integration, pytest.mark.sge]

SWEEP = ("lr=0.1,0.05", "epochs=3")
FAST = ("provider.query_interval=0.5", "provider.max_query_interval=3.0", "hpcorch.progress=off")


@pytest.fixture(autouse=True)
def _needs_sge() -> None:
    require_sge()


def _by_lr(recs: list[dict]) -> dict[float, tuple[str, dict]]:
    return {r["config"]["lr"]: (r["run_key"], r["metrics"]) for r in recs}


def _cli(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcorch", *args], cwd=app, capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "HPCORCH_HOME": str(app / ".hpcorch-home")})


def _qstat_names() -> list[str]:
    done = subprocess.run(["qstat", "-xml", "-g", "d"], capture_output=True, text=True,
                          timeout=30, check=False)
    return [line.strip()[len("<JB_name>"):-len("</JB_name>")]
            for line in done.stdout.splitlines() if line.strip().startswith("<JB_name>")]


def test_same_run_keys_and_metrics_as_local(app_dir: Path) -> None:
    local = run_app(app_dir, *SWEEP, "hydra.sweep.dir=out/local", "hpcorch.progress=off",
                    env={"HPCORCH_HOME": str(app_dir / "home-local")})
    assert local.returncode == 0, local.stderr[-3000:]
    expected = _by_lr(records(app_dir / "out/local"))
    assert len(expected) == 2

    sge = run_app(app_dir, "provider=sge", *SWEEP, "hydra.sweep.dir=out/sge", *FAST)
    assert sge.returncode == 0, sge.stderr[-3000:]
    assert "on sge: 2 succeeded" in sge.stdout + sge.stderr, sge.stderr[-3000:]
    recs = records(app_dir / "out/sge")
    assert [r["state"] for r in recs] == ["SUCCEEDED"] * 2
    assert _by_lr(recs) == expected  # same keys, metrics equal to the last digit
    number = recs[0]["job_id"].split(".")[0]
    assert [r["job_id"] for r in recs] == [f"{number}.1", f"{number}.2"]  # ONE array
    assert all(r["provider"] == "sge" and r["node"] for r in recs)
    sge_dir = app_dir / "out/sge/.hpcorch/sge"
    assert len(list(sge_dir.glob("*.sh"))) == 1
    assert sorted(p.name for p in (sge_dir / "logs").iterdir()) == \
        [f"{number}.1.log", f"{number}.2.log"]  # Grid Engine's own per-task logs


FAILING_APP = '''
import os, sys
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    print(f"run {cfg.mode} about to fail", file=sys.stderr, flush=True)
    if cfg.mode == "raise":
        raise ValueError("probe failure")
    if cfg.mode == "exit":
        os._exit(7)       # dies without a record: the task's file and stderr tail tell why
    return {"ok": 1.0}

if __name__ == "__main__":
    main()
'''


def test_failing_runs_show_job_node_exit_code_and_stderr(app_dir: Path) -> None:
    (app_dir / "fail.py").write_text(FAILING_APP)
    (app_dir / "conf" / "config.yaml").write_text(
        (app_dir / "conf" / "config.yaml").read_text() + "mode: ok\n")
    done = run_app(app_dir, "provider=sge", "mode=ok,raise,exit", "hydra.sweep.dir=out",
                   *FAST, script="fail.py")
    assert done.returncode != 0
    ok, raised, exited = records(app_dir / "out")
    assert [ok["state"], raised["state"], exited["state"]] == ["SUCCEEDED", "FAILED", "FAILED"]
    assert raised["error"]["type"] == "ValueError" and raised["node"]
    assert raised["job_id"].endswith(".2")
    failure = exited["failure"]
    assert failure["provider"] == "sge" and failure["job_id"] == exited["job_id"]
    assert failure["job_id"].endswith(".3") and failure["node"]
    assert failure["exit_code"] == 7
    assert "run exit about to fail" in failure["stderr_tail"]
    assert "ValueError: probe failure" in done.stderr
    summary = done.stdout + done.stderr  # the summary table names it too
    assert f"job={failure['job_id']}" in summary and "exit=7" in summary


def test_time_limit_is_a_timeout_with_its_reason(tmp_path: Path) -> None:
    """h_rt lowered to 3 s (a later `-l h_rt` wins over the one from resources.time_min)."""
    app = write_probe_app(tmp_path / "app")
    done = run_app(app, "provider=sge", "x=1", "sleep=60", "provider.qsub_args=[-l,'h_rt=3']",
                   "hydra.sweep.dir=out", "hpcorch.retry.time=0", *FAST, script="app.py",
                   timeout=120)
    assert done.returncode != 0, done.stdout[-2000:]
    [rec] = records(app / "out")
    assert rec["state"] == "TIMEOUT", rec
    reason = rec["failure"]["reason"]
    assert reason.startswith("killed by Grid Engine at its run-time limit h_rt=3 s"), reason
    assert rec["failure"]["job_id"] == rec["job_id"] and rec["failure"]["node"]
    assert (app / "out/0/started").exists()  # it did run, until the limit


HOG_APP = '''
import subprocess, sys, time
import hydra

TOUCH = "b = bytearray({mb} * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\n"

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    if cfg.mode == "one":      # one process over the limit: its allocation fails (RLIMIT_AS)
        exec(TOUCH.format(mb=700))
    if cfg.mode == "two":      # two processes, each under it, together over: execd kills
        child = subprocess.Popen([sys.executable, "-c", TOUCH.format(mb=300) +
                                  "import time; time.sleep(30)"])
        exec(TOUCH.format(mb=300))
        time.sleep(30)
        child.kill()
    return {"ok": 1.0}

if __name__ == "__main__":
    main()
'''


def test_memory_limits_fail_saying_so(app_dir: Path) -> None:
    (app_dir / "hog.py").write_text(HOG_APP)
    (app_dir / "conf" / "config.yaml").write_text(
        (app_dir / "conf" / "config.yaml").read_text() + "mode: none\n")
    done = run_app(app_dir, "provider=sge", "mode=none,one,two", "resources.mem_gb=0.5",
                   "hpcorch.retry.memory=0",
                   "hydra.sweep.dir=out", *FAST, script="hog.py", timeout=180)
    assert done.returncode != 0, done.stdout[-3000:]
    ok, one, two = records(app_dir / "out")
    assert [ok["state"], one["state"], two["state"]] == ["SUCCEEDED", "FAILED", "FAILED"]
    assert one["error"]["type"] == "MemoryError"  # the run's own record says so
    reason = two["failure"]["reason"]
    assert reason.startswith("killed by Grid Engine for exceeding its memory limit of 0.5 GB "
                             "(resources.mem_gb)"), reason
    assert "h_vmem=512M" in reason and two["failure"]["exit_code"] == 137
    assert "exceeding its memory limit" in " ".join(done.stderr.split())  # the summary


def test_detach_then_wait(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = run_app(app, "provider=sge", "x=1,2", "hpcorch.detach=true", "hydra.sweep.dir=out",
                   *FAST, script="app.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("sweep ") and "submitted" in x)
    sid = line.split()[1]
    assert f"hpcorch wait {sid}" in proc.stderr
    waited = _cli(app, "wait", sid, "--progress", "off")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    recs = records(app / "out")
    assert [r["state"] for r in recs] == ["SUCCEEDED", "SUCCEEDED"]
    status = json.loads(_cli(app, "status", sid, "--json").stdout)
    assert [r["state"] for r in status["runs"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert all("." in r["job_id"] for r in status["runs"])  # the Grid Engine task ids


def test_cancel_a_detached_sweep(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = run_app(app, "provider=sge", "x=1,2,3", "sleep=120", "hpcorch.detach=true",
                   "provider.array_throttle=2", "hydra.sweep.dir=out", *FAST, script="app.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("sweep ") and "submitted" in x)
    sid = line.split()[1]
    wait_for(lambda: (app / "out/0/started").exists(), "the first run to start")
    cancelled = _cli(app, "cancel", sid)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    wait_for(lambda: not any(n.startswith(f"hpcorch-{sid}-") for n in _qstat_names()),
             "the jobs to leave the queue", timeout=60)
    assert [r["state"] for r in records(app / "out")] == ["CANCELLED"] * 3


def test_dry_run_prints_the_job_script_and_submits_nothing(app_dir: Path) -> None:
    done = run_app(app_dir, "provider=sge", *SWEEP, "resources.mem_gb=2", "resources.cpus=2",
                   "hydra.sweep.dir=out", "hpcorch.dry_run=true", "hpcorch.progress=off")
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout + done.stderr
    assert "# provider=sge: 2 run(s) in 1 job array(s)" in text
    assert "-t 1-2" in text and "-pe smp 2" in text and "-l h_vmem=1024M" in text
    assert "-m hpcorch.providers.sge.task" in text
    assert not (app_dir / "out/.hpcorch/sge").exists()  # nothing written, nothing submitted
    assert records(app_dir / "out") == []


def test_sigkill_then_resume_without_duplicates(tmp_path: Path) -> None:
    """A crashed orchestrator's jobs are found again by name (lookup), not submitted twice."""
    app = write_probe_app(tmp_path / "app")
    proc = subprocess.Popen(
        [sys.executable, "app.py", "-m", "provider=sge", "sleep=0,8", "hydra.sweep.dir=out",
         *FAST], cwd=app, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "HPCORCH_HOME": str(app / ".hpcorch-home")}, start_new_session=True)
    ledger = app / "out/.hpcorch/sweep.json"
    wait_for(lambda: ledger.exists(), "the sweep ledger")
    sid = json.loads(ledger.read_text())["sweep_id"]
    wait_for(lambda: any(n.startswith(f"hpcorch-{sid}-") for n in _qstat_names()),
             "the array to be queued")
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator dies; the Grid Engine jobs live on
    proc.wait(timeout=30)
    resumed = _cli(app, "resume", str(app / "out"), "--progress", "off")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    recs = records(app / "out")
    assert [r["state"] for r in recs] == ["SUCCEEDED", "SUCCEEDED"]
    # every run ran exactly once, in the array submitted before the kill
    assert len({r["job_id"].split(".")[0] for r in recs}) == 1
    assert len(list((app / "out/.hpcorch/sge").glob("*.sh"))) == 1
    assert not list((app / "out").glob("*/.hpcorch/record.attempt-*.json"))


@pytest.mark.container
def test_runs_inside_the_podman_image_with_the_metrics_of_the_run_without(
        app_dir: Path, image_id: str) -> None:  # noqa: F811
    def sweep(name: str, *extra: str) -> list[dict]:
        done = run_app(app_dir, "provider=sge", *SWEEP, f"hydra.sweep.dir=out/{name}", *FAST,
                       *extra, env={"HPCORCH_HOME": str(app_dir / f"home-{name}")})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return records(app_dir / "out" / name)

    host = sweep("host")
    boxed = sweep("boxed", "container=podman", f"container.image={IMAGE}")
    assert_inside_with_same_metrics(boxed, host, image_id, "sge")
