"""Scoring for the optimiser: episodes, whole populations (in process or distributed), single
weight vectors in float32, and the Pareto archive when the score has several objectives."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from hybridopt.data import Data, index_data, model_input, slice_data
from hybridopt.objectives import ParetoArchive, check_weights, scalarise, visit_weights
from hybridopt.population.evaluate import PopulationEvaluator
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import ScoreBatch, Scorer

IN_PROCESS = ("auto", "vmap", "loop")


def argmax_actions(model: nn.Module, data: Data) -> Tensor:
    """``model``'s argmax actions on ``data`` (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        return model(model_input(data)).argmax(-1)


class Evaluation:
    """Everything that turns weights into scores for one optimiser.

    Args:
        model: the user's model (a private copy scores single weight vectors).
        scorer: the checked score function.
        flat: the weights' layout.
        data: the training data (on the device).
        evaluator: the in-process population evaluator.
        backend, address, backend_options, device: where populations are scored.
        episode_length: rows per episode, or None.
        generator: the optimiser's generator (episode starts, visit weights).
        objective_weights: fixed scalarisation weights ``[M]``, or None (selection by the
            mean of the objectives; phases get a new weight vector per visit).
    """

    def __init__(self, model: nn.Module, scorer: Scorer, flat: FlatParams, data: Data,
                 evaluator: PopulationEvaluator, *, backend: str, address: str | None,
                 backend_options: dict, device: torch.device, episode_length: int | None,
                 generator: torch.Generator, objective_weights: Any = None) -> None:
        self.scorer, self.flat, self.data, self.evaluator = scorer, flat, data, evaluator
        self.backend, self.address, self.options = backend, address, backend_options
        self.device, self.episode_length, self.generator = device, episode_length, generator
        self.scratch = copy.deepcopy(model).eval()
        self.n = model_input(data).shape[0]  # rows of the training data
        self.distributed: Any = None
        self.bounds: tuple[int, int] | None = None
        self.nonfinite = 0
        m = scorer.n_objectives
        self.weights = None if objective_weights is None or m is None else check_weights(
            objective_weights, m)
        self.archive = None if m is None else ParetoArchive()

    def episode(self, first: bool = False) -> Data:
        """The next episode: the whole data, or a random contiguous slice."""
        if self.episode_length is None:
            self.bounds = None
            return self.data
        start = 0
        if not first:
            high = self.n - self.episode_length + 1
            start = int(torch.randint(high, (1,), generator=self.generator))
        self.bounds = (start, start + self.episode_length)
        return slice_data(self.data, *self.bounds)

    def population(self, population: Tensor, episode: Data) -> ScoreBatch:
        """Scores of ``population`` ``[P, D]`` on the current episode (the archive sees them
        when the episode is the whole training data)."""
        if self.backend in IN_PROCESS:
            batch = self.evaluator.evaluate(population, episode)
        else:
            if self.distributed is None:
                from hybridopt.backends import make_backend

                self.distributed = make_backend(
                    self.backend, model=self.scratch, score_fn=self.scorer.score_fn,
                    score_mode=self.scorer.mode, flat=self.flat, data=self.data,
                    address=self.address, device=self.device,
                    chunk_size=self.evaluator.chunk_size,
                    precision=self.evaluator.precision, **self.options,
                    objectives=None if self.scorer.n_objectives is None else self.scorer.names,
                )
            batch = self.distributed.evaluate(population, self.bounds)
            if batch.objectives is not None and self.scorer.weights is not None:
                batch = batch.scalarised(self.scorer.weights)  # workers give the mean
        if self.archive is not None and self.bounds is None and batch.objectives is not None:
            self.archive.update(population, batch.objectives)
        return batch

    def visit(self, visit: int) -> None:
        """Scalarisation for the phases' ``visit``-th phase visit (several objectives)."""
        m = self.scorer.n_objectives
        if m is not None:
            self.scorer.set_weights(
                self.weights if self.weights is not None
                else visit_weights(m, visit, self.generator))

    def score(self, weights: Tensor, data: Data, train: bool = False) -> float:
        """The argmax policy's score of ``weights`` on ``data``, in float32 (the fixed
        scalarisation with several objectives; on training data it joins the archive)."""
        return self.score_actions(self.actions(weights, data), data,
                                  weights if train else None)

    def score_model(self, model: nn.Module, data: Data, weights: Tensor | None = None) -> float:
        """The argmax policy's score of ``model`` on ``data``."""
        return self.score_actions(argmax_actions(model, data), data, weights)

    def actions(self, weights: Tensor, data: Data) -> Tensor:
        """The argmax actions of ``weights`` on ``data``."""
        self.flat.load(self.scratch, weights)
        return argmax_actions(self.scratch, data)

    def score_actions(self, actions: Tensor, data: Data, weights: Tensor | None = None) -> float:
        """The score of one action sequence on ``data`` (-inf when not finite; ``weights``
        given: they join the archive with their objectives)."""
        batch = self.scorer(actions.unsqueeze(0), data)
        self.nonfinite += batch.n_nonfinite
        if batch.objectives is None:
            score = float(batch.scores[0])
        else:
            if weights is not None and self.archive is not None:
                self.archive.update(weights.unsqueeze(0), batch.objectives)
            score = float(scalarise(batch.objectives, self.weights)[0])
        return score if math.isfinite(score) else -math.inf

    def resample_scores(self, actions: Tensor, data: Data,
                        resamples: list[tuple[Tensor, Data | None]]) -> Tensor:
        """Scores ``[len(resamples)]`` float64 of ``actions`` (on ``data``) on row resamples
        of ``data``: each is ``(index, rows)``, the row indices and the data at them (None:
        taken here from ``data``). Only ``score_fn`` runs, once per resample. A non-finite
        score counts as ``-inf``."""
        scores = torch.empty(len(resamples), dtype=torch.float64)
        for b, (index, rows) in enumerate(resamples):  # one call each: their data differ
            index = index.to(actions.device)
            batch = self.scorer(actions[index].unsqueeze(0),
                                index_data(data, index) if rows is None else rows)
            self.nonfinite += batch.n_nonfinite
            value = (batch.scores if batch.objectives is None
                     else scalarise(batch.objectives, self.weights))
            scores[b] = float(value[0])
        return torch.where(torch.isfinite(scores), scores, -math.inf)

    def front_valid(self, valid: Data | None) -> None:
        """Score the archive members that lack validation objectives (one population call)."""
        if self.archive is None or valid is None or not len(self.archive):
            return
        missing = self.archive.missing_valid()
        if len(missing):
            batch = self.evaluator.evaluate(self.archive.weights[missing], valid)
            self.archive.set_valid(missing, batch.objectives)

    def front(self, valid: Data | None, model: nn.Module) -> list[dict]:
        """The archive as result entries (validation objectives filled in first)."""
        from hybridopt.front import front_entries, state_dict_for

        if self.archive is None:
            raise ValueError("the Pareto front needs several objectives: pass objectives=.")
        self.front_valid(valid)
        return front_entries(self.archive, self.scorer.names,
                             lambda w: state_dict_for(model, self.flat, w))

    def close(self) -> None:
        """Release a distributed backend's workers."""
        if self.distributed is not None:
            self.distributed.close()
            self.distributed = None
