"""Pipeline config checks and planning: matching, order, errors (no stage runs here)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpcorch._hydra.sweep import expand_sweep
from hpcorch.errors import ConfigError
from hpcorch.orchestrate.pipeline.config import load_pipeline, merge_overrides, pipeline_from
from hpcorch.orchestrate.pipeline.plan import graph_text, mermaid, plan_pipeline


def _raw(**train: object) -> dict:
    return {"name": "t", "stages": {
        "prepare": {"app": "prepare.py", "sweep": {"shard": [0, 1]}},
        "train": {"app": "train.py", "sweep": {"lr": "0.1,0.3"}, "needs": {"prepare": "each"},
                  **train},
        "evaluate": {"app": "evaluate.py", "needs": {"train": "all"}},
    }}


def test_each_makes_one_run_per_upstream_run_and_all_is_a_barrier() -> None:
    plan = plan_pipeline(pipeline_from(_raw()))
    train = plan.runs["train"]
    assert [r.overrides for r in train] == [
        ("lr=0.1", "++shard=0"), ("lr=0.1", "++shard=1"),
        ("lr=0.3", "++shard=0"), ("lr=0.3", "++shard=1")]
    assert [r.inputs for r in train] == [(("prepare", 0),), (("prepare", 1),),
                                         (("prepare", 0),), (("prepare", 1),)]
    [evaluate] = plan.runs["evaluate"]
    assert evaluate.inputs == tuple(("train", n) for n in range(4))
    # Exactly the dependents of prepare #1: its two train runs and the evaluate run.
    assert [(r.stage, r.num) for r in plan.dependents("prepare", 1)] == [
        ("train", 1), ("train", 3), ("evaluate", 0)]


def test_each_matches_on_a_key_the_downstream_sweeps_itself() -> None:
    plan = plan_pipeline(pipeline_from(_raw(sweep={"shard": [1, 0], "lr": [0.1]})))
    assert [(r.overrides, r.inputs) for r in plan.runs["train"]] == [
        (("shard=1", "lr=0.1"), (("prepare", 1),)), (("shard=0", "lr=0.1"), (("prepare", 0),))]


def test_a_downstream_value_no_upstream_run_has_is_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match=r"stages.train.needs.prepare.*match a prepare run"):
        plan_pipeline(pipeline_from(_raw(sweep={"shard": [2]})))


def test_stage_scoped_overrides_replace_the_stages_own() -> None:
    config = pipeline_from(_raw(provider="local", resources={"cpus": 1}),
                           ["train.lr=1e-3,1e-4", "train.provider=slurm", "prepare.+extra=1"])
    assert config.stage("train").overrides == ("lr=1e-3,1e-4", "provider=slurm", "resources.cpus=1")
    assert config.stage("prepare").overrides == ("shard=0,1", "+extra=1")
    assert merge_overrides(["a=1", "b=2"], ["++a=3"]) == ["++a=3", "b=2"]


@pytest.mark.parametrize(("raw", "cli", "message"), [
    (_raw(needs={"nope": "each"}), [], r"stages.train.needs='nope': one of the stages"),
    (_raw(needs={"prepare": "some"}), [], r"needs.prepare.mode='some': one of \['each', 'all'\]"),
    (_raw(needs={"prepare": {"when": "never"}}), [], r"when='never': one of \['success'"),
    (_raw(bogus=1), [], r"stages.train=\['bogus'\]: keys"),
    (_raw(), ["lr=0.1"], r"override='lr=0.1': STAGE.key=value"),
    (_raw(), ["nostage.lr=0.1"], r"STAGE one of \['prepare', 'train', 'evaluate'\]"),
    (_raw(overrides=["lr=("]), [], r"stages.train.overrides="),
    ({"stages": {}}, [], r"stages=\{\}: a mapping of stage name"),
])
def test_bad_pipelines_get_one_message_naming_setting_value_and_allowed(raw: dict, cli: list,
                                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_pipeline(pipeline_from(raw, cli))


def test_cycles_are_refused_and_stages_are_ordered_by_their_needs() -> None:
    raw = {"stages": {"b": {"app": "b.py", "needs": {"a": "all"}}, "a": {"app": "a.py"}}}
    assert [s.name for s in pipeline_from(raw).stages] == ["a", "b"]
    raw["stages"]["a"]["needs"] = {"b": "all"}
    with pytest.raises(ConfigError, match="without a cycle"):
        pipeline_from(raw)


def test_graph_text_and_mermaid_name_every_stage_and_edge() -> None:
    plan = plan_pipeline(pipeline_from(_raw()))
    assert graph_text(plan).splitlines()[1] == "train (4 runs, train.py) <- prepare [each]"
    block = mermaid(plan)
    assert block.startswith("```mermaid\nflowchart LR\n") and block.rstrip().endswith("```")
    assert "prepare -->|each| train" in block and "train -->|all| evaluate" in block


def test_the_example_pipeline_file_plans() -> None:
    config = load_pipeline(Path(__file__).parents[2] / "conf" / "pipeline" / "example.yaml")
    plan = plan_pipeline(config)
    assert [len(plan.runs[s.name]) for s in config.stages] == [2, 4, 1]


def test_planning_ten_thousand_runs_in_the_middle_stage_is_fast() -> None:
    """Not a timing test (the figure is in scripts/bench_pipeline.py): a generous bound
    that catches planning gone quadratic."""
    raw = {"stages": {
        "prepare": {"app": "p.py", "sweep": {"shard": "range(0,10)"}},
        "train": {"app": "t.py", "sweep": {"seed": "range(0,1000)"}, "needs": {"prepare": "each"}},
        "evaluate": {"app": "e.py", "needs": {"train": "all"}}}}
    started = time.perf_counter()
    plan = plan_pipeline(pipeline_from(raw))
    assert len(plan.runs["train"]) == 10_000 and len(plan.runs["evaluate"][0].inputs) == 10_000
    assert time.perf_counter() - started < 30


def test_expansion_is_the_jobs_and_order_of_a_real_hydra_multirun(tmp_path: Path) -> None:
    """Pins hpcorch._hydra.sweep against Hydra's basic sweeper (the private module it uses)."""
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent("""
        import hydra
        from hydra.core.hydra_config import HydraConfig
        @hydra.main(version_base="1.3", config_path=None, config_name=None)
        def main(cfg):
            print("JOB", " ".join(HydraConfig.get().overrides.task))
        main()
    """))
    overrides = ["+a=1,2", "+b=x", "+c=range(0,3)"]
    done = subprocess.run([sys.executable, str(app), "-m", *overrides,
                           f"hydra.sweep.dir={tmp_path / 'multirun'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=True)
    jobs = [line[4:].split() for line in done.stdout.splitlines() if line.startswith("JOB ")]
    assert jobs == expand_sweep(overrides)
    assert len(jobs) == 6
