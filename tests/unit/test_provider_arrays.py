"""What the job-array providers share (hpcorch.providers.arrays): job names and map files."""

from __future__ import annotations

from hpcorch.providers import arrays


def test_job_name_token_finds_our_arrays_only() -> None:
    name = arrays.job_name("demo1234", "a1b2")
    assert name == "hpcorch-demo1234-a1b2"
    assert arrays.job_name_token(name) == "a1b2"
    assert arrays.job_name_token(name, "demo1234") == "a1b2"
    assert arrays.job_name_token(name, "other") is None
    assert arrays.job_name_token("hpcorch-demo1234-", None) is None
    assert arrays.job_name_token("hpcorch-demo1234-x9", token_start="a") is None
    assert arrays.job_name_token("train") is None


def test_task_runs_reads_one_index_and_nothing_past_the_end() -> None:
    data = {"tasks": [[{"run_key": "k0", "run_dir": "/r/0"}],
                      [{"run_key": "k1", "run_dir": "/r/1"}, {"run_key": "k2", "run_dir": "/r/2"}]]}
    assert arrays.task_runs(data, 1) == [("k1", "/r/1"), ("k2", "/r/2")]
    assert arrays.task_runs(data, 2) == [] and arrays.task_runs(data, -1) == []
    assert arrays.task_runs({"tasks": "garbled"}, 0) == []
