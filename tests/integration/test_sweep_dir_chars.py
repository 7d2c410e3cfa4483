"""Control characters in the sweep directory, through `python train.py -m ...` as typed.

Hydra's grammar lets any character through a quoted value
(`'hydra.sweep.dir=/x/a<newline>b'`; a tab even unquoted). provider=slurm writes
the directory into #SBATCH lines, where a newline would end the line early, so it
refuses such a directory before sbatch (exit 2, one message). provider=local
keeps paths as argv and file names only: measured, a newline or a tab in the
sweep directory breaks nothing (warm, cold, mpirun and podman runs, `hpcorch
status/show/logs/resume/wait/rebuild/compare/baseline save`), so it is accepted.

    scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_sweep_dir_chars.py
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from hpcorch.identity import short_hash
from tests.integration.helpers import hpcorch_cli, records, run
from tests.integration.slurm_support import require_slurm

pytestmark = [pytest.mark.integration]

#: (name, control character, whether Hydra's grammar needs the value quoted for it)
CHARS = [("newline", "\n", True), ("tab", "\t", False), ("carriage-return", "\r", True),
         ("escape", "\x1b", True)]


def sweep_arg(path: Path, quoted: bool) -> str:
    """The override as a user types it (argv, no shell): quoted for Hydra where needed."""
    return f"hydra.sweep.dir='{path}'" if quoted else f"hydra.sweep.dir={path}"


def slurm_job_names(since: str) -> list[str]:
    """Names of every Slurm job (this user's) started or submitted since `since`."""
    done = subprocess.run(["sacct", "-n", "-X", "-P", "-S", since, "-o", "JobName%200"],
                          capture_output=True, text=True, timeout=60, check=True)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


@pytest.mark.slurm
@pytest.mark.parametrize(("name", "char", "quoted"), CHARS, ids=[c[0] for c in CHARS])
def test_slurm_refuses_control_characters_before_sbatch(app_dir: Path, name: str, char: str,
                                                        quoted: bool) -> None:
    require_slurm()
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    sweep_dir = app_dir / f"sweep{char}{name}"
    done = run(app_dir, "-m", "provider=slurm", "lr=0.1,0.01", "epochs=1",
               sweep_arg(sweep_dir, quoted), "hpcorch.progress=off", script="train.py",
               env={"HPCORCH_HOME": str(app_dir / "home")})
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("hpcorch: error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("hpcorch: error: hydra.sweep.dir=")
    assert "must not contain control characters" in errors[0]
    assert repr(char)[1:-1] in errors[0]  # the value, with the character shown escaped
    # Nothing reached Slurm, and nothing ran.
    prefix = f"hpcorch-{short_hash(str(sweep_dir), 10)}-"
    assert not [n for n in slurm_job_names(since) if n.startswith(prefix) or f".{prefix}" in n]
    assert not (sweep_dir / ".hpcorch" / "slurm").exists()
    assert records(sweep_dir) == []
    # Refused while planning: no ledger, no spec, and the message names the dir as typed.
    assert not (sweep_dir / ".hpcorch" / "sweep.json").exists()
    assert not list(sweep_dir.glob("*/.hpcorch/spec.json"))
    assert "/.hpcorch/slurm" not in errors[0]


@pytest.mark.parametrize(("name", "char", "quoted"), CHARS[:2], ids=[c[0] for c in CHARS[:2]])
def test_local_runs_and_reports_a_sweep_dir_with_control_characters(
        app_dir: Path, name: str, char: str, quoted: bool) -> None:
    sweep_dir = app_dir / f"sweep{char}{name}"
    home = app_dir / "home"
    done = run(app_dir, "-m", "lr=0.1,0.01", "epochs=1", sweep_arg(sweep_dir, quoted),
               "hpcorch.progress=off", script="train.py", env={"HPCORCH_HOME": str(home)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = records(sweep_dir)
    assert [r["state"] for r in found] == ["SUCCEEDED", "SUCCEEDED"]
    assert [r["run_dir"] for r in found] == [str(sweep_dir / "0"), str(sweep_dir / "1")]
    sweep_id = found[0]["sweep_id"]
    # The ledger commands find the sweep and its runs by id, through the index.
    status = hpcorch_cli(app_dir, "--home", str(home), "status", sweep_id)
    assert status.returncode == 0, status.stderr
    assert "2 succeeded" in status.stdout
    shown = hpcorch_cli(app_dir, "--home", str(home), "show", f"{sweep_id}/1")
    assert shown.returncode == 0 and found[1]["run_key"] in shown.stdout, shown.stderr
    resumed = hpcorch_cli(app_dir, "--home", str(home), "resume", sweep_id)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["run_key"] for r in records(sweep_dir)] == [r["run_key"] for r in found]
