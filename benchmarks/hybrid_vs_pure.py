"""Hybrid vs pure methods at the same evaluation budget: does switching phases pay off?

For each task it trains the same model, from the same initialisation, with

- hybrid: ``phases=("gradient", "genetic")`` (the default: REINFORCE first, switching on stall),
- gradient: ``phases=("gradient",)`` (pure REINFORCE),
- genetic: ``phases=("genetic",)`` (pure genetic algorithm),

on several seeds, each at the same budget of training evaluations (``max_evaluations``). A
validation split (``validation_data=``) picks the best weights; the test split is never used for
training or selection and gives the held-out score. Per task and method it prints one row:
mean and std (over seeds, sample std) of the train score and the held-out score of the chosen
weights, training evaluations used, wall time and phase switches. Then it checks the targets:

- every task: the hybrid's mean held-out >= the best pure method's mean held-out minus that
  method's std (the hybrid is never clearly worse than the better pure method);
- plateau, deceptive (tasks made to stall one method): the hybrid is clearly above both pure
  methods (hybrid mean - hybrid std > both pure means);
- trading: the hybrid's mean held-out beats the momentum heuristic's held-out score.

Tasks (data seed fixed at 0 per task, so seeds vary only the optimiser and the model init,
``torch.manual_seed(seed)`` before the model is built):

- trading: the seed example as ``examples/trading_signals.py`` sets it up
  (``make_trading_data(window=16)``, ``TradingSignalModel(hidden_size=16)``, ``trading_score``,
  ``episode_length=512``, population 300, 20,000 evaluations);
- plateau: ``hybridopt.tasks.plateau``, population 64, 15,000 evaluations;
- deceptive: ``hybridopt.tasks.deceptive``, population 64, 6,000 evaluations.

Every run is written as one CSV row (``--out``); ``--histories DIR`` also saves each run's
history (one CSV per run) for a look at when the switches happened. Runs use one torch thread
unless ``--threads`` says otherwise; wall times depend on the machine's load, scores do not.

Run: ``python benchmarks/hybrid_vs_pure.py`` (all tasks, 3 seeds; trading is the slow one, tens
of minutes on 2 cores), ``--tasks plateau,deceptive --seeds 5``, or ``--quick`` (tiny budgets,
a smoke test of under a minute; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import hybridopt as ho
from hybridopt.tasks.deceptive import DeceptiveMLP, deceptive_score, make_deceptive_data
from hybridopt.tasks.plateau import PlateauMLP, make_plateau_data, plateau_score
from hybridopt.tasks.trading import (
    TradingSignalModel,
    make_trading_data,
    momentum_heuristic,
    trading_score,
)

METHODS = {
    "hybrid": ("gradient", "genetic"),
    "gradient": ("gradient",),
    "genetic": ("genetic",),
}
DATA_SEED = 0


@dataclass(frozen=True)
class Task:
    """One benchmark task: data, score, model and budgets."""

    make_data: Callable[[], dict]
    """Train/valid/test splits (data seed fixed)."""
    score_fn: Callable
    """The non-differentiable score, higher is better."""
    make_model: Callable[[], nn.Module]
    """A fresh model (called right after ``torch.manual_seed(seed)``)."""
    population_size: int
    """P of the genetic phase."""
    max_evaluations: int
    """Training evaluations per run."""
    episode_length: int | None = None
    """Rows per episode; None = the whole training split."""
    stalling: bool = False
    """A task built to stall one method: the hybrid must be clearly above both."""
    heuristic: Callable[[dict], torch.Tensor] | None = None
    """Hand-made baseline policy ``data -> actions``, whose held-out score the hybrid must beat."""


TASKS = {
    "trading": Task(
        make_data=lambda: make_trading_data(window=16, seed=DATA_SEED),
        score_fn=trading_score,
        make_model=lambda: TradingSignalModel(hidden_size=16),
        population_size=300,
        max_evaluations=20_000,
        episode_length=512,
        heuristic=momentum_heuristic,
    ),
    "plateau": Task(
        make_data=lambda: make_plateau_data(seed=DATA_SEED),
        score_fn=plateau_score,
        make_model=PlateauMLP,
        population_size=64,
        max_evaluations=15_000,
        stalling=True,
    ),
    "deceptive": Task(
        make_data=lambda: make_deceptive_data(seed=DATA_SEED),
        score_fn=deceptive_score,
        make_model=DeceptiveMLP,
        population_size=64,
        max_evaluations=6_000,
        stalling=True,
    ),
}
QUICK = {"population_size": 16, "max_evaluations": 300}


def run_one(task: Task, splits: dict, method: str, seed: int, quick: bool) -> dict:
    """Train one model with one method and seed; return its scores and budgets."""
    population = QUICK["population_size"] if quick else task.population_size
    budget = QUICK["max_evaluations"] if quick else task.max_evaluations
    torch.manual_seed(seed)  # the model init; the library never seeds global state
    model = task.make_model()
    opt = ho.HybridOptimizer(
        model,
        task.score_fn,
        data=splits["train"],
        validation_data=splits["valid"],
        phases=METHODS[method],
        population_size=population,
        episode_length=task.episode_length,
        seed=seed,
    )
    init_heldout = opt.evaluate(splits["test"])
    start = time.perf_counter()
    result = opt.fit(max_evaluations=budget, progress=False)
    wall = time.perf_counter() - start
    trace = ";".join(
        f"{s['evaluations']}:{s['from_phase']}>{s['to_phase']}({s['reason'].split(':')[0]})"
        for s in result.switches
    )
    return {
        "method": method,
        "seed": seed,
        "train": opt.evaluate(splits["train"]),
        "valid": result.best_score,
        "heldout": opt.evaluate(splits["test"]),
        "init_heldout": init_heldout,
        "evaluations": result.evaluations,
        "validation_evaluations": result.validation_evaluations,
        "wall_s": wall,
        "switches": len(result.switches),
        "switch_trace": trace,
        "stop_reason": result.stop_reason,
        "result": result,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per method: mean and std of train and held-out scores, mean budgets."""
    out = {}
    for method in METHODS:
        rows = [r for r in runs if r["method"] == method]
        if not rows:
            continue
        out[method] = {
            "train": mean_std([r["train"] for r in rows]),
            "heldout": mean_std([r["heldout"] for r in rows]),
            "evaluations": statistics.fmean(r["evaluations"] for r in rows),
            "wall_s": statistics.fmean(r["wall_s"] for r in rows),
            "switches": statistics.fmean(r["switches"] for r in rows),
        }
    return out


