"""Fingerprint additions: untracked sources, container, GPU (nvidia-smi), MPI, torch."""

from __future__ import annotations

import subprocess
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hpcorch.repro.fingerprint import (
    container_info,
    fingerprint,
    gpu_info,
    mpi_info,
    untracked_sources,
)


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.org")
    git(root, "config", "user.name", "t")
    (root / ".gitignore").write_text("ignored/\n")
    (root / "train.py").write_text("print('tracked')\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "init")
    return root


def test_untracked_source_files_are_hashed_outputs_and_data_are_not(repo: Path) -> None:
    assert untracked_sources(str(repo)) == {"count": 0, "hash": "", "files": [], "skipped": 0}
    (repo / "helper.py").write_text("X = 1\n")
    (repo / "conf").mkdir()
    (repo / "conf" / "extra.yaml").write_text("a: 1\n")
    (repo / "data.csv").write_text("1,2\n")                 # not a source suffix
    (repo / "blob.py").write_bytes(b"\0binary")              # binary: skipped
    (repo / "ignored").mkdir()
    (repo / "ignored" / "x.py").write_text("ignored by .gitignore\n")
    run_dir = repo / "multirun" / "2026" / "0"               # a Hydra run directory
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("lr: 0.1\n")
    (run_dir / "model.yaml").write_text("written by the run\n")
    (repo / "multirun" / "2026" / "multirun.yaml").write_text("sweep\n")
    first = untracked_sources(str(repo))
    assert first["files"] == ["conf/extra.yaml", "helper.py"]
    assert first["count"] == 2 and first["skipped"] == 1 and len(first["hash"]) == 16
    (repo / "helper.py").write_text("X = 2\n")
    assert untracked_sources(str(repo))["hash"] != first["hash"]


def test_untracked_listing_failure_is_reported_not_raised(tmp_path: Path) -> None:
    assert "error" in untracked_sources(str(tmp_path / "not-a-repo"))


def test_fingerprint_has_git_untracked_and_every_section(repo: Path) -> None:
    (repo / "new.py").write_text("pass\n")
    fp = fingerprint(str(repo))
    assert fp["git"]["untracked_count"] == 1 and fp["git"]["untracked_files"] == ["new.py"]
    for section in ("python", "packages", "git", "container", "host", "cpu", "gpu", "mpi",
                    "hash_seed", "hash_seed_fixed"):
        assert section in fp
    assert fp["packages"]["numpy"]


def test_container_image_and_digest_come_from_the_environment() -> None:
    assert container_info({}) == {"image": "", "digest": ""}
    assert container_info({"HPCORCH_IMAGE": "localhost/hpcorch:1", "HPCORCH_IMAGE_DIGEST":
                           "sha256:abc"}) == {"image": "localhost/hpcorch:1",
                                              "digest": "sha256:abc"}


NVIDIA_SMI_HEADER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
"""


class FakeRunner:
    """Answers nvidia-smi like the real one (text captured from its documented format)."""

    def __init__(self, query_rc: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.query_rc = query_rc

    def __call__(self, argv: Sequence[str], **_: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if any(a.startswith("--query-gpu") for a in argv):
            out = ("NVIDIA H100 80GB HBM3, 550.54.15, 81559\n"
                   "NVIDIA H100 80GB HBM3, 550.54.15, 81559\n")
            return subprocess.CompletedProcess(list(argv), self.query_rc, out,
                                               "NVIDIA-SMI has failed" if self.query_rc else "")
        return subprocess.CompletedProcess(list(argv), 0, NVIDIA_SMI_HEADER, "")


def test_gpu_info_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    runner = FakeRunner()
    info = gpu_info(runner, which=lambda _: "/usr/bin/nvidia-smi")
    assert info == {"count": 2, "models": ["NVIDIA H100 80GB HBM3"], "driver": "550.54.15",
                    "memory_mib": "81559", "visible_devices": "0,1", "cuda": "12.4"}
    assert runner.calls[0][0] == "nvidia-smi"


def test_gpu_info_without_nvidia_smi_or_when_it_fails() -> None:
    assert gpu_info(FakeRunner(), which=lambda _: None) == {}
    failed = gpu_info(FakeRunner(query_rc=9), which=lambda _: "/usr/bin/nvidia-smi")
    assert failed == {"error": "NVIDIA-SMI has failed"}


def test_mpi_info_only_when_mpi4py_is_in_use() -> None:
    assert mpi_info({}) == {}
    mpi = types.SimpleNamespace(
        get_vendor=lambda: ("Open MPI", (4, 1, 4)),
        Get_library_version=lambda: "Open MPI v4.1.4, package: Debian OpenMPI\nmore\n",
        Get_version=lambda: (3, 1), Is_initialized=lambda: True, Is_finalized=lambda: False,
        COMM_WORLD=types.SimpleNamespace(Get_size=lambda: 4))
    info = mpi_info({"mpi4py": types.SimpleNamespace(__version__="4.1.2"), "mpi4py.MPI": mpi})
    assert info == {"mpi4py": "4.1.2", "vendor": "Open MPI", "vendor_version": "4.1.4",
                    "library": "Open MPI v4.1.4, package: Debian OpenMPI", "standard": "3.1",
                    "world_size": 4}
