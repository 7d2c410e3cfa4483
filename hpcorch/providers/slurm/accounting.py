"""What Slurm says: `scontrol show config`, `sinfo`, `sacct -P` and `squeue` output, parsed.

Pure functions over text, so unit tests feed them recorded tables. Slurm's
job states map onto RunState here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from hpcorch.spec import FailureContext, RunState


@dataclass(frozen=True)
class ClusterLimits:
    """The cluster settings submission depends on, read once per provider."""

    max_array_size: int = 1001
    """MaxArraySize: array indices must stay below it (it caps the INDEX, not the count)."""
    max_job_count: int = 10000
    """MaxJobCount: the most jobs (array tasks count one each) slurmctld keeps."""
    accounting: bool = True
    """False when AccountingStorageType is none: sacct cannot answer, squeue must."""
    version: str = ""
    read_from_cluster: bool = True
    """False when these are defaults because `scontrol show config` could not be read."""
    node_cpus: int | None = None
    """CPUs of the largest node in the partition (`sinfo`), read only for multi-rank runs:
    more ranks x cpus per node than that need --overcommit. None: not known."""


def parse_config(text: str) -> ClusterLimits:
    """Limits from `scontrol show config` output (`Key = Value` lines)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()

    def number(key: str, default: int) -> int:
        match = re.match(r"\d+", values.get(key, ""))
        return int(match.group()) if match else default

    storage = values.get("AccountingStorageType", "accounting_storage/none")
    return ClusterLimits(
        max_array_size=number("MaxArraySize", 1001),
        max_job_count=number("MaxJobCount", 10000),
        accounting=storage not in ("accounting_storage/none", "(null)", ""),
        version=values.get("SLURM_VERSION", ""),
    )


#: `sinfo -h -N -o NODE_CPUS_FORMAT`: one line per node and partition, `debug*|2`.
NODE_CPUS_FORMAT = "%P|%c"


def parse_node_cpus(text: str, partition: str | None) -> int | None:
    """The CPUs of the largest node of `partition` (None: the default one, marked `*`) from
    `sinfo -h -N -o NODE_CPUS_FORMAT`; None when no line names it."""
    found: list[int] = []
    for line in text.splitlines():
        name, sep, cpus = line.strip().partition("|")
        default = name.endswith("*")
        if not sep or (name.rstrip("*") != partition if partition else not default):
            continue
        match = re.match(r"\d+", cpus.strip())
        if match:
            found.append(int(match.group()))
    return max(found) if found else None


class SlurmState(str, Enum):
    """How hpcorch reads each Slurm job state (base name, without `by 123` suffixes)."""

    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    SIGNALING = "SIGNALING"
    STAGE_OUT = "STAGE_OUT"
    RESIZING = "RESIZING"
    RESV_DEL_HOLD = "RESV_DEL_HOLD"
    REQUEUED = "REQUEUED"
    REQUEUE_HOLD = "REQUEUE_HOLD"
    REQUEUE_FED = "REQUEUE_FED"
    PREEMPTED = "PREEMPTED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    BOOT_FAIL = "BOOT_FAIL"
    CANCELLED = "CANCELLED"
    REVOKED = "REVOKED"
    TIMEOUT = "TIMEOUT"
    DEADLINE = "DEADLINE"


