"""The built-in phases by name, and turning ``phases=`` into phase objects.

``phases=`` takes names of built-in phases ("gradient", "genetic", "es") or objects that follow
:class:`hybridopt.phases.base.Phase`; each name is built from its config (``GradientConfig``,
``GeneticConfig``, ``ESConfig``).
"""

from __future__ import annotations

import importlib
from typing import Any

from hybridopt.phases.base import Phase, PhaseContext, check_phase

# name -> (module, class, the optimiser keyword holding its config)
BUILT_IN = {
    "gradient": ("hybridopt.phases.gradient", "GradientPhase", "gradient"),
    "genetic": ("hybridopt.phases.genetic", "GeneticPhase", "genetic"),
    "es": ("hybridopt.phases.es", "ESPhase", "es"),
}

# The cycles phases="auto" runs, as measured (benchmarks/hybrid_vs_pure.py and compare.py,
# README "Does switching pay off?"). Every step sees the whole training data: REINFORCE first
# (its gradient is that of the score on all rows; the slow finisher that wins there), then
# SNES, then the GA. Steps see random episodes: SNES first (each generation compares its
# samples on one episode, where REINFORCE's steps chase each episode's noise), then the GA,
# then REINFORCE from the best. With several objectives SNES and NSGA-II without REINFORCE: a
# REINFORCE visit on one scalarisation ends with a model that dominates the archive on the
# training data (a front of 1-2 models when it runs first; run last it still costs
# hypervolume), where SNES then NSGA-II keep a spread (benchmarks/front.py).
FIXED_DATA_PHASES = ("gradient", "es", "genetic")
EPISODE_PHASES = ("es", "genetic", "gradient")
OBJECTIVES_PHASES = ("es", "genetic")

__all__ = ["BUILT_IN", "EPISODE_PHASES", "FIXED_DATA_PHASES", "OBJECTIVES_PHASES", "Phase",
           "PhaseContext", "build_phases", "default_phases", "validate_phases"]


def default_phases(episode_length: int | None, objectives: Any = None) -> tuple[str, ...]:
    """The phases ``phases="auto"`` runs: :data:`OBJECTIVES_PHASES` with several objectives
    (``objectives`` not None), else :data:`FIXED_DATA_PHASES` when every step sees the whole
    training data (``episode_length`` None), else :data:`EPISODE_PHASES`."""
    if objectives is not None:
        return OBJECTIVES_PHASES
    return FIXED_DATA_PHASES if episode_length is None else EPISODE_PHASES


def validate_phases(phases: Any) -> tuple[Any, ...]:
    """Check ``phases=``: a non-empty sequence of built-in names or phase objects, with
    distinct names. Returns it as a tuple (names kept as names)."""
    if isinstance(phases, str) or isinstance(phases, Phase) or hasattr(phases, "step"):
        phases = (phases,)
    try:
        phases = tuple(phases)
    except TypeError:
        raise TypeError(
            f"phases must be a tuple of phase names from {tuple(BUILT_IN)} or phase objects; "
            f"got {phases!r}."
        ) from None
    names = []
    for p in phases:
        if isinstance(p, str):
            if p not in BUILT_IN:
                raise ValueError(
                    f"phases: unknown phase {p!r}; built-in phases are {tuple(BUILT_IN)} "
                    f"(or pass a phase object, or phases=\"auto\" for the measured default); "
                    f"got phases = {phases!r}."
                )
            names.append(p)
        else:
            check_phase(p)
            names.append(p.name)
    if not phases or len(set(names)) != len(names):
        raise ValueError(
            f"phases must be a non-empty sequence of phases with distinct names, the first one "
            f"starting; got {phases!r}."
        )
    return phases


def build_phases(phases: tuple[Any, ...], configs: dict[str, Any]) -> list[Any]:
    """Phase objects for ``phases``: names built from ``configs[keyword]``, objects as given."""
    built = []
    for p in phases:
        if isinstance(p, str):
            module, cls, keyword = BUILT_IN[p]
            built.append(getattr(importlib.import_module(module), cls)(configs.get(keyword)))
        else:
            built.append(p)
    return built
