"""Reproducibility helpers research code may use: the run's seed and named RNG streams.

    from hpcorch import repro
    rng = repro.rng("init")      # a numpy Generator, stable per purpose

Outside an hpcorch run (no seed in the environment) they fall back to the
config's base seed semantics: seed 0.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hpcorch.identity import short_hash
from hpcorch.repro.seeds import SEED_ENV, apply_seed, derive_seed
from hpcorch.repro.splits import Split, split
from hpcorch.repro.upstream import UpstreamRun, upstream
from hpcorch.store.records import atomic_file

if TYPE_CHECKING:
    import numpy as np

__all__ = ["seed", "rng", "split", "Split", "apply_seed", "derive_seed", "upstream",
           "UpstreamRun", "atomic_file"]


def seed() -> int:
    """This run's seed (set by hpcorch before the research code starts)."""
    return int(os.environ.get(SEED_ENV, "0"))


def rng(purpose: str = "default") -> np.random.Generator:
    """A numpy Generator for one named purpose, derived from the run's seed.

    Each purpose has its own stream, so adding a new random draw for one
    purpose does not shift the numbers any other purpose gets.
    """
    import numpy as np  # here, not at the top: the CLI imports hpcorch.repro without numpy

    stream = int(short_hash(purpose, 8), 16)
    return np.random.default_rng([seed(), stream])