def check_targets(name: str, task: Task, summary: dict, heuristic: float | None) -> list[str]:
    """One line per target: what is compared, and whether it holds."""
    lines = []
    hyb_mean, hyb_std = summary["hybrid"]["heldout"]
    pure = {m: summary[m]["heldout"] for m in ("gradient", "genetic")}
    best = max(pure, key=lambda m: pure[m][0])
    bar = pure[best][0] - pure[best][1]
    lines.append(
        f"  hybrid held-out {hyb_mean:.2f} >= best pure ({best}) {pure[best][0]:.2f} - "
        f"{pure[best][1]:.2f} = {bar:.2f}: {_verdict(hyb_mean >= bar)}"
    )
    if task.stalling:
        means = ", ".join(f"{m} {pure[m][0]:.2f}" for m in pure)
        clear = hyb_mean - hyb_std > max(p[0] for p in pure.values())
        lines.append(
            f"  hybrid clearly above both: {hyb_mean:.2f} - {hyb_std:.2f} = "
            f"{hyb_mean - hyb_std:.2f} > ({means}): {_verdict(clear)}"
        )
    if heuristic is not None:
        lines.append(
            f"  hybrid held-out {hyb_mean:.2f} > momentum heuristic {heuristic:.2f}: "
            f"{_verdict(hyb_mean > heuristic)}"
        )
    return lines


def _verdict(ok: bool) -> str:
    return "target met" if ok else "target missed"


