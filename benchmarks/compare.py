"""hybridopt against DEAP, EvoTorch and pycma: same tasks, same budget, same seeds.

Methods (``--methods``):

- ``hybrid``, ``gradient``, ``genetic``: ``hybridopt.HybridOptimizer`` with
  ``phases=("gradient", "genetic")`` (the default), ``("gradient",)`` and ``("genetic",)``, every
  other setting at its default (``population_size`` per task below, as in
  ``benchmarks/hybrid_vs_pure.py``), ``backend="auto"``.
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

Peers whose package is missing are skipped with a line saying so.

Fairness, the same for every method:

- **Start**: the model built right after ``torch.manual_seed(seed)``; its weights ``x0`` are
  hybridopt's starting model and the peers' ``x0`` / centre / first individual.
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
  two threads made a single forward up to 100 times slower.

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

Run: ``python benchmarks/compare.py`` (all tasks and methods, 3 seeds),
``--tasks classification,plateau --methods hybrid,deap,pycma-sepcma --seeds 5``,
``--budget-scale 0.5``, or ``--quick`` (a smoke test: tiny budgets, 1 seed; numbers mean nothing).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import random
import statistics
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
from hybridopt.tasks.classification import ClassifierMLP, macro_f1, make_classification_data
from hybridopt.tasks.items import ItemsModel, items_rewards, items_score, make_items_data
from hybridopt.tasks.plateau import PlateauMLP, make_plateau_data, plateau_score
from hybridopt.tasks.trading import TradingSignalModel, make_trading_data, trading_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers, next to this script)
from peers._common import Setup, evaluate_one  # noqa: E402

HYBRIDOPT = {"hybrid": ("gradient", "genetic"), "gradient": ("gradient",), "genetic": ("genetic",)}
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
    """hybridopt's P."""
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


def run_hybridopt(setup: Setup, task: Task, phases: tuple[str, ...], population: int) -> dict:
    """One HybridOptimizer run; scores recomputed with the task's scalar score."""
    start = time.perf_counter()
    opt = ho.HybridOptimizer(
        setup.model, task.hybrid_score_fn or task.score_fn, data=setup.train,
        validation_data=setup.valid, phases=phases, population_size=population,
        episode_length=None, seed=setup.seed,
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
    return {
        "best_train": best, "train": scores["train"], "valid": scores["valid"],
        "heldout": scores["test"], "evaluations": result.evaluations,
        "validation_evaluations": result.validation_evaluations, "wall_s": wall,
        "curve": curve, "population": population,
        "eval_path": f"population evaluator: {backend}" if backend else "gradient steps",
        "stop_reason": f"{result.stop_reason}; {len(result.switches)} switches",
    }


def run_method(method: str, name: str, task: Task, splits: dict, model: nn.Module, seed: int,
               budget: int, args) -> dict:
    """One method on one task and seed; the global RNGs (DEAP, EvoTorch) are seeded too."""
    torch.manual_seed(seed)
    random.seed(seed)
    setup = make_setup(name, task, splits, model, seed, budget,
                       args.sigma_scale.get(method, 0.3), args.quick)
    if method in HYBRIDOPT:
        population = QUICK_POPULATION if args.quick else task.population_size
        return run_hybridopt(setup, task, HYBRIDOPT[method], population)
    return peers.runner(method)(setup)


# -- summaries --------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict]) -> list[dict]:
    """Per task and method: mean and std over seeds."""
    out = []
    for key in dict.fromkeys((r["task"], r["method"]) for r in runs):
        rows = [r for r in runs if (r["task"], r["method"]) == key]
        summary = {"task": key[0], "method": key[1], "seeds": len(rows)}
        for field in ("best_train", "train", "valid", "heldout", "evaluations",
                      "validation_evaluations", "wall_s", "evals_per_s"):
            summary[f"{field}_mean"], summary[f"{field}_std"] = mean_std(
                [float(r[field]) for r in rows])
        out.append(summary)
    return out


def print_table(name: str, summaries: list[dict], dim: int, budget: int) -> None:
    rows = [s for s in summaries if s["task"] == name]
    print(f"\n{name}: D={dim} weights, budget {budget} evaluations, {rows[0]['seeds']} seed(s)")
    header = (f"{'method':<15}{'best train':>16}{'held-out':>16}{'evals':>8}{'val evals':>10}"
              f"{'wall s':>9}{'evals/s':>9}")
    print(header)
    print("-" * len(header))
    for s in rows:
        print(f"{s['method']:<15}{s['best_train_mean']:>9.2f} ±{s['best_train_std']:>5.2f}"
              f"{s['heldout_mean']:>9.2f} ±{s['heldout_std']:>5.2f}{s['evaluations_mean']:>8.0f}"
              f"{s['validation_evaluations_mean']:>10.0f}{s['wall_s_mean']:>9.1f}"
              f"{s['evals_per_s_mean']:>9.0f}", flush=True)


def check_targets(summaries: list[dict]) -> list[str]:
    """Score targets, one line per task: how the hybrid's held-out score compares."""
    lines, first_all, first_peers = [], 0, 0
    for name in dict.fromkeys(s["task"] for s in summaries):
        rows = {s["method"]: s for s in summaries if s["task"] == name}
        peer_rows = {m: s for m, s in rows.items() if m not in HYBRIDOPT}
        if "hybrid" not in rows or not peer_rows:
            continue
        hybrid = rows["hybrid"]["heldout_mean"]
        best_all = max(rows, key=lambda m: rows[m]["heldout_mean"])
        best_peer = max(peer_rows, key=lambda m: peer_rows[m]["heldout_mean"])
        peer_mean = peer_rows[best_peer]["heldout_mean"]
        peer_std = peer_rows[best_peer]["heldout_std"]
        first_all += best_all == "hybrid"
        first_peers += hybrid >= peer_mean
        lines.append(
            f"  {name}: hybrid held-out {hybrid:.2f}; best of all: {best_all} "
            f"{rows[best_all]['heldout_mean']:.2f}; hybrid >= best peer ({best_peer}) "
            f"{peer_mean:.2f} - {peer_std:.2f} = {peer_mean - peer_std:.2f}: "
            f"{_verdict(hybrid >= peer_mean - peer_std)}")
    if lines:
        lines.insert(0, f"  hybrid has the best mean held-out score of all methods on {first_all} "
                        f"of {len(lines)} tasks, at least every peer's on {first_peers}: "
                        f"{_verdict(first_all > len(lines) / 2)} (target: most tasks)")
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
            f"fastest peer path ({fastest}): {_verdict(ratio > 1)} "
            "(target: faster than every peer)")
    return lines


