"""Parsers for what Grid Engine says: `qsub -terse`, `qstat -xml -g d`, `qstat -j -xml`, `qacct -j`.

Open jobs are in qstat (one line per array task with `-g d`); a finished task
leaves qstat and its accounting record appears in qacct (flushed at once by
the bring-up's `accounting_flush_time=00:00:00`, later on other clusters).
A task deleted while still pending never ran and has no accounting record.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hpcorch.spec import RunState

#: qacct `failed` codes hpcorch tells apart (sge_reporting / execd's "failed" values).
FAILED_LIMIT = 37
"""qmaster enforced h_rt, h_cpu, or h_vmem limit."""
FAILED_DELETED = 100
"""assumedly after job: the job was ended by a signal from qdel (or qmod)."""
FAILED_RESCHEDULED = 25
"""rescheduling: the record of an attempt that was started again."""


def parse_terse(stdout: str) -> str | None:
    """The job id `qsub -terse` printed: `12` for a job, `12.1-5:1` for an array."""
    for line in stdout.splitlines():
        head = line.strip().split(".", 1)[0]
        if head.isdigit():
            return head
    return None


@dataclass(frozen=True)
class QstatTask:
    """One line of `qstat -xml -g d`: an array task the scheduler still holds."""

    job_id: str
    """`<job number>.<task id>`."""
    name: str
    state: str
    """qstat's letters: qw, hqw, t, r, Rr, Rq, dr, dt, Eqw, s, ..."""
    queue: str = ""
    """`all.q@host` once it runs."""

    @property
    def node(self) -> str:
        """The host it runs on (from its queue instance)."""
        return self.queue.split("@", 1)[1] if "@" in self.queue else ""

    def run_state(self) -> RunState:
        """What the letters mean for the run."""
        if "E" in self.state:
            return RunState.FAILED  # an error before the job ran: it will not run by itself
        if "d" in self.state:
            return RunState.RUNNING if "r" in self.state or "t" in self.state \
                else RunState.SUBMITTED  # being deleted: qacct will say CANCELLED
        if "r" in self.state.replace("R", "") or "t" in self.state:
            return RunState.RUNNING
        return RunState.SUBMITTED


def parse_qstat(xml_text: str) -> dict[str, QstatTask]:
    """`qstat -xml -g d` -> task id -> task (a job that is not an array: task id 1)."""
    out: dict[str, QstatTask] = {}
    root = ET.fromstring(xml_text)
    for job in root.iter("job_list"):
        number = (job.findtext("JB_job_number") or "").strip()
        if not number:
            continue
        tasks = (job.findtext("tasks") or "1").strip()
        for task in _task_ids(tasks):
            task_id = f"{number}.{task}"
            out[task_id] = QstatTask(task_id, (job.findtext("JB_name") or "").strip(),
                                     (job.findtext("state") or "").strip(),
                                     (job.findtext("queue_name") or "").strip())
    return out


def _task_ids(text: str) -> list[int]:
    """`3`, `2-4:1` or `1,3,5-7:2` -> the task ids (qstat groups pending ones without -g d)."""
    ids: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if m:
            first = int(m.group(1))
            last = int(m.group(2) or first)
            ids.extend(range(first, last + 1, int(m.group(3) or 1)))
    return ids


def parse_job_dirs(xml_text: str) -> dict[str, tuple[str, str]]:
    """`qstat -j ID,... -xml` -> job number -> (job name, working directory)."""
    out: dict[str, tuple[str, str]] = {}
    root = ET.fromstring(xml_text)
    for job in root.iter("element"):
        number = (job.findtext("JB_job_number") or "").strip()
        name = job.findtext("JB_job_name")
        if number and name is not None:
            out[number] = (name.strip(), (job.findtext("JB_cwd") or "").strip())
    return out


def error_reason(qstat_j: str) -> str:
    """The `error reason` of plain `qstat -j ID` (a job in Eqw), without its time stamp."""
    for line in qstat_j.splitlines():
        if line.startswith("error reason"):
            text = line.split(":", 1)[1] if ":" in line else line
            return re.sub(r"^\s*[\d/]+ [\d:]+ \[[\d:]+\]:\s*", "", text).strip()[:300]
    return ""


@dataclass(frozen=True)
class AcctRecord:
    """One `qacct -j` record: one attempt of one array task."""

    job_id: str
    name: str
    node: str
    failed: int
    failed_text: str
    exit_status: int
    wallclock_s: float
    maxvmem_bytes: float | None
    category: str

    def limit(self, name: str) -> str | None:
        """The `-l NAME=VALUE` the job asked for (from `category`), or None."""
        m = re.search(rf"(?:^|[\s,]){re.escape(name)}=([^\s,]+)", self.category)
        return m.group(1) if m else None

    @property
    def signal(self) -> int | None:
        """The signal that ended the job (exit status 128+N), if any."""
        return self.exit_status - 128 if 128 < self.exit_status < 160 else None


_SIZE = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
         "T": 1e12, "TB": 1e12}


def parse_size(text: str) -> float | None:
    """qacct's `4.961MB` -> bytes (decimal units, as qacct prints them)."""
    m = re.fullmatch(r"([\d.]+)\s*([KMGT]?B?)", text.strip())
    return float(m.group(1)) * _SIZE[m.group(2)] if m else None


def parse_seconds(text: str) -> float:
    """qacct's `4s` / `4` / `0.135s` -> seconds."""
    m = re.match(r"[\d.]+", text.strip())
    return float(m.group(0)) if m else 0.0


def parse_qacct(stdout: str) -> list[AcctRecord]:
    """Every record of `qacct -j ...`, in file order (later attempts after earlier ones)."""
    records = []
    for block in re.split(r"^=+\s*$", stdout, flags=re.M):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            if key:
                fields[key] = value.strip()
        if "jobnumber" not in fields:
            continue
        task = fields.get("taskid", "undefined")
        failed_code, _, failed_text = fields.get("failed", "0").partition(":")
        records.append(AcctRecord(
            job_id=f"{fields['jobnumber']}.{task if task.isdigit() else 1}",
            name=fields.get("jobname", ""),
            node=fields.get("hostname", ""),
            failed=int(failed_code.strip() or 0),
            failed_text=failed_text.strip(),
            exit_status=int((fields.get("exit_status", "0").split() or ["0"])[0]),
            wallclock_s=parse_seconds(fields.get("ru_wallclock", "0")),
            maxvmem_bytes=parse_size(fields.get("maxvmem", "")),
            category=fields.get("category", ""),
        ))
    return records


def latest_records(records: list[AcctRecord]) -> dict[str, AcctRecord]:
    """Task id -> its last attempt's record (a rescheduled attempt's record comes first)."""
    out: dict[str, AcctRecord] = {}
    for record in records:
        if record.failed == FAILED_RESCHEDULED and record.job_id in out:
            continue
        out[record.job_id] = record
    return out
