"""The only module that imports DEAP.

DEAP's ``creator`` is process-global, so its types are created once, here, at import. DEAP draws
from Python's global ``random``; :func:`private_random` lends it the optimiser's own
``random.Random`` for the duration of a call and puts the global state back, so a run is
reproducible without the library ever seeding global state.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
from deap import base, creator, tools

if not hasattr(creator, "HybridFitnessMax"):
    creator.create("HybridFitnessMax", base.Fitness, weights=(1.0,))
if not hasattr(creator, "HybridMember"):
    # A population member is a handle: its row in the [P, D] tensor, a stable id and a fitness.
    creator.create("HybridMember", object, fitness=creator.HybridFitnessMax)

Toolbox = base.Toolbox
HallOfFame = tools.HallOfFame
Logbook = tools.Logbook


def make_member(index: int, uid: int, score: float):
    """A DEAP individual standing for row ``index`` of the population tensor."""
    member = creator.HybridMember()
    member.index = index
    member.uid = uid
    member.weights = None
    member.fitness.values = (score,)
    return member


def same_member(a, b) -> bool:
    """Hall-of-fame identity: the same individual carried over unchanged."""
    return a.uid == b.uid


def make_statistics() -> tools.Statistics:
    """DEAP statistics over the finite fitness values of a generation."""
    stats = tools.Statistics(key=lambda m: m.fitness.values[0])

    def finite(values):
        arr = np.asarray(values, dtype=float)
        return arr[np.isfinite(arr)] if np.isfinite(arr).any() else np.array([np.nan])

    stats.register("avg", lambda v: float(np.mean(finite(v))))
    stats.register("std", lambda v: float(np.std(finite(v))))
    stats.register("min", lambda v: float(np.min(finite(v))))
    stats.register("max", lambda v: float(np.max(finite(v))))
    return stats


def tournament(tournsize: int):
    """DEAP's tournament selection with the given size."""

    def select(individuals, k):
        return tools.selTournament(individuals, k, tournsize=tournsize)

    return select


@contextlib.contextmanager
def private_random(rng: random.Random) -> Iterator[None]:
    """Run DEAP's draws on ``rng`` without touching the global ``random`` state."""
    saved = random.getstate()
    random.setstate(rng.getstate())
    try:
        yield
    finally:
        rng.setstate(random.getstate())
        random.setstate(saved)
