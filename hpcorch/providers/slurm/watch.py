"""What Slurm says about a batch of jobs: ONE sacct call (or squeue when accounting is off).

sacct lags behind slurmctld: an array it has not heard of yet is asked of squeue,
unless this process submitted it moments ago (it is then simply still queued).
A job neither knows, and that this process did not just submit, is remembered as
gone (the provider reports it UNKNOWN).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from hpcorch.providers.slurm.accounting import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    JobInfo,
    array_ids,
    parse_sacct,
    parse_squeue,
    spread_array_records,
)
from hpcorch.providers.slurm.submission import SlurmCall

log = logging.getLogger("hpcorch.slurm")

#: Seconds a job we submitted may be missing from sacct and squeue before it is UNKNOWN.
SUBMIT_GRACE_S = 60.0


class JobWatch:
    """The scheduler's latest word on each job, one batched query at a time."""

    def __init__(self, slurm: SlurmCall, accounting: Callable[[], bool],
                 clock: Callable[[], float]) -> None:
        self._slurm = slurm
        self._accounting_of_cluster = accounting  # read lazily: it needs scontrol
        self._accounting: bool | None = None
        self._clock = clock
        self.jobs: dict[str, JobInfo] = {}
        """job id -> the scheduler's latest word."""
        self.gone: set[str] = set()
        """Job ids neither sacct nor squeue knows."""
        self.submitted: dict[str, float] = {}
        """Array job id -> clock at submission (by this process)."""

    def query(self, job_ids: Sequence[str]) -> None:
        """Ask once about these jobs (sacct, else squeue) and remember the answers."""
        arrays = array_ids(job_ids)
        infos: dict[str, JobInfo] | None = None
        if self._accounting is None:
            self._accounting = self._accounting_of_cluster()
        if self._accounting:
            infos = self._sacct(arrays)
        if infos is None:
            infos = self._squeue(arrays)
        if infos is None:
            return
        infos = spread_array_records(infos, job_ids)
        self.jobs.update(infos)
        missing = [j for j in job_ids if j not in infos]
        seen_arrays = {j.split("_", 1)[0] for j in infos}
        now = self._clock()
        unheard = [a for a in array_ids(missing) if a not in seen_arrays and not self._new(a, now)]
        if unheard and self._accounting:
            more = spread_array_records(self._squeue(unheard) or {}, missing)
            self.jobs.update(more)
            infos = {**infos, **more}
        known_arrays = {j.split("_", 1)[0] for j in infos}
        for job_id in job_ids:
            array = job_id.split("_", 1)[0]
            if job_id in infos:
                self.gone.discard(job_id)
            elif array not in known_arrays and not self._new(array, now):
                self.gone.add(job_id)

    def _new(self, array: str, now: float) -> bool:
        """This process submitted the array less than SUBMIT_GRACE_S ago."""
        return now - self.submitted.get(array, -1e18) <= SUBMIT_GRACE_S

    def _sacct(self, arrays: Sequence[str]) -> dict[str, JobInfo] | None:
        # No -X: the step lines carry MaxRSS (the peak memory a retry of an OOM starts
        # from); parse_sacct folds them into their job's line.
        done = self._slurm(["sacct", "-P", "-n", "-D", "-j", ",".join(arrays),
                            "-o", ",".join(SACCT_FIELDS)])
        if done.returncode == 0:
            return parse_sacct(done.stdout)
        if "accounting storage is disabled" in done.stderr.lower():
            log.warning("slurm accounting is disabled: watching with squeue instead")
            self._accounting = False
        else:
            log.warning("sacct failed (rc=%s): %s", done.returncode, done.stderr.strip()[-200:])
        return None

    def _squeue(self, arrays: Sequence[str]) -> dict[str, JobInfo] | None:
        done = self._slurm(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(arrays),
                            "-O", SQUEUE_FORMAT])
        if done.returncode == 0:
            return parse_squeue(done.stdout)
        if "invalid job id" in done.stderr.lower():
            return {}
        log.warning("squeue failed (rc=%s): %s", done.returncode, done.stderr.strip()[-200:])
        return None
