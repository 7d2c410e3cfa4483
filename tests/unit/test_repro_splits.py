"""Splits: the specified algorithm, golden membership hashes, stability, the run record's list.

The golden hashes below are legitimate fixed values: the algorithm is specified
(SHA-256 of `salt NUL key`, first 8 bytes big-endian / 2**64, cumulative
fractions; membership hash = SHA-256 of canonical JSON of [[name, [keys]]]),
so they must never change with numpy, the platform or the provider. The test
also recomputes them with hashlib alone.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from hpcorch.errors import ConfigError
from hpcorch.repro import splits
from hpcorch.repro.splits import split

#: The example train.py's split (1000 items, 70/15/15, salt "two_moons").
EXAMPLE_HASH = "33a8d3dcd60f4bff"
EXAMPLE_COUNTS = {"train": 698, "val": 149, "test": 153}


def reference_split(keys: list[str], fractions: tuple[float, ...], names: tuple[str, ...],
                    salt: str) -> tuple[str, list[list[str]]]:
    """The specification, written out with hashlib only."""
    bounds, total = [], 0.0
    for f in fractions:
        total += f
        bounds.append(total)
    parts: list[list[str]] = [[] for _ in names]
    for key in keys:
        digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
        pos = int.from_bytes(digest[:8], "big") / float(2**64)
        parts[next((i for i, b in enumerate(bounds) if pos < b), len(bounds) - 1)].append(key)
    payload = json.dumps([[n, p] for n, p in zip(names, parts, strict=True)],
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16], parts


def test_example_split_matches_the_golden_hash_and_counts() -> None:
    made = split(1000, (0.7, 0.15, 0.15), salt="two_moons")
    assert made.membership_hash == EXAMPLE_HASH
    assert made.counts() == EXAMPLE_COUNTS


@pytest.mark.parametrize("keys, fractions, names, salt, golden", [
    ([str(i) for i in range(1000)], (0.7, 0.15, 0.15), ("train", "val", "test"), "two_moons",
     EXAMPLE_HASH),
    ([str(i) for i in range(10)], (0.5, 0.5), ("a", "b"), "", "9cc850bb9f792c95"),
])
def test_split_equals_the_specification(keys: list[str], fractions: tuple[float, ...],
                                        names: tuple[str, ...], salt: str, golden: str) -> None:
    expected_hash, expected_parts = reference_split(keys, fractions, names, salt)
    assert expected_hash == golden
    made = split(keys, fractions, names, salt=salt)
    assert made.membership_hash == golden
    assert [[keys[i] for i in made[n]] for n in names] == expected_parts


def test_growing_the_data_set_keeps_every_existing_item_in_its_split() -> None:
    small = split([f"item-{i}" for i in range(500)], salt="s")
    large = split([f"item-{i}" for i in range(2000)], salt="s")
    for name in small.names:
        assert set(small[name]) <= set(large[name])
    assert small.membership_hash != large.membership_hash


def test_salt_and_keys_change_the_membership_hash() -> None:
    base = split(100, salt="a")
    assert split(100, salt="b").membership_hash != base.membership_hash
    assert split(100, salt="a").membership_hash == base.membership_hash


def test_membership_hash_is_unambiguous_for_keys_with_separators() -> None:
    a = split(["x,y", "z"], (0.5, 0.5), ("p", "q"), salt="k")
    b = split(["x", "y,z"], (0.5, 0.5), ("p", "q"), salt="k")
    assert a.membership_hash != b.membership_hash


def test_splits_are_recorded_once_each_until_reset() -> None:
    splits.reset_recorded()
    split(100, salt="one")
    split(100, salt="one")  # made again (e.g. every epoch): recorded once
    split(50, salt="two")
    recorded = splits.recorded()
    assert [r["salt"] for r in recorded] == ["one", "two"]
    assert recorded[1] == {"salt": "two", "items": 50, "counts": split(50, salt="two").counts(),
                           "membership_hash": split(50, salt="two").membership_hash}
    splits.reset_recorded()
    assert splits.recorded() == []


@pytest.mark.parametrize("kwargs, key", [
    ({"fractions": (0.5, 0.5)}, "split.fractions"),
    ({"fractions": (0.5, 0.6, -0.1)}, "split.fractions"),
    ({"fractions": (0.5, 0.5), "names": ("a", "a")}, "split.names"),
])
def test_bad_split_arguments_are_config_errors(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        split(10, **kwargs)  # type: ignore[arg-type]
    assert err.value.key == key