#: Slurm state -> (RunState, the reason a person reads; "" for none).
STATE_MAP: dict[SlurmState, tuple[RunState, str]] = {
    SlurmState.PENDING: (RunState.SUBMITTED, ""),
    SlurmState.CONFIGURING: (RunState.SUBMITTED, ""),
    SlurmState.RESV_DEL_HOLD: (RunState.SUBMITTED, ""),
    SlurmState.RUNNING: (RunState.RUNNING, ""),
    SlurmState.COMPLETING: (RunState.RUNNING, ""),
    SlurmState.SIGNALING: (RunState.RUNNING, ""),
    SlurmState.STAGE_OUT: (RunState.RUNNING, ""),
    SlurmState.RESIZING: (RunState.RUNNING, ""),
    SlurmState.STOPPED: (RunState.RUNNING, ""),
    # Off its resources but coming back: not terminal, not a failure.
    SlurmState.SUSPENDED: (RunState.PREEMPTED, "suspended"),
    SlurmState.REQUEUED: (RunState.PREEMPTED, "requeued"),
    SlurmState.REQUEUE_HOLD: (RunState.PREEMPTED, "requeued and held"),
    SlurmState.REQUEUE_FED: (RunState.PREEMPTED, "requeued (federation)"),
    SlurmState.PREEMPTED: (RunState.PREEMPTED, "preempted"),
    SlurmState.COMPLETED: (RunState.SUCCEEDED, ""),
    SlurmState.FAILED: (RunState.FAILED, ""),
    SlurmState.SPECIAL_EXIT: (RunState.FAILED, "special exit (held by Slurm after failing)"),
    SlurmState.OUT_OF_MEMORY: (
        RunState.FAILED, "killed by Slurm for exceeding its memory limit (OUT_OF_MEMORY)"),
    SlurmState.NODE_FAIL: (RunState.FAILED, "its node failed (NODE_FAIL)"),
    SlurmState.BOOT_FAIL: (RunState.FAILED, "its node failed to boot (BOOT_FAIL)"),
    SlurmState.CANCELLED: (RunState.CANCELLED, "cancelled"),
    SlurmState.REVOKED: (RunState.CANCELLED, "revoked (federation)"),
    SlurmState.TIMEOUT: (RunState.TIMEOUT, "reached its time limit (TIMEOUT)"),
    SlurmState.DEADLINE: (RunState.TIMEOUT, "reached its deadline (DEADLINE)"),
}

#: Seconds a job may stay PREEMPTED before hpcorch takes it as ended: a cluster that
#: requeues preempted jobs shows the next attempt PENDING at once; one whose PreemptMode
#: cancels (or suspends for good) leaves it PREEMPTED, and a sweep must not wait forever.
PREEMPT_GRACE_S = 120.0

#: Earlier states that make a later PENDING a requeued (PREEMPTED) run, not a new one.
_REQUEUE_MARKS = frozenset({SlurmState.REQUEUED, SlurmState.REQUEUE_HOLD, SlurmState.REQUEUE_FED,
                            SlurmState.PREEMPTED, SlurmState.NODE_FAIL, SlurmState.SUSPENDED})


@dataclass(frozen=True)
class JobInfo:
    """One array task (or plain job) as the scheduler reports it."""

    job_id: str
    """`123_4` for array task 4 of array 123, `123` for a plain job."""
    state: str
    """Slurm's state text, e.g. `CANCELLED by 0`."""
    exit_code: int | None = None
    signal: int | None = None
    node: str = ""
    reason: str = ""
    name: str = ""
    workdir: str = ""
    requeued: bool = False
    """An earlier attempt of this job ended REQUEUED/PREEMPTED/NODE_FAIL (sacct -D)."""
    ended: float | None = None
    """When this attempt ended (sacct's End, as epoch seconds), if it has."""
    max_rss_kb: int | None = None
    """The most memory (KiB) one of this attempt's steps held: sacct's MaxRSS of its step
    lines (sampled every JobAcctGatherFrequency; None when no sample was taken)."""

    @property
    def base_state(self) -> SlurmState | None:
        """The state without suffixes, or None for a state this version does not know."""
        word = self.state.split()[0].rstrip("+") if self.state.strip() else ""
        try:
            return SlurmState(word)
        except ValueError:
            return None

    def run_state(self, now: float | None = None) -> tuple[RunState, str]:
        """The RunState and reason this job's state stands for (at time `now`)."""
        base = self.base_state
        if base is None:  # a state newer than this table: keep watching, never guess an end
            return RunState.SUBMITTED, f"unrecognised Slurm state {self.state!r}"
        state, reason = STATE_MAP[base]
        if base is SlurmState.PENDING and self.requeued:
            return RunState.PREEMPTED, "requeued, waiting to start again"
        if base is SlurmState.PREEMPTED and self.ended is not None and \
                (time.time() if now is None else now) - self.ended > PREEMPT_GRACE_S:
            return RunState.CANCELLED, (f"preempted and not requeued within "
                                        f"{PREEMPT_GRACE_S:.0f} s (the cluster's PreemptMode)")
        if base is SlurmState.CANCELLED and " by " in self.state:
            reason = f"cancelled by uid {self.state.split(' by ', 1)[1].strip()}"
        return state, reason

    def context(self, stderr_tail: str = "", job_id: str = "") -> FailureContext:
        """A FailureContext for this job, with the run's stderr tail."""
        _, reason = self.run_state()
        return FailureContext(provider="slurm", job_id=job_id or self.job_id, node=self.node,
                              exit_code=self.exit_code, signal=self.signal, reason=reason,
                              stderr_tail=stderr_tail)


