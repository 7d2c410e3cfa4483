"""The Slurm provider: sweeps as job arrays, watched gently (see provider.py)."""

from __future__ import annotations

from hpcorch.providers.slurm.provider import SlurmProvider
from hpcorch.providers.slurm.settings import SlurmSettings

__all__ = ["SlurmProvider", "SlurmSettings"]