def _verdict(ok: bool) -> str:
    return "target met" if ok else "target missed"


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
    phase = GeneticPhase(flat, timers.wrap("evaluation", evaluator.evaluate), GeneticConfig(), p,
                         torch.Generator().manual_seed(0))
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


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


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
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds are first-seed .. first-seed + seeds - 1 (default 0)")
    p.add_argument("--budget-scale", type=float, default=1.0,
                   help="multiply every task's budget (default 1)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: {QUICK_BUDGET} evaluations, 1 seed, tiny populations")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
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
    if args.seeds < 1 or args.budget_scale <= 0:
        p.error(f"--seeds must be >= 1 and --budget-scale > 0; got {args.seeds}, "
                f"{args.budget_scale}")
    scales = dict(SIGMA_SCALE)
    for item in (x for x in args.sigma_scale.split(",") if x):
        name, _, value = item.rpartition("=")
        for peer in [name] if name else list(scales):
            scales[peer] = float(value)
    args.sigma_scale = scales
    if args.quick:
        args.seeds = 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = []
    for method in args.methods:
        reason = peers.missing(method) if method in peers.PEERS else None
        if reason:
            print(f"skipping {method}: {reason} (pip install it to include it)")
        else:
            methods.append(method)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); methods: "
          f"{', '.join(methods)}; sigma scales: {args.sigma_scale}", flush=True)

    runs, curves, throughput, budgets, dims = [], [], [], {}, {}
    for name in args.tasks:
        task = TASKS[name]
        splits = task.make_data()
        budget = QUICK_BUDGET if args.quick else max(1, round(task.budget * args.budget_scale))
        budgets[name] = budget
        if "runs" in args.parts:
            # Seeds outer, methods inner: a drift in machine load hits every method alike
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                torch.manual_seed(seed)
                model = task.make_model()
                dims[name] = sum(p.numel() for p in model.parameters())
                for method in methods:
                    run = {"task": name, "method": method, "seed": seed, "budget": budget,
                           "dim": dims[name],
                           **run_method(method, name, task, splits, model, seed, budget, args)}
                    run["evals_per_s"] = run["evaluations"] / max(run["wall_s"], 1e-9)
                    curves += [{"task": name, "method": method, "seed": seed, "evaluations": e,
                                "best_train": b, "wall_s": w} for e, b, w in run.pop("curve")]
                    runs.append(run)
                    print(f"  {name} {method:<14} seed {seed}: best train {run['best_train']:.2f}"
                          f" valid {run['valid']:.2f} held-out {run['heldout']:.2f} "
                          f"({run['evaluations']} evals, {run['wall_s']:.1f} s)", flush=True)
            summaries = summarize(runs)
            print_table(name, summaries, dims[name], budget)
            write_csv(args.out / "compare_runs.csv", runs)
            write_csv(args.out / "compare_summary.csv", summaries)
            write_csv(args.out / "compare_curves.csv", curves)
            plot(curves, budgets, args.out / "compare.png")
        if "throughput" in args.parts:
            size = QUICK_POPULATION if args.quick else args.throughput_population
            throughput += population_throughput(name, task, splits, size, methods)
            write_csv(args.out / "compare_throughput.csv", throughput)

    if throughput:
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
    summaries = summarize(runs) if runs else []
    targets = check_targets(summaries) + check_speed(throughput)
    if targets:
        print("\ntargets:")
        print("\n".join(targets))
    print(f"\nresults: {args.out}/compare_*.csv, {args.out}/compare.png")
    return {"runs": runs, "summaries": summaries, "throughput": throughput,
            "breakdown": breakdown}


if __name__ == "__main__":
    main()
