"""The hpcorch launcher produces what Hydra's basic launcher produces.

Each scenario runs the same probe app twice, once with hpcorch and once with
Hydra's basic launcher and sweeper, and compares the sweep directories
(files, .hydra/*.yaml) and the values every job saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import records, run, write_probe_app

pytestmark = pytest.mark.integration

BASIC = ["hydra/launcher=basic", "hydra/sweeper=basic"]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if ".hpcorch" not in p.parts and p.name != "started"}


def _yaml(path: Path) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(path.read_text())


def _comparable_hydra(path: Path, app: Path) -> dict:  # type: ignore[type-arg]
    data = yaml.safe_load(path.read_text().replace(str(app), "<APP>"))["hydra"]
    for key in ("launcher", "sweeper", "sweep", "run"):
        data.pop(key, None)
    data["runtime"].pop("output_dir")
    data["runtime"]["choices"].pop("hydra/launcher", None)
    data["runtime"]["choices"].pop("hydra/sweeper", None)
    data["overrides"]["hydra"] = [o for o in data["overrides"]["hydra"]
                                  if not o.startswith(("hydra/launcher", "hydra/sweeper",
                                                       "hydra.sweep.dir"))]
    return data


@pytest.mark.parametrize("scenario", [
    ["x=1,2", "model=a,b"],
    ["x=1,2,3", "hydra.sweeper.max_batch_size=2"],
    ["x=5,6", "hydra.job.chdir=true"],
    ["x=7,8", "hydra.sweep.subdir=${hydra.job.override_dirname}"],
])
def test_same_outputs_as_the_basic_launcher(tmp_path: Path, scenario: list[str]) -> None:
    ours_app = write_probe_app(tmp_path / "ours")
    basic_app = write_probe_app(tmp_path / "basic")
    ours = run(ours_app, "-m", *scenario, "hydra.sweep.dir=out")
    basic = run(basic_app, "-m", *scenario, *BASIC, "hydra.sweep.dir=out")
    assert ours.returncode == 0, ours.stderr
    assert basic.returncode == 0, basic.stderr
    ours_dir, basic_dir = ours_app / "out", basic_app / "out"
    assert _tree(ours_dir) == _tree(basic_dir)
    for cfg in basic_dir.rglob(".hydra/config.yaml"):
        twin = ours_dir / cfg.relative_to(basic_dir)
        assert twin.read_bytes() == cfg.read_bytes()  # written by libyaml here, by PyYAML there
        overrides = twin.with_name("overrides.yaml")
        assert overrides.read_bytes() == cfg.with_name("overrides.yaml").read_bytes()
        assert _comparable_hydra(twin.with_name("hydra.yaml"), ours_app) == \
            _comparable_hydra(cfg.with_name("hydra.yaml"), basic_app)
    multirun = _yaml(ours_dir / "multirun.yaml")["hydra"]
    assert multirun["mode"] == "MULTIRUN"
    # what each job saw, including its return value handed back in sweep order
    ours_seen = [_seen(r, ours_app) for r in records(ours_dir)]
    basic_seen = [_seen(r, basic_app) for r in records(basic_dir)]
    assert ours_seen == basic_seen
    assert [int(s["num"]) for s in ours_seen] == list(range(len(ours_seen)))


def _seen(record: dict, app: Path) -> dict:  # type: ignore[type-arg]
    value = dict(record["return_value"])
    for key in ("cwd", "original_cwd", "abs", "output_dir"):
        value[key] = str(Path(value[key]).relative_to(app)) if value[key] != str(app) else "."
    return value


def test_chdir_and_original_cwd(tmp_path: Path) -> None:
    app = write_probe_app(tmp_path / "app")
    proc = run(app, "-m", "x=3", "hydra.job.chdir=true", "hydra.sweep.dir=out")
    assert proc.returncode == 0, proc.stderr
    [rec] = records(app / "out")
    seen = rec["return_value"]
    assert seen["cwd"] == str(app / "out" / "0") == seen["output_dir"]
    assert seen["original_cwd"] == str(app)
    assert seen["abs"] == str(app / "data.txt")
    assert seen["doubled"] == 6.0  # the app's own resolver worked inside the job


def test_sweep_returns_reach_the_caller(tmp_path: Path) -> None:
    """A sweep driven through Hydra's API gets each job's own return value, in order."""
    app = write_probe_app(tmp_path / "app")
    driver = app / "driver.py"
    driver.write_text(
        "import json, sys\n"
        "from hydra import compose, initialize\n"
        "from hydra._internal.hydra import Hydra\n"
        "from hydra._internal.utils import create_config_search_path\n"
        "from hydra.core.global_hydra import GlobalHydra\n"
        "import app\n"
        "from hydra.types import RunMode\n"
        "sp = create_config_search_path('conf')\n"
        "h = Hydra.create_main_hydra2(task_name='app', config_search_path=sp)\n"
        "rets = h.multirun(config_name='config', task_function=app.main.__wrapped__,\n"
        "                  overrides=['x=4,5,6', 'hydra.sweep.dir=out'])\n"
        "print(json.dumps([[r.return_value['x'], r.overrides, r.status.name] for r in rets[0]]))\n")
    proc = run(app, script="driver.py")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == [[4.0, ["x=4"], "COMPLETED"], [5.0, ["x=5"], "COMPLETED"],
                   [6.0, ["x=6"], "COMPLETED"]]
