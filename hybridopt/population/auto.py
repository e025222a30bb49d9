"""The ``auto`` choice of method (vmap or loop) and precision, by measuring.

A choice holds for one *size*: the episode length (rows) and the population size, each rounded
to the nearest power of two, so a genetic phase whose changed-offspring count wobbles between
240 and 300 is timed once, while a switch from 64-row episodes to the whole data, or from a
population of 32 to 1024, is timed again. Each candidate ("vmap/float32", "loop/bfloat16", ...)
runs once to warm up, then ``repeats`` times, round-robin (rotated each round) so that load
from other processes falls on every candidate alike; the median per-individual time decides.
On a CPU with one torch thread the clock is the calling thread's CPU time, which other
processes cannot inflate (:func:`hybridopt.population.device.clock`).

Reduced precision is picked only where it pays clearly: the hardware has bf16 matrix units,
the best bfloat16 candidate is at least ``margin`` times faster than the best float32 one, and
bfloat16 changes at most ``1 - min_agreement`` of the float32 argmax actions on the sample.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

__all__ = ["AutoSettings", "agreement", "measure", "pick", "size_key"]


@dataclass(frozen=True, kw_only=True)
class AutoSettings:
    """How ``auto`` measures and decides."""

    repeats: int = 7
    """Timed runs per candidate after the warm-up; the median counts."""
    min_seconds: float = 0.05
    """Each timed run repeats its candidate until it lasts this long (timer resolution)."""
    sample: int = 8
    """Individuals timed, at least (and at least one vmap chunk); results scale to P."""
    margin: float = 1.2
    """bfloat16 must be this many times faster than float32 to be picked."""
    min_agreement: float = 0.9
    """...and agree with float32's argmax actions on at least this share of rows."""


def size_key(rows: int, population: int) -> tuple[int, int]:
    """The size a choice holds for: (rows, population), each as the nearest power of two."""
    return round(math.log2(max(rows, 1))), round(math.log2(max(population, 1)))


def measure(
    candidates: dict[str, Callable[[], Tensor]],
    settings: AutoSettings,
    clock: Callable[[], float],
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """Median seconds per call of each candidate, and the actions each returned.

    Args:
        candidates: name -> a call returning actions (on a fixed sample of the population).
        settings: repeats and the shortest timed run.
        clock: reads the time once the device's queued work is done.
    """
    outputs, calls = {}, {}
    for name, run in candidates.items():  # warm-up; sizes each timed run
        start = clock()
        outputs[name] = run()
        elapsed = max(clock() - start, 1e-9)
        calls[name] = max(1, math.ceil(settings.min_seconds / elapsed))
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(settings.repeats):
        # Round-robin, starting one later each round: no candidate always follows the same one
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = clock()
            for _ in range(calls[name]):
                candidates[name]()
            times[name].append((clock() - start) / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def pick(
    timings: dict[str, float], agreement: float | None, settings: AutoSettings
) -> tuple[str, str]:
    """(method, precision) from ``timings`` keyed ``"method/precision"``.

    float32 unless a reduced precision is ``settings.margin`` times faster than the best float32
    candidate and its ``agreement`` with float32's actions is high enough; then the faster method
    at the chosen precision.
    """
    best: dict[str, tuple[float, str]] = {}
    for name, seconds in timings.items():
        method, precision = name.split("/")
        if precision not in best or seconds < best[precision][0]:
            best[precision] = (seconds, method)
    chosen = "float32" if "float32" in best else min(best, key=lambda p: best[p][0])
    for precision, (seconds, _) in best.items():
        if precision == chosen or "float32" not in best:
            continue
        fast = best["float32"][0] >= settings.margin * seconds
        agrees = agreement is None or agreement >= settings.min_agreement
        if fast and agrees and seconds < best[chosen][0]:
            chosen = precision
    return best[chosen][1], chosen


def agreement(outputs: dict[str, Tensor], what: str) -> float | None:
    """Share of rows where two candidates' actions agree: "vmap/loop" (float32) or a precision
    against float32 (same method). None when the pair was not measured."""
    if what == "vmap/loop":
        pairs = [("vmap/float32", "loop/float32")]
    else:
        pairs = [(f"{m}/{what}", f"{m}/float32") for m in ("vmap", "loop")]
    for a, b in pairs:
        if a in outputs and b in outputs:
            return float((outputs[a] == outputs[b]).float().mean())
    return None
