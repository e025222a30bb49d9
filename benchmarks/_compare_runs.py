"""What one run of ``compare.py`` is: its tasks, hybridopt's run, and ``run_job``.

The constants a run needs (``HYBRIDOPT`` / ``METHODS``, ``SIGMA_SCALE``, ``TRADING_ROWS``,
``DATA_SEED``, ``QUICK_*``), the tasks (``TASKS``), and ``run_job``, the module-level function
``compare.py`` sends to its spawn worker processes (``_stats.run_parallel``): one method on one
task and seed. The fairness rules it follows are in ``compare.py``'s docstring.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import hybridopt as ho
from hybridopt.population.size import auto_population_size
from hybridopt.tasks.classification import ClassifierMLP, macro_f1, make_classification_data
from hybridopt.tasks.items import ItemsModel, items_rewards, items_score, make_items_data
from hybridopt.tasks.plateau import PlateauMLP, make_plateau_data, plateau_score
from hybridopt.tasks.trading import TradingSignalModel, make_trading_data, trading_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers, next to this module)
from peers._common import Setup, evaluate_one  # noqa: E402

HYBRIDOPT: dict[str, tuple[str, ...] | None] = {
    "hybrid": None,  # the library's default phases
    "gradient": ("gradient",),
    "genetic": ("genetic",),
    "hybridopt-es": ("es",),
}
METHODS = [*HYBRIDOPT, *peers.PEERS]
# Peers' search scale in units of RMS(x0), the best of {0.1, 0.3, 1, 3} by the sum of the
# validation scores on classification and trading-mlp (seed 100, 3,000 evaluations; the
# trading split then kept 1,024 training rows):
#   deap 24.8 / 41.1 / 47.0 / 46.8, evotorch-ga 47.7 / 51.0 / 48.9 / -,
#   evotorch-pgpe 24.4 / 43.2 / 48.1 / 35.7, evotorch-snes 45.8 / 65.9 / 69.1 / 74.7,
#   pycma-sepcma 70.0 / 75.1 / 70.3 / -   (3 was tried where 1 was the best of the first three)
SIGMA_SCALE = {"deap": 1.0, "evotorch-ga": 0.3, "evotorch-pgpe": 1.0, "evotorch-snes": 3.0,
               "pycma-sepcma": 0.3}
TRADING_ROWS = 512
DATA_SEED = 0
QUICK_BUDGET, QUICK_POPULATION = 300, 16


class TradingMLP(nn.Module):
    """MLP on the flattened window: Linear -> ReLU -> Linear -> ReLU -> Linear(3)."""

    def __init__(self, window: int = 16, features: int = 2, hidden=(64, 32)) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(window * features, hidden[0]), nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(), nn.Linear(hidden[1], 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Windows ``[N, window, features]`` -> logits ``[N, 3]`` (buy, sell, hold)."""
        return self.net(x)


def trading_splits() -> dict:
    """Window-16 trading splits; training keeps its last ``TRADING_ROWS`` rows."""
    splits = make_trading_data(window=16, seed=DATA_SEED)
    splits["train"] = {k: v[-TRADING_ROWS:].clone() for k, v in splits["train"].items()}
    return splits


@dataclass(frozen=True)
class Task:
    """One comparison task."""

    make_data: Callable[[], dict]
    """Train/valid/test splits (data seed fixed)."""
    make_model: Callable[[], nn.Module]
    """A fresh model (called right after ``torch.manual_seed(seed)``)."""
    score_fn: Callable
    """The scalar score every method is measured (and peers optimise) by; higher is better."""
    budget: int
    """Training evaluations per run (times ``--budget-scale``)."""
    population_size: int = 300
    """hybridopt's P with ``--population task`` (the sizes before ``"auto"``)."""
    hybrid_score_fn: Callable | None = None
    """What hybridopt optimises when it differs from ``score_fn`` (per-item rewards)."""
    hybrid_scale: float = 1.0
    """hybridopt's tracked score times this is ``score_fn``'s."""


TASKS = {
    "trading-lstm": Task(trading_splits, lambda: TradingSignalModel(hidden_size=16),
                         trading_score, budget=5_000),
    "trading-mlp": Task(trading_splits, TradingMLP, trading_score, budget=5_000),
    "classification": Task(lambda: make_classification_data(seed=DATA_SEED), ClassifierMLP,
                           macro_f1, budget=10_000),
    "items": Task(lambda: make_items_data(seed=DATA_SEED), ItemsModel, items_score,
                  budget=10_000, hybrid_score_fn=items_rewards, hybrid_scale=100.0),
    "plateau": Task(lambda: make_plateau_data(seed=DATA_SEED), PlateauMLP, plateau_score,
                    budget=10_000, population_size=64),
}


