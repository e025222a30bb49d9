"""Population-evaluation speed and the time breakdown of one generation, for ``compare.py``.

``population_throughput``: evaluations/s of each method's own population evaluation path on a
task's model (``--parts throughput``), and ``check_speed``, its target line per task.
``time_breakdown`` / ``print_breakdown``: where one generation's time goes, for the DEAP script
and for hybridopt's genetic phase (``--parts breakdown``).
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

import torch

from hybridopt.tasks.trading import trading_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _compare_runs import (  # noqa: E402  (benchmarks/_compare_runs.py, next to this module)
    TRADING_ROWS,
    Task,
    TradingMLP,
    make_setup,
    rms,
    trading_splits,
)
from _stats import verdict  # noqa: E402  (benchmarks/_stats.py, next to this module)
from peers._common import evaluate_one  # noqa: E402  (benchmarks/peers)


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
