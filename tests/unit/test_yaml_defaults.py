"""Every YAML default hpcorch ships equals its settings class default (issue 11, point 4).

The same key kept twice (a config file for Hydra, a dataclass for validation)
must not drift: a changed default in one place fails here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

import hpcorch.conf
from hpcorch.providers import PROVIDERS, provider_class

CONF = Path(hpcorch.conf.__file__).parent


def class_defaults(cls: type) -> dict[str, Any]:
    """A settings dataclass's defaults as YAML would hold them (lists, not tuples)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    return data


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_provider_yaml_equals_its_settings_class(name: str) -> None:
    assert _yaml(CONF / "provider" / f"{name}.yaml") == class_defaults(
        provider_class(name).Settings)


def test_hpcorch_defaults_equal_hpcorch_settings() -> None:
    from hpcorch.settings import HpcorchSettings

    node = _yaml(CONF / "hpcorch" / "default.yaml")["hpcorch"]
    expected = class_defaults(HpcorchSettings)
    assert set(node) == set(expected)
    repro, retry = node.pop("repro"), node.pop("retry")
    expected.pop("repro")
    expected.pop("retry")
    assert node == expected
    from hpcorch.repro.settings import ReproSettings
    from hpcorch.settings import RetrySettings

    assert repro == class_defaults(ReproSettings)
    assert retry == class_defaults(RetrySettings)


@pytest.mark.parametrize("name", ["none", "podman", "docker", "apptainer"])
def test_container_yaml_equals_container_settings(name: str) -> None:
    from hpcorch.containers.settings import ContainerSettings

    data = _yaml(CONF / "container" / f"{name}.yaml")
    defaults = class_defaults(ContainerSettings)
    assert set(data) <= set(defaults), set(data) - set(defaults)
    for key, value in data.items():
        if key not in ("name", "image", "binary"):  # what each runtime's file chooses
            assert value == defaults[key], key
