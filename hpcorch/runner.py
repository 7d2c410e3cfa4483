"""The one seam through which every external command runs.

Code that calls an engine (git, sbatch, sacct, mpirun, podman) takes a
`CommandRunner`; unit tests pass a fake, integration tests the real one.
Commands are argv lists: nothing here ever goes through a shell.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol


class CommandRunner(Protocol):
    """Runs one argv and returns its completed process (text mode)."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]: ...


def run_command(
    argv: Sequence[str],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """The real runner: `subprocess.run` with captured text output, never a shell."""
    return subprocess.run(
        list(argv),
        input=input,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        timeout=timeout,
        capture_output=True,
        text=True,
        check=False,
    )
