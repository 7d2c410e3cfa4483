"""Real Slurm with Podman: the same sweep inside the image on Slurm, and checkpoint-and-requeue
through the container (the time-limit signal reaches the code; the requeued run resumes).

    scripts/slurm-up.sh && scripts/podman-up.sh
    scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_container_slurm.py
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from hpcorch.containers import prepare_container
from hpcorch.providers.slurm.provider import SlurmProvider
from hpcorch.providers.slurm.settings import SlurmSettings
from hpcorch.spec import Resources, RunSpec, RunState
from hpcorch.store.records import atomic_write_json, spec_path
from hpcorch.testing import wait_terminal
from hpcorch.testing.signals import SignalProbe, wait_for
from tests.conftest import require_service
from tests.integration.helpers import records, run
from tests.integration.test_container_podman import HOW, IMAGE, image_exists

pytestmark = [pytest.mark.integration, pytest.mark.container, pytest.mark.slurm]


def slurm_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30,
                          check=False)
    return ping.returncode == 0 and "UP" in ping.stdout


@pytest.fixture(scope="module")
def slurm_and_image() -> None:
    require_service(slurm_up(), "Slurm", "scripts/slurm-up.sh, then run the tests through "
                                         "scripts/in-netns.sh")
    require_service(shutil.which("podman") is not None and image_exists(IMAGE),
                    f"podman image {IMAGE}", HOW)


def test_slurm_sweep_inside_the_image_equals_local_without(app_dir: Path,
                                                           slurm_and_image: None) -> None:
    common = ("-m", "lr=0.1,0.01", "epochs=5", "hpcorch.progress=off")
    local = run(app_dir, *common, "hydra.sweep.dir=sweeps/local", script="train.py")
    assert local.returncode == 0, local.stderr
    slurm = run(app_dir, *common, "hydra.sweep.dir=sweeps/slurm", "provider=slurm",
                "container=podman", f"container.image={IMAGE}", script="train.py", timeout=600)
    assert slurm.returncode == 0, slurm.stdout + slurm.stderr
    for outside, inside in zip(records(app_dir / "sweeps" / "local"),
                               records(app_dir / "sweeps" / "slurm"), strict=True):
        assert inside["metrics"] == outside["metrics"] and inside["seed"] == outside["seed"]
        assert "_" in inside["job_id"]  # a Slurm array task id, seen inside the container
        fp = inside["fingerprint"]
        assert fp["executable"] == "/opt/hpcorch/bin/python"
        assert fp["container"]["os_release"].startswith("Debian GNU/Linux 12")
        assert fp["container"]["digest"].startswith("sha256:")


def test_requeue_through_the_container(tmp_path: Path, slurm_and_image: None) -> None:
    """SIGUSR2 (what `--signal=B:USR2@grace` sends before the time limit) reaches
    hpcorch's task, which passes hpcorch.checkpoint's SIGUSR1 on -> podman (sig-proxy) ->
    catatonit -> python; the code "checkpoints" and exits, submitit's handler requeues
    the job, and the restarted run inside the image sees restart count 1."""
    run_dir = tmp_path / "sweep" / "0"
    run_dir.mkdir(parents=True)
    probe = SignalProbe(str(run_dir), signals=("SIGUSR1", "SIGTERM"), exit_on=("SIGUSR1",),
                        term_exit=143, finish_after_restart=True)
    spec = RunSpec(run_key=f"requeue{uuid.uuid4().hex[:8]}", sweep_id="requeue", num=0,
                   overrides=(), config={}, seed=5, run_dir=str(run_dir), workdir=str(tmp_path),
                   command=probe.argv(), resources=Resources(time_min=10))
    ctx = prepare_container({"name": "podman", "image": IMAGE, "check": False},
                            workdir=str(tmp_path))
    wrapped = ctx.wrap(spec)
    atomic_write_json(spec_path(run_dir), wrapped.to_dict())
    # The probe never saves a checkpoint: it opts in to requeue on the time-limit signal.
    provider = SlurmProvider(SlurmSettings(max_requeues=1, warm=False,
                                           requeue_on_timeout="always"))
    provider.check()
    [handle] = provider.submit([wrapped])
    try:
        probe.wait_ready(timeout=180)
        done = subprocess.run(["scancel", "--batch", "--signal=USR2", handle.job_id],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert probe.wait_seen("SIGUSR1", timeout=60), probe.seen()
        wait_for(lambda: len(probe.starts()) >= 2, 180, f"never restarted: {probe.starts()}")
        [status] = wait_terminal(provider, [handle], timeout=180)
    finally:
        provider.cancel([handle])
        provider.close()
    assert probe.starts() == [(0, "/opt/hpcorch/bin/python"), (1, "/opt/hpcorch/bin/python")]
    assert status.state is RunState.SUCCEEDED, status
