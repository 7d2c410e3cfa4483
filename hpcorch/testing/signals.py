"""Helpers that prove a signal sent to a job reaches the Python process inside its container.

Used by tests/integration/test_container_podman.py on the local provider, and
meant for the Slurm requeue test (`scancel --signal=USR2` / `--signal=B:USR2@60`
with podman): run `probe_argv(...)` as the job's command (wrapped like any
run), wait for `ready`, signal the job, and read what the code saw:

    probe = SignalProbe(run_dir)
    spec = dataclasses.replace(spec, command=probe.argv())
    ...submit the wrapped spec...
    probe.wait_ready(); os.killpg(process_group_of(run_dir, "podman"), signal.SIGUSR2)
    assert probe.wait_seen("SIGUSR2")

Everything is files in the run directory, so it works across the container
boundary and across nodes (shared file system), without any network.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hpcorch.jobenv import RESTART_ENV

_PROBE = """\
import os, signal, sys, time
here = {dir!r}
restart = int(os.environ.get({restart_env!r}, "0") or 0)
with open(os.path.join(here, "signals.starts"), "a") as handle:
    handle.write("%d %d %s\\n" % (restart, os.getpid(), sys.executable))
if restart and {finish_after_restart}:
    sys.exit(0)  # the requeued incarnation: resumed from its "checkpoint", done
def note(sig, frame):
    with open(os.path.join(here, "signals.seen"), "a") as handle:
        handle.write(signal.Signals(sig).name + " pid=%d\\n" % os.getpid())
    if signal.Signals(sig).name in {exit_on!r}:
        sys.exit(0)  # e.g. the time-limit warning: "checkpoint saved", leave for the requeue
    if sig == signal.SIGTERM:
        sys.exit({term_exit})
for name in {signals!r}:
    signal.signal(getattr(signal, name), note)
with open(os.path.join(here, "signals.ready"), "w") as handle:
    handle.write("%d %s\\n" % (os.getpid(), sys.executable))
deadline = time.monotonic() + {timeout}
while time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(3)
"""


@dataclass(frozen=True)
class SignalProbe:
    """A program that records the signals it receives in `directory`.

    Files: `signals.starts` (one line per start: the restart count, pid,
    interpreter), `signals.ready` (handlers installed), `signals.seen` (one
    line per signal). It exits 0 on a signal in `exit_on`, `term_exit` on
    SIGTERM, and at once when started again after a requeue if
    `finish_after_restart`.
    """

    directory: str
    signals: tuple[str, ...] = ("SIGTERM", "SIGUSR2", "SIGUSR1", "SIGINT")
    timeout_s: float = 300.0
    term_exit: int = 0
    exit_on: tuple[str, ...] = ()
    finish_after_restart: bool = False

    def argv(self, python: str = sys.executable) -> tuple[str, ...]:
        """The command to run (a container wrapper replaces `python` with the image's)."""
        code = _PROBE.format(dir=self.directory, restart_env=RESTART_ENV,
                             signals=list(self.signals),
                             timeout=self.timeout_s, term_exit=self.term_exit,
                             exit_on=list(self.exit_on),
                             finish_after_restart=self.finish_after_restart)
        return (python, "-c", code)

    @property
    def ready_file(self) -> Path:
        """Written once the handlers are installed: `<pid> <interpreter>`."""
        return Path(self.directory) / "signals.ready"

    @property
    def seen_file(self) -> Path:
        """One line per signal received: `SIGUSR2 pid=7`."""
        return Path(self.directory) / "signals.seen"

    def starts(self) -> list[tuple[int, str]]:
        """(restart count, interpreter) of every start so far (jobenv.RESTART_ENV)."""
        path = Path(self.directory) / "signals.starts"
        if not path.exists():
            return []
        rows = [line.split() for line in path.read_text().splitlines() if line]
        return [(int(row[0]), row[2]) for row in rows]

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Wait until the probe runs; returns its ready line."""
        wait_for(lambda: self.ready_file.exists() and self.ready_file.read_text().endswith("\n"),
                 timeout, f"probe never started ({self.ready_file})")
        return self.ready_file.read_text().strip()

    def seen(self) -> list[str]:
        """Names of the signals received so far, in order."""
        if not self.seen_file.exists():
            return []
        return [line.split()[0] for line in self.seen_file.read_text().splitlines() if line]

    def wait_seen(self, name: str, timeout: float = 60.0) -> bool:
        """True once `name` was received (False after `timeout` seconds)."""
        try:
            wait_for(lambda: name in self.seen(), timeout, "")
        except TimeoutError:
            return False
        return True


def wait_for(condition: object, timeout: float, message: str) -> None:
    """Poll `condition()` with backoff until true; TimeoutError(message) after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def process_group_of(marker: str, program: str) -> int:
    """The process group of the `program` process (e.g. podman, the container's client)
    whose command line contains `marker` (e.g. a run directory): where a provider's
    signal to the job lands. Processes inside the container match the marker too,
    so the program name is what picks the wrapper, never the code it wraps."""
    for entry in sorted((e for e in os.listdir("/proc") if e.isdigit()), key=int):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0].decode(errors="replace")) != program:
            continue
        if any(marker.encode() in arg for arg in argv[1:]):
            try:
                return os.getpgid(int(entry))
            except ProcessLookupError:
                continue
    raise LookupError(f"no {program} process with {marker!r} in its command line")
