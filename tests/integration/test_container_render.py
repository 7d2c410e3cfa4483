"""`container=apptainer` (and podman) through the real launcher in a dry run: the commands a
cluster user would run, rendered without the runtime (Apptainer is not installable here)."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import pytest

from tests.integration.helpers import run

pytestmark = pytest.mark.integration


def test_dry_run_renders_apptainer_commands_pinned_to_the_sif(app_dir: Path) -> None:
    sif = app_dir / "images" / "hpcorch.sif"
    sif.parent.mkdir()
    sif.write_bytes(b"not really a SIF, but content to hash")
    digest = hashlib.sha256(sif.read_bytes()).hexdigest()
    done = run(app_dir, "-m", "lr=0.1,0.01", "container=apptainer", f"container.image={sif}",
               "container.data=[/datasets/two_moons]", "hpcorch.dry_run=true", script="train.py")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if "apptainer exec" in line]
    assert len(lines) == 2
    argv = shlex.split(lines[0].split("&& ", 1)[1].rstrip(")"))
    cut = argv.index("apptainer")
    assert argv[cut:cut + 3] == ["apptainer", "exec", "--cleanenv"]
    assert ["--bind", "/datasets/two_moons:/datasets/two_moons:ro"] == argv[
        argv.index("/datasets/two_moons:/datasets/two_moons:ro") - 1:][:2]
    assert f"HPCORCH_IMAGE_DIGEST=sha256:{digest}" in argv
    image = argv.index(str(sif.parent / ".hpcorch-sif" / f"{digest}.sif"))
    assert argv[image + 1] == "python" and argv[image + 2].endswith("train.py")
    assert (sif.parent / ".hpcorch-sif" / f"{digest}.sif").exists()


def test_dry_run_without_the_image_still_renders(app_dir: Path) -> None:
    done = run(app_dir, "-m", "lr=0.1", "container=apptainer",
               "container.image=/nowhere/hpcorch.sif", "hpcorch.dry_run=true", script="train.py")
    assert done.returncode == 0, done.stderr
    assert "apptainer exec --cleanenv" in done.stdout
    assert "/nowhere/hpcorch.sif python" in done.stdout


def test_a_typo_in_the_container_node_stops_before_anything(app_dir: Path) -> None:
    done = run(app_dir, "-m", "lr=0.1", "container=podman", "+container.imgae=x",
               script="train.py")
    assert done.returncode != 0
    assert "container.imgae" in done.stderr and "did you mean 'image'" in done.stderr
