"""The Grid Engine provider: sweeps as `qsub -t` job arrays, watched gently (see provider.py).

The names are loaded on first use: an array task runs `python -m
hpcorch.providers.sge.task`, and importing the provider here first would import
that module twice (runpy's RuntimeWarning) and slow every task's start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcorch.providers.sge.provider import SgeProvider
    from hpcorch.providers.sge.settings import SgeSettings

__all__ = ["SgeProvider", "SgeSettings"]


def __getattr__(name: str) -> Any:
    if name == "SgeProvider":
        from hpcorch.providers.sge.provider import SgeProvider

        return SgeProvider
    if name == "SgeSettings":
        from hpcorch.providers.sge.settings import SgeSettings

        return SgeSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
