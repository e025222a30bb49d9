"""The in-process worker every distributed backend runs, and the pieces backends share.

A :class:`Worker` holds its own copy of the model (inside a
:class:`~hybridopt.population.evaluate.PopulationEvaluator`), a :class:`~hybridopt.scoring.Scorer`
and the whole training data, sent to it once. Each call scores one contiguous shard of the
population on a row slice of that data. Because every individual is scored independently, the
shards' scores, put back in order, are the scores of the whole population.

With several objectives (``WorkerSpec.objectives``) a shard also carries its ``[S, M]``
objectives back. Its ``scores`` are then the workers' default scalarisation (the mean of the
objectives): a driver that set :meth:`~hybridopt.scoring.Scorer.set_weights` re-scalarises the
merged batch with :meth:`~hybridopt.scoring.ScoreBatch.scalarised`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from hybridopt.data import Data, data_to, slice_data
from hybridopt.population.evaluate import METHODS, PopulationEvaluator, resolve_device
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import ScoreBatch, Scorer

Bounds = tuple[int, int] | None


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its evaluator; pickled once per worker.

    Attributes:
        model: the model structure (its weights are replaced by each individual's).
        score_fn: the user's score function.
        score_mode: the :class:`~hybridopt.scoring.Scorer` mode the driver already chose.
        flat: layout of the trainable weights in a flat vector.
        method: "vmap", "loop" or "auto" (see :class:`PopulationEvaluator`).
        chunk_size: individuals per vmap call; None sizes chunks from memory.
        objectives: None (one score), or the driver scorer's objective names (or their
            number M): the worker's scorer is ``Scorer(score_fn, objectives=objectives)``.
        precision: the worker's forward passes: "float32", "bfloat16", "float16" (CUDA) or
            "auto" (the worker measures and chooses for itself).
    """

    model: nn.Module
    score_fn: Callable[..., Any]
    score_mode: str
    flat: FlatParams
    method: str = "vmap"
    chunk_size: int | None = None
    objectives: tuple[str, ...] | int | None = None
    precision: str = "float32"


class ShardScores(NamedTuple):
    """Scores of one shard, as they travel back to the driver.

    Attributes:
        scores: ``[S]`` float64 scores (with several objectives: their mean).
        finite: ``[S]`` bool.
        observed: per-item observed mask shaped like the shard's actions, or None.
        objectives: ``[S, M]`` float64 objectives, or None for a single score.
    """

    scores: Tensor
    finite: Tensor
    observed: Tensor | None
    objectives: Tensor | None = None


class Worker:
    """Scores shards of a population on the data it holds.

    Args:
        spec: model, score function and evaluation settings.
        data: the whole training data; episodes are row slices of it.
        device: where this worker runs its forward passes.
        num_threads: torch intra-op threads of this process (None: leave as is).
    """

    def __init__(
        self,
        spec: WorkerSpec,
        data: Data,
        device: str | torch.device = "cpu",
        num_threads: int | None = None,
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = resolve_device(device)
        scorer = Scorer(spec.score_fn, objectives=spec.objectives)
        scorer.mode = spec.score_mode  # chosen and checked on the driver already
        self.evaluator = PopulationEvaluator(
            spec.model, scorer, spec.flat, method=spec.method, device=self.device,
            chunk_size=spec.chunk_size, precision=spec.precision,
        )
        self.data = data_to(data, self.device)

    def evaluate(self, shard: np.ndarray | Tensor, bounds: Bounds) -> ShardScores:
        """Scores of ``shard`` ``[S, D]`` on rows ``bounds`` of the data (None: all rows)."""
        population = torch.tensor(shard) if isinstance(shard, np.ndarray) else shard
        episode = self.data if bounds is None else slice_data(self.data, *bounds)
        batch = self.evaluator.evaluate(population, episode)
        observed = None if batch.observed is None else batch.observed.cpu()
        objectives = None if batch.objectives is None else batch.objectives.cpu()
        return ShardScores(batch.scores.cpu(), batch.finite.cpu(), observed, objectives)

    def info(self) -> dict:
        """Where this worker runs: process id, host name, device and precision."""
        return {"pid": os.getpid(), "host": socket.gethostname(), "device": str(self.device),
                "precision": self.evaluator.precision}


def cpu_model(model: nn.Module) -> nn.Module:
    """``model`` itself when it lives on the CPU, else a CPU copy (the original stays put)."""
    on_cpu = all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))
    return model if on_cpu else copy.deepcopy(model).cpu()


def shard_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal ``(start, stop)`` row ranges covering ``range(total)``.

    Example:
        >>> shard_bounds(10, 3)
        [(0, 4), (4, 7), (7, 10)]
    """
    parts = max(1, min(parts, total))
    size, extra = divmod(total, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def merge(shards: Sequence[ShardScores]) -> ScoreBatch:
    """One :class:`ScoreBatch` from the shards' scores (and objectives), in shard order.

    Raises:
        ValueError: if some shards carry objectives and others do not.
    """
    scores = torch.cat([s.scores for s in shards])
    finite = torch.cat([s.finite for s in shards])
    observed = None
    if any(s.observed is not None for s in shards):
        shape = next(s.observed.shape[1:] for s in shards if s.observed is not None)
        observed = torch.cat([
            s.observed if s.observed is not None
            else torch.ones(len(s.scores), *shape, dtype=torch.bool)
            for s in shards
        ])
    objectives = None
    with_objectives = [s.objectives is not None for s in shards]
    if any(with_objectives):
        if not all(with_objectives):
            raise ValueError("merge got shards with and without objectives; every worker must "
                             "score with the same objectives.")
        objectives = torch.cat([s.objectives for s in shards])
    return ScoreBatch(scores=scores, observed=observed, finite=finite, objectives=objectives)


def parse_options(backend: str, cls: type, options: dict) -> Any:
    """Build the backend's options dataclass, naming any unknown option.

    Raises:
        ValueError: if an option is unknown (the known ones are listed) or has a bad value.
    """
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown backend_options {unknown} for backend={backend!r}; "
            f"known options: {', '.join(known)}."
        )
    return cls(**options)


def check_method(owner: str, method: Any) -> None:
    """``method`` must be one of the evaluator's methods."""
    if method not in METHODS:
        raise ValueError(f"{owner}.method must be one of {METHODS}; got method = {method!r}.")


def check_number(
    owner: str, name: str, value: Any, minimum: float, *, integer: bool = False,
    strict: bool = False, allow_none: bool = False,
) -> None:
    """``value`` must be a number (an int if ``integer``) >= ``minimum`` (> if ``strict``)."""
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    what = "an int" if integer else "a number"
    bound = f"> {minimum}" if strict else f">= {minimum}"
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{owner}.{name} must be {what} {bound}; got {name} = {value!r}.")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{owner}.{name} must be {bound}; got {name} = {value!r}.")
