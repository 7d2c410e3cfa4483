"""Real Podman: sweeps inside the image, pinned digests, signals, preflight errors.

Needs Podman configured and the image built (scripts/podman-up.sh) and runs
inside the `hpcorch` network namespace like every engine test:

    scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_container_podman.py

HPCORCH_TEST_IMAGE names the image (default localhost/hpcorch:latest),
HPCORCH_TEST_BASE_IMAGE the Python-only base it was built on.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcorch.containers import prepare_container
from hpcorch.providers.local import LocalProvider, LocalSettings
from hpcorch.spec import RunSpec, RunState
from hpcorch.testing import wait_state, wait_terminal
from hpcorch.testing.signals import SignalProbe, process_group_of
from tests.conftest import require_service
from tests.integration.helpers import records, run

pytestmark = [pytest.mark.integration, pytest.mark.container]

IMAGE = os.environ.get("HPCORCH_TEST_IMAGE", "localhost/hpcorch:latest")
BASE = os.environ.get("HPCORCH_TEST_BASE_IMAGE", "localhost/hpcorch-base:bookworm")
HOW = "run scripts/podman-up.sh (installs Podman, builds the base and the hpcorch image)"


def podman(*args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300,
                          check=False, **kw)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} rc={done.returncode}: {done.stderr}")
    return done


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


@pytest.fixture(scope="module")
def image_id() -> str:
    """The ID of the hpcorch image (the test fails in CI, skips elsewhere, without it)."""
    require_service(shutil.which("podman") is not None, "podman", HOW)
    require_service(image_exists(IMAGE), f"image {IMAGE}", HOW)
    return "sha256:" + podman("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()


def sweep(app_dir: Path, name: str, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    done = run(app_dir, "-m", "lr=0.1,0.01", "epochs=5", f"hydra.sweep.dir=sweeps/{name}",
               "hpcorch.progress=off", *extra, script="train.py")
    assert done.returncode == 0, done.stdout + done.stderr
    return records(app_dir / "sweeps" / name)


def test_sweep_inside_the_image_gives_the_same_metrics(app_dir: Path, image_id: str) -> None:
    host = sweep(app_dir, "host")
    boxed = sweep(app_dir, "podman", "container=podman", f"container.image={IMAGE}")
    assert [r["state"] for r in boxed] == ["SUCCEEDED", "SUCCEEDED"]
    for outside, inside in zip(host, boxed, strict=True):
        assert inside["overrides"][:2] == outside["overrides"][:2]
        assert inside["seed"] == outside["seed"]
        assert inside["metrics"] == outside["metrics"]  # exactly, not approximately
        assert inside["run_key"] != outside["run_key"]  # the image is part of the identity
        fp = inside["fingerprint"]
        # Proof the code ran inside the image: its interpreter, OS and digest.
        assert fp["executable"] == "/opt/hpcorch/bin/python" != outside["fingerprint"]["executable"]
        assert fp["container"]["os_release"].startswith("Debian GNU/Linux 12")
        assert fp["container"]["digest"] == image_id and fp["container"]["runtime"] == "podman"
        assert not fp.get("warnings"), fp.get("warnings")  # planned run key == computed one
        spec = (Path(inside["run_dir"]) / ".hpcorch" / "spec.json").read_text()
        assert image_id in spec
    assert outside["fingerprint"]["container"]["digest"] == ""


def test_dry_run_renders_the_pinned_command(app_dir: Path, image_id: str) -> None:
    done = run(app_dir, "-m", "lr=0.1", "container=podman", f"container.image={IMAGE}",
               "hpcorch.dry_run=true", script="train.py")
    assert done.returncode == 0, done.stderr
    assert "podman run --rm --init" in done.stdout and image_id in done.stdout


@pytest.fixture
def scratch_tag(image_id: str) -> Iterator[str]:
    tag = f"localhost/hpcorch-test-{uuid.uuid4().hex[:8]}:latest"
    yield tag
    podman("rmi", tag, check=False)


def test_runs_keep_the_pinned_image_when_the_tag_moves(tmp_path: Path, image_id: str,
                                                       scratch_tag: str) -> None:
    podman("tag", IMAGE, scratch_tag)
    ctx = prepare_container({"name": "podman", "image": scratch_tag, "check": False},
                            workdir=str(tmp_path))
    assert ctx.image == image_id
    require_service(image_exists(BASE), f"base image {BASE}", HOW)
    podman("tag", BASE, scratch_tag)  # "rebuilt": the tag now names another image
    spec = RunSpec(run_key="pin", sweep_id="pin", num=0, overrides=(), config={}, seed=1,
                   run_dir=str(tmp_path), workdir=str(tmp_path),
                   command=("python", "-c", "import sys; print(sys.executable)"))
    done = subprocess.run(list(ctx.wrap(spec).command), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "/opt/hpcorch/bin/python"  # the base image has no such venv


def test_signals_sent_to_the_job_reach_the_code_inside(tmp_path: Path, image_id: str) -> None:
    run_dir = tmp_path / "sweep" / "0"
    run_dir.mkdir(parents=True)
    probe = SignalProbe(str(run_dir), term_exit=143)  # exits like a process killed by TERM
    spec = RunSpec(run_key="sig", sweep_id=f"sig{uuid.uuid4().hex[:6]}", num=0, overrides=(),
                   config={}, seed=1, run_dir=str(run_dir), workdir=str(tmp_path),
                   command=probe.argv())
    ctx = prepare_container({"name": "podman", "image": IMAGE, "check": False},
                            workdir=str(tmp_path))
    wrapped = ctx.wrap(spec)
    provider = LocalProvider(LocalSettings(workers=1), executor=lambda _: 99)  # warm must not run
    try:
        [handle] = provider.submit([wrapped])
        wait_state(provider, handle, RunState.RUNNING)
        pid_line = probe.wait_ready()
        assert pid_line.endswith("/opt/hpcorch/bin/python")  # inside the image
        # SIGUSR2 to the job's process group (what a scheduler's warning signal does):
        os.killpg(process_group_of(str(run_dir), "podman"), signal.SIGUSR2)
        assert probe.wait_seen("SIGUSR2"), probe.seen()
        # SIGTERM through the provider's own cancel: the code sees it and exits cleanly.
        provider.cancel([handle])
        assert probe.seen() == ["SIGUSR2", "SIGTERM"]
        [status] = wait_terminal(provider, [handle])
        assert status.state is RunState.CANCELLED
    finally:
        provider.close()
    assert podman("ps", "-a", "--filter", f"name={spec.sweep_id}", "--format", "{{.Names}}"
                  ).stdout.strip() == ""  # --rm: nothing left behind


def check_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpcorch", "container", "check", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_check_reports_versions_and_the_app(app_dir: Path, image_id: str) -> None:
    done = check_cli(app_dir, "--image", IMAGE, "--app", "train.py")
    assert done.returncode == 0, done.stderr
    assert "python    3.11" in done.stdout and "imports" in done.stdout
    broken = app_dir / "broken.py"
    broken.write_text("import torch_not_in_the_image\n")
    bad = check_cli(app_dir, "--image", IMAGE, "--app", "broken.py")
    assert bad.returncode == 2 and "does not import inside the image" in bad.stderr


def test_check_names_a_missing_image(tmp_path: Path, image_id: str) -> None:
    done = check_cli(tmp_path, "--image", "localhost/no-such-image:1")
    assert done.returncode == 2 and "no such image" in done.stderr


def test_check_names_an_image_without_hpcorch(tmp_path: Path, image_id: str) -> None:
    require_service(image_exists(BASE), f"base image {BASE}", HOW)
    done = check_cli(tmp_path, "--image", BASE, "--python", "python3")
    assert done.returncode == 2 and "has Python but not hpcorch" in done.stderr


def test_check_names_an_image_without_python(tmp_path: Path, scratch_tag: str) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        text = b'PRETTY_NAME="empty"\n'
        info = tarfile.TarInfo("etc/os-release")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    imported = subprocess.run(["podman", "import", "-", scratch_tag], input=data.getvalue(),
                              capture_output=True, timeout=120, check=False)
    assert imported.returncode == 0, imported.stderr
    done = check_cli(tmp_path, "--image", scratch_tag)
    assert done.returncode == 2 and "has no `python`" in done.stderr


def test_a_missing_runtime_stops_the_sweep_before_submission(app_dir: Path) -> None:
    done = run(app_dir, "-m", "lr=0.1,0.01", "container=podman",
               "container.executable=/nonexistent/podman", script="train.py")
    assert done.returncode != 0
    assert "'/nonexistent/podman' not found on PATH" in done.stderr + done.stdout
    assert not list(app_dir.glob("multirun/*/*/*/.hpcorch/spec.json"))  # nothing submitted
