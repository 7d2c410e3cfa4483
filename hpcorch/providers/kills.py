"""What can be said about a run that died from a signal nobody explained.

A run killed with SIGKILL leaves no traceback and no record: the engine reports
only "signal 9". Two facts make that actionable: who sent it, where the machine
knows (the kernel's OOM killer counts its kills in /proc/vmstat and in the cgroup's
memory.events), and how much memory the run had used (the child's rusage).
"""

from __future__ import annotations

import signal
from pathlib import Path

#: Kernel counters of OOM kills: system-wide, and this process's cgroup subtree (v2).
VMSTAT = Path("/proc/vmstat")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def oom_kill_count() -> int | None:
    """How many processes the kernel's OOM killer has killed so far: system-wide from
    /proc/vmstat (cgroup limits included), else this process's cgroup's count; None
    when neither is readable."""
    count = _vmstat_oom_kills()
    return count if count is not None else _cgroup_oom_kills()


def _vmstat_oom_kills() -> int | None:
    try:
        return _counter(VMSTAT.read_text(), "oom_kill")
    except OSError:
        return None


def _counter(text: str, key: str) -> int | None:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _cgroup_oom_kills() -> int | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            candidate = CGROUP_ROOT / path.lstrip("/") / "memory.events"
        elif "memory" in controllers.split(","):  # cgroup v1
            candidate = CGROUP_ROOT / "memory" / path.lstrip("/") / "memory.oom_control"
        else:
            continue
        try:
            found = _counter(candidate.read_text(), "oom_kill")
        except OSError:
            continue
        if found is not None:
            return found
    return None


def oom_killed(returncode: int, oom_before: int | None, oom_after: int | None) -> bool:
    """True when a run that ended with `returncode` was, most likely, killed by the
    kernel's OOM killer: SIGKILL, and the OOM-kill counter grew while it ran (False when
    the counters are not readable: it cannot be told)."""
    return (returncode == -signal.SIGKILL and oom_before is not None
            and oom_after is not None and oom_after > oom_before)


def memory_used(max_rss_kb: int | None) -> str:
    """`it had used 123.4 MiB at its peak (max RSS)`, or '' when unknown."""
    if not max_rss_kb:
        return ""
    return f"it had used {max_rss_kb / 1024:.1f} MiB at its peak (max RSS)"


def kill_reason(returncode: int, oom_before: int | None, oom_after: int | None,
                max_rss_kb: int | None) -> str:
    """The failure reason of a run that ended with `returncode` (negative: the signal
    that killed it), for runs hpcorch did not cancel; '' for an ordinary exit code."""
    if returncode >= 0:
        return ""
    sig = -returncode
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    used = memory_used(max_rss_kb)
    if sig != signal.SIGKILL:
        return f"killed by {name} (signal {sig})" + (f"; {used}" if used else "")
    if oom_before is None or oom_after is None:
        who = "who sent it cannot be known here (the kernel's OOM-kill counters are not readable)"
    elif oom_killed(returncode, oom_before, oom_after):
        who = (f"by the kernel's OOM killer: it killed {oom_after - oom_before} process(es) "
               "on this machine while the run ran (the kernel's oom_kill counter), "
               "most likely this one")
    else:
        who = ("not by hpcorch and not by the kernel's OOM killer (it counted no kill while "
               "the run ran): the run itself or another process sent it")
    return f"killed by SIGKILL (signal 9), {who}" + (f"; {used}" if used else "")
