"""`provider=ray`: run a sweep on a Ray cluster through Ray's Jobs API.

Ray itself is imported only inside methods (so `import hpcorch` never pays
for it); when it is not installed at all, importing this package raises the
ImportError that the provider registry turns into its install hint.
"""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("ray") is None:  # pragma: no cover - depends on the environment
    raise ImportError("No module named 'ray'", name="ray")

from hpcorch.providers.ray.provider import RayProvider  # noqa: E402
from hpcorch.providers.ray.settings import RaySettings  # noqa: E402

__all__ = ["RayProvider", "RaySettings"]
