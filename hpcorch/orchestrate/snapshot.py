"""Code snapshots: the git-tracked code, copied into the sweep directory before submission.

Queued jobs run from the snapshot, so editing train.py after submitting does
not change what they run. The snapshot holds the working-tree content of
every tracked file (uncommitted edits included), which is exactly what the
code version (commit + diff hash) in the run key describes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hpcorch.identity import CodeVersion, code_version
from hpcorch.runner import CommandRunner, run_command
from hpcorch.store.records import META_DIR, atomic_write_json

SNAPSHOT_DIR = "code"


@dataclass(frozen=True)
class Snapshot:
    """Where the copy lives and which code it is."""

    root: str
    """The copy of the repository root."""
    script: str
    """The app's script inside the copy."""
    version: CodeVersion
    files: int


def snapshot_code(
    script: str, sweep_dir: str, runner: CommandRunner = run_command
) -> Snapshot | None:
    """Copy the tracked files of the repository holding `script`; None outside git."""
    script_path = Path(script).resolve()
    version = code_version(str(script_path.parent), runner)
    if not version.root:
        return None
    listing = runner(["git", "-C", version.root, "ls-files", "-z", "--cached"])
    if listing.returncode != 0:
        return None
    root = Path(version.root)
    target = Path(sweep_dir) / META_DIR / SNAPSHOT_DIR
    relative_script = script_path.relative_to(root)
    files = [name for name in listing.stdout.split("\0") if name]
    if str(relative_script) not in files:
        return None  # the app itself is not tracked: running a snapshot would lose it
    if target.exists():  # a later batch of the same sweep: the snapshot is already there
        return Snapshot(str(target), str(target / relative_script), version, len(files))
    staging = target.with_name(f".{SNAPSHOT_DIR}.tmp{os.getpid()}")
    for name in files:
        source = root / name
        if not source.is_file():  # deleted in the working tree, or a submodule
            continue
        destination = staging / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    atomic_write_json(
        staging / ".hpcorch-snapshot.json",
        {
            "commit": version.commit,
            "dirty": version.dirty,
            "diff_hash": version.diff_hash,
            "label": version.label(),
            "source": str(root),
            "files": len(files),
        },
    )
    os.replace(staging, target)
    return Snapshot(str(target), str(target / relative_script), version, len(files))
