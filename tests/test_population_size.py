"""population_size="auto": the documented sizes, and the checks of the option."""

from __future__ import annotations

import math

import pytest

from hybridopt.population.size import (
    GENERATIONS,
    HIGH,
    LOW,
    auto_population_size,
    describe,
    resolve_population_size,
)


@pytest.mark.parametrize(
    ("dim", "budget", "expected"),
    [
        # D = 1,000: low = 4 + floor(3 ln 1000) = 4 + 20 = 24
        (1_000, 3_000, 24),  # 3000 // 200 = 15 -> raised to the low end
        (1_000, 10_000, 50),
        (1_000, 20_000, 100),
        (1_000, 30_000, 150),
        (1_000, 60_000, 300),
        (1_000, 10**7, 300),  # capped at the high end
        (1_000, None, 300),  # no budget: the high end
        # Small D: low = 16 (4 + floor(3 ln 10) = 10 is below it)
        (10, 1_000, 16),
        (10, 199, 16),  # fewer evaluations than GENERATIONS: 0 -> the low end
        (1, 5_000, 25),
        # Large D: 4 + floor(3 ln 10^6) = 4 + 41 = 45
        (10**6, 5_000, 45),
        (10**6, 20_000, 100),
    ],
)
def test_auto_gives_the_documented_sizes(dim, budget, expected):
    assert auto_population_size(dim, budget) == expected


def test_auto_follows_the_rule_everywhere():
    for dim in (1, 2, 7, 100, 3_000, 10**5):
        low = max(16, 4 + math.floor(3 * math.log(dim)))
        for budget in (1, 100, 3_000, 9_999, 10_000, 59_999, 10**6):
            assert auto_population_size(dim, budget) == min(300, max(low, budget // 200))


def test_constants_are_the_documented_ones():
    assert (GENERATIONS, LOW, HIGH) == (200, 16, 300)


def test_resolve_passes_ints_through_and_resolves_auto():
    assert resolve_population_size(2, 1_000, 3_000) == 2
    assert resolve_population_size(512, 1_000, None) == 512
    assert resolve_population_size("auto", 1_000, 20_000) == 100
    assert resolve_population_size("auto", 1_000, None) == 300


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        (False, TypeError),
        (64.0, TypeError),
        (None, TypeError),
        ([64], TypeError),
        ("Auto", ValueError),
        ("64", ValueError),
        (1, ValueError),
        (0, ValueError),
        (-5, ValueError),
    ],
)
def test_resolve_rejects_bad_values_naming_the_option(value, error):
    with pytest.raises(error, match="population_size") as info:
        resolve_population_size(value, 1_000, 3_000)
    assert repr(value) in str(info.value) or str(value) in str(info.value)
    assert '"auto" or an int >= 2' in str(info.value)


@pytest.mark.parametrize(
    ("dim", "budget", "error", "name"),
    [
        (0, 3_000, ValueError, "dim"),
        (True, 3_000, TypeError, "dim"),
        (10.0, 3_000, TypeError, "dim"),
        (10, 0, ValueError, "max_evaluations"),
        (10, False, TypeError, "max_evaluations"),
        (10, "3000", TypeError, "max_evaluations"),
    ],
)
def test_auto_checks_its_arguments(dim, budget, error, name):
    with pytest.raises(error, match=name):
        auto_population_size(dim, budget)


def test_describe_names_the_rule_and_the_size():
    line = describe(1_000, 20_000)
    assert line.startswith('population_size="auto": 100 ')
    assert "20000 // 200 = 100" in line and "= 24" in line and "high=300" in line
    assert "no max_evaluations" in describe(1_000, None)
    assert describe(1_000, 3_000).startswith('population_size="auto": 24 ')
