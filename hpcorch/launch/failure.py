"""Which rank failed? Turning a multi-rank run's failure into a context that names it.

Three witnesses, best first: the launcher's own report at the end of the
run's stderr (mpirun names the first rank that exited non-zero or died of a
signal; srun names host and task), the rank files the worker wrote (host,
and the exception of a rank whose research code raised), and the provider's
placement (the host of every rank). The stderr tail becomes the failing
rank's own stderr when mpirun kept one per rank, or its own lines when srun
labelled every line with its rank (--label).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

from hpcorch.rankfiles import RankState, rank_stderr, read_rank_files
from hpcorch.spec import FailureContext, RunSpec
from hpcorch.store.records import STDERR_FILE, meta_dir, tail_text

_MPIRUN_EXIT = re.compile(r"Process name:\s*\[\[\d+,\d+\],(\d+)\]\s*\n\s*Exit code:\s*(-?\d+)")
_MPIRUN_SIGNAL = re.compile(
    r"process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+)")
# (?:\d+: )? : under `srun --label` the rank's own lines start with its rank.
_MPI_ABORT = re.compile(r"MPI_ABORT was invoked on rank (\d+) in communicator \S+\s+"
                        r"(?:\d+: )?with errorcode (-?\d+)")
_SRUN = re.compile(r"srun: error: (\S+): tasks? (\d+)[-,\d]*: (.*)")
_SRUN_EXIT = re.compile(r"Exited with exit code (\d+)")
#: What srun says of the ranks it stopped because another one failed (--kill-on-bad-exit).
_SRUN_STOPPED = ("Killed", "Terminated")
_LABEL = re.compile(r"^\s*(\d+): ?(.*)$")


@dataclass(frozen=True)
class LauncherReport:
    """What the launcher said about the first rank that failed."""

    rank: int
    host: str = ""
    exit_code: int | None = None
    signal: int | None = None


def parse_report(stderr: str) -> LauncherReport | None:
    """The failing rank named by mpirun's or srun's own messages, if any."""
    found: list[tuple[int, LauncherReport]] = []
    if m := _MPIRUN_EXIT.search(stderr):
        found.append((m.start(), LauncherReport(int(m[1]), exit_code=int(m[2]))))
    if m := _MPIRUN_SIGNAL.search(stderr):
        found.append((m.start(), LauncherReport(int(m[1]), m[2], signal=int(m[3]))))
    if m := _MPI_ABORT.search(stderr):
        found.append((m.start(), LauncherReport(int(m[1]), exit_code=int(m[2]))))
    srun = list(_SRUN.finditer(stderr))
    # srun may name a rank it killed before the one that failed: skip those when it can.
    if m := next((x for x in srun if x[3].strip() not in _SRUN_STOPPED), srun[0] if srun else None):
        code = _SRUN_EXIT.search(m[3])
        found.append((m.start(), LauncherReport(int(m[2]), m[1],
                                                exit_code=int(code[1]) if code else None)))
    return min(found, key=lambda pair: pair[0])[1] if found else None


def _labelled_tail(text: str, rank: int, lines: int = 20) -> str:
    """The last lines rank `rank` wrote into a shared `srun --label` stream, label removed."""
    mine = [m[2] for m in map(_LABEL.match, text.splitlines()) if m and int(m[1]) == rank]
    return "\n".join(mine[-lines:])


def rank_failure(spec: RunSpec, context: FailureContext,
                 rank_hosts: Sequence[str] = ()) -> FailureContext:
    """`context` of a failed run, completed with the failing rank, its host and its stderr."""
    run_dir = spec.run_dir
    stderr = tail_text(meta_dir(run_dir) / STDERR_FILE, lines=0)
    report = parse_report(stderr)
    files = {int(d.get("rank", -1)): d for d in read_rank_files(run_dir)}
    failed = [r for r, d in sorted(files.items()) if d.get("state") == RankState.FAILED]
    rank = report.rank if report is not None else (failed[0] if failed else None)
    size = spec.resources.tasks
    if rank is None:
        # Then the launcher itself failed (mpirun could not start its daemons...): its
        # own last words are the best hint there is.
        last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
        reason = context.reason or (f"one of {size} rank(s) failed; no launcher report names it"
                                    + (f"; stderr ends: {last[:200]}" if last else ""))
        return dataclasses.replace(context, reason=reason)
    info = files.get(rank, {})
    host = ((report.host if report else "") or str(info.get("host") or "")
            or (rank_hosts[rank] if rank < len(rank_hosts) else "") or context.node)
    how = ""
    if report is not None and report.signal is not None:
        how = f" died of signal {report.signal}"
    elif report is not None and report.exit_code is not None:
        how = f" exited {report.exit_code}"
    error = str(info.get("error") or "")
    reason = f"rank {rank} of {size} on {host or '?'}{how}" + (f": {error}" if error else "")
    stderr_tail = (tail_text(rank_stderr(run_dir, rank)) or _labelled_tail(stderr, rank)
                   or context.stderr_tail)
    return dataclasses.replace(
        context, node=host or context.node, reason=reason, stderr_tail=stderr_tail,
        signal=context.signal if report is None or report.signal is None else report.signal)
