"""Shared fixtures: the repository root, a clean index per test, service requirements."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own index, never the developer's."""
    home = tmp_path / "hpcorch-home"
    monkeypatch.setenv("HPCORCH_HOME", str(home))
    return home


def require_service(available: bool, what: str, how: str) -> None:
    """Skip when a service is missing on a developer machine; fail in CI (CI=true)."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not available in CI: {how}")
    pytest.skip(f"{what} not available ({how})")


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A copy of the example app (train.py + conf/) in a fresh directory."""
    target = tmp_path / "app"
    target.mkdir()
    shutil.copy(ROOT / "train.py", target / "train.py")
    shutil.copytree(ROOT / "conf", target / "conf")
    return target
