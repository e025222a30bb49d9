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

The parts live next to this script: ``_compare_runs.py`` (tasks, one run, ``run_job``),
``_compare_report.py`` (summaries, tables, targets) and ``_compare_speed.py`` (throughput and
time breakdown).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from hybridopt.selection import SELECTIONS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers, next to this script)
from _compare_report import (  # noqa: E402  (benchmarks/_compare_report.py, next to this script)
    check_es,
    check_targets,
    compare_pairs,
    pairs_table,
    summarize,
    task_table,
)
from _compare_runs import (  # noqa: E402  (benchmarks/_compare_runs.py, next to this script)
    HYBRIDOPT,
    METHODS,
    QUICK_BUDGET,
    QUICK_POPULATION,
    SIGMA_SCALE,
    TASKS,
    Job,
    _splits,
    run_job,
)
from _compare_speed import (  # noqa: E402  (benchmarks/_compare_speed.py, next to this script)
    check_speed,
    population_throughput,
    print_breakdown,
    time_breakdown,
)
from _stats import (  # noqa: E402  (benchmarks/_stats.py, next to this script)
    hybridopt_rejects,
    run_parallel,
    write_csv,
)

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
    p.add_argument("--selection", default=None, choices=SELECTIONS,
                   help="hybridopt's selection rule (default: the library's), to measure a "
                        "candidate default")
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
          f"{', '.join(methods)}; sigma scales: {args.sigma_scale}; hybridopt selection: "
          f"{args.selection or 'the default'}", flush=True)

    budgets = {name: QUICK_BUDGET if args.quick
               else max(1, round(TASKS[name].budget * args.budget_scale)) for name in args.tasks}
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs, curves, summaries, pairs, throughput, report = [], [], [], [], [], []
    if "runs" in args.parts:
        # Tasks, then seeds, then methods: a drift in machine load hits every method alike
        jobs = [Job(name, method, seed, budgets[name], args.sigma_scale.get(method, 0.3),
                    args.quick, args.population, auto_supported, args.selection)
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
