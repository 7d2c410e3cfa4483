"""Puts hpcorch's config groups (hpcorch, provider, resources, ...) on every app's search path."""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class HpcorchSearchPathPlugin(SearchPathPlugin):
    """Appends `pkg://hpcorch.conf`, so the app's own conf/ always wins over ours."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Add hpcorch's configs after the app's."""
        search_path.append(provider="hpcorch", path="pkg://hpcorch.conf")
