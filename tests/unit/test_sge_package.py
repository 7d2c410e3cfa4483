"""The Grid Engine package loads its provider lazily, so an array task imports its module once."""

from __future__ import annotations

import subprocess
import sys


def test_task_module_runs_without_being_imported_twice() -> None:
    # The map file does not exist: the task fails, but only after runpy started it.
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "hpcorch.providers.sge.task",
         "/nonexistent/map.json"], capture_output=True, text=True, timeout=60, check=False)
    assert "RuntimeWarning" not in proc.stderr, proc.stderr
    assert "found in sys.modules" not in proc.stderr


def test_package_names_still_import() -> None:
    from hpcorch.providers.sge import SgeProvider, SgeSettings

    assert SgeProvider.__name__ == "SgeProvider"
    assert SgeSettings.__name__ == "SgeSettings"