# -- one run ----------------------------------------------------------------------------------


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


def make_setup(name: str, task: Task, splits: dict, model: nn.Module, seed: int, budget: int,
               sigma_scale: float, quick: bool) -> Setup:
    model = copy.deepcopy(model)
    x0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    return Setup(task=name, model=model, x0=x0, train=splits["train"], valid=splits["valid"],
                 test=splits["test"], score_fn=task.score_fn, budget=budget, seed=seed,
                 sigma=sigma_scale * rms(x0), quick=quick)


def run_hybridopt(setup: Setup, task: Task, phases: tuple[str, ...] | None,
                  population: int | str, selection: str | None = None) -> dict:
    """One HybridOptimizer run (``phases=None``: its default phases; ``selection=None``: its
    default selection rule); scores recomputed with the task's scalar score."""
    start = time.perf_counter()
    opt = ho.HybridOptimizer(
        setup.model, task.hybrid_score_fn or task.score_fn, data=setup.train,
        validation_data=setup.valid, population_size=population, episode_length=None,
        seed=setup.seed, **({} if phases is None else {"phases": phases}),
        **({} if selection is None else {"selection": selection}),
    )
    result = opt.fit(max_evaluations=setup.budget, progress=False)
    wall = time.perf_counter() - start
    weights = opt.flat.vector(opt.model)
    scratch = copy.deepcopy(opt.model)
    scores = {split: evaluate_one(scratch, weights, getattr(setup, split), setup.score_fn)
              for split in ("train", "valid", "test")}
    curve, best = [], -math.inf
    for row in result.history:
        best = max(best, row["score"] * task.hybrid_scale)
        curve.append((row["evaluations"], best, row["wall_time"]))
    backend = next((r["backend"] for r in result.history if "backend" in r), None)
    names = [str(getattr(p, "name", p)) for p in opt.phases]
    return {
        "best_train": best, "train": scores["train"], "valid": scores["valid"],
        "heldout": scores["test"], "evaluations": result.evaluations,
        "validation_evaluations": result.validation_evaluations, "wall_s": wall,
        "curve": curve, "phases": "+".join(names),
        # The genetic phase's P ("-" without one: SNES sizes its own population)
        "population": (opt.population_size if isinstance(opt.population_size, int)
                       else population) if "genetic" in names else "-",
        "eval_path": f"population evaluator: {backend}" if backend else "gradient steps",
        "stop_reason": f"{result.stop_reason}; {len(result.switches)} switches",
    }


@dataclass(frozen=True)
class Job:
    """One run (task, method, seed): what a worker process is sent."""

    task: str
    method: str
    seed: int
    budget: int
    sigma_scale: float
    """The peer's search scale in RMS(x0) (unused by hybridopt)."""
    quick: bool
    population: str | int
    """``--population``: "auto", "task" or an int."""
    auto_supported: bool
    """Whether ``HybridOptimizer`` takes ``population_size="auto"`` (else the resolved int)."""
    selection: str | None = None
    """``--selection``: hybridopt's selection rule (None: the library's default)."""


@functools.cache
def _splits(name: str) -> dict:
    return TASKS[name].make_data()


def hybridopt_population(job: Job, task: Task, dim: int) -> tuple[int | str, int]:
    """What hybridopt is given as ``population_size``, and the P that resolves to."""
    if job.population == "auto":
        resolved = auto_population_size(dim, job.budget)
        return ("auto" if job.auto_supported else resolved), resolved
    if job.population == "task":
        size = QUICK_POPULATION if job.quick else task.population_size
        return size, size
    return int(job.population), int(job.population)


def run_job(job: Job) -> dict:
    """One method on one task and seed (in a worker process); the model is built right after
    ``torch.manual_seed(seed)``, so every method of a seed starts from the same weights. The
    global RNGs (DEAP, EvoTorch) are seeded too."""
    task, splits = TASKS[job.task], _splits(job.task)
    torch.manual_seed(job.seed)
    model = task.make_model()
    random.seed(job.seed)
    setup = make_setup(job.task, task, splits, model, job.seed, job.budget, job.sigma_scale,
                       job.quick)
    if job.method in HYBRIDOPT:
        population, resolved = hybridopt_population(job, task, setup.dim)
        run = run_hybridopt(setup, task, HYBRIDOPT[job.method], population, job.selection)
        if run["population"] == "auto":
            run["population"] = resolved
    else:
        run = peers.runner(job.method)(setup)
    run = {"task": job.task, "method": job.method, "seed": job.seed, "budget": job.budget,
           "dim": setup.dim, **run}
    run["evals_per_s"] = run["evaluations"] / max(run["wall_s"], 1e-9)
    return run
