"""Deterministic data splits from item keys, stable when the data set grows.

Each item's split depends only on its own key (and a salt): a hash of the key
maps it to a point in [0, 1), and the fractions cut that interval. Adding
items never moves an existing item to another split, and the result is the
same on every provider, platform and numpy version (only hashlib is used).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_SCALE = float(2**64)


@dataclass(frozen=True)
class Split:
    """Item indices per split name, plus a hash of the membership for the run record."""

    names: tuple[str, ...]
    indices: tuple[tuple[int, ...], ...]
    membership_hash: str

    def __getitem__(self, name: str) -> tuple[int, ...]:
        return self.indices[self.names.index(name)]

    def counts(self) -> dict[str, int]:
        """Items per split."""
        return {n: len(i) for n, i in zip(self.names, self.indices, strict=True)}


def _position(key: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def split(keys: int | Iterable[object], fractions: Sequence[float] = (0.8, 0.1, 0.1),
          names: Sequence[str] = ("train", "val", "test"), salt: str = "") -> Split:
    """Split items (an int n means keys 0..n-1) into named parts of roughly `fractions`."""
    from hpcorch.errors import ConfigError

    if len(fractions) != len(names):
        raise ConfigError("split.fractions", list(fractions), f"needs one fraction per name {list(names)}")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ConfigError("split.fractions", list(fractions), "must be >= 0 and sum to 1")
    items = [str(k) for k in (range(keys) if isinstance(keys, int) else keys)]
    bounds, total = [], 0.0
    for f in fractions:
        total += f
        bounds.append(total)
    parts: list[list[int]] = [[] for _ in names]
    for index, key in enumerate(items):
        pos = _position(key, salt)
        part = next((i for i, b in enumerate(bounds) if pos < b), len(bounds) - 1)
        parts[part].append(index)
    membership = hashlib.sha256()
    for name, part in zip(names, parts, strict=True):
        membership.update(name.encode() + b":" + ",".join(items[i] for i in part).encode() + b";")
    return Split(tuple(names), tuple(tuple(p) for p in parts), membership.hexdigest()[:16])
