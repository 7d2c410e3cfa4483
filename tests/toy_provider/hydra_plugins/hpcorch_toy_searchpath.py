"""Puts the toy provider's config (provider/toy.yaml) on every Hydra app's search path."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class HpcorchToySearchPathPlugin(SearchPathPlugin):
    """Appends `pkg://hpcorch_toy.conf`, after the app's own configs."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Add the toy provider's config group entry."""
        search_path.append(provider="hpcorch-toy", path="pkg://hpcorch_toy.conf")
