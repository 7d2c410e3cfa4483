"""The launcher's YAML writer gives OmegaConf.to_yaml's exact bytes, libyaml or not."""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode
from hydra_plugins.hpcorch_launcher import _yaml
from omegaconf import OmegaConf
from omegaconf._utils import get_omega_conf_dumper

pytestmark = pytest.mark.skipif(_yaml._CDumper is None, reason="PyYAML built without libyaml")

_SAFE = "".join(chr(c) for c in range(0x20, 0x7F))
_SCALARS = [None, True, False, 0, -3, 1.5, 1e-4, 1e20, float("inf"), 10**20]


def _dump(data: Any, dumper: Any) -> str:
    """What OmegaConf.to_yaml does after turning the config into plain data."""
    return yaml.dump(data, default_flow_style=False, allow_unicode=True, sort_keys=False,
                     Dumper=dumper)


def test_hydras_own_config_takes_the_fast_path_and_is_byte_identical(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("lr: 0.1\nname: exp\ntag: ${name}-${lr}\n")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(tmp_path)))
    cfg = loader.load_configuration("config", ["+extra='1'", "name=x y"], RunMode.MULTIRUN)
    for node in (cfg, cfg.hydra, cfg.hydra.overrides.task):
        data = OmegaConf.to_container(node, resolve=False, enum_to_str=True)
        assert _yaml.libyaml_exact(data)  # multi-line help templates included
        assert _yaml.to_yaml(node) == OmegaConf.to_yaml(node)
    _yaml.save_config(cfg.hydra, "hydra.yaml", tmp_path / ".hydra")
    assert (tmp_path / ".hydra" / "hydra.yaml").read_text() == OmegaConf.to_yaml(cfg.hydra)


def _random_value(rnd: random.Random, alphabet: str, depth: int = 0) -> Any:
    roll = rnd.random()
    if depth < 3 and roll < 0.15:
        return {_text(rnd, alphabet, 60) or "k": _random_value(rnd, alphabet, depth + 1)
                for _ in range(rnd.randint(0, 4))}
    if depth < 3 and roll < 0.25:
        return [_random_value(rnd, alphabet, depth + 1) for _ in range(rnd.randint(0, 4))]
    if roll < 0.35:
        return rnd.choice(_SCALARS)
    return _text(rnd, alphabet, rnd.choice([5, 40, 200]))


def _text(rnd: random.Random, alphabet: str, longest: int) -> str:
    return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, longest)))


@pytest.mark.parametrize("alphabet", [_SAFE, _SAFE + "\n\n  ", " a\n'\":#-", "äö€ \t\r\x85😀ab\n"])
def test_what_the_rule_accepts_libyaml_writes_byte_for_byte(alphabet: str) -> None:
    """Random data: wherever the rule sends data to libyaml, both emitters agree."""
    rnd = random.Random(alphabet)
    accepted = 0
    for _ in range(600):
        data = {"root": _random_value(rnd, alphabet)}
        if _yaml.libyaml_exact(data):
            accepted += 1
            assert _dump(data, _yaml._CDumper) == _dump(data, get_omega_conf_dumper()), data
    if alphabet == _SAFE:
        assert accepted == 600  # the fast path is really taken


@pytest.mark.parametrize("value", [
    "caf\u00e9", "tab\there", "space before \nbreak", "line\n after-break space\n x",
    "bell\x07", {"k" * 130: 1}, {1: "int key"}, b"bytes",
])
def test_what_the_emitters_write_differently_is_refused(value: Any) -> None:
    assert not _yaml.libyaml_exact({"v": value})


def test_printable_ascii_and_single_quoted_line_breaks_are_accepted() -> None:
    assert _yaml.libyaml_exact({"a": "x: y # z", "b": ["1", "true", ""], "c": "two\nlines",
                                "d": string.punctuation, "e": None, "f": 1.5})
