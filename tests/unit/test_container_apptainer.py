"""Apptainer: commands pinned by golden files, SIF identity and pinning.

Apptainer cannot be installed on this machine, so these tests render and
compare; tests/integration/test_container_apptainer.py executes the same
commands wherever `apptainer` is on PATH. Regenerate the golden files after
an intended change with HPCORCH_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

import pytest
from test_container_render import make_spec

from hpcorch.containers import ContainerError, load_settings, make_runtime
from hpcorch.containers.apptainer import PIN_DIR, file_digest, pin_file
from hpcorch.containers.base import ImageIdentity, container_run
from hpcorch.spec import Resources

GOLDEN = Path(__file__).parent / "golden"
SIF_HEX = "12" * 32
IDENTITY = ImageIdentity("apptainer", "/project/images/hpcorch.sif", f"sha256:{SIF_HEX}",
                         f"/project/images/{PIN_DIR}/{SIF_HEX}.sif")


def as_typed(argv: list[str], image: str) -> str:
    """The command as a user would type it: one flag (and its value) per line."""
    cut = argv.index(image)
    lines, words = [], argv[2:cut]
    i = 0
    while i < len(words):
        takes_value = i + 1 < len(words) and not words[i + 1].startswith("-")
        lines.append(shlex.join(words[i:i + 1 + takes_value]))
        i += 1 + takes_value
    head = shlex.join(argv[:2])
    return " \\\n    ".join([head, *lines, shlex.join(argv[cut:])]) + "\n"


CASES = {
    "apptainer_cpu": ({}, Resources()),
    "apptainer_gpu": ({}, Resources(gpus=1)),
    "apptainer_mpi": ({}, Resources(nodes=2, tasks_per_node=2)),
    "apptainer_gpu_cleanenv_binds": ({"cleanenv": True, "binds": ["/scratch/alice:/scratch"],
                                      "data": ["/datasets/imagenet"],
                                      "extra_args": ["--writable-tmpfs"]}, Resources(gpus=4)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendered_command_matches_golden_file(name: str) -> None:
    node, resources = CASES[name]
    settings = load_settings({"name": "apptainer", "image": IDENTITY.reference, **node})
    runtime = make_runtime(settings, which=lambda _: "/usr/bin/apptainer")
    argv = runtime.argv(container_run(make_spec(resources), settings, IDENTITY), IDENTITY)
    text = as_typed(argv, IDENTITY.run_ref)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("HPCORCH_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden file {path} (HPCORCH_UPDATE_GOLDEN=1 writes it)"
    assert text == path.read_text(), f"{name}: rendering changed; review, then regenerate"


def test_cleanenv_only_where_no_host_only_variables_are_needed() -> None:
    settings = load_settings({"name": "apptainer", "image": "/x.sif"})
    runtime = make_runtime(settings)
    cpu = runtime.argv(container_run(make_spec(), settings, IDENTITY), IDENTITY)
    mpi = runtime.argv(container_run(make_spec(Resources(nodes=1, tasks_per_node=2)), settings,
                                     IDENTITY), IDENTITY)
    assert "--cleanenv" in cpu and "--cleanenv" not in mpi
    # Either way the run's own variables are pinned with --env.
    for argv in (cpu, mpi):
        assert argv[argv.index("HPCORCH_SEED=42") - 1] == "--env"
        assert f"HPCORCH_IMAGE_DIGEST=sha256:{SIF_HEX}" in argv


def test_sif_is_identified_by_content_and_pinned(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sif = tmp_path / "img.sif"
    sif.write_bytes(b"SIF v1 " * 1000)
    settings = load_settings({"name": "apptainer", "image": str(sif)})
    identity = make_runtime(settings).resolve(str(sif))
    assert identity.digest == "sha256:" + hashlib.sha256(sif.read_bytes()).hexdigest()
    pinned = Path(identity.run_ref)
    assert pinned.parent.name == PIN_DIR and pinned.read_bytes() == sif.read_bytes()
    # Rebuilt in place (a new file at the same path): a new digest, the old pin unchanged.
    sif.unlink()
    sif.write_bytes(b"SIF v2 " * 1000)
    again = make_runtime(settings).resolve(str(sif))
    assert again.digest != identity.digest
    assert pinned.read_bytes() == b"SIF v1 " * 1000


def test_digest_cache_is_keyed_by_file_state(tmp_path: Path) -> None:
    sif, cache = tmp_path / "a.sif", tmp_path / "digests.json"
    sif.write_bytes(b"one")
    first = file_digest(sif, cache)
    assert file_digest(sif, cache) == first and cache.exists()
    sif.write_bytes(b"two!")
    assert file_digest(sif, cache) != first


def test_pin_falls_back_to_the_file_in_a_read_only_directory(tmp_path: Path) -> None:
    sif = tmp_path / "ro" / "img.sif"
    sif.parent.mkdir()
    sif.write_bytes(b"x")
    os.chmod(sif.parent, 0o555)
    try:
        if os.access(sif.parent, os.W_OK):  # root ignores permissions
            pytest.skip("directory permissions are not enforced for this user")
        assert pin_file(sif, "sha256:00") == sif
    finally:
        os.chmod(sif.parent, 0o755)


def test_missing_sif_and_missing_binary_are_clear(tmp_path: Path) -> None:
    settings = load_settings({"name": "apptainer", "image": str(tmp_path / "none.sif")})
    with pytest.raises(ContainerError, match="no such SIF file"):
        make_runtime(settings).resolve(str(tmp_path / "none.sif"))
    with pytest.raises(ContainerError, match=r"'apptainer' not found on PATH.*dry_run"):
        make_runtime(settings, which=lambda _: None).check()
