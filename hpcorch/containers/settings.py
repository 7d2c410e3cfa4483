"""`container=none|podman|docker|apptainer`: the typed settings of the execution context.

Parsed from the `container` config node by hpcorch.settings.parse_settings, so
a typo or a wrong type is refused, with the allowed values, before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hpcorch.errors import ConfigError
from hpcorch.settings import require

RuntimeName = Literal["none", "podman", "docker", "apptainer"]

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")

#: Runtime flags hpcorch sets itself, and the setting to use instead. A pass-through
#: `extra_args` entry naming one of them is refused: it would break isolation,
#: identity or signal delivery, or silently fight hpcorch's own value.
OWNED_FLAGS: dict[str, dict[str, str]] = {
    "oci": {
        "--network": "container.network", "--net": "container.network",
        "-v": "container.binds", "--volume": "container.binds", "--mount": "container.binds",
        "-e": "container.env", "--env": "container.env", "--env-file": "container.env",
        "--env-host": "container.env",
        "-w": "(the run's working directory)", "--workdir": "(the run's working directory)",
        "--rm": "(always set)", "--init": "(always set: signals reach the code)",
        "--sig-proxy": "(always on: signals reach the code)",
        "-d": "(runs are attached)", "--detach": "(runs are attached)",
        "-i": "(runs take no input)", "--interactive": "(runs take no input)",
        "-t": "(runs have no terminal)", "--tty": "(runs have no terminal)",
        "--entrypoint": "(the image's command runner)", "--name": "(named after the run)",
        "--pull": "(the image is pinned by digest; never pulled at run time)",
        "--gpus": "resources.gpus", "--platform": "(the pinned image decides)",
    },
    "apptainer": {
        "--bind": "container.binds", "-B": "container.binds", "--mount": "container.binds",
        "--env": "container.env", "--env-file": "container.env",
        "--cleanenv": "container.cleanenv", "-e": "container.cleanenv",
        "--pwd": "(the run's working directory)", "--nv": "resources.gpus",
        "--rocm": "resources.gpus",
    },
}


@dataclass(frozen=True)
class Bind:
    """One host path made visible inside the container."""

    source: str
    target: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str, key: str) -> Bind:
        """`HOST[:CONTAINER][:ro|rw]` (absolute paths; no commas, which Apptainer splits on)."""
        parts = text.split(":")
        mode = "rw"
        if len(parts) > 1 and parts[-1] in ("ro", "rw"):
            mode = parts.pop()
        if not 1 <= len(parts) <= 2 or not all(p.startswith("/") for p in parts) \
                or "," in text or any(not p.strip() for p in parts):
            raise ConfigError(key, text, "must be HOST[:CONTAINER][:ro|rw] with absolute paths "
                                         "and no commas, e.g. /data/imagenet:/data:ro")
        return cls(parts[0], parts[-1], mode == "ro")


@dataclass(frozen=True)
class ContainerSettings:
    """The `container` config node."""

    name: RuntimeName = "none"
    """Which runtime wraps each run's command; none runs it directly."""
    image: str | None = None
    """podman/docker: an image reference (`hpcorch:latest`, `registry/x@sha256:...`);
    apptainer: a path to a .sif file. Resolved to a digest once per sweep."""
    executable: str | None = None
    """The runtime's binary (default: `name`, looked up on PATH)."""
    python: str = "python"
    """The interpreter inside the image that replaces the submitting side's."""
    binds: tuple[str, ...] = ()
    """Extra mounts, `HOST[:CONTAINER][:ro|rw]`. The run directory, the working directory,
    the app's directory and its config dirs are always bound at their own paths."""
    data: tuple[str, ...] = ()
    """Declared data paths: bound read-only at the same path."""
    network: bool = False
    """Give runs the host's network; off by default (`--network none`) where the runtime
    allows it (Apptainer shares the host network for unprivileged users)."""
    env: tuple[str, ...] = ()
    """More host variables to pass in: NAME, or PREFIX* (podman and apptainer only)."""
    cleanenv: bool | None = None
    """apptainer: start from a clean environment (`--cleanenv`, the run's variables passed
    with --env). null: clean, except for multi-rank runs, whose MPI/PMIx variables only
    the host environment carries."""
    extra_args: tuple[str, ...] = ()
    """Validated pass-through to `podman|docker run` / `apptainer exec`, placed before the
    image (e.g. [--shm-size, 8g]). Flags hpcorch sets itself are refused."""
    gpu_flags: tuple[str, ...] = ()
    """Override how GPUs are exposed when resources.gpus > 0 (default: podman
    `--device nvidia.com/gpu=all`, docker `--gpus all`, apptainer `--nv`)."""
    check: bool = True
    """Run `hpcorch container check` in the image once per sweep, before submitting."""

    def validate(self, prefix: str) -> None:
        """Cross-field checks: an image when a runtime is chosen, well-formed binds, env, args."""
        if self.name == "none":
            return
        require(self.image not in (None, "", "???"), f"{prefix}.image", self.image,
                f"container={self.name} needs an image"
                + (" (a .sif path)" if self.name == "apptainer" else
                   " (e.g. hpcorch:latest, built by containers/build.sh)"))
        for i, text in enumerate(self.binds):
            Bind.parse(text, f"{prefix}.binds[{i}]")
        for i, path in enumerate(self.data):
            require(path.startswith("/") and "," not in path and ":" not in path,
                    f"{prefix}.data[{i}]", path, "must be an absolute path without ',' or ':'")
        for i, name in enumerate(self.env):
            require(bool(_ENV_NAME.match(name)), f"{prefix}.env[{i}]", name,
                    "must be a variable name, or a PREFIX* pattern")
            require(not (name.endswith("*") and self.name == "docker"), f"{prefix}.env[{i}]",
                    name, "docker cannot pass variables by pattern; list each name")
        require(bool(self.python) and ("/" not in self.python or self.python.startswith("/")),
                f"{prefix}.python", self.python,
                "must be a command name (python) or an absolute path inside the image")
        validate_extra_args(self.name, self.extra_args, f"{prefix}.extra_args")

    def bind_list(self) -> tuple[Bind, ...]:
        """`binds` parsed, then `data` (read-only at the same path)."""
        parsed = [Bind.parse(b, "container.binds") for b in self.binds]
        return (*parsed, *(Bind(p, p, True) for p in self.data))


