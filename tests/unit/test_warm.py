"""The one warm start (hpcorch.worker.warm): which runs may be forked, and that a fork
really starts warm and ends as the run would."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from hpcorch.spec import Resources, RunSpec
from hpcorch.worker import warm


def _spec(tmp_path: Path, script: Path, *args: str) -> RunSpec:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return RunSpec(run_key="k", sweep_id="s", num=0, overrides=(), config={}, seed=0,
                   run_dir=str(run_dir), command=(sys.executable, str(script), *args))


def test_only_plain_runs_of_this_interpreter_are_forked(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text("")
    other = tmp_path / "other.py"
    other.write_text("")
    spec = _spec(tmp_path, script, "x=1")
    assert warm.warm_script([spec, dataclasses.replace(spec, num=1)]) == str(script)
    refused = [
        dataclasses.replace(spec, command=("/usr/bin/python3", str(script))),  # other python
        dataclasses.replace(spec, command=(sys.executable, "-c", "pass")),
        dataclasses.replace(spec, command=(sys.executable, str(tmp_path / "gone.py"))),
        dataclasses.replace(spec, image="sha256:" + "0" * 64),  # runs inside an image
        dataclasses.replace(spec, resources=Resources(tasks=2)),  # several ranks
    ]
    for bad in refused:
        assert warm.warm_script([spec, bad]) is None, bad.command
    assert warm.warm_script([spec, _spec(tmp_path, other)]) is None  # two apps: cold


def test_a_fork_starts_warm_and_exits_as_the_script(tmp_path: Path) -> None:
    # The script looks before it imports its own module: in a fresh interpreter that is
    # not loaded; in a warm fork it is, and argv, cwd and environment are the run's own.
    (tmp_path / "warm_probe_mod.py").write_text("VALUE = 1\n")
    script = tmp_path / "app.py"
    script.write_text(
        "import json, os, sys\n"
        "warm = 'warm_probe_mod' in sys.modules\n"
        "import warm_probe_mod\n"
        "json.dump({'warm': warm, 'argv': sys.argv, 'cwd': os.getcwd(),\n"
        "           'seed': os.environ.get('HPCORCH_SEED'), 'path0': sys.path[0]},\n"
        "          open('seen.json', 'w'))\n"
        "print('to stdout'); sys.exit(3)\n")
    spec = _spec(tmp_path, script, "lr=0.1")
    assert warm.warm_script([spec]) == str(script)
    warm.warm_up(str(script), spec)
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with open(out, "wb") as o, open(err, "wb") as e:
        pid = warm.fork_run(spec, str(script), {"HPCORCH_SEED": "7"}, o.fileno(), e.fileno())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 3, err.read_text()
    seen = json.loads((Path(spec.run_dir) / "seen.json").read_text())
    assert seen == {"warm": True, "argv": [str(script), "lr=0.1"], "cwd": spec.run_dir,
                    "seed": "7", "path0": str(tmp_path)}
    assert out.read_text() == "to stdout\n"
    assert "warm_probe_mod" in sys.modules  # the parent holds what its forks inherit
    sys.modules.pop("warm_probe_mod")
