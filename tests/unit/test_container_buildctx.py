"""The image's build context: pins follow the host, the hpcorch wheel is reproducible."""

from __future__ import annotations

import zipfile
from importlib import metadata
from pathlib import Path

from hpcorch.containers.buildctx import (
    _prune,
    build_hpcorch_wheel,
    context_hash,
    read_requirements,
    requirement_pins,
)

ROOT = Path(__file__).resolve().parents[2]


def test_pins_follow_the_installed_versions_transitively() -> None:
    pins = requirement_pins(["hydra-core>=1.3", "surely-not-installed-pkg>=1"])
    assert f"hydra-core=={metadata.version('hydra-core')}" in pins
    assert f"omegaconf=={metadata.version('omegaconf')}" in pins  # hydra-core's dependency
    assert "surely-not-installed-pkg>=1" in pins  # left to pip as written


def test_markers_that_do_not_apply_are_skipped() -> None:
    assert requirement_pins(['numpy; python_version < "3.0"']) == []


def test_requirements_file_comments_are_ignored(tmp_path: Path) -> None:
    req = tmp_path / "r.txt"
    req.write_text("# research deps\nnumpy  # arrays\n\nscipy>=1\n")
    assert read_requirements(req) == ["numpy", "scipy>=1"]
    assert read_requirements(tmp_path / "missing.txt") == []


def test_hpcorch_wheel_is_complete_and_reproducible(tmp_path: Path) -> None:
    first = build_hpcorch_wheel(ROOT, tmp_path / "a")
    second = build_hpcorch_wheel(ROOT, tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert "hpcorch/conf/container/podman.yaml" in names
    assert "hydra_plugins/hpcorch_launcher/hpcorch_launcher.py" in names
    assert not any("__pycache__" in n for n in names)
    info = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert info and b"hpcorch = hpcorch.cli:main" in zipfile.ZipFile(first).read(info[0])
    record = [n for n in names if n.endswith("RECORD")]
    assert len(zipfile.ZipFile(first).read(record[0]).splitlines()) == len(names)


def test_context_hash_changes_with_any_input(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "wheels").mkdir(parents=True)
    (ctx / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"a")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\n")
    before = context_hash(ctx, dockerfile)
    dockerfile.write_text("FROM y\n")
    assert context_hash(ctx, dockerfile) != before
    dockerfile.write_text("FROM x\n")
    (ctx / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"b")
    assert context_hash(ctx, dockerfile) != before


def test_prune_drops_unpinned_versions(tmp_path: Path) -> None:
    for name in ("numpy-2.0.0-cp311-cp311-linux_x86_64.whl", "numpy-1.0.0-py3-none-any.whl",
                 "PyYAML-6.0.1-cp311-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    _prune(tmp_path, ["numpy==2.0.0", "pyyaml==6.0.1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "PyYAML-6.0.1-cp311-none-any.whl", "numpy-2.0.0-cp311-cp311-linux_x86_64.whl"]
