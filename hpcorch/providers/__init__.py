"""Provider registry: `provider=NAME` -> a lazily imported class and its settings.

Entries are dotted paths so that `import hpcorch` never imports an engine's
client library; a missing optional dependency is reported with its install hint.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any

from hpcorch.errors import ConfigError, HpcorchError
from hpcorch.providers.base import Capabilities, Provider

#: name -> ("module:Class", pip extra that brings its dependencies, or "")
PROVIDERS: dict[str, tuple[str, str]] = {
    "local": ("hpcorch.providers.local:LocalProvider", ""),
    "slurm": ("hpcorch.providers.slurm.provider:SlurmProvider", "slurm"),
    "mpi": ("hpcorch.providers.mpi:MpiProvider", ""),
    "ray": ("hpcorch.providers.ray:RayProvider", "ray"),
    "sge": ("hpcorch.providers.sge.provider:SgeProvider", ""),
}

#: The provider of an app that names none, and of `hpcorch verify --provider local`.
DEFAULT_PROVIDER = "local"

#: Providers that have a config but no implementation in this version.
PLANNED: tuple[str, ...] = ()


#: The entry-point group through which other packages add providers: a provider is one
#: package (its class, `Settings`, and `conf/provider/<name>.yaml` beside its module).
ENTRY_POINT_GROUP = "hpcorch.providers"

#: What a provider class must declare (see hpcorch.providers.base.Provider).
REQUIRED_METHODS = ("check", "render", "submit", "lookup", "status", "cancel", "close")
REQUIRED_ATTRIBUTES = ("name",)  # poll intervals may depend on settings: set per instance


def plugin_providers() -> dict[str, str]:
    """Providers other packages register under the entry-point group: name -> "module:Class"."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every provider name `provider=NAME` accepts: built in, then registered by packages."""
    return [*PROVIDERS, *(n for n in plugin_providers() if n not in PROVIDERS)]


def provider_class(name: str) -> Any:
    """The class registered for `name`, imported now and checked against the contract."""
    if name in PROVIDERS:
        target, extra = PROVIDERS[name]
    elif name in (plugins := plugin_providers()):
        target, extra = plugins[name], ""
    else:
        known = ", ".join(available())
        if name in PLANNED:
            allowed = f"provider '{name}' is not implemented yet; available: {known}"
        else:
            allowed = f"unknown provider; available: {known}"
        raise ConfigError("provider.name", name, allowed)
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'hpcorch[{extra}]'" if extra else ""
        raise HpcorchError(f"provider '{name}' needs {exc.name}{hint}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise HpcorchError(f"provider '{name}': {module_name} has no class {class_name}")
    validate_provider_class(cls, name)
    return cls


def validate_provider_class(cls: Any, name: str) -> None:
    """Refuse a provider class that does not declare the whole contract, when it is
    registered (looked up), not when a missing piece is first called mid-sweep."""
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    missing += [a for a in REQUIRED_ATTRIBUTES if not hasattr(cls, a)]
    settings: Any = getattr(cls, "Settings", None)
    if not isinstance(settings, type) or not dataclasses.is_dataclass(settings):
        missing.append("Settings (a dataclass of its settings)")
    if not isinstance(getattr(cls, "capabilities", None), Capabilities):
        missing.append("capabilities (a hpcorch.providers.base.Capabilities)")
    if missing:
        raise HpcorchError(f"provider '{name}' ({cls.__module__}.{cls.__qualname__}) does not "
                           f"implement the provider contract: missing {', '.join(missing)}")
    if getattr(cls, "name", name) != name:
        raise HpcorchError(f"provider '{name}': its class says name={cls.name!r}")
    if "name" not in {f.name for f in dataclasses.fields(settings)}:
        raise HpcorchError(f"provider '{name}': {settings.__qualname__} has no `name` field")


def create_provider(settings: Mapping[str, Any], **kwargs: Any) -> Provider:
    """Validate a `provider` config node and build its provider (no I/O happens here)."""
    name = settings.get("name")
    if not isinstance(name, str):
        raise ConfigError("provider.name", name, "must name a provider: " + ", ".join(available()))
    cls = provider_class(name)
    from hpcorch.settings import parse_settings

    parsed = parse_settings(cls.Settings, settings, "provider")
    provider: Provider = cls(parsed, **kwargs)
    return provider
