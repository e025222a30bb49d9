"""hybridopt against DEAP, EvoTorch and pycma: same tasks, same budget, same seeds.

Methods (``--methods``):

- ``hybrid``, ``gradient``, ``genetic``, ``hybridopt-es``: ``hybridopt.HybridOptimizer`` with
  its default phases (no ``phases=``), ``("gradient",)``, ``("genetic",)`` and ``("es",)`` (its
  SNES phase; skipped with a note where this checkout rejects it), every other setting at its
  default: ``population_size="auto"`` (passed as the int its rule gives where this checkout
  does not take ``"auto"`` yet; ``--population task`` for the sizes the tasks had before, or an
  int), ``backend="auto"``.
- ``deap``: a DEAP script as its users write it (``peers/deap_ga.py``): eaSimple's loop,
  ``creator`` list individuals, ``cxBlend(alpha=0.5)``, ``mutGaussian(sigma, indpb=0.1)``,
  ``selTournament(tournsize=3)``, ``cxpb=0.5``, ``mutpb=0.2``, ``n=300`` (DEAP's OneMax example
  and operators tutorial), one ``vector_to_parameters`` + forward + argmax + score per individual.
- ``evotorch-ga``, ``evotorch-pgpe``, ``evotorch-snes`` (``peers/evotorch_peers.py``): an
  ``evotorch.Problem`` over the flat weights with a vectorised fitness (``torch.func.vmap`` over
  ``make_functional_module``; one forward per solution when the model has no vmap rule, the
  LSTM). GA: ``popsize=100``, ``SimulatedBinaryCrossOver(tournament_size=4, eta=8)``,
  ``GaussianMutation(stdev=sigma)``, elitist, ``re_evaluate=False`` (GA docstring). PGPE: the
  ClipUp recipe of EvoTorch's Gym notebook (``popsize=200``, ``radius_init``,
  ``max_speed = radius_init / 15``, ``center_learning_rate = max_speed / 2``,
  ``stdev_learning_rate=0.1``, momentum 0.9), with ``radius_init = sigma * sqrt(D)``. SNES:
  defaults with ``stdev_init=sigma`` (EvoTorch's MNIST30K notebook).
- ``pycma-sepcma`` (``peers/pycma_sep.py``): ``cma.CMAEvolutionStrategy(x0, sigma,
  {"CMA_diagonal": True, "seed": seed + 1, "popsize": 4 + floor(3 ln D)})``, ask/tell, one
  candidate at a time, IPOP restarts (as ``cma.fmin(restarts=..., incpopsize=2)``) if
  ``es.stop()`` fires before the budget is spent.

Peers whose package is missing are skipped with a line saying so (``evotorch`` and ``cma`` come
with ``pip install "hybridopt[bench]"``, not with the dev extras).

Fairness, the same for every method:

- **Start**: the model built right after ``torch.manual_seed(seed)``; its weights ``x0`` are
  hybridopt's starting model and the peers' ``x0`` / centre / first individual. Seeds are
  paired: every method of a seed starts from the same ``x0``.
- **Search scale** ``sigma`` (peers' mutation std, initial spread, ``sigma0``, ``stdev_init``,
  ``radius_init / sqrt(D)``): ``SIGMA_SCALE[peer] * RMS(x0)``. Their docs' values are for their
  own toy problems (``sigma=0.2`` for variables of order 1, ``radius_init=4.5`` for a 16-weight
  policy); here each peer gets the best of {0.1, 0.3, 1, 3} x RMS(x0) by validation score in a
  pilot (``--sigma-scale``, ``classification`` and ``trading-mlp``, seed 100, not one of the
  reported seeds, 3,000 evaluations: see ``SIGMA_SCALE``). hybridopt runs untuned, at its
  defaults (spreads relative to each tensor's RMS).
- **Evaluation**: one score_fn call on one action sequence of the argmax policy over the whole
  training split (``episode_length=None`` for hybridopt). The trading tasks use the last
  ``TRADING_ROWS`` rows of the training split for every method (the LSTM over the full split
  scores ~40 individuals/s on one thread, 512 rows ~250/s; validation and held-out splits are
  complete).
- **Budget**: ``budget * --budget-scale`` training evaluations; no generation or step that would
  exceed it is started. Validation scores are counted separately.
- **Selection**: each generation's (step's) best candidate is scored on the validation split
  and the best by validation is reported; PGPE, SNES and sep-CMA also offer their distribution's
  mean each generation (one training evaluation each). The held-out split scores only that one.
- **Scores**: every number in the tables is the task's scalar score (``items_score`` for the
  items task, where hybridopt itself optimises the per-item rewards ``items_rewards`` with NaN
  where unobserved, whose mean is ``items_score / 100``).
- **Threads**: one intra-op thread for everyone (``--threads``): on this shared 2-core machine
  two threads made a single forward up to 100 times slower. Runs go to ``--jobs`` worker
  processes (default 2), each with ``--threads`` threads; wall times (and evaluations/s) are
  then measured with the runs sharing the machine, ``--jobs 1`` for quieter timings.

Per task it prints a markdown table (mean ± std over seeds of the best training score, the
held-out score, evaluations, wall time, evaluations/s) and the paired difference hybrid - best
peer (the peer with the best mean held-out score; mean ± std over seeds and the seeds where it
is positive), then the targets with met/missed:

- issue 12: the hybrid has the best mean held-out score of all methods on all tasks but at
  most one (4 of the 5), and is within one std (the best method's) of the best on that one;
- issue 11: ``hybridopt-es`` has a mean held-out score within one std (EvoTorch SNES's) of
  EvoTorch SNES's on every task, and evaluations/s (training evaluations / wall time of the
  runs, mean over seeds) at least EvoTorch SNES's;
- population evaluation: hybridopt's evaluator faster than every peer's path (``throughput``).

Besides the runs it measures (``--parts``):

- ``throughput``: population evaluation speed of each method's own evaluation path on each
  task's model, training data and scalar score (P individuals around x0; best of 5 rounds):
  evaluations/s; ``hybridopt`` is ``backend="auto"`` (what a user gets), ``hybridopt-vmap``
  and ``hybridopt-loop`` its two options forced, to show whether auto chose well;
- ``breakdown``: where one generation's time goes, for the DEAP script and for hybridopt's
  genetic phase, on a ~15k-weight MLP (P=300): evaluation, variation (DEAP's clone, cxBlend,
  mutGaussian), selection, bookkeeping (the rest), timed with ``time.perf_counter`` around
  each toolbox call.

Outputs in ``--out`` (default ``benchmarks/results/``): ``compare_runs.csv`` (one row per run),
``compare_summary.csv``, ``compare_curves.csv`` (best training score against evaluations),
``compare_throughput.csv``, ``compare_breakdown.csv`` and ``compare.png`` (one subplot per task,
one line per method: mean over seeds of the best training score so far).

Run: ``python benchmarks/compare.py`` (all tasks and methods, 5 seeds, 2 jobs),
``--tasks classification,plateau --methods hybrid,deap,pycma-sepcma --seeds 3``,
``--budget-scale 0.5``, or ``--quick`` (a smoke test: tiny budgets, 1 seed unless ``--seeds``
says otherwise; numbers mean nothing).
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import hybridopt as ho
from hybridopt.population.size import auto_population_size
from hybridopt.tasks.classification import ClassifierMLP, macro_f1, make_classification_data
from hybridopt.tasks.items import ItemsModel, items_rewards, items_score, make_items_data
from hybridopt.tasks.plateau import PlateauMLP, make_plateau_data, plateau_score
from hybridopt.tasks.trading import TradingSignalModel, make_trading_data, trading_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers, next to this script)
from _stats import (  # noqa: E402  (benchmarks/_stats.py, next to this script)
    hybridopt_rejects,
    markdown_table,
    mean_std,
    paired,
    pm,
    run_parallel,
    verdict,
    write_csv,
)
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
                  population: int | str) -> dict:
    """One HybridOptimizer run (``phases=None``: its default phases); scores recomputed with
    the task's scalar score."""
    start = time.perf_counter()
    opt = ho.HybridOptimizer(
        setup.model, task.hybrid_score_fn or task.score_fn, data=setup.train,
        validation_data=setup.valid, population_size=population, episode_length=None,
        seed=setup.seed, **({} if phases is None else {"phases": phases}),
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
        run = run_hybridopt(setup, task, HYBRIDOPT[job.method], population)
        if run["population"] == "auto":
            run["population"] = resolved
    else:
        run = peers.runner(job.method)(setup)
    run = {"task": job.task, "method": job.method, "seed": job.seed, "budget": job.budget,
           "dim": setup.dim, **run}
    run["evals_per_s"] = run["evaluations"] / max(run["wall_s"], 1e-9)
    return run


# -- summaries --------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> list[dict]:
    """Per task and method: mean and std over seeds."""
    out = []
    for key in dict.fromkeys((r["task"], r["method"]) for r in runs):
        rows = [r for r in runs if (r["task"], r["method"]) == key]
        summary = {"task": key[0], "method": key[1], "seeds": len(rows),
                   "budget": rows[0]["budget"], "dim": rows[0]["dim"]}
        for field in ("best_train", "train", "valid", "heldout", "evaluations",
                      "validation_evaluations", "wall_s", "evals_per_s"):
            summary[f"{field}_mean"], summary[f"{field}_std"] = mean_std(
                float(r[field]) for r in rows)
        out.append(summary)
    return out


def _heldout_by_seed(runs: list[dict], task: str, method: str) -> dict[int, float]:
    return {r["seed"]: float(r["heldout"]) for r in runs
            if r["task"] == task and r["method"] == method}


def compare_pairs(runs: list[dict], summaries: list[dict]) -> list[dict]:
    """Per task: hybrid - best peer (by mean held-out), paired over seeds."""
    out = []
    for name in dict.fromkeys(s["task"] for s in summaries):
        rows = {s["method"]: s for s in summaries if s["task"] == name}
        peer_rows = [m for m in rows if m not in HYBRIDOPT]
        if "hybrid" not in rows or not peer_rows:
            continue
        best = max(peer_rows, key=lambda m: rows[m]["heldout_mean"])
        diff = paired(_heldout_by_seed(runs, name, "hybrid"), _heldout_by_seed(runs, name, best))
        out.append({"task": name, "best_peer": best,
                    "hybrid_heldout_mean": rows["hybrid"]["heldout_mean"],
                    "best_peer_heldout_mean": rows[best]["heldout_mean"],
                    "best_peer_heldout_std": rows[best]["heldout_std"],
                    "diff_mean": diff.mean, "diff_std": diff.std,
                    "diff_positive": diff.positive, "seeds": diff.n})
    return out


def task_table(name: str, summaries: list[dict]) -> str:
    """The markdown table of one task: one row per method."""
    rows = [s for s in summaries if s["task"] == name]
    first = rows[0]
    title = (f"{name}: D={first['dim']} weights, budget {first['budget']} evaluations, "
             f"{first['seeds']} seed(s)")
    table = markdown_table(
        ["method", "best train", "held-out", "evals", "val evals", "wall s", "evals/s"],
        [[s["method"], pm(s["best_train_mean"], s["best_train_std"]),
          pm(s["heldout_mean"], s["heldout_std"]), f"{s['evaluations_mean']:.0f}",
          f"{s['validation_evaluations_mean']:.0f}", f"{s['wall_s_mean']:.1f}",
          f"{s['evals_per_s_mean']:.0f}"] for s in rows])
    return f"{title}\n\n{table}"


def pairs_table(pairs: list[dict]) -> str:
    """The markdown table of hybrid - best peer, paired over seeds, one row per task."""
    return markdown_table(
        ["task", "best peer", "hybrid held-out", "best peer held-out",
         "hybrid - best peer (paired)", "seeds > 0"],
        [[p["task"], p["best_peer"], f"{p['hybrid_heldout_mean']:.2f}",
          pm(p["best_peer_heldout_mean"], p["best_peer_heldout_std"]),
          pm(p["diff_mean"], p["diff_std"]), f"{p['diff_positive']}/{p['seeds']}"]
         for p in pairs])


def check_targets(summaries: list[dict]) -> list[str]:
    """Issue 12: the hybrid has the best mean held-out score of all methods on all tasks but at
    most one, and is within one std of the best on that one."""
    lines, best_on, within_on, tasks = [], 0, 0, 0
    for name in dict.fromkeys(s["task"] for s in summaries):
        rows = {s["method"]: s for s in summaries if s["task"] == name}
        others = {m: s for m, s in rows.items() if m != "hybrid"}
        if "hybrid" not in rows or not others:
            continue
        tasks += 1
        hybrid = rows["hybrid"]["heldout_mean"]
        best = max(others, key=lambda m: others[m]["heldout_mean"])
        mean, std = others[best]["heldout_mean"], others[best]["heldout_std"]
        is_best, within = hybrid >= mean, hybrid >= mean - std
        best_on += is_best
        within_on += within
        lines.append(f"  {name}: hybrid held-out {hybrid:.2f}, best other ({best}) "
                     f"{pm(mean, std)}: {'best' if is_best else 'not best'}, "
                     f"{'within' if within else 'not within'} one std")
    if not tasks:
        return []
    ok = best_on >= tasks - 1 and within_on == tasks
    lines.insert(0, f"- issue 12: hybrid best mean held-out of all methods on {best_on} of {tasks} "
                    f"tasks (target: all but at most one, {max(tasks - 1, 0)}), within one std of "
                    f"the best on {within_on} of {tasks} (target: all): {verdict(ok)}")
    return lines


def check_es(summaries: list[dict]) -> list[str]:
    """Issue 11: hybridopt-es within one std of EvoTorch SNES held-out on every task, and at
    least its evaluations/s."""
    lines, held, fast, tasks = [], 0, 0, 0
    for name in dict.fromkeys(s["task"] for s in summaries):
        rows = {s["method"]: s for s in summaries if s["task"] == name}
        if "hybridopt-es" not in rows or "evotorch-snes" not in rows:
            continue
        tasks += 1
        es, snes = rows["hybridopt-es"], rows["evotorch-snes"]
        close = es["heldout_mean"] >= snes["heldout_mean"] - snes["heldout_std"]
        quick = es["evals_per_s_mean"] >= snes["evals_per_s_mean"]
        held += close
        fast += quick
        lines.append(f"  {name}: hybridopt-es held-out {pm(es['heldout_mean'], es['heldout_std'])}"
                     f" vs evotorch-snes {pm(snes['heldout_mean'], snes['heldout_std'])}: "
                     f"{verdict(close)}; evals/s {es['evals_per_s_mean']:.0f} vs "
                     f"{snes['evals_per_s_mean']:.0f}: {verdict(quick)}")
    if not tasks:
        have = {s["method"] for s in summaries}
        missing = [m for m in ("hybridopt-es", "evotorch-snes") if m not in have]
        return [f"- issue 11: not checked ({', '.join(missing)} not run)"]
    lines.insert(0, f"- issue 11: hybridopt-es within one std of EvoTorch SNES's held-out on "
                    f"{held} of {tasks} tasks, evaluations/s at least SNES's on {fast} of "
                    f"{tasks} (target: every task): {verdict(held == fast == tasks)}")
    return lines


def check_speed(throughput: list[dict]) -> list[str]:
    """Speed target, one line per task: hybridopt's population evaluation against each peer's."""
    lines = []
    for name in dict.fromkeys(r["task"] for r in throughput):
        rows = {r["method"]: r["evals_per_s"] for r in throughput if r["task"] == name}
        others = {m: v for m, v in rows.items() if not m.startswith("hybridopt")}
        if "hybridopt" not in rows or not others:
            continue
        ratio, fastest = min((rows["hybridopt"] / v, m) for m, v in others.items())
        lines.append(
            f"  {name}: hybridopt evaluates {rows['hybridopt']:.0f} evals/s, {ratio:.2f}x the "
            f"fastest peer path ({fastest}): {verdict(ratio > 1)} "
            "(target: faster than every peer)")
    if lines:
        lines.insert(0, "- population evaluation speed:")
    return lines


# -- population evaluation speed -----------------------------------------------------------


def _best_times(paths: dict, rounds: int = 5, min_time: float = 0.2) -> dict[str, float]:
    """Seconds per call of each path: the best of ``rounds`` rounds, paths taken in turn, so
    that a change in machine load hits every path alike (one warm-up call each first)."""
    for fn, _ in paths.values():
        fn()
    best = {name: math.inf for name in paths}
    for _ in range(rounds):
        for name, (fn, _) in paths.items():
            reps, start = 0, time.perf_counter()
            while reps == 0 or time.perf_counter() - start < min_time:
                fn()
                reps += 1
            best[name] = min(best[name], (time.perf_counter() - start) / reps)
    return best


def population_throughput(name: str, task: Task, splits: dict, size: int,
                          methods: list[str]) -> list[dict]:
    """Evaluations/s of each method's own population evaluation on the task's model: P
    individuals around x0 on the training split, best of 5 rounds taken in turn."""
    from hybridopt.population.evaluate import PopulationEvaluator
    from hybridopt.population.flat import FlatParams
    from hybridopt.scoring import Scorer

    torch.manual_seed(0)
    model = task.make_model()
    setup = make_setup(name, task, splits, model, 0, size, 0.3, quick=False)
    gen = torch.Generator().manual_seed(0)
    population = setup.x0 + 0.1 * rms(setup.x0) * torch.randn(size, setup.dim, generator=gen)
    train, rows = setup.train, []

    flat = FlatParams.from_module(model)
    # The same score function for every path (items: the scalar items_score), so only the
    # way a population is evaluated differs
    evaluator = PopulationEvaluator(model, Scorer(task.score_fn), flat, method="auto")
    evaluator.evaluate(population, train)  # the first call measures vmap and loop, keeps one
    paths = {"hybridopt": (lambda: evaluator.evaluate(population, train),
                           f"auto -> {evaluator.choice['method']}")}
    for method in ("vmap", "loop"):  # both of auto's options, to see whether it chose well
        forced = PopulationEvaluator(model, evaluator.scorer, flat, method=method)
        paths[f"hybridopt-{method}"] = (lambda e=forced: e.evaluate(population, train),
                                        f"{method} (forced; not a peer)")
    if "deap" in methods:
        from peers.deap_ga import make_toolbox

        toolbox = make_toolbox(setup, train)
        individuals = [row.tolist() for row in population.double()]
        paths["deap"] = (lambda: [toolbox.evaluate(ind) for ind in individuals],
                         "per individual: list -> tensor, vector_to_parameters, forward")
    if "pycma-sepcma" in methods:
        candidates = list(population.double().numpy())
        paths["pycma-sepcma"] = (
            lambda: [evaluate_one(setup.model, torch.as_tensor(x, dtype=torch.float32), train,
                                  setup.score_fn) for x in candidates],
            "per candidate: numpy -> tensor, vector_to_parameters, forward")
    if any(m.startswith("evotorch") for m in methods):
        from peers.evotorch_peers import WeightsProblem

        problem = WeightsProblem(setup)
        paths["evotorch"] = (lambda: problem.fitness(population, train),
                             "vmap(make_functional_module)" if problem.vectorised
                             else "loop over make_functional_module (no vmap rule)")
    seconds = _best_times(paths)
    for method, (_, path) in paths.items():
        rows.append({"task": name, "method": method, "population": size, "dim": setup.dim,
                     "rows": train["x"].shape[0], "evals_per_s": size / seconds[method],
                     "path": path})
    return rows


# -- where a generation's time goes ----------------------------------------------------------


class Timers:
    """Seconds spent inside wrapped functions, by label."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, label: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start

        return timed

    def reset(self) -> None:
        self.seconds = {}


def _breakdown_row(who: str, seconds: dict, total: float, generations: int, p: int,
                   dim: int) -> list[dict]:
    parts = {**seconds, "bookkeeping (rest)": total - sum(seconds.values())}
    return [{"who": who, "part": part, "ms_per_generation": 1e3 * s / generations,
             "share": s / total, "population": p, "dim": dim, "generations": generations}
            for part, s in [*parts.items(), ("total", total)]]


def time_breakdown(p: int, generations: int) -> list[dict]:
    """Per-generation time of the DEAP script and of hybridopt's genetic phase, by part."""
    from deap import creator
    from peers import deap_ga

    from hybridopt.config import GeneticConfig
    from hybridopt.phases.base import PhaseContext
    from hybridopt.phases.genetic import GeneticPhase
    from hybridopt.population.evaluate import PopulationEvaluator
    from hybridopt.population.flat import FlatParams
    from hybridopt.scoring import Scorer

    splits = trading_splits()
    torch.manual_seed(0)
    model = TradingMLP(hidden=(128, 80))
    task = Task(trading_splits, TradingMLP, trading_score, budget=10**9)
    setup = make_setup("mlp15k", task, splits, model, 0, 10**9, 0.3, quick=False)
    rows = []

    # The DEAP script, with list individuals (as it runs above) and numpy ones
    for label, individual in (("DEAP script (list)", creator.CompareIndividual),
                              ("DEAP script (numpy)", creator.CompareArrayIndividual)):
        random.seed(0)
        timers = Timers()
        toolbox = deap_ga.make_toolbox(setup, setup.train)
        for part, alias in (("evaluation", "evaluate"), ("variation: clone", "clone"),
                            ("variation: cxBlend", "mate"), ("variation: mutGaussian", "mutate"),
                            ("selection", "select")):
            toolbox.register(alias, timers.wrap(part, getattr(toolbox, alias)))
        population = deap_ga.initial_population(setup, p, individual)
        clock = {}

        def on_generation(gen, population, nevals, timers=timers, clock=clock):
            if gen == 0:  # time the generations after the initial evaluation
                timers.reset()
                clock["start"] = time.perf_counter()

        s = deap_ga.SETTINGS
        deap_ga.ea_simple(population, toolbox, s["cxpb"], s["mutpb"], on_generation,
                          ngen=generations)
        total = time.perf_counter() - clock["start"]
        rows += _breakdown_row(label, timers.seconds, total, generations, p, setup.dim)

    # hybridopt's genetic phase on the same model, data and P
    flat = FlatParams.from_module(model)
    evaluator = PopulationEvaluator(model, Scorer(trading_score), flat, method="auto")
    timers = Timers()
    phase = GeneticPhase(GeneticConfig())
    phase.bind(PhaseContext(model=model, flat=flat, scorer=evaluator.scorer,
                            evaluate=timers.wrap("evaluation", evaluator.evaluate),
                            generator=torch.Generator().manual_seed(0),
                            device=torch.device("cpu"), population_size=p))
    for part, alias in (("variation: mate", "mate"), ("variation: mutate", "mutate"),
                        ("selection", "select")):
        phase.toolbox.register(alias, timers.wrap(part, getattr(phase.toolbox, alias)))
    state, _ = phase.step(phase.init(flat.vector(model)), setup.train)  # generation 0
    timers.reset()
    start = time.perf_counter()
    for _ in range(generations):
        state, _ = phase.step(state, setup.train)
    total = time.perf_counter() - start
    rows += _breakdown_row(f"hybridopt genetic ({evaluator.choice['method']})", timers.seconds,
                           total, generations, p, setup.dim)
    return rows


def print_breakdown(rows: list[dict]) -> None:
    first = rows[0]
    print(f"\nwhere a generation's time goes: P={first['population']}, D={first['dim']}, "
          f"N={TRADING_ROWS} rows, mean of {first['generations']} generation(s)")
    for who in dict.fromkeys(r["who"] for r in rows):
        print(f"  {who}")
        for r in (r for r in rows if r["who"] == who):
            print(f"    {r['part']:<26}{r['ms_per_generation']:>10.1f} ms{100 * r['share']:>7.1f}%")
    for who in dict.fromkeys(r["who"] for r in rows):
        if not who.startswith("DEAP"):
            continue
        share = {r["part"]: r["share"] for r in rows if r["who"] == who}
        loops = share.get("variation: cxBlend", 0) + share.get("variation: mutGaussian", 0)
        variation = loops + share.get("variation: clone", 0)
        print(f"  {who}: cxBlend + mutGaussian = {100 * loops:.0f}% of the run (claim: ~80%: "
              f"{'reproduced' if loops >= 0.7 else 'refuted'}); with clone (deepcopy) "
              f"{100 * variation:.0f}%; evaluation {100 * share.get('evaluation', 0):.0f}%")


# -- output -----------------------------------------------------------------------------------


def plot(curves: list[dict], budgets: dict[str, int], path: Path) -> None:
    """Mean over seeds of the best training score so far against evaluations, per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(c["task"] for c in curves))
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, tasks):
        grid = np.linspace(0, budgets[name], 200)
        for method in dict.fromkeys(c["method"] for c in curves if c["task"] == name):
            runs = {}
            for c in curves:
                if c["task"] == name and c["method"] == method:
                    runs.setdefault(c["seed"], []).append((c["evaluations"], c["best_train"]))
            values = []
            for points in runs.values():
                evals = np.array([e for e, _ in points])
                best = np.array([b for _, b in points], dtype=float)
                index = np.searchsorted(evals, grid, side="right") - 1
                values.append(np.where(index >= 0, best[np.maximum(index, 0)], np.nan))
            with warnings.catch_warnings():  # all-NaN before a method's first generation
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.array(values), axis=0)
            ax.plot(grid, mean, label=method, linestyle="-" if method in HYBRIDOPT else "--")
        ax.set_title(name)
        ax.set_xlabel("training evaluations")
        ax.set_ylabel("best training score (mean over seeds)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line -----------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS), help=f"from {', '.join(TASKS)}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"from {', '.join(METHODS)}")
    p.add_argument("--seeds", type=int, default=None,
                   help="number of paired seeds (default 5; 1 with --quick)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds are first-seed .. first-seed + seeds - 1 (default 0)")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every task's budget (default 1)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_BUDGET} evaluations, 1 seed, tiny populations")
    p.add_argument("--population", default="auto",
                   help="hybridopt's population_size: auto (default), task (300; 64 on "
                        "plateau: the sizes before auto) or an int")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--jobs", type=int, default=2, help="worker processes for the runs (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per process (default 1)")
    p.add_argument("--parts", default="runs,throughput,breakdown",
                   help="what to run: runs, throughput, breakdown (default: all three)")
    p.add_argument("--sigma-scale", default="",
                   help="peers' search scale in RMS(x0): 0.3, or deap=0.1,evotorch-pgpe=1")
    p.add_argument("--throughput-population", type=int, default=300)
    p.add_argument("--breakdown-generations", type=int, default=3)
    args = p.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.methods = [m for m in args.methods.split(",") if m]
    args.parts = [x for x in args.parts.split(",") if x]
    for flag, values, allowed in (("--tasks", args.tasks, TASKS), ("--methods", args.methods,
                                  METHODS), ("--parts", args.parts, ("runs", "throughput",
                                                                     "breakdown"))):
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            p.error(f"{flag} must name items from {', '.join(allowed)}; got {unknown or values}")
    if args.seeds is None:
        args.seeds = 1 if args.quick else 5
    if args.seeds < 1 or args.budget_scale <= 0 or args.jobs < 1:
        p.error(f"--seeds and --jobs must be >= 1 and --budget-scale > 0; got {args.seeds}, "
                f"{args.jobs}, {args.budget_scale}")
    if args.population not in ("auto", "task"):
        try:
            args.population = int(args.population)
        except ValueError:
            p.error(f"--population must be auto, task or an int >= 2; got {args.population!r}")
        if args.population < 2:
            p.error(f"--population must be auto, task or an int >= 2; got {args.population}")
    scales = dict(SIGMA_SCALE)
    for item in (x for x in args.sigma_scale.split(",") if x):
        name, _, value = item.rpartition("=")
        for peer in [name] if name else list(scales):
            scales[peer] = float(value)
    args.sigma_scale = scales
    return args


def available_methods(requested: list[str]) -> list[str]:
    """The requested methods that can run here; a line for each one skipped, and why."""
    methods = []
    for method in requested:
        if method in peers.PEERS:
            reason = peers.missing(method)
            hint = "pip install it (or hybridopt[bench]) to include it"
        elif HYBRIDOPT[method] is not None:
            reason = hybridopt_rejects(phases=HYBRIDOPT[method])
            hint = f"HybridOptimizer(..., phases={HYBRIDOPT[method]}) is rejected here"
        else:
            reason = None
        if reason:
            print(f"skipping {method}: {reason} ({hint})")
        else:
            methods.append(method)
    return methods


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = available_methods(args.methods)
    auto_supported = hybridopt_rejects((TypeError, ValueError), population_size="auto") is None
    if args.population == "auto" and not auto_supported:
        print('note: this HybridOptimizer does not take population_size="auto" yet; passing '
              "the size its rule gives (hybridopt.population.size.auto_population_size)")
    print(f"torch {torch.__version__}, {args.jobs} job(s) x {args.threads} thread(s); methods: "
          f"{', '.join(methods)}; sigma scales: {args.sigma_scale}", flush=True)

    budgets = {name: QUICK_BUDGET if args.quick
               else max(1, round(TASKS[name].budget * args.budget_scale)) for name in args.tasks}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs, curves, summaries, pairs, throughput, report = [], [], [], [], [], []
    if "runs" in args.parts:
        # Tasks, then seeds, then methods: a drift in machine load hits every method alike
        jobs = [Job(name, method, seed, budgets[name], args.sigma_scale.get(method, 0.3),
                    args.quick, args.population, auto_supported)
                for name in args.tasks for seed in seeds for method in methods]
        done: list[dict] = []

        def on_result(job: Job, run: dict) -> None:
            done.append({k: v for k, v in run.items() if k != "curve"})
            print(f"  {run['task']} {run['method']:<14} seed {run['seed']}: best train "
                  f"{run['best_train']:.2f} valid {run['valid']:.2f} held-out "
                  f"{run['heldout']:.2f} ({run['evaluations']} evals, {run['wall_s']:.1f} s)",
                  flush=True)
            write_csv(args.out / "compare_runs.csv", done)  # as runs finish

        results = run_parallel(run_job, jobs, args.jobs, args.threads, on_result)
        for run in results:
            curves += [{"task": run["task"], "method": run["method"], "seed": run["seed"],
                        "evaluations": e, "best_train": b, "wall_s": w}
                       for e, b, w in run.pop("curve")]
            runs.append(run)
        summaries = summarize(runs)
        pairs = compare_pairs(runs, summaries)
        report += [task_table(name, summaries) for name in args.tasks]
        if pairs:
            report.append(f"hybrid - best peer, paired over seeds:\n\n{pairs_table(pairs)}")
        print("\n" + "\n\n".join(report), flush=True)
        write_csv(args.out / "compare_runs.csv", runs)
        write_csv(args.out / "compare_summary.csv", summaries)
        write_csv(args.out / "compare_paired.csv", pairs)
        write_csv(args.out / "compare_curves.csv", curves)
        plot(curves, budgets, args.out / "compare.png")
    if "throughput" in args.parts:
        for name in args.tasks:
            size = QUICK_POPULATION if args.quick else args.throughput_population
            throughput += population_throughput(name, TASKS[name], _splits(name), size, methods)
            write_csv(args.out / "compare_throughput.csv", throughput)
        print(f"\npopulation evaluation speed (P={throughput[0]['population']}, "
              "each method's own path, evaluations/s)")
        for r in throughput:
            print(f"  {r['task']:<15}{r['method']:<14}{r['evals_per_s']:>9.0f}  {r['path']}")
    breakdown = []
    if "breakdown" in args.parts:
        breakdown = time_breakdown(20 if args.quick else 300,
                                   1 if args.quick else args.breakdown_generations)
        print_breakdown(breakdown)
        write_csv(args.out / "compare_breakdown.csv", breakdown)
    targets = check_speed(throughput)
    if summaries:
        targets = check_targets(summaries) + check_es(summaries) + targets
    if targets:
        lines = f"targets ({args.seeds} paired seeds):\n" + "\n".join(targets)
        print(f"\n{lines}")
        report.append(lines)
    if report:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text("\n\n".join(report) + "\n")
    print(f"\nresults in {args.out}/")
    return {"runs": runs, "summaries": summaries, "pairs": pairs, "throughput": throughput,
            "breakdown": breakdown, "targets": targets}


if __name__ == "__main__":
    main()
