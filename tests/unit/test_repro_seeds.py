"""Seeding and pinning at run start: what is set, what the record is told, torch early or late."""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpcorch import repro
from hpcorch.errors import ConfigError
from hpcorch.repro import determinism
from hpcorch.repro.determinism import _AfterImport, run_facts, start_run
from hpcorch.repro.settings import THREAD_ENV_VARS, ReproSettings, job_env_pairs, repro_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """start_run exports variables; keep them inside the test."""
    for var in (*THREAD_ENV_VARS, "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED", "HPCORCH_SEED"):
        monkeypatch.setenv(var, "")  # records the old value (or absence) for the undo...
        monkeypatch.delenv(var)      # ...that also removes what start_run exports
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
    else:
        with threadpool_limits(limits=None):  # strict runs resize this process's BLAS pools
            yield
    determinism._remove_hooks()


class FakeTorch(types.ModuleType):
    """Just enough of torch's API to see what the worker calls."""

    def __init__(self, cuda: bool = False) -> None:
        super().__init__("torch")
        self.__version__ = "0.0-fake"
        self.calls: list[tuple[str, Any]] = []
        self.threads = 8
        self.deterministic = False
        outer = self

        class Cuda:
            def manual_seed_all(self, seed: int) -> None:
                outer.calls.append(("cuda.manual_seed_all", seed))

            def is_available(self) -> bool:
                return cuda

        self.cuda = Cuda()
        self.backends = types.SimpleNamespace(
            cudnn=types.SimpleNamespace(deterministic=False, benchmark=True))

    def manual_seed(self, seed: int) -> None:
        self.calls.append(("manual_seed", seed))

    def set_num_threads(self, n: int) -> None:
        self.threads = n

    def get_num_threads(self) -> int:
        return self.threads

    def use_deterministic_algorithms(self, flag: bool) -> None:
        self.deterministic = flag

    def are_deterministic_algorithms_enabled(self) -> bool:
        return self.deterministic


def test_default_start_seeds_python_numpy_and_hash_seed_env_only() -> None:
    seeded = start_run(1234, None)
    assert seeded == ["random", "PYTHONHASHSEED(env)", "numpy"]
    assert os.environ["PYTHONHASHSEED"] == "1234" and repro.seed() == 1234
    first = random.random(), np.random.random()
    start_run(1234, None)
    assert (random.random(), np.random.random()) == first
    facts = run_facts()
    assert facts["seed"] == 1234 and facts["strict"] is False and facts["threads"] is None
    assert facts["pinned"] == {} and facts["seeded"] == seeded
    assert all(var not in os.environ for var in THREAD_ENV_VARS)


def test_rng_streams_are_per_purpose_and_follow_the_seed() -> None:
    start_run(7, None)
    a = repro.rng("init").random(3)
    assert np.array_equal(repro.rng("init").random(3), a)
    assert not np.array_equal(repro.rng("batches").random(3), a)
    start_run(8, None)
    assert not np.array_equal(repro.rng("init").random(3), a)


def test_strict_pins_threads_and_cublas_and_says_so() -> None:
    seeded = start_run(5, {"strict": True})
    assert seeded[:2] == ["threads=1", "strict"]
    assert all(os.environ[var] == "1" for var in THREAD_ENV_VARS)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    facts = run_facts()
    assert facts["strict"] is True and facts["threads"] == 1
    assert facts["pinned"]["env"]["OMP_NUM_THREADS"] == "1"
    assert "loaded_pools" in facts["pinned"]  # resized, or the reason why not


def test_explicit_thread_count_without_strict() -> None:
    seeded = start_run(5, {"threads": 3})
    assert "threads=3" in seeded and "strict" not in seeded
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert job_env_pairs(ReproSettings(threads=3))[0] == ("BLIS_NUM_THREADS", "3")
    assert job_env_pairs(ReproSettings()) == ()


def test_torch_already_imported_is_seeded_and_made_deterministic(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = FakeTorch(cuda=True)
    monkeypatch.setitem(sys.modules, "torch", torch)
    seeded = start_run(42, {"strict": True})
    assert ("manual_seed", 42) in torch.calls and ("cuda.manual_seed_all", 42) in torch.calls
    assert {"torch", "torch.cuda", "torch.deterministic"} <= set(seeded)
    assert torch.deterministic and torch.threads == 1
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    pinned = run_facts()["pinned"]["torch"]
    assert pinned["deterministic_algorithms"] is True and pinned["threads"] == 1


def test_torch_without_cuda_is_seeded_on_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", FakeTorch(cuda=False))
    seeded = start_run(42, None)
    assert "torch" in seeded and "torch.cuda" not in seeded and "torch.deterministic" not in seeded


def test_a_module_imported_after_the_run_started_gets_its_action(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "late_lib_xyz.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[Any] = []
    hook = _AfterImport("late_lib_xyz", lambda module: seen.append(module.VALUE))
    sys.meta_path.insert(0, hook)
    try:
        module = importlib.import_module("late_lib_xyz")
    finally:
        sys.modules.pop("late_lib_xyz", None)
    assert seen == [1]
    assert hook not in sys.meta_path  # one shot
    assert module.__spec__.loader is module.__loader__  # the real loader is back in place
    assert type(module.__loader__).__name__ != "_ThenLoader"


def test_start_run_installs_one_torch_hook_at_most() -> None:
    if "torch" in sys.modules:
        pytest.skip("torch is imported in this process")
    start_run(1, None)
    start_run(2, None)
    assert sum(isinstance(f, _AfterImport) for f in sys.meta_path) == 1


def test_settings_validation_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        repro_settings({"threads": 0})
    assert err.value.key == "hpcorch.repro.threads"
    with pytest.raises(ConfigError) as err:
        repro_settings({"stricct": True})
    assert "did you mean 'strict'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        repro_settings({"tolerances": {"acc": {"lower": 0.5}}})
    assert err.value.key == "hpcorch.repro.tolerances.acc.lower"
    assert repro_settings(None) == ReproSettings()
    typed = ReproSettings(threads=2)
    assert repro_settings(typed) is typed  # the typed object is used, not parsed again


def test_hpcorch_settings_validate_the_repro_node() -> None:
    from hpcorch.settings import HpcorchSettings, parse_settings

    with pytest.raises(ConfigError) as err:
        parse_settings(HpcorchSettings, {"repro": {"threads": -1}}, "hpcorch")
    assert err.value.key == "hpcorch.repro.threads"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed "
                    "(optional: pip install torch==2.13.0)")
@pytest.mark.parametrize("early", [True, False])
def test_real_torch_is_seeded_whether_imported_before_or_after_the_run_starts(
        early: bool) -> None:
    # A fresh interpreter: importing torch takes seconds and must not leak into other tests.
    script = textwrap.dedent(f"""
        import json
        {'import torch' if early else ''}
        from hpcorch.repro.determinism import run_facts, start_run
        start_run(1234, {{"strict": True}})
        import torch
        drawn = torch.rand(3).tolist()
        torch.manual_seed(1234)
        print(json.dumps({{"facts": run_facts(), "same": drawn == torch.rand(3).tolist(),
                          "det": torch.are_deterministic_algorithms_enabled(),
                          "threads": torch.get_num_threads()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["same"] and out["det"] and out["threads"] == 1
    assert "torch" in out["facts"]["seeded"] and "torch.deterministic" in out["facts"]["seeded"]
    assert ("when" in out["facts"]["pinned"]["torch"]) is (not early)