def validate_extra_args(runtime: str, args: tuple[str, ...], key: str) -> None:
    """Refuse pass-through arguments hpcorch owns, and stray words.

    Every word must be a flag, or the value right after a flag written without
    `=`: a stray word would be taken for the image and shift the whole command.
    """
    owned = OWNED_FLAGS["apptainer" if runtime == "apptainer" else "oci"]
    value_allowed = False
    for i, arg in enumerate(args):
        if "\0" in arg or "\n" in arg:
            raise ConfigError(f"{key}[{i}]", arg, "must not contain NUL or newline characters")
        if arg.startswith("-"):
            flag = arg.split("=", 1)[0]
            if flag in owned:
                raise ConfigError(f"{key}[{i}]", arg,
                                  f"hpcorch sets {flag} itself; use {owned[flag]}")
            value_allowed = "=" not in arg and flag not in _BOOLEAN_FLAGS
        elif value_allowed:
            value_allowed = False
        else:
            raise ConfigError(f"{key}[{i}]", arg, "must be a flag, or the value of the flag "
                                                  "before it (e.g. [--shm-size, 8g])")


#: Flags known to take no value: a word after one of them would be a stray word.
_BOOLEAN_FLAGS = frozenset({"--privileged", "--read-only", "--no-hosts", "--writable-tmpfs",
                            "--fakeroot", "--contain", "--containall", "--no-home", "--no-init",
                            "--compat", "--no-mount", "--no-privs"})
