"""The `container` config node: what is accepted, and errors that name key, value, allowed."""

from __future__ import annotations

import pytest

from hpcorch.containers import Bind, ContainerSettings, load_settings
from hpcorch.errors import ConfigError


def test_defaults_to_no_container() -> None:
    assert load_settings(None) == ContainerSettings()
    assert load_settings({"name": "none"}).name == "none"


def test_podman_node_parses_into_typed_settings() -> None:
    s = load_settings({"name": "podman", "image": "hpcorch:latest", "binds": ["/data:/d:ro"],
                       "data": ["/datasets/x"], "env": ["WANDB_*", "MY_VAR"],
                       "extra_args": ["--shm-size", "8g", "--cap-add=SYS_PTRACE"]})
    assert s.binds == ("/data:/d:ro",) and s.env == ("WANDB_*", "MY_VAR")
    assert s.bind_list() == (Bind("/data", "/d", True), Bind("/datasets/x", "/datasets/x", True))


@pytest.mark.parametrize("node, key, fragment", [
    ({"name": "podman"}, "container.image", "needs an image"),
    ({"name": "apptainer", "image": "???"}, "container.image", "a .sif path"),
    ({"name": "kubernetes", "image": "x"}, "container.name", "'podman'"),
    ({"name": "podman", "image": "x", "imgae": "y"}, "container.imgae", "did you mean 'image'"),
    ({"name": "podman", "image": "x", "binds": ["data:/d"]}, "container.binds[0]",
     "absolute paths"),
    ({"name": "podman", "image": "x", "binds": ["/a,b:/d"]}, "container.binds[0]", "no commas"),
    ({"name": "podman", "image": "x", "binds": ["/a:/b:rx"]}, "container.binds[0]", "ro|rw"),
    ({"name": "podman", "image": "x", "data": ["rel/path"]}, "container.data[0]", "absolute"),
    ({"name": "podman", "image": "x", "env": ["BAD-NAME"]}, "container.env[0]", "variable name"),
    ({"name": "docker", "image": "x", "env": ["SLURM_*"]}, "container.env[0]",
     "docker cannot pass variables by pattern"),
    ({"name": "podman", "image": "x", "python": "bin/python"}, "container.python",
     "absolute path"),
    ({"name": "podman", "image": "x", "network": "yes"}, "container.network", "true or false"),
])
def test_bad_values_are_refused_with_key_value_and_allowed(node: dict, key: str,
                                                           fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(node)
    assert err.value.key == key
    assert fragment in str(err.value)


@pytest.mark.parametrize("args, index, fragment", [
    (["--network", "host"], 0, "use container.network"),
    (["-v", "/a:/a"], 0, "use container.binds"),
    (["--env=X=1"], 0, "use container.env"),
    (["--rm"], 0, "always set"),
    (["--entrypoint", "sh"], 0, "hpcorch sets --entrypoint itself"),
    (["--gpus", "all"], 0, "resources.gpus"),
    (["alpine"], 0, "must be a flag"),
    (["--shm-size", "8g", "alpine"], 2, "must be a flag"),
    (["--shm-size=8g", "alpine"], 1, "must be a flag"),
    (["--privileged", "alpine"], 1, "must be a flag"),
    (["--label", "a\nb"], 1, "newline"),
])
def test_extra_args_pass_through_is_validated(args: list[str], index: int,
                                              fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"name": "podman", "image": "x", "extra_args": args})
    assert err.value.key == f"container.extra_args[{index}]"
    assert fragment in str(err.value)


def test_apptainer_owns_its_own_flags() -> None:
    with pytest.raises(ConfigError, match="use container.cleanenv"):
        load_settings({"name": "apptainer", "image": "/x.sif", "extra_args": ["--cleanenv"]})
    # --network is no apptainer flag hpcorch sets: it passes.
    s = load_settings({"name": "apptainer", "image": "/x.sif",
                       "extra_args": ["--writable-tmpfs", "--hostname", "h"]})
    assert s.extra_args == ("--writable-tmpfs", "--hostname", "h")


def test_bind_parse_forms() -> None:
    assert Bind.parse("/a", "k") == Bind("/a", "/a", False)
    assert Bind.parse("/a:ro", "k") == Bind("/a", "/a", True)
    assert Bind.parse("/a:/b", "k") == Bind("/a", "/b", False)
    assert Bind.parse("/a:/b:rw", "k") == Bind("/a", "/b", False)
