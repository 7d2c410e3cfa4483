"""Deterministic data splits from item keys, stable when the data set grows.

Each item's split depends only on its own key (and a salt): the first 8 bytes
of SHA-256(salt NUL key), read big-endian and divided by 2**64, place it in
[0, 1), and the cumulative fractions cut that interval. Adding items never
moves an existing item to another split, and the result is the same on every
provider, platform and numpy version: only hashlib and IEEE double division
are involved.

The membership hash is SHA-256 over the canonical JSON of
`[[name, [key, ...]], ...]` (split order, item order), cut to 16 hex digits,
so two runs that trained and evaluated on the same items show the same hash.

Every split made in a process is remembered (`recorded()`) so the worker can
put its counts and membership hash into the run record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_SCALE = float(2**64)

#: The splits made in this process since the worker last reset the list (one run's splits).
#: Process-wide on purpose: research code calls split() without any handle to pass around.
_RECORDED: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Split:
    """Item indices per split name, plus a hash of the membership for the run record."""

    names: tuple[str, ...]
    indices: tuple[tuple[int, ...], ...]
    membership_hash: str
    salt: str = ""

    def __getitem__(self, name: str) -> tuple[int, ...]:
        return self.indices[self.names.index(name)]

    def counts(self) -> dict[str, int]:
        """Items per split."""
        return {n: len(i) for n, i in zip(self.names, self.indices, strict=True)}

    def summary(self) -> dict[str, Any]:
        """What the run record keeps: salt, item count, counts per split and the hash."""
        return {"salt": self.salt, "items": sum(len(i) for i in self.indices),
                "counts": self.counts(), "membership_hash": self.membership_hash}


def position(key: str, salt: str = "") -> float:
    """Where an item key falls in [0, 1) for this salt."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def split(keys: int | Iterable[object], fractions: Sequence[float] = (0.8, 0.1, 0.1),
          names: Sequence[str] = ("train", "val", "test"), salt: str = "") -> Split:
    """Split items (an int n means keys 0..n-1) into named parts of roughly `fractions`."""
    from hpcorch.errors import ConfigError

    if len(fractions) != len(names):
        raise ConfigError("split.fractions", list(fractions),
                          f"needs one fraction per name {list(names)}")
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ConfigError("split.fractions", list(fractions), "must be >= 0 and sum to 1")
    if len(set(names)) != len(names):
        raise ConfigError("split.names", list(names), "must be distinct")
    items = [str(k) for k in (range(keys) if isinstance(keys, int) else keys)]
    bounds, total = [], 0.0
    for f in fractions:
        total += f
        bounds.append(total)
    parts: list[list[int]] = [[] for _ in names]
    for index, key in enumerate(items):
        pos = position(key, salt)
        part = next((i for i, b in enumerate(bounds) if pos < b), len(bounds) - 1)
        parts[part].append(index)
    made = Split(tuple(names), tuple(tuple(p) for p in parts),
                 membership_hash(names, [[items[i] for i in p] for p in parts]), salt)
    _remember(made.summary())
    return made


def membership_hash(names: Sequence[str], members: Sequence[Sequence[str]]) -> str:
    """The 16-hex-digit hash of which item keys went into which split."""
    payload = json.dumps([[n, list(m)] for n, m in zip(names, members, strict=True)],
                         separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _remember(summary: dict[str, Any]) -> None:
    if summary not in _RECORDED:  # the same split made twice (e.g. per epoch) counts once
        _RECORDED.append(summary)


def recorded() -> list[dict[str, Any]]:
    """Summaries of the splits made since the last `reset_recorded()`, in order."""
    return [dict(s) for s in _RECORDED]


def reset_recorded() -> None:
    """Forget the splits made so far (the worker calls this when a run starts)."""
    _RECORDED.clear()
