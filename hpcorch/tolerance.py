"""Per-metric tolerances: how far an observed metric may be from its reference.

Two modes, written per metric in a baseline file or in `hpcorch.repro.tolerances`:

Symmetric (`abs`, `rel`, `k`, `floor`; any combination, the widest wins):
    |observed - reference| <= max(abs, rel * |reference|, max(k * std, floor))
    - `rel` is absolute when the reference is 0 (a fraction of 0 would demand
      exact equality, which no noisy metric meets);
    - `k` is noise-aware: k standard deviations of the reference's per-seed
      spread, never narrower than `floor` (one seed has std 0).
    All four 0 (or `exact`) means identical values.

Bounds (`lower`, `upper`), in the spirit of ReFrame's reference tuples:
    reference + lower * |reference| <= observed <= reference + upper * |reference|
    - `lower` <= 0 <= `upper`, both fractions of the reference;
    - absolute offsets when the reference is 0;
    - a side that is null or absent is unbounded (e.g. `{lower: -0.05}`:
      accuracy may rise freely but not fall by more than 5%).

Bounds are inclusive: a value exactly on a bound passes. NaN never passes
unless both reference and observation are NaN (identical); an infinite
reference requires the identical observation.

Core, not checks: `hpcorch.repro.tolerances` is a setting, refused before a
sweep submits anything, so the settings parser (core) must be able to parse it
without importing upward. The checks (baselines, drift, compare) import it from
here, or through `hpcorch.repro.tolerances`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hpcorch.errors import ConfigError

#: The entry of a tolerance table that applies to every metric not named in it.
DEFAULT_KEY = "default"
_SYMMETRIC = ("abs", "rel", "k", "floor")
_BOUNDS = ("lower", "upper")
_ALLOWED = ("exact", *_SYMMETRIC, *_BOUNDS)


class ToleranceMode(str, Enum):
    """How a tolerance turns a reference into an interval."""

    SYMMETRIC = "symmetric"
    """reference +- the widest of abs, rel*|reference| and max(k*std, floor)."""
    BOUNDS = "bounds"
    """[reference + lower*|reference|, reference + upper*|reference|], either side optional."""


@dataclass(frozen=True)
class Tolerance:
    """One metric's tolerance. The default (all zero) demands identical values."""

    mode: ToleranceMode = ToleranceMode.SYMMETRIC
    abs: float = 0.0
    rel: float = 0.0
    k: float = 0.0
    floor: float = 0.0
    lower: float | None = None
    upper: float | None = None

    @property
    def exact(self) -> bool:
        """True when only identical values pass."""
        return self.mode is ToleranceMode.SYMMETRIC and not (
            self.abs or self.rel or self.k or self.floor)

    def interval(self, reference: float, std: float = 0.0) -> tuple[float, float]:
        """The closed interval of accepted observations (infinite on an unbounded side)."""
        ref = float(reference)
        if self.mode is ToleranceMode.BOUNDS:
            scale = abs(ref) if ref != 0 else 1.0  # absolute offsets around a zero reference
            lo = -math.inf if self.lower is None else ref + self.lower * scale
            hi = math.inf if self.upper is None else ref + self.upper * scale
            return lo, hi
        half = self.half_width(ref, std)
        return ref - half, ref + half

    def half_width(self, reference: float, std: float = 0.0) -> float:
        """The symmetric half-width for this reference and per-seed spread."""
        rel = self.rel * (abs(reference) if reference != 0 else 1.0)
        noise = max(self.k * max(std, 0.0), self.floor) if self.k else 0.0
        return max(self.abs, rel, noise)

    def accepts(self, reference: float, observed: float, std: float = 0.0) -> bool:
        """Whether `observed` is within tolerance of `reference` (bounds inclusive)."""
        ref, obs = float(reference), float(observed)
        if math.isnan(ref) or math.isnan(obs):
            return math.isnan(ref) and math.isnan(obs)
        if math.isinf(ref):
            return obs == ref
        lo, hi = self.interval(ref, std)
        return lo <= obs <= hi

    def describe(self) -> str:
        """Short human text: `exact`, `abs 0.01`, `rel 2%`, `3σ (floor 0.005)`, `[-5%, +inf)`."""
        if self.mode is ToleranceMode.BOUNDS:
            lo = "-inf" if self.lower is None else f"{self.lower:+.4g}"
            hi = "+inf" if self.upper is None else f"{self.upper:+.4g}"
            return f"bounds [{lo}, {hi}] x|ref|"
        if self.exact:
            return "exact"
        parts = []
        if self.abs:
            parts.append(f"abs {self.abs:g}")
        if self.rel:
            parts.append(f"rel {self.rel:g}")
        if self.k:
            parts.append(f"{self.k:g} std (floor {self.floor:g})")
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The mapping `parse_tolerance` reads back (for baseline files)."""
        if self.mode is ToleranceMode.BOUNDS:
            return {"lower": self.lower, "upper": self.upper}
        if self.exact:
            return {"exact": True}
        return {k: getattr(self, k) for k in _SYMMETRIC if getattr(self, k)}


EXACT = Tolerance()


def _number(key: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(float(value)):
        allowed = "must be a finite number" + (" or null (unbounded)" if allow_none else "")
        if isinstance(value, str):
            allowed += " (YAML reads 1e-3 as text: write 1.0e-3)"
        raise ConfigError(key, value, allowed)
    return float(value)


def parse_tolerance(raw: Any, key: str) -> Tolerance:
    """A Tolerance from its mapping (or the word `exact`); ConfigError names key and value."""
    if raw == "exact":
        return EXACT
    if not isinstance(raw, Mapping):
        raise ConfigError(key, raw, "must be a mapping of " + ", ".join(_ALLOWED)
                          + " (or the word 'exact')")
    unknown = [k for k in raw if k not in _ALLOWED]
    if unknown:
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), _ALLOWED, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{key}.{unknown[0]}", raw[unknown[0]],
                          f"unknown tolerance setting; {hint}allowed: {', '.join(_ALLOWED)}")
    if "exact" in raw:
        if raw["exact"] is not True or len(raw) > 1:
            raise ConfigError(f"{key}.exact", raw["exact"],
                              "must be true and stand alone (exact means identical values)")
        return EXACT
    bounds = [k for k in _BOUNDS if k in raw]
    symmetric = [k for k in _SYMMETRIC if k in raw]
    if bounds and symmetric:
        raise ConfigError(key, dict(raw), f"mixes bounds ({', '.join(bounds)}) with symmetric "
                                          f"settings ({', '.join(symmetric)}): use one mode")
    if bounds:
        lower = _number(f"{key}.lower", raw.get("lower"), allow_none=True)
        upper = _number(f"{key}.upper", raw.get("upper"), allow_none=True)
        if lower is not None and lower > 0:
            raise ConfigError(f"{key}.lower", lower,
                              "must be <= 0 (a fraction below the reference)")
        if upper is not None and upper < 0:
            raise ConfigError(f"{key}.upper", upper,
                              "must be >= 0 (a fraction above the reference)")
        return Tolerance(ToleranceMode.BOUNDS, lower=lower, upper=upper)
    values: dict[str, float] = {}
    for name in symmetric:
        number = _number(f"{key}.{name}", raw[name])
        assert number is not None
        if number < 0:
            raise ConfigError(f"{key}.{name}", number, "must be >= 0")
        values[name] = number
    if "floor" in values and not values.get("k"):
        raise ConfigError(f"{key}.floor", values["floor"],
                          "is the floor of the noise-aware width and needs k > 0")
    if not values:
        raise ConfigError(key, dict(raw), "is empty: give abs, rel, k (+floor), lower/upper, "
                                          "or exact: true")
    return Tolerance(ToleranceMode.SYMMETRIC, **values)


@dataclass(frozen=True)
class ToleranceTable:
    """Tolerances by metric name; `default` covers the rest; without one, exact."""

    by_metric: dict[str, Tolerance] = field(default_factory=dict)

    def for_metric(self, metric: str) -> Tolerance:
        """The tolerance that applies to `metric`."""
        return self.by_metric.get(metric, self.by_metric.get(DEFAULT_KEY, EXACT))

    def merged_over(self, fallback: ToleranceTable) -> ToleranceTable:
        """This table, with `fallback`'s entries for the metrics it does not name."""
        return ToleranceTable({**fallback.by_metric, **self.by_metric})

    def to_dict(self) -> dict[str, Any]:
        """`{metric: {...}}`, default first."""
        keys = sorted(self.by_metric, key=lambda k: (k != DEFAULT_KEY, k))
        return {k: self.by_metric[k].to_dict() for k in keys}


def parse_table(raw: Any, key: str = "tolerances") -> ToleranceTable:
    """A ToleranceTable from `{metric: tolerance, ...}` (None means empty)."""
    if raw is None:
        return ToleranceTable()
    if not isinstance(raw, Mapping):
        raise ConfigError(key, raw, "must be a mapping of metric name -> tolerance")
    return ToleranceTable({str(m): parse_tolerance(t, f"{key}.{m}") for m, t in raw.items()})
