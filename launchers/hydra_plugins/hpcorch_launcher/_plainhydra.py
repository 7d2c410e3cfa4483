"""Plain-data views of a composition's Hydra node, made once in the launcher.

A job converts Hydra's large node to plain data twice: for `.hydra/hydra.yaml`
and for its logging set-up (`configure_log` resolves `hydra.job_logging`).
For a job whose own overrides leave Hydra's node alone, that node is the
composition's prepared node plus a handful of per-job fields, so the
conversion is done once per composition and each job only fills in its
fields. tests/unit/test_compose.py compares both views with OmegaConf's
conversion of the job's config.
"""

from __future__ import annotations

import copy
import logging
import logging.config
from typing import Any

from omegaconf import Container, DictConfig, OmegaConf

#: Fields of Hydra's node that differ between jobs of one composition.
_PER_JOB = {"job": ("override_dirname", "id", "num"), "runtime": ("output_dir",)}


class PlainHydra:
    """`hydra.yaml` data and the resolved logging config of a job, without converting
    Hydra's node again. Only for configs built from the composition it was made of."""

    def __init__(self, prepared: DictConfig) -> None:
        hydra = OmegaConf.to_container(prepared.hydra, resolve=False, enum_to_str=True)
        assert isinstance(hydra, dict)
        self._hydra = hydra
        logging_node = prepared.hydra.job_logging
        self._logging = None if logging_node is None else \
            OmegaConf.to_container(logging_node, resolve=False)

    def hydra_data(self, config: DictConfig) -> dict[str, Any]:
        """`OmegaConf.to_container(config.hydra, resolve=False, enum_to_str=True)`."""
        data = dict(self._hydra)
        for section, keys in _PER_JOB.items():
            node = config.hydra[section]
            data[section] = {**data[section], **{k: _raw(node, k) for k in keys}}
        data["overrides"] = OmegaConf.to_container(config.hydra.overrides, resolve=False,
                                                   enum_to_str=True)
        return data

    def job_logging(self, config: DictConfig) -> dict[str, Any] | None:
        """`OmegaConf.to_container(config.hydra.job_logging, resolve=True)`: only the parts
        that hold an interpolation (the log file's name) are resolved again."""
        if self._logging is None:
            return None
        node = config.hydra.job_logging
        resolved: dict[str, Any] = {}
        for key, value in self._logging.items():
            if "${" not in repr(value):
                resolved[key] = copy.deepcopy(value)  # dictConfig consumes what it is given
                continue
            child = node._get_node(key)
            if not isinstance(child, Container):  # an interpolated leaf: convert it all
                whole = OmegaConf.to_container(node, resolve=True)
                assert isinstance(whole, dict)
                return whole
            resolved[key] = OmegaConf.to_container(child, resolve=True)
        return resolved


def _raw(node: DictConfig, key: str) -> Any:
    """A value as `to_container(resolve=False)` shows it: interpolations as text."""
    child = node._get_node(key)
    assert child is not None and not isinstance(child, Container)
    return child._value()


def configure_job_log(conf: dict[str, Any], verbose: Any) -> None:
    """`hydra.core.utils.configure_log` for a logging config already converted."""
    if conf["root"] is not None:
        from hydra._internal.logging_config import configure_logging

        configure_logging(conf)
    if isinstance(verbose, bool):
        if verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        return
    for name in [verbose] if isinstance(verbose, str) else verbose:
        logging.getLogger(name).setLevel(logging.DEBUG)
