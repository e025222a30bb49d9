"""What every method in the comparison shares.

- :class:`Setup`: one run's task instance (model, its initial weights, the data splits, the score
  function, the budget and the seed), identical for every method.
- :func:`evaluate_one`: one evaluation the way peers do it, one candidate at a time: load a flat
  weight vector with ``torch.nn.utils.vector_to_parameters``, forward, argmax, score.
- :class:`Tracker`: counts training evaluations against the budget, scores each generation's
  candidates on the validation split (counted separately, as hybridopt does), keeps the
  best-by-validation weights, records the best-train-score curve and finally scores the kept
  weights on the held-out split.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Data = dict[str, Tensor]


@dataclass
class Setup:
    """One run: the same for every method given the same task and seed."""

    task: str
    """Task name."""
    model: nn.Module
    """The model, built right after ``torch.manual_seed(seed)``; its weights are ``x0``."""
    x0: Tensor
    """Initial flat weights ``[D]`` (``parameters_to_vector``): every method starts here."""
    train: Data
    """Training split: the only data an evaluation scores."""
    valid: Data
    """Validation split: picks the reported weights."""
    test: Data
    """Held-out split: scored once, on the reported weights."""
    score_fn: Callable
    """Scalar score, higher is better; batched: ``[B, N(, H)]`` actions -> ``[B]``."""
    budget: int
    """Training evaluations allowed (one score_fn call on one action sequence)."""
    seed: int
    """Seed of the model init and of the method's own random draws."""
    sigma: float
    """Peers' search scale: ``sigma_scale[peer] * RMS(x0)`` (see ``compare.py``)."""
    quick: bool = False
    """Tiny populations for a smoke test."""

    @property
    def dim(self) -> int:
        return self.x0.numel()

    def population(self, documented: int) -> int:
        """A peer's population size: the documented one, or a tiny one for a smoke test."""
        return min(documented, 20) if self.quick else documented


def as_score(value) -> float:
    """A score as a float; NaN or infinite counts as the worst, like hybridopt does."""
    score = float(value)
    return score if math.isfinite(score) else -math.inf


def evaluate_one(model: nn.Module, weights: Tensor, data: Data, score_fn: Callable) -> float:
    """Score one flat weight vector: load it, forward, argmax, score (the per-candidate way)."""
    torch.nn.utils.vector_to_parameters(weights, model.parameters())
    with torch.no_grad():
        actions = model(data["x"]).argmax(-1)
    return as_score(score_fn(actions, data))


class Tracker:
    """Budget, best-by-validation selection and the learning curve of one peer run."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.model = copy.deepcopy(setup.model).eval()
        self.evaluations = 0
        self.validation_evaluations = 0
        self.best_train = -math.inf
        self.selected: Tensor = setup.x0.clone()
        self.selected_valid = -math.inf
        self.selected_train = -math.inf
        self.curve: list[tuple[int, float, float]] = []
        self.start = time.perf_counter()

    def affordable(self, n: int) -> bool:
        """Whether ``n`` more training evaluations fit in the budget."""
        return self.evaluations + n <= self.setup.budget

    def count(self, n: int) -> None:
        """Record ``n`` training evaluations done by the method itself."""
        self.evaluations += n

    def train_score(self, weights: Tensor) -> float:
        """Score extra weights (e.g. a distribution's mean) on training data: one evaluation."""
        self.count(1)
        return evaluate_one(self.model, weights.float(), self.setup.train, self.setup.score_fn)

    def offer(self, weights: Tensor, train: float) -> None:
        """A generation's candidate and its training score: validate it, keep it if best."""
        weights = torch.as_tensor(weights, dtype=torch.float32).detach().clone()
        valid = evaluate_one(self.model, weights, self.setup.valid, self.setup.score_fn)
        self.validation_evaluations += 1
        self.best_train = max(self.best_train, train)
        if valid > self.selected_valid or (
            valid == self.selected_valid and train > self.selected_train
        ):
            self.selected, self.selected_valid, self.selected_train = weights, valid, train

    def end_generation(self) -> None:
        """Add a point to the curve: evaluations so far, best training score so far."""
        self.curve.append((self.evaluations, self.best_train, time.perf_counter() - self.start))

    def result(self, **extra) -> dict:
        """The run's numbers; the kept weights are scored on the held-out split here."""
        wall = time.perf_counter() - self.start
        heldout = evaluate_one(self.model, self.selected, self.setup.test, self.setup.score_fn)
        return {
            "best_train": self.best_train,
            "train": self.selected_train,
            "valid": self.selected_valid,
            "heldout": heldout,
            "evaluations": self.evaluations,
            "validation_evaluations": self.validation_evaluations,
            "wall_s": wall,
            "curve": self.curve,
            **extra,
        }
