"""Hybrid vs pure methods at the same evaluation budget: does switching phases pay off?

For each task it trains the same model, from the same initial weights per seed, with

- ``hybrid``: the default phases (``HybridOptimizer`` without ``phases=``),
- ``gradient``: ``phases=("gradient",)`` (pure REINFORCE),
- ``genetic``: ``phases=("genetic",)`` (pure genetic algorithm),
- ``es``: ``phases=("es",)`` (pure SNES; skipped with a note where this checkout's
  ``HybridOptimizer`` rejects it),

on paired seeds (``torch.manual_seed(seed)`` right before the model is built, so every method
of a seed starts from the same weights; the optimiser's own seed is the same too), each at the
same budget of training evaluations (``max_evaluations``). A validation split
(``validation_data=``) picks the best weights; the test split is never used for training or
selection and gives the held-out score. ``population_size`` is ``"auto"`` (the library's rule,
:func:`hybridopt.population.size.auto_population_size`; passed as the int it resolves to where
this checkout does not accept ``"auto"`` yet), or ``--population task`` for the sizes the
tasks had before (300, 64, 64), or an int.

Per task and budget it reports: mean ± std over seeds of the held-out score of each method
(and of the train and validation scores), the paired difference hybrid - best pure method
(the pure method with the best mean held-out score; mean ± std over seeds, and on how many
seeds it is positive), and on how many seeds each method ends with a selection score
(``result.best_score``, the score that picks the best weights from validation rows) below its
starting weights' (the ``best_score`` of a run that scores only its start). ``--budgets``
adds a budget sweep on ``trading-lstm`` (default 3,000, 10,000 and 30,000 evaluations, besides
the task's own 20,000). Then the targets of issue 12, each with met/missed:

- every task and budget: the hybrid's mean held-out score >= the best pure method's;
- every task and budget: the paired difference hybrid - best pure is positive (its mean);
- no seed of any task where the hybrid ends with a selection score below its starting weights'.

Tasks (data seed fixed at 0 per task, so seeds vary only the optimiser and the model init):

- ``trading-lstm`` (alias ``trading``): the seed example (``make_trading_data(window=16)``,
  ``TradingSignalModel(hidden_size=16)``, ``trading_score``, ``episode_length=512``, 20,000
  evaluations; the momentum heuristic's held-out score is printed for reference);
- ``plateau``: ``hybridopt.tasks.plateau``, 15,000 evaluations;
- ``deceptive``: ``hybridopt.tasks.deceptive``, 6,000 evaluations.

Runs go to ``--jobs`` worker processes (default 2), each with ``--threads`` torch threads
(default 1: on a shared 2-core machine two threads made the LSTM about 10x slower); wall times
depend on the machine's load, scores do not. Outputs in ``--out`` (default
``runs/hybrid_vs_pure``): ``runs.csv`` (one row per run, rewritten as runs finish),
``summary.csv`` (per task, budget and method), ``paired.csv`` (per task and budget) and
``table.md`` (the printed tables and targets); ``--histories`` also saves each run's history.

Run: ``python benchmarks/hybrid_vs_pure.py`` (all tasks, 5 seeds, the sweep),
``--tasks plateau,deceptive --budgets ""``, or ``--quick`` (budgets x 0.02, 2 seeds: a smoke
test; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import hybridopt as ho
from hybridopt.population.size import auto_population_size
from hybridopt.selection import SELECTIONS
from hybridopt.tasks.deceptive import DeceptiveMLP, deceptive_score, make_deceptive_data
from hybridopt.tasks.plateau import PlateauMLP, make_plateau_data, plateau_score
from hybridopt.tasks.trading import (
    TradingSignalModel,
    make_trading_data,
    momentum_heuristic,
    trading_score,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
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

METHODS: dict[str, tuple[str, ...] | None] = {
    "hybrid": None,  # the library's default phases
    "gradient": ("gradient",),
    "genetic": ("genetic",),
    "es": ("es",),
}
DATA_SEED = 0
SWEEP_TASK = "trading-lstm"
ALIASES = {"trading": "trading-lstm"}
QUICK_SCALE, QUICK_SEEDS, MIN_BUDGET = 0.02, 2, 100


@dataclass(frozen=True)
class Task:
    """One benchmark task: data, score, model and budget."""

    make_data: Callable[[], dict]
    """Train/valid/test splits (data seed fixed)."""
    score_fn: Callable
    """The non-differentiable score, higher is better."""
    make_model: Callable[[], nn.Module]
    """A fresh model (called right after ``torch.manual_seed(seed)``)."""
    max_evaluations: int
    """Training evaluations per run."""
    population_size: int
    """P before ``"auto"`` (``--population task``)."""
    episode_length: int | None = None
    """Rows per episode; None = the whole training split."""
    heuristic: Callable[[dict], torch.Tensor] | None = None
    """Hand-made baseline policy ``data -> actions``, printed for reference."""


TASKS = {
    "trading-lstm": Task(
        make_data=lambda: make_trading_data(window=16, seed=DATA_SEED),
        score_fn=trading_score,
        make_model=lambda: TradingSignalModel(hidden_size=16),
        max_evaluations=20_000,
        population_size=300,
        episode_length=512,
        heuristic=momentum_heuristic,
    ),
    "plateau": Task(
        make_data=lambda: make_plateau_data(seed=DATA_SEED),
        score_fn=plateau_score,
        make_model=PlateauMLP,
        max_evaluations=15_000,
        population_size=64,
    ),
    "deceptive": Task(
        make_data=lambda: make_deceptive_data(seed=DATA_SEED),
        score_fn=deceptive_score,
        make_model=DeceptiveMLP,
        max_evaluations=6_000,
        population_size=64,
    ),
}


@dataclass(frozen=True)
class Job:
    """One training run: what a worker process is sent."""

    task: str
    budget: int
    method: str
    seed: int
    population: str | int
    """``"auto"``, ``"task"`` or an int (``--population``)."""
    auto_supported: bool
    """Whether ``HybridOptimizer`` takes ``population_size="auto"`` (else the resolved int)."""
    histories: str | None = None
    hybrid_phases: tuple[str, ...] | None = None
    """``--hybrid-phases``: the hybrid's phases (None = the library's default)."""
    selection: str | None = None
    """``--selection``: every method's selection rule (None = the library's default)."""


@functools.cache
def _splits(name: str) -> dict:
    return TASKS[name].make_data()


def run_one(job: Job) -> dict:
    """Train one model with one method and seed; return its scores and budgets."""
    task, splits = TASKS[job.task], _splits(job.task)
    torch.manual_seed(job.seed)  # the model init; the library never seeds global state
    model = task.make_model()
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if job.population == "auto":
        resolved = auto_population_size(dim, job.budget)
        population = "auto" if job.auto_supported else resolved
    else:
        population = task.population_size if job.population == "task" else int(job.population)
        resolved = population
    phases = job.hybrid_phases if job.method == "hybrid" else METHODS[job.method]

    def optimizer(model: nn.Module) -> ho.HybridOptimizer:
        return ho.HybridOptimizer(
            model, task.score_fn, data=splits["train"], validation_data=splits["valid"],
            population_size=population, episode_length=task.episode_length, seed=job.seed,
            **({} if phases is None else {"phases": phases}),
            **({} if job.selection is None else {"selection": job.selection}),
        )

    # The starting weights' selection score, as the library computes it (validation, or
    # training + validation rows, whatever its rule): a run that scores only its start
    init_selection = optimizer(copy.deepcopy(model)).fit(max_evaluations=1,
                                                         progress=False).best_score
    opt = optimizer(model)
    init_valid = opt.evaluate(splits["valid"])
    init_heldout = opt.evaluate(splits["test"])
    start = time.perf_counter()
    result = opt.fit(max_evaluations=job.budget, progress=False)
    wall = time.perf_counter() - start
    if isinstance(opt.population_size, int):  # what the library resolved "auto" to
        resolved = opt.population_size
    if job.histories:
        result.to_csv(Path(job.histories) / f"{job.task}_{job.budget}_{job.method}_"
                                            f"seed{job.seed}.csv")
    trace = ";".join(
        f"{s['evaluations']}:{s['from_phase']}>{s['to_phase']}({str(s['reason']).split(':')[0]})"
        for s in result.switches
    )
    names = [str(getattr(p, "name", p)) for p in opt.phases]
    return {
        "task": job.task, "budget": job.budget, "method": job.method, "seed": job.seed,
        "phases": "+".join(names), "dim": dim,
        # The genetic phase's P ("-" without one: SNES sizes its own population)
        "population": resolved if "genetic" in names else "-",
        "population_option": job.population,
        "train": opt.evaluate(splits["train"]),
        "valid": opt.evaluate(splits["valid"]),
        "heldout": opt.evaluate(splits["test"]),
        "selection": result.best_score,
        "init_valid": init_valid,
        "init_heldout": init_heldout,
        "init_selection": init_selection,
        "below_start": int(result.best_score < init_selection),
        "evaluations": result.evaluations,
        "validation_evaluations": result.validation_evaluations,
        "wall_s": wall,
        "switches": len(result.switches),
        "switch_trace": trace,
        "stop_reason": result.stop_reason,
    }


# -- summaries --------------------------------------------------------------------------------


def summarize(runs: list[dict]) -> list[dict]:
    """Per task, budget and method: mean and std over seeds."""
    out = []
    for key in dict.fromkeys((r["task"], r["budget"], r["method"]) for r in runs):
        rows = [r for r in runs if (r["task"], r["budget"], r["method"]) == key]
        summary = {"task": key[0], "budget": key[1], "method": key[2], "seeds": len(rows),
                   "population": rows[0]["population"]}
        for field in ("heldout", "valid", "train", "evaluations", "wall_s", "switches"):
            summary[f"{field}_mean"], summary[f"{field}_std"] = mean_std(r[field] for r in rows)
        summary["below_start"] = sum(r["below_start"] for r in rows)
        out.append(summary)
    return out


def compare_pairs(runs: list[dict], summaries: list[dict]) -> list[dict]:
    """Per task and budget: hybrid - best pure method (by mean held-out), paired over seeds."""
    out = []
    for task, budget in dict.fromkeys((s["task"], s["budget"]) for s in summaries):
        cell = {s["method"]: s for s in summaries if (s["task"], s["budget"]) == (task, budget)}
        pure = [m for m in cell if m != "hybrid"]
        if "hybrid" not in cell or not pure:
            continue
        best = max(pure, key=lambda m: cell[m]["heldout_mean"])

        def by_seed(method: str, task=task, budget=budget) -> dict[int, float]:
            return {r["seed"]: r["heldout"] for r in runs
                    if (r["task"], r["budget"], r["method"]) == (task, budget, method)}

        diff = paired(by_seed("hybrid"), by_seed(best))
        out.append({
            "task": task, "budget": budget, "best_pure": best,
            "hybrid_heldout_mean": cell["hybrid"]["heldout_mean"],
            "best_pure_heldout_mean": cell[best]["heldout_mean"],
            "diff_mean": diff.mean, "diff_std": diff.std, "diff_positive": diff.positive,
            "seeds": diff.n, "hybrid_below_start": cell["hybrid"]["below_start"],
        })
    return out


def tables(summaries: list[dict], pairs: list[dict]) -> str:
    """The two markdown tables: per method, and hybrid against the best pure method."""
    per_method = markdown_table(
        ["task", "budget", "method", "P", "held-out", "valid", "train", "evals", "wall s",
         "switches", "below start"],
        [[s["task"], s["budget"], s["method"], s["population"],
          pm(s["heldout_mean"], s["heldout_std"]), pm(s["valid_mean"], s["valid_std"]),
          pm(s["train_mean"], s["train_std"]), f"{s['evaluations_mean']:.0f}",
          f"{s['wall_s_mean']:.1f}", f"{s['switches_mean']:.1f}",
          f"{s['below_start']}/{s['seeds']}"] for s in summaries])
    against = markdown_table(
        ["task", "budget", "best pure", "hybrid held-out", "best pure held-out",
         "hybrid - best pure (paired)", "seeds > 0", "hybrid below start"],
        [[p["task"], p["budget"], p["best_pure"], f"{p['hybrid_heldout_mean']:.2f}",
          f"{p['best_pure_heldout_mean']:.2f}", pm(p["diff_mean"], p["diff_std"]),
          f"{p['diff_positive']}/{p['seeds']}", f"{p['hybrid_below_start']}/{p['seeds']}"]
         for p in pairs])
    return f"{per_method}\n\n{against}"


def check_targets(pairs: list[dict]) -> list[str]:
    """The issue-12 targets, one line per task and budget and target, each met or missed."""
    lines = []
    for p in pairs:
        where = f"{p['task']} @ {p['budget']}"
        lines.append(
            f"- {where}: hybrid mean held-out {p['hybrid_heldout_mean']:.2f} >= best pure "
            f"({p['best_pure']}) {p['best_pure_heldout_mean']:.2f}: "
            f"{verdict(p['hybrid_heldout_mean'] >= p['best_pure_heldout_mean'])}")
        lines.append(
            f"- {where}: paired hybrid - {p['best_pure']} {pm(p['diff_mean'], p['diff_std'])} "
            f"> 0 ({p['diff_positive']}/{p['seeds']} seeds positive): "
            f"{verdict(p['diff_mean'] > 0)}")
    below = sum(p["hybrid_below_start"] for p in pairs)
    seeds = sum(p["seeds"] for p in pairs)
    if pairs:
        lines.append(f"- every task and budget: hybrid ends below its starting weights' "
                     f"selection score on {below} of {seeds} seeds (target 0): "
                     f"{verdict(below == 0)}")
    return lines


# -- command line -----------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", default=",".join(TASKS),
                   help=f"comma-separated tasks from {', '.join(TASKS)} (default: all)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated methods from {', '.join(METHODS)} (default: all; "
                        "'hybrid' is needed for the paired differences and targets)")
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds 0..N-1, paired across methods (default 5; {QUICK_SEEDS} with "
                        "--quick)")
    p.add_argument("--budgets", default="3000,10000,30000",
                   help=f"budget sweep on {SWEEP_TASK}, besides its own budget (default "
                        "3000,10000,30000; '' for none; only when the task is run)")
    p.add_argument("--budget-scale", type=float, default=None,
                   help=f"multiply every budget (default 1; {QUICK_SCALE} with --quick; at "
                        f"least {MIN_BUDGET})")
    p.add_argument("--population", default="auto",
                   help="population_size: auto (default), task (300 trading, 64 plateau and "
                        "deceptive, the sizes before auto) or an int")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: budgets x {QUICK_SCALE}, {QUICK_SEEDS} seeds")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per worker (default 1; 0 = torch's default)")
    p.add_argument("--out", type=Path, default=Path("runs/hybrid_vs_pure"),
                   help="folder for runs.csv, summary.csv, paired.csv, table.md "
                        "(default runs/hybrid_vs_pure)")
    p.add_argument("--histories", type=Path, default=None,
                   help="folder for one history CSV per run (default: none)")
    p.add_argument("--hybrid-phases", default=None,
                   help="the hybrid's phases, comma-separated (e.g. es,gradient,genetic; "
                        "default: the library's default cycle), to measure a candidate default")
    p.add_argument("--selection", default=None, choices=SELECTIONS,
                   help="every method's selection rule (default: the library's), to measure a "
                        "candidate default")
    args = p.parse_args(argv)
    if args.hybrid_phases is not None:
        args.hybrid_phases = tuple(n.strip() for n in args.hybrid_phases.split(",") if n.strip())
        reason = hybridopt_rejects(phases=args.hybrid_phases)
        if reason:
            p.error(f"--hybrid-phases {args.hybrid_phases} is rejected: {reason}")
    args.tasks = list(dict.fromkeys(ALIASES.get(t.strip(), t.strip())
                                    for t in args.tasks.split(",") if t.strip()))
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for flag, values, allowed in (("--tasks", args.tasks, TASKS),
                                  ("--methods", args.methods, METHODS)):
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            p.error(f"{flag} must name items from {', '.join(allowed)}; got {unknown or values}")
    try:
        args.budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        p.error(f"--budgets must be comma-separated ints; got {args.budgets!r}")
    if any(b < 1 for b in args.budgets):
        p.error(f"--budgets must be >= 1; got {args.budgets}")
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if args.quick else 5
    if args.budget_scale is None:
        args.budget_scale = QUICK_SCALE if args.quick else 1.0
    if args.seeds < 1 or args.budget_scale <= 0 or args.jobs < 1 or args.threads < 0:
        p.error(f"--seeds and --jobs must be >= 1, --budget-scale > 0, --threads >= 0; got "
                f"{args.seeds}, {args.jobs}, {args.budget_scale}, {args.threads}")
    if args.population not in ("auto", "task"):
        try:
            args.population = int(args.population)
        except ValueError:
            p.error(f"--population must be auto, task or an int >= 2; got {args.population!r}")
        if args.population < 2:
            p.error(f"--population must be auto, task or an int >= 2; got {args.population}")
    return args


def cells(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(task, budget) pairs to run: each task at its budget, the sweep task at the others."""
    def scaled(budget: int) -> int:
        return max(MIN_BUDGET, round(budget * args.budget_scale))

    out = []
    for name in args.tasks:
        budgets = [TASKS[name].max_evaluations]
        if name == SWEEP_TASK:
            budgets = sorted({*budgets, *args.budgets})
        out += [(name, b) for b in dict.fromkeys(scaled(b) for b in budgets)]
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    methods = []
    for method in args.methods:
        phases = METHODS[method]
        reason = None if phases is None else hybridopt_rejects(phases=phases)
        if reason:
            print(f"skipping {method}: HybridOptimizer(..., phases={phases}) is rejected here "
                  f"({reason})")
        else:
            methods.append(method)
    auto_supported = hybridopt_rejects((TypeError, ValueError), population_size="auto") is None
    if args.population == "auto" and not auto_supported:
        print('note: this HybridOptimizer does not take population_size="auto" yet; passing '
              "the size its rule gives (hybridopt.population.size.auto_population_size)")
    if args.histories is not None:
        args.histories.mkdir(parents=True, exist_ok=True)
    todo = cells(args)
    # Seeds outer, methods inner: a drift in machine load hits every method alike
    jobs = [Job(name, budget, method, seed, args.population, auto_supported,
                None if args.histories is None else str(args.histories), args.hybrid_phases,
                args.selection)
            for name, budget in todo for seed in range(args.seeds) for method in methods]
    print(f"torch {torch.__version__}; {len(jobs)} runs: {len(todo)} task/budget cells x "
          f"{args.seeds} seeds x methods {', '.join(methods)}; selection "
          f"{args.selection or 'the default'}; {args.jobs} jobs x "
          f"{args.threads} thread(s)", flush=True)
    for name in dict.fromkeys(t for t, _ in todo):
        task = TASKS[name]
        if task.heuristic is not None:
            test = _splits(name)["test"]
            heuristic = float(task.score_fn(task.heuristic(test), test))
            print(f"{name}: momentum heuristic held-out score {heuristic:.2f} (reference)")

    done: list[dict] = []

    def on_result(job: Job, run: dict) -> None:
        done.append(run)
        print(f"  {run['task']} @ {run['budget']} {run['method']:<9} seed {run['seed']}: "
              f"valid {run['valid']:.2f} held-out {run['heldout']:.2f} (P {run['population']}, "
              f"{run['evaluations']} evals, {run['wall_s']:.0f} s, switches "
              f"{run['switch_trace'] or '-'})", flush=True)
        write_csv(args.out / "runs.csv", done)  # as runs finish: a crash later loses less

    start = time.perf_counter()
    runs = run_parallel(run_one, jobs, args.jobs, args.threads, on_result)
    summaries = summarize(runs)
    pairs = compare_pairs(runs, summaries)
    targets = check_targets(pairs)
    report = (f"{tables(summaries, pairs)}\n\nissue-12 targets ({args.seeds} paired seeds; "
              f"best pure among {', '.join(m for m in methods if m != 'hybrid')}):\n"
              + "\n".join(targets or ["- not checked: needs hybrid and a pure method"]))
    print(f"\n{report}\n")
    write_csv(args.out / "runs.csv", runs)
    write_csv(args.out / "summary.csv", summaries)
    write_csv(args.out / "paired.csv", pairs)
    (args.out / "table.md").write_text(report + "\n")
    print(f"{len(runs)} runs in {time.perf_counter() - start:.0f} s; results in {args.out}/")
    return {"runs": runs, "summaries": summaries, "pairs": pairs, "targets": targets}


if __name__ == "__main__":
    main()
