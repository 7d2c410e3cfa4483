"""Rank detection, per-rank devices, the rank shim and the worker's rank files (no MPI needed)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hpcorch import rankfiles
from hpcorch.jobenv import RANK_SOURCES_ENV
from hpcorch.launch.rankenv import decode_sources, encode_sources, node_count
from hpcorch.providers.slurm.task import SRUN_RANK_SOURCES
from hpcorch.rankfiles import RankInfo, RankState, devices_for
from hpcorch.spec import RunState
from hpcorch.store.records import ErrorInfo, RunRecord
from hpcorch.worker import ranks
from hpcorch.worker.ranks import current, shim_devices

OMPI = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "PMIX_RANK": "3"}
#: An srun step's rank variables, with the job contract's rank sources the Slurm array
#: task sets for its runs.
SRUN = {"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "3", "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1", "SLURM_STEP_TASKS_PER_NODE": "2,1", "SLURM_NTASKS": "3",
        RANK_SOURCES_ENV: encode_sources(SRUN_RANK_SOURCES)}


@pytest.mark.parametrize(("env", "expected"), [
    ({}, (0, 1, 0, 1, "single")),
    (OMPI, (3, 4, 1, 2, "openmpi")),
    ({**SRUN, "PMIX_RANK": "2"}, (2, 3, 0, 1, "pmix")),
    (SRUN, (2, 3, 0, 1, "slurm")),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"},
     (1, 2, 1, 2, "pmi")),
    # A batch script sees its allocation's task count but is one process.
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", RANK_SOURCES_ENV: SRUN[RANK_SOURCES_ENV]},
     (0, 1, 0, 1, "single")),
    # The worker names no scheduler's variables: without the provider's sources, srun's
    # variables alone (or unreadable sources) say nothing.
    ({k: v for k, v in SRUN.items() if k != RANK_SOURCES_ENV}, (0, 1, 0, 1, "single")),
    ({**SRUN, RANK_SOURCES_ENV: "[{not json"}, (0, 1, 0, 1, "single")),
    ({"OMPI_COMM_WORLD_RANK": "4", "OMPI_COMM_WORLD_SIZE": "4"}, (0, 1, 0, 1, "single")),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, (1, 2, 1, 2, "openmpi")),
])
def test_rank_detection(env: dict[str, str], expected: tuple[object, ...]) -> None:
    info = current(env)
    assert (info.rank, info.size, info.local_rank, info.local_size, info.source) == expected
    assert info.multi is (expected[1] > 1)


def test_slurm_tasks_per_node_with_repeats() -> None:
    env = {**SRUN, "SLURM_STEP_NUM_TASKS": "5", "SLURM_PROCID": "4",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "2"}
    assert current(env).local_size == 1


@pytest.mark.parametrize(("local_rank", "local_size", "available", "expected"), [
    (0, 2, ["0", "1"], ("0",)),
    (1, 2, ["0", "1"], ("1",)),
    (1, 2, ["0", "1", "2", "3"], ("2", "3")),
    (2, 3, ["4", "5"], ("4",)),  # fewer devices than ranks: shared round-robin
    (0, 1, [], ()),
])
def test_devices_for(local_rank: int, local_size: int, available: list[str],
                     expected: tuple[str, ...]) -> None:
    assert devices_for(local_rank, local_size, available) == expected


def test_shim_devices_sources() -> None:
    info = RankInfo(rank=2, size=4, local_rank=0, local_size=2)
    assert shim_devices(info, 2, "0;1;2,3;4", {}) == ("2", "3")
    assert shim_devices(info, 2, None, {"CUDA_VISIBLE_DEVICES": "6,7"}) == ("6",)
    assert shim_devices(info, 2, None, {}) == ("0",)
    with pytest.raises(SystemExit, match="has 2 entries"):
        shim_devices(info, 2, "0;1", {})


def test_shim_sets_devices_then_execs_the_command() -> None:
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "PATH": "/usr/bin:/bin",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    probe = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"
    out = subprocess.run([sys.executable, "-m", "hpcorch.worker.ranks", "--gpus", "4", "--",
                          sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == "2,3"


# -- rank files and the record -------------------------------------------------------
def hydra_like_config(run_dir: Path) -> object:
    cfg = OmegaConf.create({"lr": 0.1, "hydra": {
        "run": {"dir": str(run_dir)}, "output_subdir": ".hydra",
        "job_logging": {"handlers": {"console": {"class": "logging.StreamHandler"},
                                     "file": {"class": "logging.FileHandler",
                                              "filename": "x/train.log"}},
                        "root": {"handlers": ["console", "file"]}}}})
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(cfg.hydra, True)
    return cfg


def test_ranks_above_zero_keep_off_rank_zero_outputs(tmp_path: Path) -> None:
    cfg = hydra_like_config(tmp_path)
    ranks.prepare_hydra(cfg, RankInfo(rank=0, size=2))
    assert cfg.hydra.output_subdir == ".hydra"  # type: ignore[attr-defined]
    ranks.prepare_hydra(cfg, RankInfo(rank=1, size=2))
    hydra = cfg.hydra  # type: ignore[attr-defined]
    assert hydra.output_subdir is None
    assert hydra.job_logging.handlers.file.filename == str(
        tmp_path / ".hpcorch" / "ranks" / "rank.1.log")
    assert list(hydra.job_logging.root.handlers) == ["file"]
    assert OmegaConf.is_readonly(hydra)  # flags restored


def test_rank_files_and_rank_zero_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv(ranks.PROVIDER_ENV, "mpi")
    one, zero = RankInfo(1, 2, 1, 2, "h1", "openmpi"), RankInfo(0, 2, 0, 2, "h0", "openmpi")
    assert ranks.job_finished(str(tmp_path), one, None) == []  # not the root: nothing back
    rankfiles.write_rank_file(tmp_path, zero, RankState.RUNNING)
    files = ranks.job_finished(str(tmp_path), zero, "ValueError: bad")
    assert [(f["rank"], f["state"], f["devices"]) for f in files] == [
        (0, "FAILED", "1"), (1, "SUCCEEDED", "1")]
    record = RunRecord(run_key="k", sweep_id="s", num=0, state=RunState.FAILED,
                       run_dir=str(tmp_path), error=ErrorInfo("ValueError", "bad", "tb\nlast"))
    record = ranks.with_ranks(record, zero, files)
    assert record.fingerprint["ranks"]["size"] == 2
    assert [r["host"] for r in record.fingerprint["ranks"]["ranks"]] == ["h0", "h1"]
    assert record.failure is not None and record.failure.provider == "mpi"
    assert record.failure.reason == "rank 0 of 2 on h0: ValueError: bad"
    assert record.failure.node == "h0" and record.failure.stderr_tail == "tb\nlast"
    ok = dataclasses.replace(record, state=RunState.SUCCEEDED, failure=None, error=None)
    assert ranks.with_ranks(ok, zero, files).failure is None


def test_single_rank_writes_no_rank_file(tmp_path: Path) -> None:
    assert ranks.job_finished(str(tmp_path), RankInfo(), None) == []
    assert not rankfiles.ranks_dir(tmp_path).exists()
    (tmp_path / ".hpcorch" / "ranks").mkdir(parents=True)
    (tmp_path / ".hpcorch" / "ranks" / "rank.0.json").write_text("{torn")
    (tmp_path / ".hpcorch" / "ranks" / "rank.1.json").write_text(json.dumps({"rank": 1}))
    assert rankfiles.read_rank_files(tmp_path) == [{"rank": 1}]


def test_rank_states_keep_their_json_values(tmp_path: Path) -> None:
    """Rank files written before RankState (plain strings) read the same, and the enum
    writes exactly those strings; a state that is not one is refused, not written."""
    assert [s.value for s in RankState] == ["RUNNING", "SUCCEEDED", "FAILED"]
    path = rankfiles.write_rank_file(tmp_path, RankInfo(1, 2), RankState.FAILED, error="E: x")
    assert json.loads(path.read_text())["state"] == "FAILED"
    rankfiles.write_rank_file(tmp_path, RankInfo(0, 2), "SUCCEEDED")  # a plain name works
    old = {"rank": 2, "size": 3, "state": "FAILED", "host": "h"}  # as an older hpcorch wrote
    rankfiles.rank_file(tmp_path, 2).write_text(json.dumps(old))
    states = [RankState(f["state"]) for f in rankfiles.read_rank_files(tmp_path)]
    assert states == [RankState.SUCCEEDED, RankState.FAILED, RankState.FAILED]
    with pytest.raises(ValueError, match="DONE"):
        rankfiles.write_rank_file(tmp_path, RankInfo(0, 2), "DONE")


def test_compressed_per_node_counts() -> None:
    """`2(x3),1` as a step launcher writes ranks per node (2, 2, 2, 1)."""
    assert [node_count("2(x3),1", n) for n in range(5)] == [2, 2, 2, 1, None]
    assert node_count("", 0) is None and node_count("2,x", 0) is None
    assert node_count("4", None) is None and node_count("4", -1) is None


def test_the_rank_shim_loads_only_what_it_needs() -> None:
    """The shim starts before every rank of a GPU run: it reads rank variables from
    hpcorch.launch.rankenv without loading the wrappers or the store (0.33 s -> 0.12 s)."""
    code = ("import sys, hpcorch.worker.ranks, hpcorch.launch as launch; "
            "print(sorted(m for m in sys.modules if m.startswith(('hpcorch.store', "
            "'hpcorch.launch.wrappers', 'hpcorch.launch.failure')))); "
            "print(sorted(launch.__all__) == sorted(launch._EXPORTS))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_rank_sources_survive_the_job_contract() -> None:
    """The Slurm task's sources, encoded into HPCORCH_RANK_SOURCES, decode to the same."""
    assert decode_sources(encode_sources(SRUN_RANK_SOURCES)) == SRUN_RANK_SOURCES
    assert decode_sources("") == () and decode_sources('[{"name": "x"}]') == ()
