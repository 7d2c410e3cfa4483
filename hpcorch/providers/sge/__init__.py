"""The Grid Engine provider: sweeps as `qsub -t` job arrays, watched gently (see provider.py)."""

from __future__ import annotations

from hpcorch.providers.sge.provider import SgeProvider
from hpcorch.providers.sge.settings import SgeSettings

__all__ = ["SgeProvider", "SgeSettings"]
