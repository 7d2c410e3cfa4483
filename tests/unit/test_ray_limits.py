"""Ray side of the retry policy, without Ray: the cluster's limits, failure classes from
Ray's words, and the peak memory a run's outcome file carries."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from hpcorch.providers.ray import execute, naming
from hpcorch.spec import FailureClass, FailureContext, RunHandle, RunState
from hpcorch.testing import contract_spec

HANDLE = RunHandle("ray", "k", "hpcorch-s-1#4")
MINE = {"submission_id": "hpcorch-s-1", "state": "FAILED", "node": "n7"}
#: The reason the sweep driver writes when ray.get raised Ray's OutOfMemoryError.
RAY_OOM = ("OutOfMemoryError: Task was killed due to the node running low on memory. "
           "Memory on the node was 1.90GB / 2.00GB (0.95), which exceeds the memory usage "
           "threshold of 0.95.")
GIB = 2.0**30


def test_cluster_limits_are_the_largest_node_and_the_node_count() -> None:
    nodes = [{"CPU": 4.0, "memory": 8 * GIB}, {"CPU": 16.0, "memory": 2 * GIB, "GPU": 1.0}]
    limits = naming.cluster_limits(nodes)
    assert (limits.max_cpus, limits.max_mem_gb, limits.max_nodes) == (16, 8.0, 2)
    assert limits.max_time_min is None and "Ray" in limits.where
    empty = naming.cluster_limits([])
    assert (empty.max_cpus, empty.max_mem_gb, empty.max_nodes) == (None, None, None)
    assert naming.cluster_limits([{"CPU": 2.0}]).max_mem_gb is None


@pytest.mark.parametrize(("reason", "tail", "klass"), [
    (RAY_OOM, "", FailureClass.OOM),
    ("", "Traceback (most recent call last):\n  File x\nMemoryError\n", FailureClass.OOM),
    ("", "ray.exceptions.OutOfMemoryError: Task was killed", FailureClass.OOM),
    ("", "Traceback (most recent call last):\ntorch.cuda.OutOfMemoryError: CUDA", None),
    ("", "Traceback (most recent call last):\nMemoryError\n"
         "Traceback (most recent call last):\nValueError: no\n", None),
    ("ValueError: no", "", None)])
def test_failed_sweep_run_is_oom_where_ray_says_so(reason: str, tail: str,
                                                   klass: FailureClass | None) -> None:
    status = naming.task_run_status(HANDLE, {"status": "RUNNING"},
                                    {**MINE, "reason": reason}, tail)
    assert status.state is RunState.FAILED and status.context is not None
    assert status.context.failure_class is klass


def test_one_run_job_killed_by_the_memory_monitor() -> None:
    handle = RunHandle("ray", "k", "hpcorch-k")
    job = {"status": "FAILED", "message": "Job failed\n" + RAY_OOM}
    status = naming.job_run_status(handle, job, None, "")
    assert status.context is not None and status.context.failure_class is FailureClass.OOM
    plain = naming.job_run_status(handle, {"status": "FAILED", "message": "exit 1"}, None, "")
    assert plain.context is not None and plain.context.failure_class is None


def test_cancelled_runs_are_classed_cancelled_and_classes_are_kept() -> None:
    cancelled = naming.task_run_status(HANDLE, {"status": "STOPPED"}, None, "")
    assert cancelled.context is not None
    assert cancelled.context.failure_class is FailureClass.CANCELLED
    given = FailureContext("ray", reason=RAY_OOM, failure_class=FailureClass.NODE_FAIL)
    assert naming.classified(RunState.FAILED, given) is given


def test_peak_memory_from_the_outcome_file() -> None:
    status = naming.task_run_status(HANDLE, None, {**MINE, "max_rss_kb": 3 * 2**20}, "")
    assert status.context is not None and status.context.peak_mem_gb == 3.0
    assert naming.peak_mem_gb({"max_rss_kb": None}) is None
    assert naming.peak_mem_gb({}) is None


@pytest.mark.parametrize("warm", [False, True])
def test_a_run_leaves_its_max_rss_in_the_outcome(tmp_path: Path, warm: bool) -> None:
    code = ("import sys\nblock = bytearray(48 * 2**20)\nfor i in range(0, len(block), 4096):\n"
            "    block[i] = 1\nsys.exit(2)")
    spec = dataclasses.replace(contract_spec(tmp_path, 0), command=(sys.executable, "-c", code))
    out = execute.run_spec(spec, "sub-1", warm=warm, echo=False)
    assert out["state"] == "FAILED" and out["exit_code"] == 2
    outcome = execute.read_outcome(spec.run_dir)
    assert outcome is not None and outcome["max_rss_kb"] > 48 * 1024
