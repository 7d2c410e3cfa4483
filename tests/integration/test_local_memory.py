"""A run over its memory limit on provider=local: MemoryError, FAILED as OOM.

provider=local starts a one-rank run with `resources.mem_gb` as its RLIMIT_DATA, so
300 MB under a 0.25 GB request fails inside the run, as it would under a scheduler's
limit; 40 MB under the same request runs to the end. Both start paths: cold (the
portable command) and warm (a fork of this process running the job).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from hpcorch.providers.local import LocalProvider, LocalSettings
from hpcorch.spec import FailureClass, Resources, RunSpec, RunState
from hpcorch.testing import contract_spec, wait_terminal
from tests.integration.helpers import hpcorch_cli, only_sweep_dir, records, run

pytestmark = [pytest.mark.integration]

LIMIT = Resources(mem_gb=0.25, time_min=5)


def touch(mb: int) -> str:
    """Python that makes `mb` MB resident (every page written)."""
    return (f"block = bytearray({mb} * 2**20)\nfor i in range(0, len(block), 4096):\n"
            f"    block[i] = 1\nprint('held {mb} MB', flush=True)\n")


def _in_child(spec: RunSpec) -> int:
    """A warm executor: the forked child runs the spec's command (it inherits the limit)."""
    return subprocess.run(list(spec.command), check=False).returncode


@pytest.mark.parametrize("warm", [False, True])
def test_run_over_its_memory_limit_fails_with_memory_error(tmp_path: Path, warm: bool) -> None:
    """300 MB under 0.25 GB: MemoryError, OOM; 40 MB under the same limit succeeds."""
    provider = LocalProvider(LocalSettings(workers=2, warm=warm), executor=_in_child)
    specs = [dataclasses.replace(contract_spec(tmp_path, num), resources=LIMIT,
                                 command=(sys.executable, "-c", touch(mb)))
             for num, mb in ((0, 300), (1, 40))]
    try:
        statuses = wait_terminal(provider, provider.submit(specs), 60)
    finally:
        provider.close()
    assert [s.state for s in statuses] == [RunState.FAILED, RunState.SUCCEEDED], statuses
    context = statuses[0].context
    assert context is not None and context.failure_class is FailureClass.OOM, context
    assert "MemoryError" in context.stderr_tail and context.exit_code == 1
    assert context.peak_mem_gb is not None and context.peak_mem_gb < 0.25
    held = (Path(specs[1].run_dir) / ".hpcorch" / "stdout.log").read_text()
    assert "held 40 MB" in held


HOG_APP = '''
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    block = bytearray(cfg.mb * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    return {"ok": 1.0}

if __name__ == "__main__":
    main()
'''


@pytest.mark.parametrize("warm", ["true", "false"])
def test_sweep_records_the_memory_error(app_dir: Path, warm: str) -> None:
    """The real launcher's runs, warm (a fork of the orchestrator) and cold; no retry."""
    _hog_app(app_dir)
    done = run(app_dir, "-m", "mb=40,300", "resources.mem_gb=0.25", f"provider.warm={warm}",
               "hpcorch.retry.memory=0", "hpcorch.progress=off", script="hog.py", timeout=120)
    assert done.returncode != 0, done.stderr[-3000:]
    ok, hog = records(only_sweep_dir(app_dir))
    assert ok["state"] == "SUCCEEDED", ok
    assert hog["state"] == "FAILED" and hog["error"]["type"] == "MemoryError", hog
    assert hog["resources"]["mem_gb"] == 0.25


def test_memory_retry_succeeds_and_show_lists_both_attempts(app_dir: Path) -> None:
    """The default policy runs the MemoryError again with twice the memory; `hpcorch
    show` then lists the failed attempt and the retry that succeeded."""
    _hog_app(app_dir)
    done = run(app_dir, "-m", "mb=300", "resources.mem_gb=0.25", "hpcorch.progress=off",
               script="hog.py", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    [hog] = records(only_sweep_dir(app_dir))
    assert hog["state"] == "SUCCEEDED" and hog["attempt"] == 1, hog
    assert hog["resources"]["mem_gb"] == 0.5
    show = hpcorch_cli(app_dir, "show", hog["run_key"])
    assert show.returncode == 0, show.stderr
    lines = show.stderr.splitlines()
    assert lines[0].startswith("2 attempts of run"), show.stderr
    assert lines[1].split()[:4] == ["attempt", "0", "FAILED", "OOM"], show.stderr
    assert "mem_gb=0.25" in lines[1] and "MemoryError" in lines[1]
    assert lines[2].split()[:3] == ["attempt", "1", "SUCCEEDED"] and "mem_gb=0.5" in lines[2]


def _hog_app(app_dir: Path) -> None:
    (app_dir / "hog.py").write_text(HOG_APP)
    (app_dir / "conf" / "config.yaml").write_text(
        (app_dir / "conf" / "config.yaml").read_text() + "mb: 0\n")
