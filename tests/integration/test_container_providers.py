"""Containers under provider=ray and provider=mpi, on the real Ray head, Open MPI and Podman.

What works (each run executes inside the pinned image, metrics equal to the run
without a container):
- provider=ray, both modes: the Ray task starts the wrapped command
  (`podman run ... python train.py ...`) as a subprocess; with a container a run
  always starts cold, whatever provider.warm says (a fork of the Ray worker would
  run on the host);
- provider=mpi with one rank: `mpirun -n 1 ... podman run ...`.

What is refused before anything is submitted (exit 2, one message):
- provider.runtime_env.image_uri (or .container) together with container=...: Ray
  would start its worker in an image, and that worker would then run podman;
- a multi-rank run inside an image without MPI (the hpcorch image has none; every
  rank died with ModuleNotFoundError after submission before this was refused),
  on every provider;
- a run directory that the runtime cannot mount (a ':' for podman).

    scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_container_providers.py
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from hpcorch.identity import short_hash
from tests.conftest import require_service
from tests.integration.helpers import records, run
from tests.integration.ray_support import (  # noqa: F401 - fixture
    dashboard_get,
    ray_url,
    token_headers,
)
from tests.integration.test_container_podman import IMAGE, image_id  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.container]

BOX = ("container=podman", f"container.image={IMAGE}")


def sweep(app_dir: Path, name: str, *args: str, lrs: str = "0.1,0.01") -> list[dict[str, Any]]:
    """A two-run sweep of train.py (its own index, so nothing is reused from another test)."""
    sweep_dir = app_dir / "sweeps" / name
    done = run(app_dir, "-m", f"lr={lrs}", "epochs=3", f"hydra.sweep.dir={sweep_dir}",
               "hpcorch.progress=off", *args, script="train.py",
               env={"HPCORCH_HOME": str(app_dir / f"home-{name}")})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return records(sweep_dir)


def assert_inside_with_same_metrics(boxed: list[dict[str, Any]], host: list[dict[str, Any]],
                                    digest: str, provider: str) -> None:
    """Every boxed run ran in the image (interpreter, OS, digest) and got the host's metrics."""
    assert [r["state"] for r in boxed] == ["SUCCEEDED"] * len(host)
    for inside, outside in zip(boxed, host, strict=True):
        assert inside["provider"] == provider
        assert inside["seed"] == outside["seed"]
        assert inside["metrics"] and inside["metrics"] == outside["metrics"]  # exactly
        assert inside["run_key"] != outside["run_key"]  # the image is part of the identity
        fp = inside["fingerprint"]
        assert fp["executable"] == "/opt/hpcorch/bin/python" != outside["fingerprint"]["executable"]
        assert fp["container"]["os_release"].startswith("Debian GNU/Linux 12")
        assert fp["container"]["digest"] == digest and fp["container"]["runtime"] == "podman"
        assert not fp.get("warnings"), fp.get("warnings")  # planned run key == computed one


@pytest.mark.ray
@pytest.mark.parametrize("mode", ["sweep", "job"])
def test_ray_runs_inside_the_image_with_the_metrics_of_the_run_without(
        app_dir: Path, ray_url: str, image_id: str, mode: str) -> None:  # noqa: F811
    ray = ("provider=ray", f"provider.address={ray_url}", f"provider.mode={mode}")
    host = sweep(app_dir, "host", *ray)
    boxed = sweep(app_dir, "boxed", *ray, *BOX)  # provider.warm=true (the default) too
    assert_inside_with_same_metrics(boxed, host, image_id, "ray")
    jobs = {j["submission_id"]: j for j in dashboard_get("/api/jobs/", token_headers())
            if j.get("submission_id")}
    for rec in boxed:  # really Ray's runs: each record names its Ray job, which Ray lists
        assert rec["job_id"].split("#")[0] in jobs


@pytest.mark.mpi
def test_mpi_single_rank_runs_inside_the_image_with_the_metrics_of_the_run_without(
        app_dir: Path, image_id: str) -> None:  # noqa: F811
    require_service(shutil.which("mpirun") is not None, "Open MPI (mpirun)",
                    "run scripts/mpi-up.sh")
    host = sweep(app_dir, "host", "provider=local")
    boxed = sweep(app_dir, "boxed", "provider=mpi", *BOX)
    assert_inside_with_same_metrics(boxed, host, image_id, "mpi")
    for rec in boxed:  # started by mpirun: its per-rank output directory is there
        assert (Path(rec["run_dir"]) / ".hpcorch" / "ranks").is_dir()


def refused(app_dir: Path, sweep_dir: Path, *args: str, planned: bool = False) -> str:
    """Run a sweep that must be refused; return its one error line. `planned`: the refusal
    comes from the provider, after the sweep's specs were written (never submitted)."""
    done = run(app_dir, "-m", "lr=0.1,0.01", "epochs=1", f"hydra.sweep.dir={sweep_dir}",
               "hpcorch.progress=off", *args, script="train.py",
               env={"HPCORCH_HOME": str(app_dir / "home")})
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("hpcorch: error:")]
    assert len(errors) == 1, done.stderr
    if planned:
        assert records(sweep_dir) == []  # nothing ran
    else:  # nothing was planned into the sweep directory, let alone submitted or run
        assert not list(sweep_dir.glob("**/.hpcorch")), list(sweep_dir.glob("**/.hpcorch"))
    return errors[0]


@pytest.mark.ray
def test_rays_own_image_with_hpcorchs_container_is_refused_before_submission(
        app_dir: Path, ray_url: str, image_id: str) -> None:  # noqa: F811
    sweep_dir = app_dir / "sweeps" / "ray-image"
    line = refused(app_dir, sweep_dir, "provider=ray", f"provider.address={ray_url}", *BOX,
                   f"+provider.runtime_env.image_uri={IMAGE}", planned=True)
    assert line == (
        f"hpcorch: error: provider.runtime_env.image_uri='{IMAGE}': must be left out with "
        "container=... (hpcorch runs each run inside the pinned image itself); use one of the two")
    sweep_id = short_hash(str(sweep_dir), 10)
    jobs = dashboard_get("/api/jobs/", token_headers())
    assert not [j for j in jobs if (j.get("metadata") or {}).get("hpcorch_sweep_id") == sweep_id]


@pytest.mark.mpi
@pytest.mark.parametrize("provider", ["mpi", "local"])
def test_multi_rank_run_in_an_image_without_mpi_is_refused_before_submission(
        app_dir: Path, image_id: str, provider: str) -> None:  # noqa: F811
    require_service(shutil.which("mpirun") is not None, "Open MPI (mpirun)",
                    "run scripts/mpi-up.sh")
    line = refused(app_dir, app_dir / "sweeps" / provider, f"provider={provider}",
                   "resources.tasks=2", *BOX)
    assert line == (
        "hpcorch: error: resources.tasks=2: a run of 2 ranks inside container.image="
        f"'{IMAGE}' (container=podman) needs MPI in the image, and it has no MPI (neither "
        "mpi4py nor libmpi); allowed: resources.tasks=1, container=none, or an image with "
        "MPI and mpi4py")


def test_a_run_dir_podman_cannot_mount_is_refused_before_submission(
        app_dir: Path, image_id: str) -> None:  # noqa: F811
    sweep_dir = app_dir / "sweeps" / "a:b"
    line = refused(app_dir, sweep_dir, *BOX)
    assert line == (
        f"hpcorch: error: hydra.sweep.dir='{sweep_dir}/0': the run directory "
        "(hydra.sweep.dir/subdir) cannot be mounted into the container: container=podman "
        "splits mount arguments on ':'; allowed: a path without ':', or container=none")
