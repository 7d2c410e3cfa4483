"""Hydra's `_save_config`, byte for byte, with libyaml's emitter where that is exact.

Every job writes `.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml`
through `OmegaConf.to_yaml`, whose pure-Python emitter is about a fifth of
a trivial job's CPU time. libyaml's emitter writes the same bytes for plain
data whose strings are printable ASCII (line breaks allowed, as in Hydra's
help templates) and whose keys are short strings: a simple key is limited to
128 characters, and the two emitters fold long keys and escaped, double-quoted
strings differently. Anything else (non-ASCII text, tabs, a space next to a
line break, bytes, long keys, no libyaml) goes through OmegaConf's own dumper.
tests/unit/test_fast_yaml.py fuzzes the two against each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf._utils import OmegaConfDumper, get_omega_conf_dumper

#: Keys at least this long may be emitted as complex keys by one emitter only.
_MAX_KEY = 120
_SCALARS = (int, float, bool, type(None))

_CDumper: type | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _OmegaConfCDumper(yaml.CDumper):  # type: ignore[misc,name-defined]
        """yaml.CDumper with OmegaConf's representer for strings (quotes "1", "true")."""

    _OmegaConfCDumper.add_representer(str, OmegaConfDumper.str_representer)
    _CDumper = _OmegaConfCDumper


def _plain_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _exact_value(text: str) -> bool:
    """Printable ASCII, line breaks allowed where they keep the string single-quoted
    (a space next to a break makes the emitters choose double quotes, folded differently)."""
    if "\n" not in text:
        return _plain_ascii(text)
    return _plain_ascii(text.replace("\n", "")) and " \n" not in text and "\n " not in text


def libyaml_exact(data: Any) -> bool:
    """True when libyaml emits `data` exactly as OmegaConf's Python dumper does."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _exact_value(item):
                return False
        elif isinstance(item, dict):
            for key, value in item.items():
                if not isinstance(key, str) or len(key) >= _MAX_KEY or not _plain_ascii(key):
                    return False
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif not isinstance(item, _SCALARS):
            return False
    return True


def to_yaml(cfg: Any) -> str:
    """`OmegaConf.to_yaml(cfg)`, the same text, faster where libyaml is exact. `cfg` may
    also be the plain data `OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)`
    gives."""
    data = cfg if isinstance(cfg, (dict, list)) else \
        OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    dumper = _CDumper if _CDumper is not None and libyaml_exact(data) \
        else get_omega_conf_dumper()
    return yaml.dump(data, default_flow_style=False, allow_unicode=True, sort_keys=False,
                     Dumper=dumper)  # type: ignore[no-any-return]


def save_config(cfg: Any, filename: str, output_dir: Path) -> None:
    """`hydra.core.utils._save_config`: write `cfg` as YAML to `output_dir/filename`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(str(output_dir / filename), "w", encoding="utf-8") as file:
        file.write(to_yaml(cfg))