_ARRAY_RANGE = re.compile(r"^(\d+)_\[([^\]]*)\]$")


def expand_job_id(job_id: str) -> list[str]:
    """`123_[5-9%2]` -> 123_5 ... 123_9; `123_4` and `123` stay as they are."""
    match = _ARRAY_RANGE.match(job_id.strip())
    if not match:
        return [job_id.strip()]
    base, spec = match.groups()
    spec = spec.split("%", 1)[0]
    out: list[str] = []
    for part in spec.split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        step = 1
        if ":" in hi:
            hi, _, step_text = hi.partition(":")
            step = int(step_text)
        for index in range(int(lo), int(hi or lo) + 1, step):
            out.append(f"{base}_{index}")
    return out


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """sacct's `ExitCode` `a:b` -> (exit code, signal); `0:15` is (None, 15)."""
    code, _, sig = text.strip().partition(":")
    try:
        exit_code, signal = int(code or 0), int(sig or 0)
    except ValueError:
        return None, None
    if signal:
        return (exit_code or None), signal
    return exit_code, None


#: The sacct fields hpcorch asks for, in order (WorkDir last: it may contain the separator).
SACCT_FIELDS = ("JobID", "State", "ExitCode", "NodeList", "Reason", "JobName", "End",
                "MaxRSS", "WorkDir")


