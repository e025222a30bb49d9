"""The seed scenario with two objectives: the Pareto front of success rate against trading.

The seed user folds "how often the buy/sell actions are right" and "how often the model trades"
into one score by a hand-made relation, and every change of that relation means a new run.
Here the LSTM (buy, sell or hold on a synthetic price series) is trained on both objectives at
once, all maximised (:func:`hybridopt.tasks.trading.trading_objectives`):

- ``success_rate``: the fraction of its operations (buy or sell) whose direction is right;
- ``operation_rate``: the fraction of rows on which it trades.

The genetic phase selects by NSGA-II (Pareto rank, then crowding distance) and keeps a Pareto
archive; SNES (and the gradient phase, where it runs) maximises a weighted sum of the two, with
other weights on each visit, so that visits spread along the front. The result is the front
itself: one model per trade-off, none beaten on both objectives by another. The script prints
it as a table, with each front model's objectives on the held-out split (never used for
training or selection), and writes the run folder (``front.csv``, ``front.png``,
``front_models.pt``, ...).

Run:  python examples/trading_front.py                      (~2 minutes on 2 cores)
      python examples/trading_front.py --max-evaluations 3000 --max-time 0
      python examples/trading_front.py --phases genetic     (NSGA-II alone)
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

import hybridopt as ho
from hybridopt.front import format_front, hypervolume
from hybridopt.tasks.trading import (
    TradingSignalModel,
    make_trading_data,
    momentum_heuristic,
    trading_objectives,
)

OBJECTIVES = ("success_rate", "operation_rate")
REFERENCE = (0.0, 0.0)  # the hypervolume's reference point: both objectives live in [0, 1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--phases", default="auto",
                   help='comma-separated phases, the first starts (default "auto": the '
                        "library's choice, es,genetic with several objectives)")
    p.add_argument("--max-evaluations", type=int, default=10_000)
    p.add_argument("--max-time", type=float, default=150.0, help="seconds (0 = no limit)")
    p.add_argument("--population-size", default="auto",
                   help='"auto" (the library\'s rule) or an int')
    p.add_argument("--episode-length", type=int, default=0,
                   help="rows per episode (default 0: the whole training split, so that every "
                        "generation's objectives are comparable and feed the Pareto archive)")
    p.add_argument("--n-steps", type=int, default=6000, help="length of the price series")
    p.add_argument("--window", type=int, default=16, help="past returns the LSTM sees")
    p.add_argument("--hidden-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<timestamp>)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.population_size != "auto":
        args.population_size = int(args.population_size)
    return args


def objectives_of(actions: torch.Tensor, data: dict) -> dict[str, float]:
    """The two objectives of one action sequence, as floats."""
    return {k: float(v) for k, v in trading_objectives(actions, data).items()}


def heldout_table(front: list[dict], heldout: list[dict], digits: int = 4) -> str:
    """Index, held-out objectives and whether another front model beats it on both there."""
    names = list(OBJECTIVES)
    points = torch.tensor([[h[n] for n in names] for h in heldout], dtype=torch.float64)
    ge = (points[None] >= points[:, None]).all(-1)  # [i, j]: j >= i everywhere
    dominated = (ge & (points[None] > points[:, None]).any(-1)).any(-1)
    header = ["index", *[f"test_{n}" for n in names], "dominated on test"]
    rows = [[str(i), *[f"{h[n]:.{digits}f}" for n in names], "yes" if bool(d) else "no"]
            for i, (h, d) in enumerate(zip(heldout, dominated))]
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in [header, *rows])


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)  # the example's own model init; the library never seeds
    splits = make_trading_data(n_steps=args.n_steps, window=args.window, seed=args.seed)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    model = TradingSignalModel(hidden_size=args.hidden_size)

    opt = ho.HybridOptimizer(
        model,
        trading_objectives,
        data=train,
        validation_data=valid,
        objectives=OBJECTIVES,
        phases="auto" if args.phases == "auto" else tuple(args.phases.split(",")),
        population_size=args.population_size,
        episode_length=args.episode_length or None,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    result = opt.fit(max_evaluations=args.max_evaluations, max_time=args.max_time or None,
                     progress=not args.no_progress)
    wall = time.perf_counter() - t0
    front = result.pareto_front
    heldout = result.score_front(opt.model, trading_objectives, test)

    print(f"\nPareto front of {', '.join(OBJECTIVES)} on the synthetic trading task "
          f"({wall:.0f} s, {result.evaluations} evaluations, phases {','.join(opt.phases)}): "
          f"{len(front)} models, best success rate first")
    print(format_front(front, OBJECTIVES))
    print("\nthe same models on the held-out split (never used for training or selection):")
    print(heldout_table(front, heldout))
    volume = {
        "train": hypervolume(torch.tensor([[e["train"][n] for n in OBJECTIVES] for e in front]),
                             REFERENCE),
        "test": hypervolume(torch.tensor([[h[n] for n in OBJECTIVES] for h in heldout]),
                            REFERENCE),
    }
    print(f"\nhypervolume above {REFERENCE}: train {volume['train']:.4f}, "
          f"held-out {volume['test']:.4f}")
    chosen = objectives_of(opt.actions(test), test)
    heuristic = objectives_of(momentum_heuristic(test), test)
    print("opt.model (the front model chosen by the default select) on held-out: "
          + ", ".join(f"{n} {chosen[n]:.4f}" for n in OBJECTIVES))
    print("momentum heuristic on held-out (reference): "
          + ", ".join(f"{n} {heuristic[n]:.4f}" for n in OBJECTIVES))
    for s in result.switches:
        print(f"  at {s['evaluations']:>6} evaluations {s['from_phase']} -> {s['to_phase']}: "
              f"{s['reason']}")
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    result.save(out)
    result.front_csv(out / "front.csv", test=heldout)
    print(f"run folder: {out} (front.csv with held-out columns, front.png, front_models.pt, "
          "history.csv, plot.png)")
    return {"result": result, "heldout": heldout, "hypervolume": volume, "chosen": chosen,
            "optimizer": opt}


if __name__ == "__main__":
    main()
