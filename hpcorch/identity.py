"""Content-addressed identity: canonical JSON, code versions and run keys.

The run key is the same for the same experiment on every provider: it hashes
the resolved config (without Hydra's bookkeeping and without the settings
that only say *where* a run executes), the code version, the image and the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcorch.runner import CommandRunner, run_command

#: Top-level config keys that say where or how a run executes, not what it computes.
DEFAULT_KEY_EXCLUDE: tuple[str, ...] = ("hydra", "hpcorch", "provider", "container", "resources")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats by repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(text: str, length: int = 16) -> str:
    """Hex SHA-256 prefix of a text."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def experiment_config(
    config: Mapping[str, Any], exclude: Iterable[str] = DEFAULT_KEY_EXCLUDE
) -> dict[str, Any]:
    """The part of a resolved config that defines the experiment."""
    dropped = set(exclude)
    return {k: v for k, v in config.items() if k not in dropped}


def run_key(
    config: Mapping[str, Any],
    *,
    code_version: str,
    seed: int,
    image: str | None = None,
    exclude: Iterable[str] = DEFAULT_KEY_EXCLUDE,
    upstream: Iterable[str] = (),
) -> str:
    """The content-addressed id of one run; `upstream`: the keys of the pipeline runs it
    consumes (in a pipeline a changed upstream run makes a new downstream run)."""
    payload: dict[str, Any] = {
        "config": experiment_config(config, exclude),
        "code": code_version,
        "image": image or "",
        "seed": int(seed),
    }
    consumed = sorted(upstream)
    if consumed:  # absent otherwise: a run outside a pipeline keeps the key it always had
        payload["upstream"] = consumed
    return short_hash(canonical_json(payload))


@dataclass(frozen=True)
class CodeVersion:
    """Which code ran: a git commit, whether the tree was dirty and a hash of the diff."""

    commit: str = ""
    dirty: bool = False
    diff_hash: str = ""
    root: str = ""

    def label(self) -> str:
        """`git:abc123def456`, `git:abc123def456+dirty:0f1e…` or `nogit`."""
        if not self.commit:
            return "nogit"
        base = f"git:{self.commit[:12]}"
        return f"{base}+dirty:{self.diff_hash[:12]}" if self.dirty else base


def code_version(directory: str, runner: CommandRunner = run_command) -> CodeVersion:
    """The git state of the repository holding `directory` (tracked files only)."""
    try:
        top = runner(["git", "-C", directory, "rev-parse", "--show-toplevel"])
    except FileNotFoundError:  # no git here (e.g. in a container image): the spec carries it
        return CodeVersion()
    if top.returncode != 0:
        return CodeVersion()
    root = top.stdout.strip()
    head = runner(["git", "-C", root, "rev-parse", "HEAD"])
    if head.returncode != 0:  # a repository without commits yet
        return CodeVersion(root=root)
    diff = runner(["git", "-C", root, "diff", "HEAD", "--binary"])
    text = diff.stdout if diff.returncode == 0 else ""
    return CodeVersion(
        commit=head.stdout.strip(),
        dirty=bool(text),
        diff_hash=short_hash(text, 64) if text else "",
        root=root,
    )


def script_directory(argv0: str) -> str:
    """The directory of the running script, the place whose git state is the code version."""
    return os.path.dirname(os.path.abspath(argv0)) or os.getcwd()


def app_code_version(script: str) -> str:
    """The code version label of the app: its git state, plus a hash of the script
    itself when git does not track it (else editing an untracked app would keep its
    run keys, and reuse the records of the code it replaced)."""
    path = os.path.abspath(script)
    version = code_version(script_directory(path))
    label = version.label()
    if not version.root or not _tracked(version.root, path):
        try:
            label += "+app:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        except OSError:
            pass
    return label


def _tracked(root: str, path: str) -> bool:
    done = run_command(["git", "-C", root, "ls-files", "--error-unmatch", "--", path])
    return done.returncode == 0