def parse_max_rss_kb(text: str) -> int | None:
    """sacct's MaxRSS in KiB: `76360K`, `1.50M`, `2G`; bytes without a suffix (as with
    --noconvert); None for an empty field or 0 (no sample taken)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)", text.strip().upper())
    if not match:
        return None
    scale = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024 ** 2, "T": 1024 ** 3, "P": 1024 ** 4}
    kb = int(float(match.group(1)) * scale[match.group(2)])
    return kb or None


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """`sacct -P -n -D -o <SACCT_FIELDS>` output -> the latest JobInfo per array task.

    With -D every attempt of a requeued task is listed, oldest first: the last
    line is the current one, and an earlier REQUEUED marks it as requeued. Step
    lines (`123_4.batch`, after their job's line) only give it their MaxRSS.
    """
    latest: dict[str, JobInfo] = {}
    marked: set[str] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(SACCT_FIELDS) - 1)
        if len(parts) < len(SACCT_FIELDS):
            continue
        raw_id, state, exit_text, nodes, reason, name, end, rss, workdir = parts
        if "." in raw_id:  # a step line: the peak memory of the attempt listed last
            step_of, rss_kb = raw_id.split(".", 1)[0], parse_max_rss_kb(rss)
            owner = latest.get(step_of)
            if owner is not None and rss_kb is not None:
                latest[step_of] = dataclasses.replace(
                    owner, max_rss_kb=max(owner.max_rss_kb or 0, rss_kb))
            continue
        exit_code, signal = parse_exit_code(exit_text)
        node = "" if nodes in ("None assigned", "(null)") else nodes
        for job_id in expand_job_id(raw_id):
            previous = latest.get(job_id)
            if previous is not None and previous.base_state in _REQUEUE_MARKS:
                marked.add(job_id)
            latest[job_id] = JobInfo(job_id, state.strip(), exit_code, signal, node,
                                     "" if reason == "None" else reason, name, workdir,
                                     ended=parse_time(end), max_rss_kb=parse_max_rss_kb(rss))
    return {job_id: dataclasses.replace(info, requeued=True) if job_id in marked else info
            for job_id, info in latest.items()}


def parse_time(text: str) -> float | None:
    """sacct's `2026-11-27T14:30:05` (local time) as epoch seconds; None for `Unknown`."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


#: squeue --Format fields for the fallback (exit_code is a raw wait status there).
SQUEUE_FORMAT = ("ArrayJobID:|,ArrayTaskID:|,JobID:|,State:|,Reason:|,NodeList:|,"
                 "exit_code:|,Name:|,WorkDir:")


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """`squeue -h -r -t all -O <SQUEUE_FORMAT>` output -> JobInfo per array task."""
    out: dict[str, JobInfo] = {}
    for line in text.splitlines():
        parts = line.split("|", 8)
        if len(parts) < 9:
            continue
        array_id, task_id, raw_id, state, reason, nodes, status, name, workdir = (
            p.strip() for p in parts)
        if task_id and task_id != "N/A" and array_id not in ("", "N/A"):
            ids = expand_job_id(f"{array_id}_[{task_id}]") if not task_id.isdigit() \
                else [f"{array_id}_{task_id}"]
        else:
            ids = [raw_id]
        exit_code, signal = _wait_status(status)
        for job_id in ids:
            out[job_id] = JobInfo(job_id, state, exit_code, signal,
                                  "" if nodes in ("", "(null)") else nodes,
                                  "" if reason == "None" else reason, name, workdir,
                                  requeued=state.startswith("REQUEUE"))
    return out


def _wait_status(text: str) -> tuple[int | None, int | None]:
    try:
        status = int(text)
    except ValueError:
        return None, None
    if status & 0x7F:
        return None, status & 0x7F
    return status >> 8, None


#: States of a job that will still run (or run again): what lookup may adopt. COMPLETING
#: is not one of them: the job has ended, only its epilog is left.
OPEN_STATES = frozenset({SlurmState.PENDING, SlurmState.CONFIGURING, SlurmState.RUNNING,
                         SlurmState.SUSPENDED, SlurmState.STOPPED, SlurmState.SIGNALING,
                         SlurmState.RESIZING, SlurmState.RESV_DEL_HOLD, SlurmState.REQUEUED,
                         SlurmState.REQUEUE_HOLD, SlurmState.REQUEUE_FED})

#: squeue -o format for lookup (work dir last: it may contain the separator).
LOOKUP_FORMAT = "%i|%T|%j|%Z"


def parse_lookup(text: str) -> Iterator[tuple[str, str, str]]:
    """`squeue -h -r -o LOOKUP_FORMAT` -> (job id, job name, work dir) of every open task."""
    for line in text.splitlines():
        parts = line.split("|", 3)
        if len(parts) < 4 or not parts[0].strip():
            continue
        state = JobInfo(parts[0], parts[1].strip()).base_state
        if state in OPEN_STATES:
            for job_id in expand_job_id(parts[0]):
                yield job_id, parts[2].strip(), parts[3].strip()


def array_ids(job_ids: Iterable[str]) -> list[str]:
    """The distinct array (or plain) job ids of `123_4`-style ids, in first-seen order."""
    seen: dict[str, None] = {}
    for job_id in job_ids:
        seen.setdefault(job_id.split("_", 1)[0], None)
    return list(seen)


def spread_array_records(infos: dict[str, JobInfo], job_ids: Sequence[str]) -> dict[str, JobInfo]:
    """Tasks never split from their array are reported as the bare array id (e.g. `41`
    once a pending tail is cancelled): that record stands for each of them."""
    out = dict(infos)
    for job_id in job_ids:
        array, sep, _ = job_id.partition("_")
        if sep and job_id not in out and array in infos:
            out[job_id] = dataclasses.replace(infos[array], job_id=job_id)
    return out
