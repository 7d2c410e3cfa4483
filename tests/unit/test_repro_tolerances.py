"""Tolerance semantics at their edges: on a bound, reference 0, one-sided, noise-aware."""

from __future__ import annotations

import math

import pytest

from hpcorch.errors import ConfigError
from hpcorch.repro.tolerances import (
    EXACT,
    Tolerance,
    ToleranceMode,
    ToleranceTable,
    parse_table,
    parse_tolerance,
)

# Values chosen so that every bound below is exactly representable in binary floating point.
REF = 8.0


def up(x: float) -> float:
    return math.nextafter(x, math.inf)


def down(x: float) -> float:
    return math.nextafter(x, -math.inf)


def test_exact_accepts_only_the_identical_value() -> None:
    assert EXACT.exact
    assert EXACT.accepts(REF, REF)
    assert not EXACT.accepts(REF, up(REF))
    assert not EXACT.accepts(REF, down(REF))
    assert parse_tolerance("exact", "t") == EXACT
    assert parse_tolerance({"exact": True}, "t") == EXACT


@pytest.mark.parametrize("raw, lo, hi", [
    ({"abs": 0.5}, 7.5, 8.5),
    ({"rel": 0.25}, 6.0, 10.0),
    ({"lower": -0.25, "upper": 0.5}, 6.0, 12.0),
])
def test_a_value_exactly_on_a_bound_passes_and_one_ulp_outside_fails(
        raw: dict[str, float], lo: float, hi: float) -> None:
    tol = parse_tolerance(raw, "t")
    assert tol.interval(REF) == (lo, hi)
    assert tol.accepts(REF, lo) and tol.accepts(REF, hi)
    assert not tol.accepts(REF, down(lo))
    assert not tol.accepts(REF, up(hi))


def test_relative_tolerance_is_absolute_when_the_reference_is_zero() -> None:
    tol = parse_tolerance({"rel": 0.25}, "t")
    assert tol.interval(0.0) == (-0.25, 0.25)
    assert tol.accepts(0.0, 0.25) and tol.accepts(0.0, -0.25)
    assert not tol.accepts(0.0, up(0.25))


def test_bounds_are_absolute_offsets_when_the_reference_is_zero() -> None:
    tol = parse_tolerance({"lower": -0.5, "upper": 0.25}, "t")
    assert tol.interval(0.0) == (-0.5, 0.25)
    assert tol.accepts(0.0, -0.5) and tol.accepts(0.0, 0.25)
    assert not tol.accepts(0.0, down(-0.5))
    assert not tol.accepts(0.0, up(0.25))


def test_bounds_follow_the_reference_sign_like_reframe() -> None:
    # ReFrame: for a negative reference the thresholds still mean below / above it.
    tol = parse_tolerance({"lower": -0.25, "upper": 0.5}, "t")
    assert tol.interval(-8.0) == (-10.0, -4.0)
    assert tol.accepts(-8.0, -10.0) and not tol.accepts(-8.0, down(-10.0))


def test_one_sided_lower_bound_lets_the_value_rise_without_limit() -> None:
    tol = parse_tolerance({"lower": -0.25}, "t")
    assert tol.mode is ToleranceMode.BOUNDS and tol.upper is None
    assert tol.interval(REF) == (6.0, math.inf)
    assert tol.accepts(REF, 1e300)
    assert tol.accepts(REF, 6.0) and not tol.accepts(REF, down(6.0))


def test_one_sided_upper_bound_with_explicit_null_lower() -> None:
    tol = parse_tolerance({"lower": None, "upper": 0.25}, "t")
    assert tol.interval(REF) == (-math.inf, 10.0)
    assert tol.accepts(REF, -1e300)
    assert tol.accepts(REF, 10.0) and not tol.accepts(REF, up(10.0))


