"""Per-metric tolerances, as the checks (baselines, drift, compare) use them.

The model and its parsing live in core (`hpcorch.tolerance`), because the
settings parser validates `hpcorch.repro.tolerances` before a sweep submits
anything; this module is the checks' name for them.
"""

from __future__ import annotations

from hpcorch.tolerance import (
    DEFAULT_KEY,
    EXACT,
    Tolerance,
    ToleranceMode,
    ToleranceTable,
    parse_table,
    parse_tolerance,
)

__all__ = ["DEFAULT_KEY", "EXACT", "Tolerance", "ToleranceMode", "ToleranceTable",
           "parse_table", "parse_tolerance"]
