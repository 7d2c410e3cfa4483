"""A sweep's jobs from its overrides, exactly as Hydra's basic sweeper expands them.

The pipeline plans every stage's runs before any stage starts (and in well under a
second for 10^4 runs), so it expands a stage's overrides itself instead of starting
the stage's app. It uses Hydra's own parser and `BasicSweeper.split_arguments` (a
public static method of a module under `hydra._internal`, hence here, pinned by
tests/unit/test_pipeline_plan.py against a real multirun's job list), so the jobs and
their order are those `python app.py -m ...` would launch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from hpcorch.errors import ConfigError

_SAFE_OVERRIDE_VALUE = re.compile(r"^[\w/.\-:@+,]*$")


def hydra_quote(value: str) -> str:
    """Quote a value for Hydra's override grammar (not for a shell: argv never meets one)."""
    if _SAFE_OVERRIDE_VALUE.match(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def expand_sweep(overrides: Sequence[str], *, setting: str = "overrides") -> list[list[str]]:
    """Every job's override list of a sweep over `overrides` (cartesian product of the
    comma sweeps, `range()`, `choice()`), in Hydra's basic sweeper's order."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
        batches = BasicSweeper.split_arguments(parsed, None)
    except HydraException as exc:
        raise ConfigError(setting, list(overrides), "Hydra overrides (key=value, sweeps as "
                          f"a,b or range(...)); Hydra says: {str(exc).splitlines()[0]}") from None
    return [list(job) for job in batches[0]] if batches else [[]]


def override_key(override: str) -> str:
    """The key an override sets, without Hydra's `+`/`++`/`~` prefix (`++shard=0` -> shard)."""
    return override.partition("=")[0].lstrip("+~")
