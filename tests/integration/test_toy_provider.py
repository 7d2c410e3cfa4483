"""A provider written outside hpcorch plugs in through the entry point alone (issue 11, point 2).

tests/toy_provider/ is a provider package that no file of `hpcorch/` names: on
PYTHONPATH, its `.dist-info` registers it under the entry-point group
`hpcorch.providers` and its search-path plugin gives Hydra `provider/toy.yaml`.
It must pass the shipped `ProviderContract` and run a real two-run sweep.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpcorch.testing import ProviderContract
from tests.integration.helpers import records, run

pytestmark = pytest.mark.integration

TOY = Path(__file__).resolve().parents[1] / "toy_provider"


@pytest.fixture
def toy_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the toy provider for this process (sys.path) and its children (PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(TOY))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TOY), os.environ.get("PYTHONPATH", "")) if p))


class TestToyContract(ProviderContract):
    @pytest.fixture
    def provider(self, toy_on_path: None):  # type: ignore[no-untyped-def]
        from hpcorch.providers import create_provider

        provider = create_provider({"name": "toy", "slots": 2})
        assert type(provider).__module__ == "hpcorch_toy.provider"  # found by its entry point
        yield provider
        provider.close()


def test_the_toy_provider_runs_a_sweep(app_dir: Path, toy_on_path: None) -> None:
    done = run(app_dir, "-m", "provider=toy", "lr=0.1,0.05", "epochs=2", "hydra.sweep.dir=toy",
               script="train.py")
    assert done.returncode == 0, done.stderr
    recs = records(app_dir / "toy")
    assert [r["state"] for r in recs] == ["SUCCEEDED", "SUCCEEDED"]
    assert all(r["provider"] == "toy" and r["job_id"].startswith("toy-") for r in recs)
    local = run(app_dir, "-m", "lr=0.1,0.05", "epochs=2", "hydra.sweep.dir=local",
                "hpcorch.rerun=true", script="train.py")
    assert local.returncode == 0, local.stderr
    assert [(r["run_key"], r["metrics"]) for r in records(app_dir / "local")] == [
        (r["run_key"], r["metrics"]) for r in recs]


def test_a_provider_missing_part_of_the_contract_is_refused_when_looked_up(
        toy_on_path: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpcorch_toy.provider as toy

    from hpcorch.errors import HpcorchError
    from hpcorch.providers import provider_class

    monkeypatch.delattr(toy.ToyProvider, "lookup")
    with pytest.raises(HpcorchError, match="does not implement the provider contract: "
                                           "missing lookup"):
        provider_class("toy")


def test_a_provider_without_capabilities_is_refused_when_looked_up(
        toy_on_path: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import hpcorch_toy.provider as toy

    from hpcorch.errors import HpcorchError
    from hpcorch.providers import provider_class

    monkeypatch.setattr(toy.ToyProvider, "capabilities", {"multi_rank": "mpirun"})
    with pytest.raises(HpcorchError, match="missing capabilities"):
        provider_class("toy")


def test_an_unknown_provider_lists_the_registered_ones(toy_on_path: None) -> None:
    from hpcorch.errors import ConfigError
    from hpcorch.providers import provider_class

    with pytest.raises(ConfigError, match="available: local, slurm, mpi, ray.*toy"):
        provider_class("nosuch")
