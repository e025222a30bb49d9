"""Several objectives on the trading task: the hybrid's Pareto front against NSGA-II alone.

The two objectives of :func:`hybridopt.tasks.trading.trading_objectives`, both maximised:
``success_rate`` (the fraction of buy/sell actions whose direction is right) and
``operation_rate`` (the fraction of rows where the model trades). Per seed, from the same
initial weights (``torch.manual_seed(seed)`` right before the model is built) and at the same
budget of training evaluations, it trains

- ``hybrid``: ``objectives=`` with the default phases (gradient on per-visit scalarisations,
  genetic by NSGA-II, one Pareto archive);
- ``genetic``: ``objectives=`` with ``phases=("genetic",)`` (NSGA-II alone);
- ``single``: the single-score run, ``trading_score`` (``100 (2 sr - 1) sqrt(op)``, the seed
  user's hand-made relation) with the default phases; its best model (``opt.model``, picked
  on the validation split) is the one to beat.

Each front model is re-scored on the held-out split (never used for training or selection;
:meth:`FitResult.score_front`). Hypervolumes use a fixed reference point, ``(0, 0)`` by default
(both objectives live in [0, 1]; ``--reference 0.5,0`` counts only success rates above a coin
flip, where an always-trading random policy adds nothing); a front's held-out hypervolume
counts the front models that are non-dominated there. It reports mean ± std over seeds of
the hypervolume on the training, validation and held-out splits and the paired differences
hybrid - genetic, the front sizes and operation-rate spans, then the targets of issue 13,
each met or missed:

- the hybrid's mean hypervolume >= the genetic phase's alone, on the held-out split (the
  training split's is printed as a second line);
- on every seed, the hybrid's front has a model that, on the held-out split, beats the
  single-score run's best model on both objectives or matches it on one and beats it on the
  other (Pareto dominance; exact comparisons);
- on every seed, the hybrid's front has at least 5 non-dominated models between the least and
  the most active (the front size, ends included).

Episodes: the front runs score every generation on the whole training split
(``--episode-length 0``), so that objectives are comparable across generations and feed the
archive; the single-score run keeps the seed example's 512-row episodes
(``--single-episode-length``), the setting it was tuned with. ``population_size="auto"``.

Runs go to ``--jobs`` worker processes (default 2) with ``--threads`` torch threads each
(default 1). Outputs in ``--out`` (default ``runs/front``): ``runs.csv`` (one row per run),
``fronts.csv`` (one row per front model and split) and ``table.md`` (the printed tables and
targets).

Run: ``python benchmarks/front.py`` (5 seeds, 20,000 evaluations), ``--seeds 3 --budget 5000``,
or ``--quick`` (budget x 0.02, 2 seeds: a smoke test; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import hybridopt as ho
from hybridopt.front import hypervolume
from hybridopt.tasks.trading import (
    TradingSignalModel,
    make_trading_data,
    trading_objectives,
    trading_score,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stats import (  # noqa: E402  (benchmarks/_stats.py, next to this script)
    markdown_table,
    mean_std,
    paired,
    pm,
    run_parallel,
    verdict,
    write_csv,
)

OBJECTIVES = ("success_rate", "operation_rate")
REFERENCE = (0.0, 0.0)  # default; --reference 0.5,0 counts only edges over a coin flip
METHODS: dict[str, tuple[str, ...] | None] = {
    "hybrid": None,  # the library's default phases
    "genetic": ("genetic",),
    "single": None,  # trading_score, default phases
}
SPLITS = ("train", "valid", "test")
DATA_SEED, BUDGET, MIN_FRONT = 0, 20_000, 5
QUICK_SCALE, QUICK_SEEDS, MIN_BUDGET = 0.02, 2, 100


@dataclass(frozen=True)
class Job:
    """One training run: what a worker process is sent."""

    method: str
    seed: int
    budget: int
    episode_length: int | None
    """Rows per episode of this run; None = the whole training split."""
    reference: tuple[float, float] = REFERENCE
    """The hypervolume's reference point."""


@functools.cache
def _splits() -> dict:
    return make_trading_data(window=16, seed=DATA_SEED)


def _objectives(actions: torch.Tensor, data: dict) -> dict[str, float]:
    return {k: float(v) for k, v in trading_objectives(actions, data).items()}