def print_table(name: str, summary: dict) -> None:
    print(f"{'task':<10}{'method':<10}{'train':>18}{'heldout':>18}{'evals':>9}{'wall_s':>9}"
          f"{'switches':>10}")
    for method, s in summary.items():
        train = f"{s['train'][0]:.2f}±{s['train'][1]:.2f}"
        heldout = f"{s['heldout'][0]:.2f}±{s['heldout'][1]:.2f}"
        print(f"{name:<10}{method:<10}{train:>18}{heldout:>18}{s['evaluations']:>9.0f}"
              f"{s['wall_s']:>9.1f}{s['switches']:>10.1f}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"comma-separated tasks from {', '.join(TASKS)} (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per task and method")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: population {QUICK['population_size']}, "
                        f"{QUICK['max_evaluations']} evaluations per run")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV of all runs; rows of tasks not run this time are kept (default: "
                        "benchmarks/results/hybrid_vs_pure.csv, or hybrid_vs_pure_quick.csv)")
    p.add_argument("--histories", type=Path, default=None,
                   help="folder for one history CSV per run (default: none)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared 2-core machine two "
                        "threads made the LSTM ~10x slower; 0 = torch's default)")
    args = p.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown or not args.tasks:
        p.error(f"--tasks must name tasks from {', '.join(TASKS)}; got {unknown or args.tasks}")
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1; got {args.seeds}")
    if args.threads < 0:
        p.error(f"--threads must be >= 0; got {args.threads}")
    if args.out is None:
        stem = "hybrid_vs_pure_quick" if args.quick else "hybrid_vs_pure"
        args.out = Path("benchmarks/results") / f"{stem}.csv"
    return args


FIELDS = ["task", "method", "seed", "train", "valid", "heldout", "init_heldout", "evaluations",
          "validation_evaluations", "wall_s", "switches", "switch_trace", "stop_reason",
          "population_size", "max_evaluations", "heuristic_heldout"]


def write_csv(path: Path, rows: list[dict], tasks: list[str]) -> None:
    """Write ``rows``, keeping the rows of other tasks already in ``path``."""
    kept = []
    if path.exists():
        with path.open(newline="") as f:
            kept = [r for r in csv.DictReader(f) if r.get("task") not in tasks]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept + rows)


def main(argv=None) -> dict[str, dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, summaries = [], {}
    for name in args.tasks:
        task = TASKS[name]
        splits = task.make_data()
        heuristic = None
        if task.heuristic is not None:
            heuristic = float(task.score_fn(task.heuristic(splits["test"]), splits["test"]))
            print(f"{name}: momentum heuristic held-out score {heuristic:.2f}")
        runs = []
        # Seeds outer, methods inner: a drift in machine load hits every method alike
        for seed in range(args.seeds):
            for method in METHODS:
                run = run_one(task, splits, method, seed, args.quick)
                runs.append(run)
                print(f"  {name} {method:<9} seed {seed}: train {run['train']:.2f} "
                      f"valid {run['valid']:.2f} held-out {run['heldout']:.2f} "
                      f"({run['evaluations']} evals, {run['wall_s']:.0f} s, "
                      f"switches {run['switch_trace'] or '-'})", flush=True)
                if args.histories is not None:
                    run["result"].to_csv(args.histories / f"{name}_{method}_seed{seed}.csv")
                rows.append({
                    **{k: v for k, v in run.items() if k != "result"},
                    "task": name,
                    "population_size": QUICK["population_size"] if args.quick
                    else task.population_size,
                    "max_evaluations": QUICK["max_evaluations"] if args.quick
                    else task.max_evaluations,
                    "heuristic_heldout": heuristic,
                })
        summary = summarize(runs)
        summaries[name] = summary
        print()
        print_table(name, summary)
        print(f"targets ({name}, {args.seeds} seeds):")
        for line in check_targets(name, task, summary, heuristic):
            print(line)
        print(flush=True)
        write_csv(args.out, rows, args.tasks)  # after each task, so a later crash loses less
    print(f"all runs: {args.out}")
    return summaries


if __name__ == "__main__":
    main()