def test_noise_aware_width_is_k_std_with_a_floor() -> None:
    tol = parse_tolerance({"k": 2.0, "floor": 0.5}, "t")
    # wide spread: 2 * 1.0 = 2.0 > floor
    assert tol.interval(REF, std=1.0) == (6.0, 10.0)
    assert tol.accepts(REF, 10.0, std=1.0) and not tol.accepts(REF, up(10.0), std=1.0)
    # narrow spread: 2 * 0.125 = 0.25 < floor 0.5, the floor wins
    assert tol.interval(REF, std=0.125) == (7.5, 8.5)
    # one seed (std 0): only the floor
    assert tol.interval(REF, std=0.0) == (7.5, 8.5)
    assert tol.accepts(REF, 8.5) and not tol.accepts(REF, up(8.5))


def test_noise_aware_without_floor_and_no_spread_is_exact() -> None:
    tol = parse_tolerance({"k": 3.0}, "t")
    assert tol.interval(REF, std=0.0) == (REF, REF)


def test_symmetric_terms_combine_and_the_widest_wins() -> None:
    tol = parse_tolerance({"abs": 0.5, "rel": 0.25, "k": 1.0, "floor": 0.0}, "t")
    assert tol.half_width(REF, std=0.0) == 2.0       # rel 0.25 * 8
    assert tol.half_width(REF, std=4.0) == 4.0       # k * std
    assert tol.half_width(1.0, std=0.0) == 0.5       # abs beats rel 0.25 * 1


def test_nan_and_infinity() -> None:
    tol = parse_tolerance({"rel": 0.5}, "t")
    assert not tol.accepts(REF, math.nan)
    assert not tol.accepts(math.nan, REF)
    assert tol.accepts(math.nan, math.nan)  # identical
    assert tol.accepts(math.inf, math.inf)
    assert not tol.accepts(math.inf, 1e308)


@pytest.mark.parametrize("raw, key, fragment", [
    ({"rell": 0.1}, "t.rell", "did you mean 'rel'"),
    ({"rel": 0.1, "lower": -0.1}, "t", "use one mode"),
    ({"floor": 0.1}, "t.floor", "needs k > 0"),
    ({"lower": 0.1}, "t.lower", "must be <= 0"),
    ({"upper": -0.1}, "t.upper", "must be >= 0"),
    ({"abs": -1}, "t.abs", "must be >= 0"),
    ({"rel": "1e-3"}, "t.rel", "write 1.0e-3"),
    ({"abs": True}, "t.abs", "finite number"),
    ({"abs": math.inf}, "t.abs", "finite number"),
    ({}, "t", "is empty"),
    ({"exact": True, "abs": 1}, "t.exact", "stand alone"),
    (0.1, "t", "must be a mapping"),
])
def test_malformed_tolerances_name_key_value_and_what_is_allowed(
        raw: object, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_tolerance(raw, "t")
    assert err.value.key == key
    assert fragment in str(err.value)


def test_round_trip_through_to_dict() -> None:
    for raw in ({"abs": 0.5}, {"rel": 0.1, "k": 3.0, "floor": 0.01},
                {"lower": -0.1, "upper": None}, {"lower": None, "upper": 0.2}, {"exact": True}):
        tol = parse_tolerance(raw, "t")
        assert parse_tolerance(tol.to_dict(), "t") == tol


def test_table_default_and_precedence() -> None:
    file_table = parse_table({"default": {"rel": 0.1}, "acc": {"lower": -0.05}})
    config_table = parse_table({"default": {"abs": 1.0}, "loss": {"abs": 0.5}})
    merged = file_table.merged_over(config_table)
    assert merged.for_metric("acc").mode is ToleranceMode.BOUNDS
    assert merged.for_metric("loss") == Tolerance(abs=0.5)       # only the config names it
    assert merged.for_metric("other") == Tolerance(rel=0.1)      # the file's default wins
    assert ToleranceTable().for_metric("x") == EXACT              # nothing given: identical
