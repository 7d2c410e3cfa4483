"""The cached composer gives exactly Hydra's own per-job configs.

Every job config is compared, as YAML of the unresolved config and of the
resolved task part, with `ConfigLoaderImpl.load_sweep_config`, the function
Hydra's basic launcher calls for each job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from hydra.types import RunMode
from hydra_plugins.hpcorch_launcher._compose import CachedComposer
from omegaconf import OmegaConf, open_dict


@pytest.fixture(autouse=True)
def _resolvers() -> Iterator[None]:
    setup_globals()  # registers Hydra's `now` and `hydra` resolvers, as every Hydra app does
    saved = HydraConfig.instance().cfg
    yield
    HydraConfig.instance().cfg = saved  # later tests must not see a job's Hydra config


@pytest.fixture
def loader(tmp_path: Path) -> ConfigLoaderImpl:
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "db").mkdir()
    (conf / "config.yaml").write_text(
        "defaults:\n  - model: small\n  - db: sqlite\n  - _self_\n"
        "lr: 0.1\nname: exp\nnested:\n  depth: 2\n  tag: ${name}-${lr}\nlist: [1, 2]\n"
        "stamp: ${now:%H%M%S%f}\n"
    )
    (conf / "model" / "small.yaml").write_text("width: 8\nact: relu\n")
    (conf / "model" / "big.yaml").write_text("width: 64\nact: gelu\nextra: yes\n")
    (conf / "db" / "sqlite.yaml").write_text("path: db.sqlite\n")
    (conf / "db" / "pg.yaml").write_text("host: localhost\nport: 5432\n")
    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(conf)))


JOBS = [
    ["lr=0.5"],
    ["lr=0.01", "nested.depth=3"],
    ["model=big"],
    ["model=big", "lr=1e-3"],
    ["db=pg", "db.port=1"],
    ["+new_key=7"],
    ["++lr=0.2"],
    ["~nested.tag"],
    ["list=[3,4,5]"],
    ["name='with space'"],
    ["hydra.job.chdir=true", "lr=0.3"],
    ["hydra.job.name=renamed", "model=big"],
    ["hydra.job.env_copy=[HOME]", "lr=0.4"],
    [],
]


@pytest.mark.parametrize("master_overrides", [
    [], ["hydra.job.chdir=false", "name=base"], ["hydra.job.env_copy=[HOME]", "db=pg"]])
def test_cached_configs_equal_hydras(loader: ConfigLoaderImpl, master_overrides: list[str]) -> None:
    master = loader.load_configuration("config", master_overrides, RunMode.MULTIRUN)
    OmegaConf.to_container(master, resolve=False)
    str(master.stamp)  # fill the `now` cache, as Hydra's run does before sweeping
    composer = CachedComposer(loader, master)
    for job in JOBS:
        ours = composer.load(job)
        theirs = loader.load_sweep_config(master, job)
        assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(theirs), job
        HydraConfig.instance().set_config(theirs)
        assert OmegaConf.to_yaml(_task(ours), resolve=True) == OmegaConf.to_yaml(
            _task(theirs), resolve=True
        )
        view = composer.task_view(job)
        if view is not None:
            assert OmegaConf.to_yaml(view, resolve=True) == OmegaConf.to_yaml(
                _task(theirs), resolve=True
            ), job
        _check_plain_view(composer, job)
    # value-only jobs reuse one composition per distinct group choice
    assert composer.compositions == len(
        {tuple(o for o in j if o.split("=")[0] in ("model", "db")) for j in JOBS}
    )
    # ... and parse each job's overrides once, whatever asks for them
    assert composer.load(JOBS[0]).hydra.overrides.task == JOBS[0]
    assert len(composer._parsed) == len({tuple(j) for j in JOBS})


def test_task_view_declines_hydra_interpolations(tmp_path: Path) -> None:
    conf = tmp_path / "c2"
    conf.mkdir()
    (conf / "config.yaml").write_text("out: ${hydra:runtime.output_dir}\nx: 1\n")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(conf)))
    master = loader.load_configuration("config", [], RunMode.MULTIRUN)
    composer = CachedComposer(loader, master)
    assert composer.task_view(["x=2"]) is None
    assert composer.task_view(["hydra.job.chdir=true"]) is None
    assert composer.load(["x=2"]).x == 2


def test_reuse_modifies_the_cached_composition_in_place(loader: ConfigLoaderImpl) -> None:
    master = loader.load_configuration("config", [], RunMode.MULTIRUN)
    composer = CachedComposer(loader, master)
    first = composer.load(["lr=0.7"], reuse=True)
    assert first is composer.load(["lr=0.8"], reuse=True)  # the child's private copy, no deepcopy


def _check_plain_view(composer: CachedComposer, job: list[str]) -> None:
    """The views a forked job writes hydra.yaml and sets up logging from equal OmegaConf's
    own conversions of its config, key order included."""
    plain = composer.plain_view(job)
    if any(o.startswith("hydra") for o in job):
        assert plain is None, job
        return
    assert plain is not None, job
    cfg = composer.load(job)
    with open_dict(cfg):
        cfg.hydra.job.id = cfg.hydra.job.num = 7
        cfg.hydra.runtime.output_dir = "/somewhere/7"
    HydraConfig.instance().set_config(cfg)
    expected = OmegaConf.to_container(cfg.hydra, resolve=False, enum_to_str=True)
    assert json.dumps(plain.hydra_data(cfg)) == json.dumps(expected), job
    logging_conf = plain.job_logging(cfg)
    assert logging_conf is not None and "/somewhere/7/" in json.dumps(logging_conf)
    expected = OmegaConf.to_container(cfg.hydra.job_logging, resolve=True)
    assert json.dumps(logging_conf) == json.dumps(expected), job


def _task(cfg):  # type: ignore[no-untyped-def]
    task = cfg.copy()
    from omegaconf import open_dict

    with open_dict(task):
        del task["hydra"]
    return task
