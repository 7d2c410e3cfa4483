"""Provider registry: `provider=NAME` -> a lazily imported class and its settings.

Entries are dotted paths so that `import hpcorch` never imports an engine's
client library; a missing optional dependency is reported with its install hint.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from hpcorch.errors import ConfigError, HpcorchError
from hpcorch.providers.base import Provider

#: name -> ("module:Class", pip extra that brings its dependencies, or "")
PROVIDERS: dict[str, tuple[str, str]] = {
    "local": ("hpcorch.providers.local:LocalProvider", ""),
    "slurm": ("hpcorch.providers.slurm.provider:SlurmProvider", "slurm"),
    "mpi": ("hpcorch.providers.mpi:MpiProvider", ""),
    "ray": ("hpcorch.providers.ray:RayProvider", "ray"),
}

#: Providers that have a config but no implementation in this version.
PLANNED: tuple[str, ...] = ()


def provider_class(name: str) -> Any:
    """The class registered for `name`, imported now."""
    if name not in PROVIDERS:
        if name in PLANNED:
            allowed = f"provider '{name}' is not implemented yet; available: {', '.join(PROVIDERS)}"
        else:
            allowed = f"unknown provider; available: {', '.join(PROVIDERS)}"
        raise ConfigError("provider.name", name, allowed)
    target, extra = PROVIDERS[name]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'hpcorch[{extra}]'" if extra else ""
        raise HpcorchError(f"provider '{name}' needs {exc.name}{hint}") from exc
    return getattr(module, class_name)


def create_provider(settings: Mapping[str, Any], **kwargs: Any) -> Provider:
    """Validate a `provider` config node and build its provider (no I/O happens here)."""
    name = settings.get("name")
    if not isinstance(name, str):
        raise ConfigError("provider.name", name, "must name a provider: " + ", ".join(PROVIDERS))
    cls = provider_class(name)
    from hpcorch.settings import parse_settings

    parsed = parse_settings(cls.Settings, settings, "provider")
    provider: Provider = cls(parsed, **kwargs)
    return provider
