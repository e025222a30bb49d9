"""EvoTorch's GA, PGPE and SNES on the flat weights, with a vectorised fitness.

The problem is an ``evotorch.Problem`` subclass (the pattern of EvoTorch's docs): ``_fill`` seeds
new solutions as ``x0 + N(0, sigma)`` (the first one is ``x0`` itself), and ``_evaluate_batch``
scores the whole ``[P, D]`` batch at once, as EvoTorch's docs recommend: ``torch.func.vmap`` over
``evotorch.neuroevolution.net.make_functional_module(model)``, argmax, the batched score. When the
model cannot run under vmap (``nn.LSTM`` has no batching rule), it falls back to one forward per
solution through the same functional module, and the run records which path it took.

Settings, from EvoTorch's documentation and examples:

- ``GeneticAlgorithm``: ``popsize=100``, ``SimulatedBinaryCrossOver(tournament_size=4, eta=8)``
  then ``GaussianMutation(stdev=sigma)`` (the GA docstring's ``popsize=100``,
  ``tournament_size=4``, ``GaussianMutation``; SBX with ``eta=8`` as in the docs' GA examples),
  elitist (the default), ``re_evaluate=False`` (the docstring's advice for a deterministic
  fitness);
- ``PGPE``: the ClipUp recipe of the "Training Policies ... with PGPE and CoSyNE" notebook:
  ``popsize=200``, ``radius_init`` (here ``sigma * sqrt(D)``: per-weight std ``sigma``),
  ``max_speed = radius_init / 15``, ``center_learning_rate = max_speed / 2``,
  ``stdev_learning_rate=0.1``, ``optimizer="clipup"`` with ``momentum=0.9``; centered ranking
  and symmetric sampling (the defaults);
- ``SNES``: ``stdev_init=sigma`` and every other setting at its default (popsize
  ``4 + 3 ln D``, learning rates from the NES paper), as the "Training MNIST30K" notebook does.

Each generation offers its best solution (and, for PGPE and SNES, the distribution's centre,
which their notebooks use as the result; scoring it on training data costs one evaluation) to
the validation tracker.
"""

from __future__ import annotations

import logging
import math

import torch
from evotorch import Problem, SolutionBatch
from evotorch.algorithms import PGPE, SNES, GeneticAlgorithm
from evotorch.neuroevolution.net import make_functional_module
from evotorch.operators import GaussianMutation, SimulatedBinaryCrossOver
from torch import Tensor

from peers._common import Setup, Tracker, as_score

logging.getLogger("evotorch").setLevel(logging.WARNING)  # one INFO line per setting per problem

GA = {"popsize": 100, "tournament_size": 4, "eta": 8}
PGPE_SETTINGS = {"popsize": 200, "stdev_learning_rate": 0.1, "momentum": 0.9,
                 "speed_ratio": 1 / 15}


class WeightsProblem(Problem):
    """Maximise the score of a model's argmax actions over its flat weights."""

    def __init__(self, setup: Setup, tracker: Tracker | None = None) -> None:
        self.setup = setup
        self.tracker = tracker
        self.fnet = make_functional_module(setup.model, disable_autograd_tracking=True)
        self.batched = torch.func.vmap(self.fnet, in_dims=(0, None))
        self.vectorised = self._vmap_works()
        super().__init__(
            "max",
            solution_length=setup.dim,
            initial_bounds=(-1.0, 1.0),
            dtype=torch.float32,
            device="cpu",
            seed=setup.seed,
        )

    def _vmap_works(self) -> bool:
        try:
            self.batched(self.setup.x0.expand(2, -1), self.setup.train["x"][:2])
            return True
        except Exception:  # no batching rule for some layer: one forward per solution
            return False

    def _fill(self, values: Tensor) -> None:
        noise = torch.randn(values.shape, generator=self.generator, dtype=values.dtype)
        values.copy_(self.setup.x0 + self.setup.sigma * noise)
        values[0] = self.setup.x0

    def fitness(self, xs: Tensor, data=None) -> Tensor:
        """Scores ``[P]`` of a ``[P, D]`` batch of weights on ``data`` (default: training)."""
        data = self.setup.train if data is None else data
        x = data["x"]
        with torch.no_grad():
            if self.vectorised:
                logits = self.batched(xs, x)
            else:
                logits = torch.stack([self.fnet(w, x) for w in xs])
        scores = self.setup.score_fn(logits.argmax(-1), data).float()
        return torch.where(torch.isfinite(scores), scores, -math.inf)

    def _evaluate_batch(self, batch: SolutionBatch) -> None:
        xs = batch.values
        batch.set_evals(self.fitness(xs))
        if self.tracker is not None:
            self.tracker.count(len(xs))


def _run(setup: Setup, make_searcher, centre: bool) -> dict:
    tracker = Tracker(setup)
    problem = WeightsProblem(setup, tracker)
    searcher, popsize, step_cost = make_searcher(problem)
    while tracker.affordable(step_cost + (1 if centre else 0)):
        before = tracker.evaluations
        searcher.step()
        step_cost = tracker.evaluations - before  # the next step costs what this one did
        best = searcher.status["pop_best"]
        tracker.offer(best.values, as_score(best.evals[0]))
        if centre:
            mean = searcher.status["center"]
            tracker.offer(mean, tracker.train_score(mean))
        tracker.end_generation()
    path = "vmap" if problem.vectorised else "loop (no vmap rule)"
    return tracker.result(population=popsize,
                          eval_path=f"vectorised fitness: {path}", stop_reason="budget")


def run_ga(setup: Setup) -> dict:
    """EvoTorch's GeneticAlgorithm (SBX + Gaussian mutation, elitist)."""
    popsize = setup.population(GA["popsize"])

    def make(problem):
        searcher = GeneticAlgorithm(
            problem,
            popsize=popsize,
            operators=[
                SimulatedBinaryCrossOver(problem, tournament_size=GA["tournament_size"],
                                         eta=GA["eta"]),
                GaussianMutation(problem, stdev=setup.sigma),
            ],
            re_evaluate=False,
        )
        return searcher, popsize, 2 * popsize  # the first step scores parents and children

    return _run(setup, make, centre=False)


def run_pgpe(setup: Setup) -> dict:
    """EvoTorch's PGPE with ClipUp, as in its Gym notebook."""
    popsize = setup.population(PGPE_SETTINGS["popsize"])
    radius = setup.sigma * math.sqrt(setup.dim)
    max_speed = radius * PGPE_SETTINGS["speed_ratio"]

    def make(problem):
        searcher = PGPE(
            problem,
            popsize=popsize,
            center_init=setup.x0,
            radius_init=radius,
            center_learning_rate=max_speed / 2,
            stdev_learning_rate=PGPE_SETTINGS["stdev_learning_rate"],
            optimizer="clipup",
            optimizer_config={"max_speed": max_speed, "momentum": PGPE_SETTINGS["momentum"]},
        )
        return searcher, popsize, popsize

    return _run(setup, make, centre=True)


def run_snes(setup: Setup) -> dict:
    """EvoTorch's SNES with its defaults and ``stdev_init=sigma``."""

    popsize = setup.population(int(4 + math.floor(3 * math.log(setup.dim))))  # the default

    def make(problem):
        searcher = SNES(problem, stdev_init=setup.sigma, center_init=setup.x0, popsize=popsize)
        return searcher, popsize, popsize

    return _run(setup, make, centre=True)
