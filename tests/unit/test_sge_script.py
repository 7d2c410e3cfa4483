"""Grid Engine provider: array planning, the qsub argv and the golden job script, settings."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from hpcorch.errors import ConfigError
from hpcorch.providers.sge.provider import SgeProvider
from hpcorch.providers.sge.script import (
    h_vmem,
    job_name_token,
    map_data,
    plan_arrays,
    qsub_argv,
    sge_dir_for,
    task_runs,
)
from hpcorch.providers.sge.settings import SgeSettings
from hpcorch.settings import parse_settings
from hpcorch.spec import Resources, RunSpec

GOLDEN = Path(__file__).parent / "golden" / "sge_array.sh"


def spec(num: int, sweep: str = "/sweeps/demo", resources: Resources | None = None) -> RunSpec:
    run_dir = f"{sweep}/{num}"
    return RunSpec(run_key=f"key{num:04d}", sweep_id="demo1234", num=num,
                   overrides=(f"lr=0.{num}",), config={"lr": num}, seed=num, run_dir=run_dir,
                   command=("/opt/venv/bin/python", "/src/train.py", f"lr=0.{num}",
                            f"hydra.run.dir={run_dir}"),
                   resources=resources or Resources(), workdir="/src")


def golden_settings() -> SgeSettings:
    return SgeSettings(queue="long.q", project="proj42", array_throttle=4,
                       setup=("module load python/3.11", "source /opt/venv/bin/activate"),
                       qsub_args=("-l", "arch=lx-amd64", "-m", "e"), python="/opt/venv/bin/python")


def test_golden_job_script() -> None:
    """The rendered script is pinned: any change to it is a visible diff of this file."""
    resources = Resources(cpus=4, mem_gb=8, time_min=90)
    text = SgeProvider(golden_settings()).render([spec(n, resources=resources) for n in range(3)])
    if os.environ.get("HPCORCH_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "regenerate with HPCORCH_UPDATE_GOLDEN=1 if intended"


def test_qsub_argv_carries_each_option() -> None:
    [plan] = plan_arrays([spec(n, resources=Resources(cpus=4, mem_gb=8, time_min=90))
                          for n in range(3)], golden_settings())
    argv = qsub_argv(plan, golden_settings())
    joined = shlex.join(argv)
    for part in ("-terse", "-N hpcorch-demo1234-", "-t 1-3", "-tc 4", "-l h_rt=5400",
                 "-l h_vmem=2048M", "-pe smp 4", "-q long.q", "-P proj42", "-S /bin/bash",
                 "-V", "-j y", "-wd /sweeps/demo/.hpcorch/sge", "-l arch=lx-amd64 -m e"):
        assert part in joined, part
    assert argv[-1] == plan.script_path and argv[-1].endswith(".sh")
    assert argv[argv.index("-o") + 1] == "/sweeps/demo/.hpcorch/sge/logs/$JOB_ID.$TASK_ID.log"


def test_one_slot_and_no_memory_ask_for_neither() -> None:
    [plan] = plan_arrays([spec(0)], SgeSettings())
    argv = qsub_argv(plan, SgeSettings())
    assert "-pe" not in argv and not any(a.startswith("h_vmem") for a in argv)
    assert "h_rt=3600" in argv  # Resources' default time_min is 60
    [plan] = plan_arrays([spec(0, resources=Resources(mem_gb=1))], SgeSettings(memory="none"))
    assert not any(a.startswith("h_vmem") for a in qsub_argv(plan, SgeSettings(memory="none")))


def test_h_vmem_is_per_slot() -> None:
    assert h_vmem(Resources(mem_gb=8, cpus=4)) == "2048M"
    assert h_vmem(Resources(mem_gb=0.25)) == "256M"
    assert h_vmem(Resources(mem_gb=1, cpus=3)) == "342M"  # rounded up, never below the ask
    assert h_vmem(Resources()) is None


def test_paths_with_spaces_reach_qsub_as_one_argument() -> None:
    [plan] = plan_arrays([spec(0, sweep="/sweeps/my demo")], SgeSettings())
    argv = qsub_argv(plan, SgeSettings())
    assert argv[argv.index("-wd") + 1] == "/sweeps/my demo/.hpcorch/sge"
    text = SgeProvider(SgeSettings(python="/opt/py")).render([spec(0, sweep="/sweeps/my demo")])
    assert "exec /opt/py -m hpcorch.providers.sge.task '/sweeps/my demo/.hpcorch/sge/" in text


def test_pack_and_task_ids_are_one_based() -> None:
    [plan] = plan_arrays([spec(n) for n in range(5)], SgeSettings(pack=2))
    assert [len(t) for t in plan.tasks] == [2, 2, 1]
    assert "-t" in (argv := qsub_argv(plan, SgeSettings(pack=2)))
    assert argv[argv.index("-t") + 1] == "1-3"
    assert "h_rt=7200" in argv  # two runs one after the other in a task
    data = map_data(plan, SgeSettings(pack=2))
    assert task_runs(data, 1) == [("key0000", "/sweeps/demo/0"), ("key0001", "/sweeps/demo/1")]
    assert task_runs(data, 3) == [("key0004", "/sweeps/demo/4")]
    assert task_runs(data, 0) == [] and task_runs(data, 4) == []


def test_runs_with_other_resources_get_their_own_array() -> None:
    plans = plan_arrays([spec(0), spec(1, resources=Resources(cpus=2)), spec(2)], SgeSettings())
    assert [[s.num for s in p.runs] for p in plans] == [[0, 2], [1]]
    assert len({p.job_name for p in plans}) == 2


def test_job_name_carries_sweep_and_token() -> None:
    [plan] = plan_arrays([spec(0)], SgeSettings())
    assert plan.job_name.startswith("hpcorch-demo1234-a0x")
    assert job_name_token(plan.job_name) == plan.token
    assert job_name_token(plan.job_name, "demo1234") == plan.token
    assert job_name_token(plan.job_name, "other") is None
    assert job_name_token("train") is None
    assert sge_dir_for([spec(0)]) == "/sweeps/demo/.hpcorch/sge"


@pytest.mark.parametrize(("resources", "key"), [
    (Resources(tasks=2), "resources.tasks"),
    (Resources(nodes=2), "resources.tasks"),
    (Resources(gpus=1), "resources.gpus"),
])
def test_what_sge_cannot_run_is_refused_before_submitting(resources: Resources, key: str) -> None:
    calls: list[list[str]] = []
    provider = SgeProvider(runner=lambda argv, **_: calls.append(list(argv)))  # type: ignore[arg-type, return-value]
    with pytest.raises(ConfigError) as err:
        provider.submit([spec(0, resources=resources)])
    assert err.value.key == key and calls == []


def test_control_characters_in_the_sweep_dir_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        plan_arrays([spec(0, sweep="/sweeps/de\nmo")], SgeSettings())
    assert err.value.key == "hydra.sweep.dir"


@pytest.mark.parametrize(("values", "key"), [
    ({"qsub_args": ["-N", "x"]}, "provider.qsub_args[0]"),
    ({"qsub_args": ["-l", "a=1\nb"]}, "provider.qsub_args[1]"),
    ({"setup": ["echo 'unbalanced"]}, "provider.setup[0]"),
    ({"queue": "all.q -l x"}, "provider.queue"),
    ({"pack": 0}, "provider.pack"),
    ({"time_min": 0}, "provider.time_min"),
    ({"query_interval": 5.0, "max_query_interval": 1.0}, "provider.max_query_interval"),
    ({"memory": "rss"}, "provider.memory"),
])
def test_bad_settings_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(SgeSettings, {"name": "sge", **values}, "provider")
    assert err.value.key == key