def _points(front: list[dict[str, float]]) -> torch.Tensor:
    return torch.tensor([[p[n] for n in OBJECTIVES] for p in front], dtype=torch.float64)


def dominates(a: dict[str, float], b: dict[str, float]) -> bool:
    """``a`` beats ``b`` on every objective, or matches it on some and beats it on the rest."""
    return (all(a[n] >= b[n] for n in OBJECTIVES) and any(a[n] > b[n] for n in OBJECTIVES))


def nondominated(front: list[dict[str, float]]) -> int:
    """How many points of ``front`` no other point of it dominates."""
    return sum(not any(dominates(q, p) for q in front) for p in front)


def run_one(job: Job) -> dict:
    """Train one model with one method and seed; return its front (or best model) per split."""
    splits = _splits()
    torch.manual_seed(job.seed)  # the model init; the library never seeds global state
    model = TradingSignalModel(hidden_size=16)
    common = dict(data=splits["train"], validation_data=splits["valid"],
                  population_size="auto", episode_length=job.episode_length, seed=job.seed)
    if job.method == "single":
        opt = ho.HybridOptimizer(model, trading_score, **common)
    else:
        phases = METHODS[job.method]
        opt = ho.HybridOptimizer(model, trading_objectives, objectives=OBJECTIVES, **common,
                                 **({} if phases is None else {"phases": phases}))
    start = time.perf_counter()
    result = opt.fit(max_evaluations=job.budget, progress=False)
    wall = time.perf_counter() - start
    chosen = {split: _objectives(opt.actions(splits[split]), splits[split]) for split in SPLITS}
    row = {
        "method": job.method, "seed": job.seed, "budget": job.budget,
        "episode_length": job.episode_length or "all", "population": opt.population_size,
        "evaluations": result.evaluations, "wall_s": wall, "switches": len(result.switches),
        "stop_reason": result.stop_reason,
        "heldout_trading_score": float(trading_score(opt.actions(splits["test"]),
                                                     splits["test"])),
        **{f"chosen_{split}_{n}": chosen[split][n] for split in SPLITS for n in OBJECTIVES},
    }
    if job.method == "single":
        return {**row, "front": []}
    front = {
        "train": [e["train"] for e in result.pareto_front],
        "valid": [e["valid"] if e["valid"] is not None else dict.fromkeys(OBJECTIVES, 0.0)
                  for e in result.pareto_front],
        "test": result.score_front(opt.model, trading_objectives, splits["test"]),
    }
    activity = [p["operation_rate"] for p in front["train"]]
    row.update({
        "front_size": len(result.pareto_front),
        "least_active": min(activity, default=float("nan")),
        "most_active": max(activity, default=float("nan")),
        "test_nondominated": nondominated(front["test"]),
        **{f"hv_{split}": hypervolume(_points(front[split]), job.reference) if front[split]
           else 0.0 for split in SPLITS},
    })
    points = [{"method": job.method, "seed": job.seed, "index": i, "split": split, **p}
              for split in SPLITS for i, p in enumerate(front[split])]
    return {**row, "front": points}


# -- summaries --------------------------------------------------------------------------------


def _by_seed(runs: list[dict], method: str, field: str) -> dict[int, float]:
    return {r["seed"]: r[field] for r in runs if r["method"] == method}


def summarize(runs: list[dict]) -> list[dict]:
    """Per front method: mean and std over seeds of the hypervolumes and front sizes."""
    out = []
    for method in ("hybrid", "genetic"):
        rows = [r for r in runs if r["method"] == method]
        if not rows:
            continue
        summary = {"method": method, "seeds": len(rows)}
        for field in ("hv_train", "hv_valid", "hv_test", "front_size", "test_nondominated",
                      "least_active", "most_active", "evaluations", "wall_s"):
            summary[f"{field}_mean"], summary[f"{field}_std"] = mean_std(r[field] for r in rows)
        summary["front_min"] = min(r["front_size"] for r in rows)
        out.append(summary)
    return out


