"""Typed settings: one clear message naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from hpcorch.errors import ConfigError
from hpcorch.providers import create_provider, provider_class
from hpcorch.providers.local import LocalSettings
from hpcorch.settings import HpcorchSettings, parse_settings


def test_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(LocalSettings, {"name": "local", "wokers": 2}, "provider")
    message = str(err.value)
    assert "provider.wokers=2" in message and "did you mean 'workers'" in message
    assert "allowed: name, warm, workers" in message


@pytest.mark.parametrize("workers", [0, -1])
def test_non_positive_workers_rejected(workers: int) -> None:
    with pytest.raises(
        ConfigError, match=rf"provider.workers={workers}: must be a positive integer"
    ):
        parse_settings(LocalSettings, {"workers": workers}, "provider")


def test_wrong_types_rejected() -> None:
    with pytest.raises(ConfigError, match=r"provider.workers='two': must be an integer or null"):
        parse_settings(LocalSettings, {"workers": "two"}, "provider")
    with pytest.raises(
        ConfigError, match=r"hpcorch.progress='loud': must be one of 'auto', 'on', 'off'"
    ):
        parse_settings(HpcorchSettings, {"progress": "loud"}, "hpcorch")
    with pytest.raises(ConfigError, match=r"hpcorch.rerun=1: must be true or false"):
        parse_settings(HpcorchSettings, {"rerun": 1}, "hpcorch")


def test_valid_settings_parse() -> None:
    s = parse_settings(
        HpcorchSettings, {"rerun": True, "key_exclude": ["hydra", "provider"]}, "hpcorch"
    )
    assert s.rerun is True and s.key_exclude == ("hydra", "provider")


def test_unknown_provider_names_what_exists() -> None:
    with pytest.raises(
        ConfigError, match=r"provider.name='nope': unknown provider; available: local"
    ):
        provider_class("nope")


def test_create_provider_validates() -> None:
    provider = create_provider({"name": "local", "workers": 3})
    assert provider.name == "local" and provider.workers == 3  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        create_provider({"name": "local", "workers": -3})
