"""Population size from the dimension and the budget: ``population_size="auto"``.

A genetic phase of P individuals spends about P evaluations a generation, so at a fixed budget
a large population gets few generations (300 individuals at 3,000 evaluations: 10), and a
stall patience counted in generations costs P evaluations per check. ``"auto"`` sizes P so that
the genetic phase gets about :data:`GENERATIONS` generations within the budget, never fewer
individuals than evolution strategies use for the same dimension (``4 + floor(3 ln D)``, at
least :data:`LOW`) and never more than :data:`HIGH`.
"""

from __future__ import annotations

import math
from numbers import Integral

__all__ = ["GENERATIONS", "HIGH", "LOW", "auto_population_size", "describe",
           "resolve_population_size"]

GENERATIONS = 200
"""Generations the budget should pay for: P is about ``max_evaluations // GENERATIONS``."""
LOW = 16
"""Smallest automatic population, whatever the dimension and budget."""
HIGH = 300
"""Largest automatic population; also the size without a budget."""


def _lower_bound(dim: int) -> int:
    """``max(LOW, 4 + floor(3 ln D))``: the evolution-strategy population for ``dim`` weights."""
    return max(LOW, 4 + math.floor(3 * math.log(dim)))


def _check_count(name: str, value: object, allow_none: bool = False) -> None:
    """``value`` must be an int >= 1 (None too when ``allow_none``), never a bool."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral):
        expected = "an int >= 1 or None" if allow_none else "an int >= 1"
        raise TypeError(f"{name} must be {expected}; got {name} = {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {name} = {value}.")


def auto_population_size(dim: int, max_evaluations: int | None) -> int:
    """The population size ``population_size="auto"`` resolves to.

    The rule::

        P = clamp(max_evaluations // GENERATIONS, low=max(16, 4 + floor(3 ln D)), high=300)

    with ``GENERATIONS = 200``: enough individuals for a genetic phase to get about 200
    generations within the budget, at least the evolution-strategy population of the dimension
    (SNES, CMA-ES: ``4 + floor(3 ln D)``) and 16, at most 300. Without a budget
    (``max_evaluations=None``) P is 300 (the upper end).

    Args:
        dim: D, the number of trainable weights (>= 1).
        max_evaluations: the evaluation budget of the run, or None when there is none.

    Returns:
        P, an int in ``[max(16, 4 + floor(3 ln D)), 300]`` (the lower end if it is above 300).

    Raises:
        TypeError, ValueError: ``dim`` or ``max_evaluations`` is not an int >= 1 (bools are
            rejected), naming the argument and showing the value.

    Example:
        >>> auto_population_size(1_000, 3_000)      # 3000 // 200 = 15 < 4 + floor(3 ln 1000)
        24
        >>> auto_population_size(1_000, 20_000)     # 20000 // 200
        100
        >>> auto_population_size(1_000, None)
        300
    """
    _check_count("dim", dim)
    _check_count("max_evaluations", max_evaluations, allow_none=True)
    low = _lower_bound(int(dim))
    if max_evaluations is None:
        return max(low, HIGH)
    return max(low, min(HIGH, int(max_evaluations) // GENERATIONS))


def describe(dim: int, max_evaluations: int | None) -> str:
    """One line for logs: the automatic size and how the rule got there.

    For ``describe(1_000, 20_000)``: ``population_size="auto": 100 = clamp(20000 // 200 = 100,
    low=max(16, 4 + floor(3 ln 1000)) = 24, high=300)`` (on one line).
    """
    size = auto_population_size(dim, max_evaluations)
    low = f"low=max({LOW}, 4 + floor(3 ln {dim})) = {_lower_bound(int(dim))}"
    if max_evaluations is None:
        return f'population_size="auto": {size} (no max_evaluations: the upper end; {low})'
    share = int(max_evaluations) // GENERATIONS
    return (f'population_size="auto": {size} = clamp({max_evaluations} // {GENERATIONS} = '
            f"{share}, {low}, high={HIGH})")


def resolve_population_size(value: object, dim: int, max_evaluations: int | None) -> int:
    """Check the ``population_size`` option and turn it into P.

    Args:
        value: ``"auto"`` (see :func:`auto_population_size`) or an int >= 2.
        dim: D, the number of trainable weights (used by ``"auto"``).
        max_evaluations: the run's budget or None (used by ``"auto"``).

    Returns:
        P: ``value`` itself when it is an int, else the automatic size.

    Raises:
        TypeError: ``value`` is neither a string nor an int (bools are rejected: ``True`` is
            not a population size).
        ValueError: a string other than ``"auto"``, or an int below 2.

    Example:
        >>> resolve_population_size("auto", 1_000, 20_000), resolve_population_size(64, 1_000, None)
        (100, 64)
    """
    expected = 'population_size must be "auto" or an int >= 2'
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"{expected}; got population_size = {value!r}.")
        return auto_population_size(dim, max_evaluations)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{expected}; got population_size = {value!r} "
                        f"({type(value).__name__}).")
    if value < 2:
        raise ValueError(f"{expected}; got population_size = {value}.")
    return int(value)