def beats_single(runs: list[dict], method: str) -> dict[int, bool]:
    """Per seed: does ``method``'s front have a held-out point dominating the single run's?"""
    single = {r["seed"]: {n: r[f"chosen_test_{n}"] for n in OBJECTIVES}
              for r in runs if r["method"] == "single"}
    out = {}
    for r in runs:
        if r["method"] == method and r["seed"] in single:
            test = [p for p in r["front"] if p["split"] == "test"]
            out[r["seed"]] = any(dominates(p, single[r["seed"]]) for p in test)
    return out


def tables(runs: list[dict], summaries: list[dict]) -> str:
    """Per method, per seed against the single-score run, and the paired differences."""
    per_method = markdown_table(
        ["method", "seeds", "HV train", "HV valid", "HV held-out", "front size (min)",
         "held-out non-dominated", "least active", "most active", "evals", "wall s"],
        [[s["method"], s["seeds"], pm(s["hv_train_mean"], s["hv_train_std"], 4),
          pm(s["hv_valid_mean"], s["hv_valid_std"], 4),
          pm(s["hv_test_mean"], s["hv_test_std"], 4),
          f"{s['front_size_mean']:.1f} ({s['front_min']})",
          f"{s['test_nondominated_mean']:.1f}", f"{s['least_active_mean']:.3f}",
          f"{s['most_active_mean']:.3f}", f"{s['evaluations_mean']:.0f}",
          f"{s['wall_s_mean']:.0f}"] for s in summaries])
    single = [r for r in runs if r["method"] == "single"]
    hybrid, genetic = beats_single(runs, "hybrid"), beats_single(runs, "genetic")
    per_seed = markdown_table(
        ["seed", "single: held-out success", "held-out operation", "held-out trading score",
         "hybrid front dominates it", "genetic front dominates it"],
        [[r["seed"], f"{r['chosen_test_success_rate']:.4f}",
          f"{r['chosen_test_operation_rate']:.4f}", f"{r['heldout_trading_score']:.2f}",
          "yes" if hybrid.get(r["seed"]) else "no", "yes" if genetic.get(r["seed"]) else "no"]
         for r in sorted(single, key=lambda r: r["seed"])])
    differences = []
    for split in SPLITS:
        diff = paired(_by_seed(runs, "hybrid", f"hv_{split}"),
                      _by_seed(runs, "genetic", f"hv_{split}"))
        differences.append([split, pm(diff.mean, diff.std, 4), f"{diff.positive}/{diff.n}"])
    against = markdown_table(["split", "HV hybrid - genetic (paired)", "seeds > 0"],
                             differences)
    return f"{per_method}\n\n{against}\n\n{per_seed}"


def check_targets(runs: list[dict], summaries: list[dict],
                  reference: tuple[float, float] = REFERENCE) -> list[str]:
    """The issue-13 targets, one line each, met or missed."""
    cell = {s["method"]: s for s in summaries}
    lines = []
    if "hybrid" in cell and "genetic" in cell:
        for split, label in (("test", "held-out"), ("train", "training")):
            h, g = cell["hybrid"][f"hv_{split}_mean"], cell["genetic"][f"hv_{split}_mean"]
            lines.append(f"- hypervolume on the {label} split, reference {reference}: hybrid "
                         f"mean {h:.4f} >= genetic alone {g:.4f}: {verdict(h >= g)}")
    if "hybrid" in cell and any(r["method"] == "single" for r in runs):
        wins = beats_single(runs, "hybrid")
        lines.append(f"- the hybrid's held-out front has a model that dominates the single-score "
                     f"run's best model (both objectives, or one matched and one beaten) on "
                     f"{sum(wins.values())} of {len(wins)} seeds (target: every seed): "
                     f"{verdict(bool(wins) and all(wins.values()))}")
    if "hybrid" in cell:
        sizes = sorted(_by_seed(runs, "hybrid", "front_size").values())
        lines.append(f"- the hybrid's front has >= {MIN_FRONT} non-dominated models between the "
                     f"least and the most active on every seed (sizes {sizes}): "
                     f"{verdict(bool(sizes) and min(sizes) >= MIN_FRONT)}")
    return lines


