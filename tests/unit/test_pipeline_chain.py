"""Native dependencies and the settings a stage's multirun is given (no engine here)."""

from __future__ import annotations

from omegaconf import OmegaConf

from hpcorch.cli import build_parser, main
from hpcorch.orchestrate.pipeline.chain import (
    after_jobs_of,
    dependency_overrides,
    stage_provider,
)
from hpcorch.orchestrate.pipeline.config import Stage
from hpcorch.providers.slurm.provider import after_arrays


def test_slurm_waits_on_whole_upstream_arrays_and_plain_jobs() -> None:
    assert after_arrays(["12_0", "12_3", "15", "12_1"]) == {
        "extra": {"dependency": "afterok:12:15"}}


def test_only_detachable_providers_with_native_dependencies_chain() -> None:
    slurm = Stage("train", "train.py", ("lr=1", "provider=slurm"))
    plain = Stage("train", "app.py", ("+hydra/launcher/provider=slurm",))
    assert stage_provider(slurm) == "slurm" == stage_provider(plain)
    assert after_jobs_of(slurm) is after_arrays
    for name in ("local", "ray", "sge", "mpi", "no-such-provider"):
        assert after_jobs_of(Stage("s", "a.py", (f"provider={name}",))) is None, name
    assert stage_provider(Stage("s", "a.py")) == "local"


def test_dependency_overrides_go_on_the_launchers_provider_node() -> None:
    assert dependency_overrides(after_arrays, ["7_0", "7_1"]) == [
        "++hydra.launcher.provider.extra.dependency=afterok:7"]
    assert dependency_overrides(after_arrays, ["<prep job>"]) == [
        "++hydra.launcher.provider.extra.dependency='afterok:<prep job>'"]
    assert dependency_overrides(after_arrays, []) == []


def test_the_launchers_nodes_merge_over_the_apps_key_by_key() -> None:
    from hydra_plugins.hpcorch_launcher._execute import hpcorch_node

    config = OmegaConf.create({
        "hpcorch": {"rerun": True, "home": "/h"},
        "provider": {"name": "slurm", "partition": "gpu", "extra": {"qos": "high"}},
        "hydra": {"launcher": {"hpcorch": {"dry_run": True},
                               "provider": {"extra": {"dependency": "afterok:1"}}}}})
    assert hpcorch_node(config, "hpcorch") == {"rerun": True, "home": "/h", "dry_run": True}
    assert hpcorch_node(config, "provider") == {
        "name": "slurm", "partition": "gpu", "extra": {"qos": "high", "dependency": "afterok:1"}}
    config.hydra.launcher.provider = {"name": "local"}  # another provider: the app's go
    assert hpcorch_node(config, "provider") == {"name": "local"}
    assert hpcorch_node(config, "resources") is None


def test_pipeline_overrides_may_follow_options(capsys: object) -> None:
    args = build_parser().parse_known_args(
        ["pipeline", "run", "p.yaml", "--dir", "d", "train.lr=1"])
    assert args[0].overrides == [] and args[1] == ["train.lr=1"]
    # main() folds them back into the overrides; other commands still refuse extras.
    assert main(["pipeline", "run", "/nonexistent.yaml", "--dir", "d", "train.lr=1"]) == 2
    try:
        main(["sweeps", "--bogus"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("an unknown option of another command was accepted")
