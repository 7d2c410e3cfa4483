"""The validators behind "every bad input is one clear error": resources, seeds, the
index home, a corrupt index, rank counts on one machine, kill reasons, open nodes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hpcorch.errors import ConfigError, StoreError
from hpcorch.providers.kills import kill_reason, memory_used
from hpcorch.providers.local import check_rank_count, check_ranks
from hpcorch.providers.slurm.accounting import JobInfo
from hpcorch.providers.slurm.failure import sigkill_reason
from hpcorch.repro.seeds import MAX_SEED, check_seed, derive_seed
from hpcorch.settings import parse_settings, validate_config_nodes
from hpcorch.spec import FailureContext, Resources, RunSpec, RunState
from hpcorch.store.home import (
    ROOTS_FILE,
    check_home,
    is_corruption,
    is_healthy,
    known_sweep_dirs,
    resolve_home,
)
from hpcorch.store.index import StoreIndex, open_index
from hpcorch.store.ledger import SweepInfo, write_ledger
from hpcorch.store.records import RunRecord, write_record


# -- resources ------------------------------------------------------------------
@pytest.mark.parametrize("values, key", [
    ({"mem_gb": 0}, "resources.mem_gb=0.0"),
    ({"mem_gb": -1}, "resources.mem_gb=-1.0"),
    ({"mem_gb": 0.0009}, "resources.mem_gb=0.0009"),
    ({"mem_gb": float("inf")}, "resources.mem_gb=inf"),
    ({"time_min": 0}, "resources.time_min=0"),
    ({"time_min": -1}, "resources.time_min=-1"),
    ({"cpus": 0}, "resources.cpus=0"),
    ({"gpus": -1}, "resources.gpus=-1"),
    ({"nodes": 0}, "resources.nodes=0"),
    ({"tasks": -3}, "resources.tasks=-3"),
    ({"tasks_per_node": -2}, "resources.tasks_per_node=-2"),
    ({"tasks": 5, "tasks_per_node": 2}, "resources.tasks=5"),
])
def test_resources_out_of_range_name_the_setting(values: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(Resources, values, "resources")
    assert str(err.value).startswith(f"{key}: must")


def test_smallest_memory_and_time_are_accepted() -> None:
    res = parse_settings(Resources, {"mem_gb": 1 / 1024, "time_min": 1}, "resources")
    assert res.mem_gb == 1 / 1024 and res.time_min == 1
    assert parse_settings(Resources, {"mem_gb": None}, "resources").mem_gb is None
    assert parse_settings(Resources, {}, "resources").oversubscribe is False


# -- seeds --------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["abc", -1, 1.5, True, False, MAX_SEED + 1, [1], "5"])
def test_bad_seeds_are_refused(value: object) -> None:
    with pytest.raises(ConfigError) as err:
        check_seed(value)
    assert err.value.key == "seed" and err.value.value == value
    assert "whole number from 0 to 4294967295" in str(err.value)


def test_good_seeds_pass_and_none_is_zero() -> None:
    assert check_seed(0) == 0 and check_seed(MAX_SEED) == MAX_SEED and check_seed(None) == 0


def test_derive_seed_refuses_a_bad_explicit_or_base_seed() -> None:
    with pytest.raises(ConfigError, match=r"seed=-1: must be a whole number"):
        derive_seed(0, ["lr=0.1", "seed=-1"])
    with pytest.raises(ConfigError, match=r"seed=1.5"):
        derive_seed(1.5, ["lr=0.1"])  # type: ignore[arg-type]
    assert derive_seed(0, ["seed=7"]) == 7


# -- hpcorch's config nodes ---------------------------------------------------------
def test_validate_config_nodes_names_the_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        validate_config_nodes({"hpcorch": {"detatch": True}})
    assert "hpcorch.detatch=True: unknown setting; did you mean 'detach'?" in str(err.value)
    assert "allowed: detach, dry_run" in str(err.value)
    with pytest.raises(ConfigError, match=r"resources.mem_gb=0.0"):
        validate_config_nodes({"resources": {"mem_gb": 0}})
    with pytest.raises(ConfigError, match=r"hpcorch=3: must be a mapping of settings: detach"):
        validate_config_nodes({"hpcorch": 3})


def test_validate_config_nodes_checks_the_nodes_it_is_given() -> None:
    from hpcorch.providers.local import LocalSettings

    validate_config_nodes({"hpcorch": {}, "provider": {"name": "local"}},
                          {"provider": LocalSettings})
    with pytest.raises(ConfigError, match=r"provider.wokers=2: unknown setting"):
        validate_config_nodes({"provider": {"name": "local", "wokers": 2}},
                              {"provider": LocalSettings})


def test_hpcorch_nodes_are_open_to_hydra_and_refused_by_hpcorch(tmp_path: Path) -> None:
    """`hpcorch.detatch=true` (no +) composes, so hpcorch can say what is allowed."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    (tmp_path / "config.yaml").write_text("defaults:\n  - hpcorch: default\n  - _self_\nx: 1\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose("config", overrides=["hpcorch.detatch=true", "provider.wokers=2",
                                           "resources.mem=1", "container.imag=x"])
    assert OmegaConf.is_struct(cfg)  # the rest of the config stays closed
    assert cfg.hpcorch.detatch is True and cfg.provider.wokers == 2
    plain = OmegaConf.to_container(cfg, resolve=False)
    with pytest.raises(ConfigError, match=r"did you mean 'detach'"):
        validate_config_nodes(plain)  # type: ignore[arg-type]


