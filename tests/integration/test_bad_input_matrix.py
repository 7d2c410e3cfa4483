"""Every kind of bad input is one clear error, exit status 2, before anything is submitted.

Each case runs the probe app as a real `python app.py -m ...` and asserts: exit
status 2, exactly one `hpcorch: error:` line naming the setting and the value and
saying what is allowed, no traceback, and that nothing started: no sweep ledger, no
run directory, no record; for provider=slurm no job of the sweep in Slurm, for
provider=ray no job of the sweep on the Ray head.
(tests/integration/test_bad_input_and_progress.py covers provider=nope,
provider.workers=-1|two, +hpcorch.wokers, +provider.wokers, hpcorch.progress=loud and
resources.cpus=-2: not repeated here.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from hpcorch.identity import short_hash
from tests.conftest import require_service
from tests.integration.helpers import run, write_probe_app

pytestmark = pytest.mark.integration


class Case(NamedTuple):
    """One bad input: the overrides, and what the single error line must contain."""

    overrides: tuple[str, ...]
    says: tuple[str, ...]
    """Substrings of the error line: `key=value` and (part of) what is allowed."""
    env: tuple[tuple[str, str], ...] = ()


def case(*overrides: str, says: str | tuple[str, ...],
         env: tuple[tuple[str, str], ...] = ()) -> Case:
    """A Case; `says` is one substring or several."""
    return Case(overrides, (says,) if isinstance(says, str) else says, env)


GIB = "must be a finite number of GiB of at least 1/1024 (1 MiB), or null"
SEED = "must be a whole number from 0 to 4294967295"
LOCAL_CORES = "usable core(s): at most"

CASES: dict[str, Case] = {
    # -- resources: range, type, unknown keys ---------------------------------
    "mem_gb-zero": case("resources.mem_gb=0", says=("resources.mem_gb=0.0: ", GIB)),
    "mem_gb-negative": case("resources.mem_gb=-1", says=("resources.mem_gb=-1.0: ", GIB)),
    "mem_gb-below-1MB": case("resources.mem_gb=0.0005", says=("resources.mem_gb=0.0005: ", GIB)),
    "mem_gb-nan": case("resources.mem_gb=nan", says=("resources.mem_gb=nan: ", GIB)),
    "mem_gb-word": case("resources.mem_gb=lots",
                        says="resources.mem_gb='lots': must be a number or null"),
    "time_min-zero": case("resources.time_min=0",
                          says="resources.time_min=0: must be a whole number of minutes >= 1"),
    "time_min-negative": case("resources.time_min=-5", says="resources.time_min=-5: must be"),
    "time_min-float": case("resources.time_min=1.5",
                           says="resources.time_min=1.5: must be an integer"),
    "cpus-zero": case("resources.cpus=0", says="resources.cpus=0: must be >= 1"),
    "gpus-negative": case("resources.gpus=-1", says="resources.gpus=-1: must be >= 0"),
    "nodes-zero": case("resources.nodes=0", says="resources.nodes=0: must be >= 1"),
    "tasks-negative": case("resources.tasks=-1",
                           says="resources.tasks=-1: must be >= 1, or 0 to derive"),
    "tasks_per_node-negative": case("resources.tasks_per_node=-2",
                                    says="resources.tasks_per_node=-2: must be >= 1, or 0"),
    "tasks-over-nodes-x-per-node": case(
        "resources.tasks=3", "resources.tasks_per_node=1",
        says="resources.tasks=3: must be between nodes (1) and nodes * tasks_per_node (1)"),
    "tasks-999-on-2-cores": case("resources.tasks=999",
                                 says=("resources.tasks=999: provider=local has", LOCAL_CORES,
                                       "resources.oversubscribe=true")),
    "oversubscribe-word": case("resources.oversubscribe=maybe",
                               says="resources.oversubscribe='maybe': must be true or false"),
    "resources-typo-no-plus": case("resources.mem=4", says=(
        "resources.mem=4: unknown setting; did you mean 'mem_gb'?", "allowed: cpus, gpus")),
    "resources-typo-plus": case("+resources.memory_gb=4",
                                says="resources.memory_gb=4: unknown setting"),
    # -- seeds ----------------------------------------------------------------
    "seed-word": case("seed=abc", says=f"seed='abc': {SEED}"),
    "seed-negative": case("seed=-1", says=f"seed=-1: {SEED}"),
    "seed-float": case("seed=1.5", says=f"seed=1.5: {SEED}"),
    "seed-bool": case("seed=true", says=f"seed=True: {SEED}"),
    "seed-too-big": case("seed=4294967296", says=f"seed=4294967296: {SEED}"),
    "seed-one-bad-in-a-sweep": case("seed=1,abc", says=f"seed='abc': {SEED}"),
    # -- hpcorch settings -----------------------------------------------------
    "hpcorch-typo-no-plus": case("hpcorch.detatch=true", says=(
        "hpcorch.detatch=True: unknown setting; did you mean 'detach'?",
        "allowed: detach, dry_run, home")),
    "hpcorch-rerun-word": case("hpcorch.rerun=yes",
                               says="hpcorch.rerun='yes': must be true or false"),
    "hpcorch-summary_metrics-negative": case("hpcorch.summary_metrics=-1",
                                             says="hpcorch.summary_metrics=-1: must be >= 0"),
    "hpcorch-key_exclude-without-hydra": case("hpcorch.key_exclude=[provider]",
                                              says="hpcorch.key_exclude=['provider']: must"),
    "hpcorch-snapshot-number": case("hpcorch.snapshot=2",
                                    says="hpcorch.snapshot=2: must be true or false"),
    "hpcorch-repro-typo": case("hpcorch.repro.stric=true",
                               says="hpcorch.repro.stric=True: unknown setting; did you mean"),
    # -- where the index lives ------------------------------------------------
    "home-is-a-file": case("hpcorch.home=afile", says=(
        "hpcorch.home='afile': must be a directory hpcorch can create and write", "a file")),
    "home-under-a-file": case("hpcorch.home=afile/sub", says=(
        "hpcorch.home='afile/sub': must be a directory hpcorch can create and write",)),
    "home-unwritable": case("hpcorch.home=/sys", says=(
        "hpcorch.home='/sys': must be a directory hpcorch can create and write",)),
    "HPCORCH_HOME-is-a-file": case(says=(
        "HPCORCH_HOME='afile': must be a directory hpcorch can create and write", "a file"),
        env=(("HPCORCH_HOME", "afile"),)),
    # -- provider=local -------------------------------------------------------
    "local-workers-zero": case("provider.workers=0",
                               says="provider.workers=0: must be a positive integer"),
    "local-warm-word": case("provider.warm=maybe",
                            says="provider.warm='maybe': must be true or false"),
    "local-typo-no-plus": case("provider.wrm=false", says=(
        "provider.wrm=False: unknown setting; did you mean 'warm'?",
        "allowed: name, warm, workers")),
    # -- provider=slurm -------------------------------------------------------
    "slurm-typo": case("provider=slurm", "provider.partiton=debug", says=(
        "provider.partiton='debug': unknown setting; did you mean 'partition'?",)),
    "slurm-pack-zero": case("provider=slurm", "provider.pack=0",
                            says="provider.pack=0: must be >= 1"),
    "slurm-max_requeues-negative": case("provider=slurm", "provider.max_requeues=-1",
                                        says="provider.max_requeues=-1: must be >= 0"),
    "slurm-srun-word": case("provider=slurm", "provider.srun=sometimes",
                            says="provider.srun='sometimes': must be one of 'auto', 'always'"),
    "slurm-array_throttle-zero": case("provider=slurm", "provider.array_throttle=0",
                                      says="provider.array_throttle=0: must be a positive integer"),
    "slurm-poll_interval-zero": case("provider=slurm", "provider.poll_interval=0",
                                     says="provider.poll_interval=0.0: must be > 0 seconds"),
    "slurm-mem_gb-zero": case("provider=slurm", "resources.mem_gb=0",
                              says=("resources.mem_gb=0.0: ", GIB)),
    "slurm-time_min-zero": case("provider=slurm", "resources.time_min=0",
                                says="resources.time_min=0: must be a whole number"),
    "slurm-dry-run-mem_gb-below-1MB": case("provider=slurm", "hpcorch.dry_run=true",
                                           "resources.mem_gb=0.0001",
                                           says=("resources.mem_gb=0.0001: ", GIB)),
    # -- provider=ray ---------------------------------------------------------
    "ray-typo": case("provider=ray", "provider.adress=http://127.0.0.1:8265",
                     says="provider.adress='http://127.0.0.1:8265': unknown setting; did you mean"),
    "ray-mode-word": case("provider=ray", "provider.mode=fast",
                          says="provider.mode='fast': must be one of 'sweep', 'job'"),
    "ray-address-scheme": case("provider=ray", "provider.address=ftp://x",
                               says="provider.address='ftp://x': must be an http(s)://"),
    "ray-num_cpus-zero": case("provider=ray", "provider.num_cpus=0",
                              says="provider.num_cpus=0: must be a positive integer"),
    # -- provider=mpi ---------------------------------------------------------
    "mpi-typo": case("provider=mpi", "provider.hostz=[localhost]",
                     says="provider.hostz=['localhost']: unknown setting; did you mean 'hosts'?"),
    "mpi-slots-zero": case("provider=mpi", "provider.slots_per_host=0",
                           says="provider.slots_per_host=0: must be >= 1"),
    "mpi-gpus-negative": case("provider=mpi", "provider.gpus_per_host=-1",
                              says="provider.gpus_per_host=-1: must be >= 0"),
    "mpi-bind_to-word": case("provider=mpi", "provider.bind_to=everything",
                             says="provider.bind_to='everything': must be one of 'none', 'core'"),
    # -- containers -----------------------------------------------------------
    "container-typo-no-plus": case("container.imag=x", says=(
        "container.imag='x': unknown setting; did you mean 'image'?", "allowed: binds")),
    "podman-typo": case("container=podman", "container.netwrk=true",
                        says="container.netwrk=True: unknown setting; did you mean 'network'?"),
    "podman-network-word": case("container=podman", "container.network=maybe",
                                says="container.network='maybe': must be true or false"),
    "podman-relative-data": case("container=podman", "container.data=[relative/dir]",
                                 says="container.data[0]='relative/dir': must be an absolute path"),
}


def _ledger_and_runs(out: Path) -> list[Path]:
    """Everything a started sweep leaves: its ledger, run dirs with Hydra or hpcorch files."""
    found = [out / ".hpcorch" / "sweep.json"] if (out / ".hpcorch" / "sweep.json").exists() else []
    found += sorted(out.glob("*/.hydra")) + sorted(out.glob("*/.hpcorch"))
    return found


def _slurm_jobs(sweep_id: str) -> list[str]:
    from tests.integration.slurm_support import require_slurm, squeue_ids

    require_slurm()
    prefix = f"hpcorch-{sweep_id}"
    done = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hours", "--format=JobName"],
                          capture_output=True, text=True, timeout=60, check=False)
    return squeue_ids(prefix) + [n for n in done.stdout.split()
                                 if n.startswith(prefix) or f".{prefix}" in n]


def _ray_jobs(sweep_id: str) -> list[str]:
    from tests.conftest import require_service
    from tests.integration.ray_support import (
        HOW,
        RAY_URL,
        dashboard_get,
        ray_available,
        token_headers,
    )

    require_service(ray_available(), f"a Ray head at {RAY_URL}", HOW)
    jobs = dashboard_get("/api/jobs/", token_headers())
    return [j["submission_id"] for j in jobs if sweep_id in str(j.get("submission_id"))]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe app, with a base seed, and a plain file where a directory is expected."""
    app = write_probe_app(tmp_path_factory.mktemp("bad") / "app")
    config = app / "conf" / "config.yaml"
    config.write_text(config.read_text() + "seed: 0\n")
    (app / "afile").write_text("not a directory\n")
    return app


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_error_and_nothing_starts(probe: Path, name: str) -> None:
    bad = CASES[name]
    out = probe / "out" / name
    proc = run(probe, "-m", "x=1,2", *bad.overrides, f"hydra.sweep.dir={out}",
               env=dict(bad.env), timeout=180)
    both = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcorch: error:")]
    assert proc.returncode == 2, both
    assert len(errors) == 1, both
    for part in bad.says:
        assert part in errors[0], errors[0]
    assert "Traceback" not in both
    assert "#SBATCH" not in both  # not even rendered
    assert not _ledger_and_runs(out), f"something started: {_ledger_and_runs(out)}"
    sweep_id = short_hash(str(out.resolve()), 10)
    if "provider=slurm" in bad.overrides:
        assert not _slurm_jobs(sweep_id), "a Slurm job was submitted"
    if "provider=ray" in bad.overrides:
        assert not _ray_jobs(sweep_id), "a Ray job was submitted"


