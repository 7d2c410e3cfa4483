"""hpcorch's use of submitit: the pinned version, the dry run equal to what submitit itself
submits, hpcorch's task as a submitit Checkpointable, submitit's real requeue handler, and
no private submitit name outside the one pinned module."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

import hpcorch
from hpcorch import checkpoint
from hpcorch.providers.slurm.accounting import ClusterLimits
from hpcorch.providers.slurm.script import plan_arrays
from hpcorch.providers.slurm.settings import SlurmSettings
from hpcorch.providers.slurm.submission import executor_for, submit_array, write_array_files
from hpcorch.providers.slurm.submitit_script import PINNED_SUBMITIT, render
from hpcorch.providers.slurm.task import SubmititTask
from hpcorch.spec import RunSpec

PACKAGE = Path(hpcorch.__file__).parent
PINNED_MODULE = PACKAGE / "providers" / "slurm" / "submitit_script.py"


def test_submitit_is_the_pinned_version() -> None:
    """submitit_script.py calls a private submitit function: another release must fail here
    (then check `_make_sbatch_string` and `_submitit_command_str` and move the pin)."""
    assert submitit.__version__ == PINNED_SUBMITIT


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sbatch` that accepts every script as job 7 (logging its argv), `srun` that exists
    (submitit.SlurmExecutor refuses to start without one), `scontrol` that logs; first on
    PATH so the real Slurm client is never reached."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'echo "$@" >> {tmp_path}/sbatch.log\necho "Submitted batch job 7"',
        "srun": 'echo "fake srun" >&2; exit 1',
        "scontrol": f'echo "$@" >> {tmp_path}/scontrol.log',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def specs(tmp_path: Path, n: int, code: str = "pass") -> list[RunSpec]:
    return [RunSpec(run_key=f"k{i}", sweep_id="sw", num=i, overrides=(), config={}, seed=i,
                    run_dir=str(tmp_path / "sweep" / str(i)),
                    command=(sys.executable, "-c", code), workdir=str(tmp_path))
            for i in range(n)]


@pytest.mark.parametrize("n", [1, 3])
def test_render_is_the_script_submitit_submits(tmp_path: Path, fake_bin: Path, n: int) -> None:
    settings = SlurmSettings(partition="p", extra={"reservation": "r1", "mail_type": "END"},
                             setup=("echo 'set up'",))
    [plan] = plan_arrays(specs(tmp_path, n), settings, ClusterLimits())
    dry = render(executor_for(plan, settings, sys.executable, offline=True), n)
    job_id = submit_array(plan, settings, sys.executable, lambda _: None, lambda _: None)
    assert job_id == "7"
    submitted = Path(plan.submitit_dir) / "7_submission.sh"  # submitit's own copy
    assert submitted.read_text() == dry
    [argv] = (tmp_path / "sbatch.log").read_text().splitlines()
    assert Path(argv).name.startswith(".submission_file_")  # `sbatch <script>`, no options
    assert ("#SBATCH --array=0-2%3" in dry.splitlines()) is (n == 3)


def test_the_task_is_a_checkpointable_that_pickles() -> None:
    task = SubmititTask("/sweep/.hpcorch/slurm/a0x1.json")
    assert isinstance(task, submitit.helpers.Checkpointable)
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, pickle.loads)):
        again = loads(dumps(task))
        assert isinstance(again, SubmititTask) and again.map_path == task.map_path
    resubmit = task.checkpoint(4)  # what submitit's handler pickles for the requeued job
    assert isinstance(resubmit, submitit.helpers.DelayedSubmission)
    assert resubmit.function is task and resubmit.args == (4,) and resubmit.kwargs == {}


#: A run that saves a checkpoint when told of its time limit (SIGUSR1), then stops.
SAVES_ON_SIGNAL = ("import os, time\n"
                   "from hpcorch import checkpoint\n"
                   "checkpoint.on_signal(lambda: checkpoint.save({'step': 3}))\n"
                   "open(os.path.join(os.environ['RUN_DIR'], 'started'), 'w').close()\n"
                   "time.sleep(60)\n")


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the job ended ({proc.returncode}) before {path} appeared: "
                        f"{proc.stderr.read().decode()[-3000:] if proc.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.05)


def test_submitits_own_handler_requeues_a_checkpointed_run(tmp_path: Path,
                                                           fake_bin: Path) -> None:
    """The job as Slurm starts it (`python -u -m submitit.core._submit FOLDER`, the pickle
    submitit wrote): SIGUSR2 reaches the task, the run sees SIGUSR1 and saves, and
    submitit's real checkpoint-and-requeue handler runs `scontrol requeue 7` once."""
    settings = SlurmSettings(max_requeues=1)
    runs = [dataclasses.replace(spec, env=(("RUN_DIR", spec.run_dir),))
            for spec in specs(tmp_path, 1, SAVES_ON_SIGNAL)]
    [plan] = plan_arrays(runs, settings, ClusterLimits())
    data = write_array_files(plan, settings)
    Path(plan.map_path).write_text(json.dumps({**data, "requeue_wait_s": 0}))
    assert submit_array(plan, settings, sys.executable, lambda _: None, lambda _: None) == "7"
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "7",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS": "1",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node7",
           "SLURMD_NODENAME": "node7", "SLURM_RESTART_COUNT": "0"}
    proc = subprocess.Popen([sys.executable, "-u", "-m", "submitit.core._submit",
                             plan.submitit_dir], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _wait_for(Path(runs[0].run_dir) / "started", proc)
        proc.send_signal(signal.SIGUSR2)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    text = err.decode()
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "7"], text
    assert "Caught signal SIGUSR2" in text and "requeueing job 7" in text
    assert checkpoint.usage(runs[0].run_dir).saved, text


def _private_submitit_uses(path: Path) -> list[str]:
    """`from submitit... import _x`, `import submitit._x`, and `<submitit module>._x`."""
    tree = ast.parse(path.read_text(), str(path))
    aliases: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "submitit":
                    aliases.add((alias.asname or alias.name).split(".")[0])
                    found += [f"import {alias.name}" for part in alias.name.split(".")
                              if part.startswith("_")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "submitit":
            module = node.module or ""
            if any(part.startswith("_") for part in module.split(".")):
                found.append(f"from {module} import ...")
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"from {module} import {alias.name}")
                else:
                    aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(ast.unparse(node))
    return found


def test_no_private_submitit_name_outside_the_pinned_module() -> None:
    offenders = {str(p.relative_to(PACKAGE)): uses for p in sorted(PACKAGE.rglob("*.py"))
                 if p != PINNED_MODULE and (uses := _private_submitit_uses(p))}
    assert offenders == {}
    # the scan sees the one use it allows
    assert _private_submitit_uses(PINNED_MODULE) == [
        "submitit_slurm._make_sbatch_string"]


def test_the_scan_finds_each_kind_of_private_use(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import submitit\nfrom submitit.core import utils\n"
                      "from submitit.slurm.slurm import _make_sbatch_string\n"
                      "from submitit.core._submit import main\n"
                      "submitit.SlurmExecutor._submit_command\nutils._private\n"
                      "submitit.helpers.Checkpointable\nother._fine\n")
    assert _private_submitit_uses(sample) == [
        "from submitit.slurm.slurm import _make_sbatch_string",
        "from submitit.core._submit import ...", "submitit.SlurmExecutor._submit_command",
        "utils._private"]
