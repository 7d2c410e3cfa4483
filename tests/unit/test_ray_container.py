"""provider=ray with container=...: runs start cold, and Ray's own image settings are refused
(the real Ray head and Podman: tests/integration/test_container_providers.py)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from hpcorch.errors import ConfigError
from hpcorch.providers.ray import execute
from hpcorch.providers.ray.provider import RayProvider
from hpcorch.providers.ray.render import check_spec
from hpcorch.providers.ray.settings import RaySettings
from hpcorch.spec import RunSpec

DIGEST = "sha256:" + "ab" * 32


def script_spec(tmp_path: Path, image: str | None) -> RunSpec:
    """`python SCRIPT`: a command a warm worker would fork for, unless it runs in an image."""
    script = tmp_path / "who.py"
    script.write_text("import os\nprint(os.getpid(), os.getppid(), flush=True)\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return RunSpec(run_key="k", sweep_id="s", num=0, overrides=(), config={}, seed=0,
                   run_dir=str(run_dir), command=(sys.executable, str(script)),
                   workdir=str(tmp_path), image=image)


@pytest.mark.parametrize(("image", "forked"), [(None, True), (DIGEST, False)])
def test_a_run_in_an_image_never_forks_the_warm_worker(tmp_path: Path, image: str | None,
                                                       forked: bool) -> None:
    proc = execute.RunProcess(script_spec(tmp_path, image), warm=True)
    assert proc.wait() == 0
    assert (proc._popen is None) is forked  # noqa: SLF001 - how it was started is the point
    pid, parent = (int(x) for x in (tmp_path / "run" / ".hpcorch" / "stdout.log")
                   .read_text().split())
    assert parent == os.getpid() and pid == proc.pid


@pytest.mark.parametrize("key", ["image_uri", "container"])
def test_rays_own_image_is_refused_with_hpcorchs_container(tmp_path: Path, key: str) -> None:
    provider = RayProvider(RaySettings(runtime_env={key: "localhost/hpcorch:latest"}))
    boxed = script_spec(tmp_path, DIGEST)
    with pytest.raises(ConfigError) as err:
        check_spec(boxed, provider.settings)  # render() and submit() both call it
    assert err.value.key == f"provider.runtime_env.{key}"
    assert "container=" in err.value.allowed
    check_spec(dataclasses.replace(boxed, image=None), provider.settings)  # alone: fine


def test_render_says_container_runs_start_cold(tmp_path: Path) -> None:
    provider = RayProvider(RaySettings(address="http://127.0.0.1:8265"))
    boxed = script_spec(tmp_path, DIGEST)
    assert "# runs inside a container start cold" in provider.render([boxed])
    assert "start cold" not in provider.render([dataclasses.replace(boxed, image=None)])
