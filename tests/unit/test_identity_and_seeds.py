"""Run keys and per-run seeds: deterministic, provider-independent, sensitive to what matters."""

from __future__ import annotations

import random

import numpy as np
import pytest

from hpcorch.identity import canonical_json, run_key
from hpcorch.repro import rng, seed
from hpcorch.repro.seeds import apply_seed, derive_seed

CFG = {
    "lr": 0.1,
    "epochs": 3,
    "provider": {"name": "local"},
    "hpcorch": {"rerun": False},
    "resources": {"cpus": 1},
}


def test_run_key_is_stable_and_order_independent() -> None:
    shuffled = dict(reversed(list(CFG.items())))
    assert run_key(CFG, code_version="git:abc", seed=1) == run_key(
        shuffled, code_version="git:abc", seed=1
    )
    assert len(run_key(CFG, code_version="git:abc", seed=1)) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"lr": 0.2},
        {"epochs": 4},
        {"extra": 1},
    ],
)
def test_run_key_changes_with_the_experiment(change: dict) -> None:
    assert run_key({**CFG, **change}, code_version="c", seed=1) != run_key(
        CFG, code_version="c", seed=1
    )


def test_run_key_changes_with_code_seed_and_image() -> None:
    base = run_key(CFG, code_version="c", seed=1)
    assert run_key(CFG, code_version="d", seed=1) != base
    assert run_key(CFG, code_version="c", seed=2) != base
    assert run_key(CFG, code_version="c", seed=1, image="sha256:1") != base


def test_run_key_ignores_where_it_runs() -> None:
    moved = {
        **CFG,
        "provider": {"name": "slurm", "partition": "gpu"},
        "resources": {"cpus": 8},
        "hpcorch": {"rerun": True},
        "container": {"name": "podman"},
    }
    assert run_key(moved, code_version="c", seed=1) == run_key(CFG, code_version="c", seed=1)


def test_canonical_json_sorts_keys() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_derived_seed_is_deterministic_and_distinct() -> None:
    a = derive_seed(0, ["lr=0.1"])
    assert a == derive_seed(0, ["lr=0.1"])
    assert a != derive_seed(0, ["lr=0.01"])
    assert a != derive_seed(1, ["lr=0.1"])
    assert 0 <= a < 2**31 - 1


def test_derived_seed_uses_parsed_values_and_ignores_order() -> None:
    assert derive_seed(0, ["lr=1e-3", "epochs=3"]) == derive_seed(0, ["epochs=3", "lr=0.001"])


def test_explicit_seed_wins() -> None:
    assert derive_seed(0, ["lr=0.1", "seed=42"]) == 42
    assert derive_seed(7, ["seed=3"]) == 3


def test_seed_ignores_provider_and_hpcorch_overrides() -> None:
    base = derive_seed(0, ["lr=0.1"])
    assert (
        derive_seed(
            0,
            [
                "lr=0.1",
                "provider=slurm",
                "hpcorch.rerun=true",
                "resources.cpus=4",
                "provider.workers=3",
            ],
        )
        == base
    )


def test_no_overrides_means_the_base_seed() -> None:
    assert derive_seed(5, []) == 5
    assert derive_seed(5, ["provider=slurm"]) == 5


def test_apply_seed_seeds_random_numpy_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPCORCH_SEED", raising=False)
    seeded = apply_seed(123)
    first = (random.random(), np.random.rand())
    apply_seed(123)
    assert (random.random(), np.random.rand()) == first
    assert {"random", "numpy"} <= set(seeded)
    assert seed() == 123
    import os

    assert os.environ["PYTHONHASHSEED"] == "123"


def test_rng_streams_are_independent_per_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCORCH_SEED", "9")
    a1 = rng("init").random(3)
    assert np.array_equal(rng("init").random(3), a1)
    assert not np.array_equal(rng("batches").random(3), a1)
    monkeypatch.setenv("HPCORCH_SEED", "10")
    assert not np.array_equal(rng("init").random(3), a1)