def test_the_matrix_has_forty_kinds() -> None:
    assert len(CASES) >= 40


def test_oversubscription_is_allowed_when_asked(probe: Path) -> None:
    """The opt-in the refusal names really is the way through (3 ranks on 2 cores)."""
    from tests.conftest import require_service
    from tests.integration.mpi_support import mpi_available

    require_service(mpi_available(), "Open MPI (mpirun) and mpi4py", "scripts/mpi-up.sh")
    out = probe / "out" / "oversubscribed"
    cores = len(os.sched_getaffinity(0))
    proc = run(probe, "-m", "x=1", f"resources.tasks={cores + 1}",
               "resources.oversubscribe=true", f"hydra.sweep.dir={out}", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "0" / ".hpcorch" / "record.json").exists()


# -- a corrupt index: data kept, user told, index rebuilt ---------------------

def _sweep_once(probe: Path, home: Path, name: str) -> Path:
    out = probe / "out" / name
    proc = run(probe, "-m", "x=1,2", f"hydra.sweep.dir={out}", timeout=300,
               env={"HPCORCH_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    return out


def _corrupt(index: Path) -> bytes:
    for suffix in ("-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    garbage = b"this is no SQLite database " * 200
    index.write_bytes(garbage)
    return garbage


def _cli(probe: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcorch", *args], cwd=probe,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "HPCORCH_HOME": str(home)})


@pytest.mark.parametrize("command", ["status", "sweeps", "sweep-start"])
def test_a_corrupt_index_is_kept_rebuilt_and_reported(probe: Path, tmp_path: Path,
                                                      command: str) -> None:
    home = tmp_path / "home"
    out = _sweep_once(probe, home, f"corrupt-{command}")
    index = home / "index.db"
    garbage = _corrupt(index)
    if command == "sweep-start":
        proc = run(probe, "-m", "x=1,2", f"hydra.sweep.dir={out}", timeout=300,
                   env={"HPCORCH_HOME": str(home)})
    else:
        proc = _cli(probe, home, command, *(["--json"] if command == "status" else []))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    told = [line for line in proc.stderr.splitlines() if "was corrupt" in line]
    assert len(told) == 1, proc.stderr
    kept = sorted(home.glob("index.db.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == garbage  # the data is kept, unchanged
    assert str(kept[0]) in told[0] and "rebuilt it from the record files: 1 sweep(s)" in told[0]
    # The rebuilt index knows the sweep and its two runs again.
    status = _cli(probe, home, "status", "--json")
    assert status.returncode == 0, status.stderr
    runs = json.loads(status.stdout)["runs"]
    assert [r["state"] for r in runs] == ["SUCCEEDED", "SUCCEEDED"]
    assert "was corrupt" not in status.stderr  # repaired once, sound since


def test_hpcorch_rebuild_sets_a_corrupt_index_aside(probe: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = _sweep_once(probe, home, "corrupt-rebuild")
    garbage = _corrupt(home / "index.db")
    proc = _cli(probe, home, "rebuild", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "1 sweep(s), 2 run(s)" in proc.stdout
    kept = sorted(home.glob("index.db.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == garbage
    assert _cli(probe, home, "status").returncode == 0


def test_an_index_that_cannot_be_set_aside_names_hpcorch_rebuild(probe: Path,
                                                                 tmp_path: Path) -> None:
    """Where self-repair cannot work (here: the index is a read-only bind of a file the
    repair may not move), the one error says that `hpcorch rebuild` repairs it."""
    home = tmp_path / "home"
    _sweep_once(probe, home, "corrupt-stuck")
    index = home / "index.db"
    _corrupt(index)
    # A file bind-mounted onto itself cannot be renamed (EBUSY), even by root.
    mounted = subprocess.run(["mount", "--bind", str(index), str(index)], capture_output=True,
                             text=True, check=False)
    require_service(mounted.returncode == 0, "bind mounts (mount --bind, as root)",
                    mounted.stderr.strip() or "run the tests as root")
    try:
        proc = _cli(probe, home, "sweeps")
    finally:
        subprocess.run(["umount", str(index)], check=False)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcorch: error:")]
    assert len(errors) == 1 and "`hpcorch rebuild" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


# -- a run killed by SIGKILL: the reason says so, by whom, and its memory -------

KILLED_APP = '''
import os, signal
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    block = bytearray(cfg.mb * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touched, so it is resident
        block[i] = 1
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    main()
'''


@pytest.mark.parametrize("warm", ["true", "false"])
def test_a_sigkilled_run_says_sigkill_who_and_its_memory(tmp_path: Path, warm: str) -> None:
    app = tmp_path / "killed"
    (app / "conf").mkdir(parents=True)
    (app / "app.py").write_text(KILLED_APP)
    (app / "conf" / "config.yaml").write_text("defaults:\n  - hpcorch: default\n  - _self_\n"
                                              "mb: 120\n")
    proc = run(app, "-m", "mb=120", f"provider.warm={warm}", "hydra.sweep.dir=out",
               timeout=300)
    assert proc.returncode != 0
    record = json.loads((app / "out" / "0" / ".hpcorch" / "record.json").read_text())
    assert record["state"] == "FAILED"
    failure = record["failure"]
    assert failure["signal"] == 9
    reason = failure["reason"]
    assert reason.startswith("killed by SIGKILL (signal 9), "), reason
    # Nobody but the run itself sent it: neither hpcorch nor (on a quiet machine) the OOM
    # killer; either way the reason names who it can and cannot have been.
    assert "not by hpcorch" in reason or "OOM killer" in reason, reason
    peak = float(reason.split("it had used ")[1].split(" MiB")[0])
    assert peak >= 120, reason  # the 120 MiB it touched, at least


@pytest.mark.slurm
def test_a_sigkilled_slurm_run_says_sigkill_and_who(tmp_path: Path) -> None:
    """On the real Slurm: FAILED, signal 9, and no word from Slurm becomes a reason that
    names SIGKILL and what Slurm did and did not record. (The memory used needs sacct's
    MaxRSS in the accounting parser: not there yet.)"""
    from tests.integration.slurm_support import require_slurm

    require_slurm()
    app = tmp_path / "killed"
    (app / "conf").mkdir(parents=True)
    (app / "app.py").write_text(KILLED_APP)
    (app / "conf" / "config.yaml").write_text("defaults:\n  - hpcorch: default\n  - _self_\n"
                                              "mb: 20\n")
    proc = run(app, "-m", "provider=slurm", f"hydra.sweep.dir={app / 'out'}",
               "hpcorch.progress=off", timeout=600)
    assert proc.returncode != 0
    record = json.loads((app / "out" / "0" / ".hpcorch" / "record.json").read_text())
    assert record["state"] == "FAILED" and record["failure"]["signal"] == 9, record
    reason = record["failure"]["reason"]
    assert reason.startswith("killed by SIGKILL (signal 9), "), reason
    assert "not by a limit Slurm recorded (sacct: FAILED)" in reason, reason


@pytest.mark.parametrize("args, env, says", [
    (("--home", "afile", "status"), {}, "--home='afile': must be a directory hpcorch can"),
    (("sweeps",), {"HPCORCH_HOME": "afile"}, "HPCORCH_HOME='afile': must be a directory"),
    (("rebuild",), {"HPCORCH_HOME": "afile/sub"}, "HPCORCH_HOME='afile/sub': must be a"),
])
def test_the_cli_refuses_an_unusable_home(probe: Path, args: tuple[str, ...],
                                          env: dict[str, str], says: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "hpcorch", *args], cwd=probe,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **env})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcorch: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert says in errors[0] and "Traceback" not in proc.stderr
    assert (probe / "afile").is_file()  # left as it was


# -- single runs (no -m): the same checks, before the run directory exists --------
SINGLE = ["hpcorch-typo-no-plus", "local-typo-no-plus", "resources-typo-no-plus",
          "mem_gb-zero", "time_min-zero", "seed-word", "seed-negative", "seed-float",
          "container-typo-no-plus", "slurm-pack-zero"]


@pytest.mark.parametrize("name", [
    *SINGLE,
    "tasks-999-on-2-cores", "home-is-a-file", "HPCORCH_HOME-is-a-file",
])
def test_a_single_run_refuses_the_same_bad_input(probe: Path, name: str) -> None:
    bad = CASES[name]
    out = probe / "single" / name
    proc = run(probe, *bad.overrides, f"hydra.run.dir={out}", env=dict(bad.env), timeout=180)
    both = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpcorch: error:")]
    assert proc.returncode == 2, both
    assert len(errors) == 1, both
    for part in bad.says:
        assert part in errors[0], errors[0]
    assert "Traceback" not in both
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))