# -- the index home -----------------------------------------------------------------
def test_a_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"hpcorch.home='.*f': must be a directory .* a file"):
        check_home(afile)
    with pytest.raises(ConfigError, match=r"Not a directory"):
        check_home(afile / "sub")


def test_home_env_is_named_when_it_chose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    afile = tmp_path / "f"
    afile.write_text("x")
    monkeypatch.setenv("HPCORCH_HOME", str(afile))
    assert resolve_home(None) == (afile, "HPCORCH_HOME")
    with pytest.raises(ConfigError, match=r"^HPCORCH_HOME="):
        open_index()
    assert resolve_home(tmp_path / "h") == (tmp_path / "h", "hpcorch.home")


def test_a_good_home_is_created(tmp_path: Path) -> None:
    index = open_index(tmp_path / "new" / "home")
    assert index.home.is_dir() and not list(index.home.iterdir())  # the write probe is gone


# -- a corrupt index ----------------------------------------------------------------
def _indexed_sweep(tmp_path: Path) -> tuple[StoreIndex, SweepInfo]:
    sweep_dir = tmp_path / "sweep"
    specs = [
        RunSpec(run_key=f"k{i}", sweep_id="s1", num=i, overrides=(f"x={i}",), config={},
                seed=0, run_dir=str(sweep_dir / str(i)), command=("python",))
        for i in range(3)]
    info = SweepInfo(sweep_id="s1", sweep_dir=str(sweep_dir), provider="local", created=1.0,
                     cwd=str(tmp_path), argv=("app.py",), app="app.py").with_specs(specs)
    write_ledger(info)
    index = StoreIndex(tmp_path / "home")
    index.put_sweep(info)
    for spec in specs:
        write_record(RunRecord(run_key=spec.run_key, sweep_id=spec.sweep_id, num=spec.num,
                               state=RunState.SUCCEEDED, run_dir=spec.run_dir,
                               overrides=spec.overrides))
    return index, info


