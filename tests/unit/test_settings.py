"""Typed settings: one clear message naming the key, the value and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from hpcorch.errors import ConfigError
from hpcorch.providers import create_provider, provider_class
from hpcorch.providers.local import LocalSettings
from hpcorch.settings import HpcorchSettings, ReproSettings, parse_settings, require


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


@dataclass(frozen=True)
class Inner:
    depth: int = 1
    label: str = "x"

    def validate(self, prefix: str) -> None:
        require(self.depth >= 0, f"{prefix}.depth", self.depth, "must be >= 0")


@dataclass(frozen=True)
class Outer:
    name: str = "o"
    inner: Inner = field(default_factory=Inner)


def test_nested_node_is_parsed_into_its_dataclass() -> None:
    s = parse_settings(Outer, {"inner": {"depth": 3}}, "top")
    assert s.inner == Inner(depth=3, label="x")
    assert parse_settings(Outer, {}, "top").inner == Inner()  # absent: the nested defaults
    assert parse_settings(Outer, {"inner": {}}, "top").inner == Inner()


def test_nested_unknown_key_names_the_full_dotted_key_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(Outer, {"inner": {"deph": 2}}, "top")
    assert err.value.key == "top.inner.deph"
    message = str(err.value)
    assert "top.inner.deph=2" in message and "did you mean 'depth'" in message
    assert "allowed: depth, label" in message


def test_nested_wrong_type_and_range_name_the_full_dotted_key() -> None:
    with pytest.raises(ConfigError, match=r"top.inner.depth='deep': must be an integer"):
        parse_settings(Outer, {"inner": {"depth": "deep"}}, "top")
    with pytest.raises(ConfigError, match=r"top.inner.depth=-1: must be >= 0"):
        parse_settings(Outer, {"inner": {"depth": -1}}, "top")  # the nested validate runs
    for value in (None, 3, "depth=2", ["depth"]):
        with pytest.raises(ConfigError, match=r"must be a mapping of settings: depth, label"):
            parse_settings(Outer, {"inner": value}, "top")


def test_hpcorch_repro_is_typed() -> None:
    s = parse_settings(HpcorchSettings, {"repro": {"strict": True, "tolerances": {
        "acc": {"lower": -0.05}}}}, "hpcorch")
    assert isinstance(s.repro, ReproSettings)
    assert s.repro.strict and s.repro.pinned_threads == 1
    assert s.repro.tolerances == {"acc": {"lower": -0.05}}
    assert parse_settings(HpcorchSettings, {}, "hpcorch").repro == ReproSettings()
    with pytest.raises(ConfigError) as err:
        parse_settings(HpcorchSettings, {"repro": {"stric": True}}, "hpcorch")
    assert err.value.key == "hpcorch.repro.stric"
    assert "did you mean 'strict'" in str(err.value)
    assert "allowed: strict, threads, tolerances" in str(err.value)
    with pytest.raises(ConfigError, match=r"hpcorch.repro.threads='4': must be an integer or null"):
        parse_settings(HpcorchSettings, {"repro": {"threads": "4"}}, "hpcorch")
    with pytest.raises(ConfigError) as err:
        parse_settings(HpcorchSettings, {"repro": {"tolerances": {"acc": {"rel": -1}}}},
                       "hpcorch")
    assert err.value.key == "hpcorch.repro.tolerances.acc.rel"


def test_a_dictconfig_nested_node_parses_like_a_mapping() -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.create({"repro": {"threads": 2}})
    assert parse_settings(HpcorchSettings, node, "hpcorch").repro.threads == 2
