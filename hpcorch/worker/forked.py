"""What every forked run does to become a run: one implementation for the local
provider's warm workers, packed Slurm array tasks and Ray's warm tasks.

A forked child takes a session of its own (so cancelling kills its whole
tree), default signal handlers, the run's stdout/stderr files, working
directory and environment; it then runs its body and exits with the body's
exit code whatever happens, never returning into the parent's code.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import runpy
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import NoReturn

from hpcorch._hydra.warm import skip_mode_probe

__all__ = ["become_run", "die_with_parent", "exit_with", "run_script_as_main", "signal_run",
           "skip_mode_probe"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux), so a run
    forked by an orchestrator or a worker that was killed does not run on unseen."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def become_run(out_fd: int, err_fd: int, env: Mapping[str, str], cwd: str | None = None, *,
               signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM),
               rebind_streams: bool = False) -> None:
    """Turn this freshly forked process into the run's process."""
    os.setsid()
    die_with_parent()
    for sig in signals:
        signal.signal(sig, signal.SIG_DFL)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    if rebind_streams:  # the parent's sys.stdout may not be file descriptor 1 (Ray workers)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    if cwd:
        os.chdir(cwd)
    environment = dict(env)  # copied first: `env` may be a view of os.environ
    os.environ.clear()
    os.environ.update(environment)


def exit_with(body: Callable[[], int]) -> NoReturn:
    """Run `body` and `os._exit` with its code (1 and a traceback if it raised)."""
    code = 1
    try:
        code = body()
    except BaseException:  # the child must report, then exit, whatever happened
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_script_as_main(argv: list[str]) -> int:
    """Run `argv[0]` as `__main__` with `argv` as sys.argv, as `python ARGV...` would;
    returns the exit code it would have had."""
    sys.argv = list(argv)
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def signal_run(pid: int, sig: int) -> None:
    """Signal a run's whole process group (its session), or the process alone if it has
    not called setsid() yet; a run that is already gone is not an error."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
