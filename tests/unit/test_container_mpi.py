"""Multi-rank runs need MPI in the image, and every planned mount must be mountable:
both are refused while the sweep is planned, with one message (the real engines are in
tests/integration/test_container_providers.py)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence

import pytest
from test_container_check import probe, report
from test_container_render import DIGEST, make_spec

from hpcorch.containers import prepare_container
from hpcorch.containers.base import plan_binds, require_mountable
from hpcorch.containers.check import IMAGE_PROBE, MpiReport
from hpcorch.errors import ConfigError
from hpcorch.spec import Resources


class ImageRunner:
    """image inspect, the in-image check, then the image probe (answered with `mpi`)."""

    def __init__(self, mpi: dict[str, str]) -> None:
        self.calls: list[list[str]] = []
        self.mpi = mpi

    def __call__(self, argv: Sequence[str], **_: object) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if argv[1:3] == ["image", "inspect"]:
            return subprocess.CompletedProcess(argv, 0, DIGEST.removeprefix("sha256:") + " []",
                                               "")
        return subprocess.CompletedProcess(argv, 0, report(probe(**self.mpi)), "")


def context(runner: ImageRunner, **node: object):  # type: ignore[no-untyped-def]
    return prepare_container({"name": "podman", "image": "hpcorch:latest", **node},
                             workdir="/w", runner=runner, which=lambda _: "/usr/bin/podman")


def test_a_multi_rank_run_in_an_image_without_mpi_is_refused() -> None:
    runner = ImageRunner({"mpi4py": "", "libmpi": ""})
    ctx = context(runner)
    ctx.wrap(make_spec())  # one rank needs no MPI
    with pytest.raises(ConfigError) as err:
        ctx.wrap(make_spec(Resources(tasks=2)))
    assert err.value.key == "resources.tasks" and err.value.value == 2
    assert str(err.value) == (
        "resources.tasks=2: a run of 2 ranks inside container.image='hpcorch:latest' "
        "(container=podman) needs MPI in the image, and it has no MPI (neither mpi4py nor "
        "libmpi); allowed: resources.tasks=1, container=none, or an image with MPI and mpi4py")
    # The probe runs with the check (one container start), isolated (no network).
    [found] = [c for c in runner.calls if any(IMAGE_PROBE in a for a in c)]
    assert found[found.index("--network") + 1] == "none"


@pytest.mark.parametrize("mpi", [{"mpi4py": "3.1.4", "libmpi": ""},
                                 {"mpi4py": "", "libmpi": "libmpi.so.40"}])
def test_an_image_with_mpi_wraps_multi_rank_runs(mpi: dict[str, str]) -> None:
    ctx = context(ImageRunner(mpi))
    assert ctx.wrap(make_spec(Resources(tasks=2))).command[:2] == ("podman", "run")


def test_without_the_in_image_check_multi_rank_runs_are_wrapped() -> None:
    """container.check=false: the user vouches for the image; the run shows what happens."""
    runner = ImageRunner({"mpi4py": "", "libmpi": ""})
    ctx = context(runner, check=False)
    assert ctx.wrap(make_spec(Resources(tasks=2))).command[:2] == ("podman", "run")
    assert [c[1] for c in runner.calls] == ["image"]  # inspect only: nothing ran inside


def test_the_probe_itself_finds_this_interpreters_mpi4py() -> None:
    """The probe's own code, run by a real interpreter (the host venv has mpi4py)."""
    pytest.importorskip("mpi4py")
    done = subprocess.run([sys.executable, "-c", IMAGE_PROBE], capture_output=True, text=True,
                          timeout=60, check=True, cwd="/")
    data = json.loads(done.stdout)
    found = MpiReport(data["mpi4py"], data["libmpi"])
    assert found.present and found.mpi4py and found.describe().startswith("mpi4py ")


def test_describe_names_what_is_missing() -> None:
    assert MpiReport("", "").describe() == "no MPI (neither mpi4py nor libmpi)"
    assert MpiReport("3.1.4", "libmpi.so.40").describe() == "mpi4py 3.1.4, libmpi.so.40"


@pytest.mark.parametrize(("runtime", "path", "refused"), [
    ("podman", "/w/a:b", True), ("docker", "/w/a:b", True), ("apptainer", "/w/a:b", True),
    ("podman", "/w/lr=0.1,bs=2", False),  # Hydra's override_dirname subdirs hold commas
    ("apptainer", "/w/lr=0.1,bs=2", True), ("podman", "/w/a b\tc", False),
])
def test_mountable_paths_by_runtime(runtime: str, path: str, refused: bool) -> None:
    if refused:
        with pytest.raises(ConfigError, match=f"container={runtime} splits mount arguments"):
            require_mountable("hydra.sweep.dir", path, runtime, "the run directory")
    else:
        require_mountable("hydra.sweep.dir", path, runtime, "the run directory")


def test_plan_binds_names_the_setting_of_the_unmountable_path() -> None:
    bad = dataclasses.replace(make_spec(), run_dir="/home/alice/exp/multirun/a:b/3")
    with pytest.raises(ConfigError) as err:
        plan_binds(bad, [], "podman")
    assert err.value.key == "hydra.sweep.dir" and err.value.value == bad.run_dir
    with pytest.raises(ConfigError) as err:
        plan_binds(dataclasses.replace(make_spec(), workdir="/x:y"), [], "podman")
    assert err.value.key == "hydra.runtime.cwd"
    assert plan_binds(bad, [])  # no runtime named: rendering only, nothing refused
