"""hpcorch: write an experiment once as a Hydra app, run it on any provider, reproducibly."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