def test_a_garbage_index_is_set_aside_and_rebuilt(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    index, info = _indexed_sweep(tmp_path)
    assert known_sweep_dirs(index.home) == [info.sweep_dir]
    index.path.write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        Path(str(index.path) + suffix).unlink(missing_ok=True)
    assert not is_healthy(index.path)
    sweeps = index.sweeps()
    assert [s["sweep_id"] for s in sweeps] == ["s1"] and sweeps[0]["n_runs"] == 3
    err = capsys.readouterr().err
    assert err.count("was corrupt") == 1 and "3 run(s)" in err
    kept = list(index.home.glob("index.db.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"garbage" * 1000
    assert is_healthy(index.path)


def test_a_damaged_page_is_detected(tmp_path: Path) -> None:
    index, _ = _indexed_sweep(tmp_path)
    with sqlite3.connect(index.path) as conn:  # fold the WAL into the file, then damage it
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(index.path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the header (page 1, the schema) stays sound
    assert len(data) > page
    data[page:] = b"\xff" * (len(data) - page)  # every table's pages: "disk image is malformed"
    index.path.write_bytes(bytes(data))
    assert not is_healthy(index.path)
    assert [r.num for r in index.runs("s1")] == [0, 1, 2]  # repaired on first use
    assert list(index.home.glob("index.db.corrupt-*"))


def test_corruption_that_cannot_be_rebuilt_names_hpcorch_rebuild(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index, _ = _indexed_sweep(tmp_path)
    index.path.write_bytes(b"garbage" * 1000)

    def refuse(path: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("hpcorch.store.index.set_aside", refuse)
    with pytest.raises(StoreError, match=r"`hpcorch rebuild"):
        index.sweeps()
    assert index.path.read_bytes() == b"garbage" * 1000  # nothing deleted


def test_only_corruption_counts_as_corruption() -> None:
    assert is_corruption(sqlite3.DatabaseError("file is not a database"))
    assert is_corruption(sqlite3.DatabaseError("database disk image is malformed"))
    assert not is_corruption(sqlite3.OperationalError("database is locked"))
    assert not is_corruption(OSError("file is not a database"))


def test_the_roots_file_lists_each_sweep_once(tmp_path: Path) -> None:
    index, info = _indexed_sweep(tmp_path)
    index.put_sweep(info)
    assert (index.home / ROOTS_FILE).read_text().splitlines() == [info.sweep_dir]


# -- ranks on one machine ------------------------------------------------------------
def test_more_ranks_than_cores_needs_the_opt_in() -> None:
    with pytest.raises(ConfigError) as err:
        check_rank_count(Resources(tasks=3), cores=2)
    message = str(err.value)
    assert message.startswith("resources.tasks=3: provider=local has 2 usable core(s)")
    assert "resources.oversubscribe=true" in message
    check_rank_count(Resources(tasks=3, oversubscribe=True), cores=2)
    check_rank_count(Resources(tasks=2), cores=2)
    spec = RunSpec(run_key="k", sweep_id="s", num=0, overrides=(), config={}, seed=0,
                   run_dir="/tmp/x", command=("python",), resources=Resources(tasks=999))
    with pytest.raises(ConfigError, match=r"resources.tasks=999"):
        check_ranks([spec], cores=2)


# -- kill reasons ---------------------------------------------------------------------
def test_kill_reasons() -> None:
    assert kill_reason(1, 0, 0, 1000) == "" and kill_reason(0, None, None, None) == ""
    oom = kill_reason(-9, 4, 5, 2048)
    assert oom.startswith("killed by SIGKILL (signal 9), by the kernel's OOM killer")
    assert oom.endswith("it had used 2.0 MiB at its peak (max RSS)")
    other = kill_reason(-9, 4, 4, None)
    assert "not by hpcorch and not by the kernel's OOM killer" in other and "MiB" not in other
    assert "cannot be known here" in kill_reason(-9, None, None, 10)
    assert kill_reason(-11, 0, 0, 1024).startswith("killed by SIGSEGV (signal 11); it had used")
    assert memory_used(None) == "" and memory_used(0) == ""


def test_slurm_sigkill_reason_says_who() -> None:
    context = FailureContext("slurm", "7_1", "c1", None, 9, "", "")
    cancelled = sigkill_reason(context, JobInfo("7_1", "CANCELLED by 1000"), log_text="")
    assert cancelled == "killed by SIGKILL (signal 9), by Slurm on request (CANCELLED by 1000)"
    stepd = sigkill_reason(context, JobInfo("7_1", "FAILED"),
                           log_text="slurmstepd: error: *** STEP 7.0 KILLED ***\n")
    assert "by Slurm: its Slurm log says: slurmstepd: error" in stepd
    unknown = sigkill_reason(context, JobInfo("7_1", "FAILED"), log_text="")
    assert "not by a limit Slurm recorded (sacct: FAILED): the kernel's OOM killer on c1" \
        in unknown


def test_yaml_defaults_equal_the_class_defaults() -> None:
    import dataclasses

    import yaml

    import hpcorch.conf

    conf = Path(hpcorch.conf.__file__).parent
    resources = yaml.safe_load((conf / "resources" / "default.yaml").read_text())
    assert resources == {f.name: f.default for f in dataclasses.fields(Resources)}


def test_the_rank_check_is_the_local_providers_own(tmp_path: Path) -> None:
    """provider=mpi places ranks on its hosts: the local core count is no limit there."""
    from hpcorch.providers.local import LocalProvider
    from hpcorch.providers.mpi import MpiProvider

    many = Resources(tasks=10_000)
    with pytest.raises(ConfigError, match=r"resources.tasks=10000"):
        LocalProvider.check_resources(many)
    MpiProvider.check_resources(many)
    spec = RunSpec(run_key="k", sweep_id="s", num=0, overrides=(), config={}, seed=0,
                   run_dir=str(tmp_path / "x"), command=("python",), resources=many)
    with pytest.raises(ConfigError, match=r"resources.tasks=10000"):
        LocalProvider().submit([spec])  # refused before anything starts
    assert not (tmp_path / "x").exists()
