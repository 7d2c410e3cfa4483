"""Slurm provider: array planning (MaxArraySize, MaxJobCount, packing), submitit's parameters
and the golden script (rendered by submitit itself, through submitit_script.render)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcorch.errors import ConfigError
from hpcorch.providers.slurm.accounting import ClusterLimits
from hpcorch.providers.slurm.provider import SlurmProvider
from hpcorch.providers.slurm.script import (
    ArrayPlan,
    executor_parameters,
    hpcorch_part,
    hydra_job_name,
    job_name_token,
    log_pattern,
    map_data,
    plan_arrays,
    signal_grace,
    slurm_dir_for,
)
from hpcorch.providers.slurm.settings import SlurmSettings
from hpcorch.providers.slurm.submission import executor_for
from hpcorch.providers.slurm.submitit_script import render
from hpcorch.spec import Resources, RunSpec

GOLDEN = Path(__file__).parent / "golden" / "slurm_array.sbatch"


def spec(num: int, sweep: str = "/sweeps/demo", resources: Resources | None = None) -> RunSpec:
    run_dir = f"{sweep}/{num}"
    return RunSpec(run_key=f"key{num:04d}", sweep_id="demo1234", num=num,
                   overrides=(f"lr=0.{num}",), config={"lr": num}, seed=num, run_dir=run_dir,
                   command=("/opt/venv/bin/python", "/src/train.py", f"lr=0.{num}",
                            f"hydra.run.dir={run_dir}"),
                   resources=resources or Resources(), workdir="/src")


def render_script(plan: ArrayPlan, settings: SlurmSettings, python: str) -> str:
    """The sbatch script submitit writes for this plan (a dry run: no srun needed)."""
    return render(executor_for(plan, settings, python, offline=True), len(plan.tasks))


def golden_settings() -> SlurmSettings:
    return SlurmSettings(partition="gpu", account="proj42", qos="high", constraint="a100&ib",
                         exclusive=True, time_min=None, array_throttle=4,
                         setup=("module load cuda/12.1", "source /opt/venv/bin/activate"),
                         extra={"mail-type": "END,FAIL", "gres": "gpu:1", "comment": False},
                         signal_grace_s=120, max_requeues=2, python="/opt/venv/bin/python")


def test_golden_sbatch_script() -> None:
    """The rendered script is pinned: any change to it is a visible diff of this file."""
    resources = Resources(cpus=4, gpus=1, mem_gb=8, time_min=90)
    provider = SlurmProvider(golden_settings(), limits=ClusterLimits(max_array_size=1001))
    text = provider.render([spec(n, resources=resources) for n in range(3)])
    if os.environ.get("HPCORCH_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "regenerate with HPCORCH_UPDATE_GOLDEN=1 if intended"


def test_golden_script_quotes_paths_and_carries_each_option() -> None:
    text = GOLDEN.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj42", "#SBATCH --qos=high",
                 "#SBATCH --constraint='a100&ib'", "#SBATCH --exclusive", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --gpus-per-node=1", "#SBATCH --mem=8GB",
                 "#SBATCH --array=0-2%3", "#SBATCH --signal=B:USR2@120", "#SBATCH --requeue",
                 "#SBATCH --mail-type=END,FAIL", "#SBATCH --gres=gpu:1",
                 "#SBATCH --chdir=/sweeps/demo/.hpcorch/slurm",
                 "#SBATCH --output=/sweeps/demo/.hpcorch/slurm/logs/%A_%a.log",
                 "#SBATCH --open-mode=append", "module load cuda/12.1",
                 "#   2: #2 key0002 /sweeps/demo/2",
                 "exec /opt/venv/bin/python -u -m submitit.core._submit "
                 "/sweeps/demo/.hpcorch/slurm/submitit"):
        assert line in text.splitlines(), line
    assert "--comment" not in text  # extra: false drops an option
    # one log per task: no --error (stderr_to_stdout), and no srun around the task
    assert "--error" not in text and "srun" not in text
    flags = [ln for ln in text.splitlines() if ln.startswith("#SBATCH")]
    assert flags == sorted(flags)  # submitit's order: sorted by option name
    # the setup section (what the array runs, then provider.setup) precedes the command
    lines = text.splitlines()
    assert lines.index("# setup") < lines.index("module load cuda/12.1") < lines.index(
        "# command")


def test_executor_parameters_route_named_and_additional_options() -> None:
    """submitit's own parameters by their names; every other sbatch option (and the two
    submitit defaults hpcorch overrides: signal target, log path) under
    additional_parameters."""
    settings = SlurmSettings(extra={"reservation": "r1", "gpu_bind": "closest",
                                    "mail_type": "END"}, signal_grace_s=60)
    [plan] = plan_arrays([spec(n) for n in range(3)], settings, ClusterLimits())
    params = executor_parameters(plan, settings, "python")
    extra = params["additional_parameters"]
    assert extra == {"reservation": "r1", "gpu_bind": "closest", "ntasks": 1,
                     "chdir": plan.slurm_dir, "output": f"{plan.log_dir}/%A_%a.log",
                     "signal": "B:USR2@60", "requeue": True}
    assert params["mail_type"] == "END" and "mail_type" not in extra
    assert (params["job_name"], params["time"], params["nodes"]) == (plan.job_name, 60, 1)
    assert params["signal_delay_s"] == 60 and params["array_parallelism"] == 3
    assert params["use_srun"] is False and params["stderr_to_stdout"] is True
    assert params["setup"][0].startswith("# hpcorch sweep demo1234: 3 run(s) in 3 array task")
    assert not any(v is None for v in params.values())  # unset options are left out
    text = render_script(plan, settings, "python").splitlines()
    for line in ("#SBATCH --reservation=r1", "#SBATCH --gpu-bind=closest",
                 "#SBATCH --mail-type=END", "#SBATCH --signal=B:USR2@60"):
        assert line in text, line
    # submitit's own --signal=USR2@60 (to srun's tasks) is overridden, not repeated
    assert sum(ln.startswith("#SBATCH --signal=") for ln in text) == 1


def test_a_single_task_is_a_plain_job_with_its_own_log() -> None:
    """submitit submits a batch of one as a plain job: no --array, log `logs/%j.log`."""
    [plan] = plan_arrays([spec(0)], SlurmSettings(), ClusterLimits())
    assert log_pattern(plan) == f"{plan.log_dir}/%j.log"
    assert plan.task_job_id("123", 0) == "123"
    text = render_script(plan, SlurmSettings(), "python").splitlines()
    assert f"#SBATCH --output={plan.log_dir}/%j.log" in text
    assert not any(ln.startswith("#SBATCH --array") for ln in text)
    [array] = plan_arrays([spec(0), spec(1)], SlurmSettings(), ClusterLimits())
    assert log_pattern(array) == f"{array.log_dir}/%A_%a.log"
    assert array.task_job_id("123", 1) == "123_1"
    assert array.submitit_dir == "/sweeps/demo/.hpcorch/slurm/submitit"


def test_split_caps_the_array_index_not_only_the_count() -> None:
    specs = [spec(n) for n in range(25)]
    plans = plan_arrays(specs, SlurmSettings(), ClusterLimits(max_array_size=10))
    assert [len(p.tasks) for p in plans] == [10, 10, 5]
    for plan in plans:
        text = render_script(plan, SlurmSettings(), "python")
        assert f"#SBATCH --array=0-{len(plan.tasks) - 1}" in text  # highest index 9 < 10
    assert [s.num for p in plans for s in p.runs] == list(range(25))
    assert len({p.token for p in plans}) == 3


def test_setting_lowers_the_cluster_limit() -> None:
    plans = plan_arrays([spec(n) for n in range(7)], SlurmSettings(max_array_size=3),
                        ClusterLimits(max_array_size=1001))
    assert [len(p.tasks) for p in plans] == [3, 3, 1]


def test_pack_puts_several_runs_in_one_task() -> None:
    [plan] = plan_arrays([spec(n) for n in range(7)], SlurmSettings(pack=3), ClusterLimits())
    assert [[s.num for s in t] for t in plan.tasks] == [[0, 1, 2], [3, 4, 5], [6]]
    assert "#SBATCH --time=180\n" in render_script(plan, SlurmSettings(pack=3), "python")
    data = map_data(plan, SlurmSettings(pack=3))
    assert [[e["num"] for e in t] for t in data["tasks"]] == [[0, 1, 2], [3, 4, 5], [6]]


def test_max_job_count_raises_the_pack_instead_of_failing() -> None:
    plans = plan_arrays([spec(n) for n in range(10)], SlurmSettings(),
                        ClusterLimits(max_array_size=1001, max_job_count=4))
    assert sum(len(p.tasks) for p in plans) <= 4
    assert sorted(s.num for p in plans for s in p.runs) == list(range(10))


def test_runs_with_other_resources_get_their_own_array() -> None:
    big = Resources(cpus=8)
    plans = plan_arrays([spec(0), spec(1, resources=big), spec(2)], SlurmSettings(),
                        ClusterLimits())
    assert [[s.num for s in p.runs] for p in plans] == [[0, 2], [1]]
    assert "#SBATCH --cpus-per-task=8" in render_script(plans[1], SlurmSettings(), "python")


def test_grace_never_exceeds_half_a_short_limit() -> None:
    [plan] = plan_arrays([spec(0, resources=Resources(time_min=1))], SlurmSettings(),
                         ClusterLimits())
    assert signal_grace(plan, SlurmSettings(signal_grace_s=90)) == 30
    assert signal_grace(plan, SlurmSettings(signal_grace_s=20)) == 20


@pytest.mark.parametrize("policy", ["checkpointed", "always", "never"])
def test_preempted_jobs_stay_requeueable_whatever_the_time_limit_policy(policy: str) -> None:
    settings = SlurmSettings(max_requeues=0, requeue_on_timeout=policy)  # type: ignore[arg-type]
    [plan] = plan_arrays([spec(0)], settings, ClusterLimits())
    assert "#SBATCH --requeue" in render_script(plan, settings, "python").splitlines()
    assert map_data(plan, settings)["requeue_on_timeout"] == policy


def test_job_name_carries_sweep_and_token() -> None:
    [plan] = plan_arrays([spec(0)], SlurmSettings(), ClusterLimits())
    assert plan.job_name == f"train.hpcorch-demo1234-{plan.token}"  # the Hydra job name first
    assert job_name_token(plan.job_name) == plan.token
    assert job_name_token(f"hpcorch-demo1234-{plan.token}") == plan.token  # older sweeps
    assert hpcorch_part(plan.job_name) == f"hpcorch-demo1234-{plan.token}"
    assert job_name_token("someone-elses-job") is None
    assert job_name_token("train.someone-elses-job") is None and hpcorch_part("x.y") == ""
    assert plan.map_path == os.path.join(slurm_dir_for([spec(0)]), f"{plan.token}.json")
    assert slurm_dir_for([spec(0), spec(1)]) == "/sweeps/demo/.hpcorch/slurm"


def test_job_name_setting_beats_the_hydra_job_name() -> None:
    settings = SlurmSettings(job_name="lr-scan_2")
    [plan] = plan_arrays([spec(0)], settings, ClusterLimits())
    assert plan.job_name == f"lr-scan_2.hpcorch-demo1234-{plan.token}"
    assert f"#SBATCH --job-name=lr-scan_2.hpcorch-demo1234-{plan.token}" in render_script(
        plan, settings, "python").splitlines()
    assert map_data(plan, settings)["job_name"] == plan.job_name


@pytest.mark.parametrize(("command", "name"), [
    (("python", "/src/train.py", "lr=1"), "train"),
    (("python", "/src/train.py", "hydra.job.name=my app!", "lr=1"), "my_app"),
    (("python", "-m", "pkg.evaluate", "x=1"), "evaluate"),
    (("python", "/src/été 2.py"), "t_2"),
    (("python", "-c", "pass"), ""),
    (("python", "/src/" + "a" * 80 + ".py"), "a" * 64),
])
def test_hydra_job_name_of_a_command(command: tuple[str, ...], name: str) -> None:
    assert hydra_job_name(command) == name


def test_a_command_without_a_name_keeps_the_plain_job_name() -> None:
    run = RunSpec(run_key="k", sweep_id="demo1234", num=0, overrides=(), config={}, seed=0,
                  run_dir="/sweeps/demo/0", command=("python", "-c", "pass"))
    [plan] = plan_arrays([run], SlurmSettings(), ClusterLimits())
    assert plan.job_name == f"hpcorch-demo1234-{plan.token}"


@pytest.mark.parametrize("bad", ["", "a.b", "two words", "x" * 65, "naïve"])
def test_job_name_setting_refuses_what_squeue_would_mangle(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        SlurmSettings(job_name=bad).validate("provider")
    assert "provider.job_name" in str(err.value) and "letters, digits" in str(err.value)


def test_paths_with_spaces_are_quoted_for_sbatch() -> None:
    [plan] = plan_arrays([spec(0, sweep="/data/my sweeps/x")], SlurmSettings(), ClusterLimits())
    text = render_script(plan, SlurmSettings(), "/opt/py thon/bin/python")
    assert "#SBATCH --chdir='/data/my sweeps/x/.hpcorch/slurm'" in text
    assert ("exec '/opt/py thon/bin/python' -u -m submitit.core._submit "
            "'/data/my sweeps/x/.hpcorch/slurm/submitit'") in text.splitlines()


@pytest.mark.parametrize("throttle,expected", [(None, "0-1%2"), (1, "0-1%1"), (5, "0-1%2")])
def test_array_throttle(throttle: int | None, expected: str) -> None:
    """submitit always writes a throttle: the task count (no limit) or array_throttle."""
    [plan] = plan_arrays([spec(0), spec(1)], SlurmSettings(), ClusterLimits())
    settings = SlurmSettings(array_throttle=throttle)
    assert executor_parameters(plan, settings, "python")["array_parallelism"] == (throttle or 2)
    text = render_script(plan, settings, "python")
    assert f"#SBATCH --array={expected}\n" in text


def test_control_characters_never_leave_a_comment() -> None:
    [plan] = plan_arrays([spec(0, sweep="/s/x")], SlurmSettings(), ClusterLimits())
    odd = RunSpec(**{**spec(0, sweep="/s/x").to_dict(), "resources": Resources(),
                     "run_dir": "/s/x/a\nrm -rf ~"})
    [plan] = plan_arrays([odd], SlurmSettings(), ClusterLimits())
    text = render_script(plan, SlurmSettings(), "python")
    assert "\nrm -rf ~" not in text and "a\\nrm -rf ~" in text
