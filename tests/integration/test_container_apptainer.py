"""Real Apptainer, wherever it is on PATH: the rendered commands executed.

Apptainer cannot be installed on this project's CI machine (not in Debian 12,
no PyPI package ships the runtime), so these tests SKIP when `apptainer` is
missing, in CI too (they do not use require_service, which would fail there);
tests/unit/test_container_apptainer.py pins the rendered commands instead.
With apptainer present they convert the podman/docker image to a SIF (or use
HPCORCH_TEST_SIF) and run a sweep inside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.integration.helpers import records, run

pytestmark = [pytest.mark.integration, pytest.mark.container]

IMAGE = os.environ.get("HPCORCH_TEST_IMAGE", "localhost/hpcorch:latest")


@pytest.fixture(scope="module")
def sif(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("apptainer") is None:
        pytest.skip("apptainer is not on PATH (it cannot be installed on this machine; "
                    "its commands are pinned by tests/unit/golden/apptainer_*.txt)")
    given = os.environ.get("HPCORCH_TEST_SIF")
    if given:
        return given
    runtime = shutil.which("podman") or shutil.which("docker")
    require_service(runtime is not None, "podman or docker (to build the SIF)",
                    "run scripts/podman-up.sh, or set HPCORCH_TEST_SIF")
    assert runtime is not None
    out = tmp_path_factory.mktemp("sif")
    archive, target = out / "image.tar", out / "hpcorch.sif"
    if os.path.basename(runtime) == "podman":
        subprocess.run([runtime, "save", "--format", "oci-archive", "-o", str(archive), IMAGE],
                       check=True, timeout=600)
        source = f"oci-archive://{archive}"
    else:
        subprocess.run([runtime, "save", "-o", str(archive), IMAGE], check=True, timeout=600)
        source = f"docker-archive://{archive}"
    subprocess.run(["apptainer", "build", str(target), source], check=True, timeout=1200)
    return str(target)


def test_sweep_inside_the_sif_equals_the_host(app_dir: Path, sif: str) -> None:
    common = ("-m", "lr=0.1,0.01", "epochs=5", "hpcorch.progress=off")
    host = run(app_dir, *common, "hydra.sweep.dir=sweeps/host", script="train.py")
    boxed = run(app_dir, *common, "hydra.sweep.dir=sweeps/sif", "container=apptainer",
                f"container.image={sif}", script="train.py", timeout=600)
    assert host.returncode == 0 and boxed.returncode == 0, boxed.stdout + boxed.stderr
    for outside, inside in zip(records(app_dir / "sweeps" / "host"),
                               records(app_dir / "sweeps" / "sif"), strict=True):
        assert inside["metrics"] == outside["metrics"]
        assert inside["fingerprint"]["executable"] == "/opt/hpcorch/bin/python"
        assert inside["fingerprint"]["container"]["digest"].startswith("sha256:")


def test_check_runs_inside_the_sif(app_dir: Path, sif: str) -> None:
    argv = [sys.executable, "-m", "hpcorch", "container", "check", "--runtime", "apptainer",
            "--image", sif, "--app", "train.py"]
    done = subprocess.run(argv, cwd=app_dir, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "imports" in done.stdout
