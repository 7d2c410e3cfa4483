"""containers/: the Apptainer definition stays what spython makes of the Dockerfile, and the
Dockerfile keeps the properties the rest of hpcorch relies on."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "containers" / "Dockerfile"
DEFINITION = ROOT / "containers" / "hpcorch.def"


def spython_definition() -> str:
    """What `spython recipe containers/Dockerfile` writes (spython is in the test extra)."""
    from spython.main.parse.parsers import DockerParser
    from spython.main.parse.writers import SingularityWriter

    return str(SingularityWriter(DockerParser(str(DOCKERFILE)).recipe).convert())


def test_definition_is_generated_from_the_dockerfile() -> None:
    assert DEFINITION.read_text() == spython_definition(), (
        "containers/hpcorch.def drifted from containers/Dockerfile: "
        "run `containers/build.sh --def` and commit both")


def test_definition_runs_commands_like_the_oci_image() -> None:
    text = DEFINITION.read_text()
    assert 'exec /usr/bin/env "$@"' in text.split("%runscript", 1)[1]
    assert "export PATH=/opt/hpcorch/bin:" in text


def test_dockerfile_base_is_a_build_argument_with_a_public_default() -> None:
    text = DOCKERFILE.read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert default and default.group(1).startswith("docker.io/library/python:")
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)


def test_dockerfile_installs_offline_and_runs_the_given_command() -> None:
    text = DOCKERFILE.read_text()
    installs = [line for line in text.splitlines() if " install " in line]
    assert installs and all("--no-index" in line for line in installs)
    assert 'ENTRYPOINT ["/usr/bin/env"]' in text and "\nCMD" not in text