# -- command line -----------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=None,
                   help=f"seeds 0..N-1, paired across methods (default 5; {QUICK_SEEDS} with "
                        "--quick)")
    p.add_argument("--budget", type=int, default=None,
                   help=f"training evaluations per run (default {BUDGET:,}; x {QUICK_SCALE} with "
                        f"--quick, at least {MIN_BUDGET})")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated methods from {', '.join(METHODS)} (default: all)")
    p.add_argument("--episode-length", type=int, default=0,
                   help="rows per episode of the front runs (default 0: the whole split)")
    p.add_argument("--single-episode-length", type=int, default=512,
                   help="rows per episode of the single-score run (default 512, the seed "
                        "example's; 0: the whole split)")
    p.add_argument("--reference", default="0,0",
                   help="the hypervolume's reference point, success_rate,operation_rate "
                        "(default 0,0; 0.5,0 counts only success rates above a coin flip)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: budget x {QUICK_SCALE}, {QUICK_SEEDS} seeds")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads per worker (default 1; 0 = torch's default)")
    p.add_argument("--out", type=Path, default=Path("runs/front"),
                   help="folder for runs.csv, fronts.csv, table.md (default runs/front)")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        p.error(f"--methods must name items from {', '.join(METHODS)}; got "
                f"{unknown or args.methods}")
    try:
        args.reference = tuple(float(v) for v in args.reference.split(","))
    except ValueError:
        args.reference = ()
    if len(args.reference) != len(OBJECTIVES):
        p.error(f"--reference must be two comma-separated numbers; got {args.reference!r}")
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if args.quick else 5
    if args.budget is None:
        args.budget = max(MIN_BUDGET, round(BUDGET * QUICK_SCALE)) if args.quick else BUDGET
    if (args.seeds < 1 or args.budget < 1 or args.jobs < 1 or args.threads < 0
            or args.episode_length < 0 or args.single_episode_length < 0):
        p.error(f"--seeds, --budget and --jobs must be >= 1, --threads and the episode lengths "
                f">= 0; got {args.seeds}, {args.budget}, {args.jobs}, {args.threads}, "
                f"{args.episode_length}, {args.single_episode_length}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    episodes = {m: (args.single_episode_length if m == "single" else args.episode_length) or None
                for m in args.methods}
    # Seeds outer, methods inner: a drift in machine load hits every method alike
    jobs = [Job(method, seed, args.budget, episodes[method], args.reference)
            for seed in range(args.seeds) for method in args.methods]
    print(f"torch {torch.__version__}; {len(jobs)} runs: {args.seeds} seeds x methods "
          f"{', '.join(args.methods)} at {args.budget} evaluations; {args.jobs} jobs x "
          f"{args.threads} thread(s)", flush=True)

    done: list[dict] = []

    def on_result(job: Job, run: dict) -> None:
        done.append(run)
        if run["method"] == "single":
            what = (f"held-out success {run['chosen_test_success_rate']:.3f} operation "
                    f"{run['chosen_test_operation_rate']:.3f}")
        else:
            what = (f"front {run['front_size']} (operation {run['least_active']:.3f}.."
                    f"{run['most_active']:.3f}), HV train {run['hv_train']:.4f} held-out "
                    f"{run['hv_test']:.4f}")
        print(f"  {run['method']:<8} seed {run['seed']}: {what} ({run['evaluations']} evals, "
              f"{run['wall_s']:.0f} s)", flush=True)
        write_csv(args.out / "runs.csv", [_flat(r) for r in done])

    start = time.perf_counter()
    runs = run_parallel(run_one, jobs, args.jobs, args.threads, on_result)
    summaries = summarize(runs)
    targets = check_targets(runs, summaries, args.reference)
    report = (f"{tables(runs, summaries)}\n\nissue-13 targets ({args.seeds} paired seeds, "
              f"{args.budget} evaluations):\n" + "\n".join(targets or ["- not checked"]))
    print(f"\n{report}\n")
    write_csv(args.out / "runs.csv", [_flat(r) for r in runs])
    write_csv(args.out / "fronts.csv", [p for r in runs for p in r["front"]])
    (args.out / "table.md").write_text(report + "\n")
    print(f"{len(runs)} runs in {time.perf_counter() - start:.0f} s; results in {args.out}/")
    return {"runs": runs, "summaries": summaries, "targets": targets}


def _flat(run: dict) -> dict:
    """A run's row for runs.csv (its front points go to fronts.csv)."""
    return {k: v for k, v in run.items() if k != "front"}


if __name__ == "__main__":
    main()
