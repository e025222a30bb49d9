"""The seed scenario: trading signals from an LSTM, trained to maximise a trading score.

A model (LSTM -> linear hidden layer -> 3-way softmax: buy, sell, hold) sees a window of past
returns of a synthetic price series and picks an action per step. Its score relates the success
rate of its operations to how many it makes: there is no target per sample, so no ordinary loss.
hybridopt alternates policy-gradient steps and a genetic population, switching when one stalls,
and keeps the weights that score best on the training and validation rows together. The test
split is never used for training or selection: it is the held-out score.

Run:  python examples/trading_signals.py            (the `make demo` default: 60,000
                                                     evaluations, about a minute)
      python examples/trading_signals.py --phases gradient --max-evaluations 5000
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

import hybridopt as ho
from hybridopt.tasks.trading import (
    TradingSignalModel,
    make_trading_data,
    momentum_heuristic,
    trading_score,
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--phases", default="auto",
                   help='comma-separated phases, the first starts (default "auto": the '
                        "library's choice, es,genetic,gradient with episodes)")
    p.add_argument("--max-evaluations", type=int, default=60_000)
    p.add_argument("--max-time", type=float, default=150.0,
                   help="seconds; keeps `make demo` under three minutes (0 = no limit)")
    p.add_argument("--population-size", default="auto",
                   help='individuals of the genetic phase, or "auto" (the default: sized from '
                        "the dimension and the budget)")
    p.add_argument("--episode-length", type=int, default=512,
                   help="rows per episode (0 = the whole training split)")
    p.add_argument("--window", type=int, default=16, help="past returns the LSTM sees")
    p.add_argument("--hidden-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: this small LSTM gains nothing from more, and on "
                        "a busy 2-core machine two threads can make a run 10x slower; 0 = torch's)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<timestamp>)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)  # the example's own model init; the library never seeds
    splits = make_trading_data(window=args.window, seed=args.seed)
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    model = TradingSignalModel(hidden_size=args.hidden_size)

    def score(actions, data):
        return float(trading_score(actions, data))

    opt = ho.HybridOptimizer(
        model,
        trading_score,
        data=train,
        validation_data=valid,
        phases="auto" if args.phases == "auto" else tuple(args.phases.split(",")),
        population_size=(args.population_size if args.population_size == "auto"
                         else int(args.population_size)),
        episode_length=args.episode_length or None,
        seed=args.seed,
        threads=args.threads or None,
    )
    start = {"train": opt.evaluate(train), "valid": opt.evaluate(valid),
             "test": opt.evaluate(test)}
    t0 = time.perf_counter()
    result = opt.fit(max_evaluations=args.max_evaluations, max_time=args.max_time or None,
                     progress=not args.no_progress)
    final = {"train": opt.evaluate(train), "valid": opt.evaluate(valid),
             "test": opt.evaluate(test)}
    heuristic = {name: score(momentum_heuristic(d), d) for name, d in splits.items()}

    print(f"\nhybridopt on the synthetic trading task ({time.perf_counter() - t0:.0f} s, "
          f"{result.evaluations} evaluations, phases {','.join(opt.phases)})")
    print(f"{'policy':<28}{'train':>8}{'valid':>8}{'held-out':>10}")
    print(f"{'random (expected)':<28}{0.0:>8.1f}{0.0:>8.1f}{0.0:>10.1f}")
    for name, s in (("momentum heuristic", heuristic), ("model at start", start),
                    ("model after fit", final)):
        print(f"{name:<28}{s['train']:>8.1f}{s['valid']:>8.1f}{s['test']:>10.1f}")
    counts = {}
    for row in result.history:
        counts[row["phase"]] = counts.get(row["phase"], 0) + 1
    print(f"steps per phase: {counts}; switches: {len(result.switches)}")
    for s in result.switches:
        print(f"  at {s['evaluations']:>6} evaluations {s['from_phase']} -> {s['to_phase']}: "
              f"{s['reason']}")
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    result.save(out)
    print(f"run folder: {out} (history.csv, plot.png, best_model.pt)")
    return {"start": start, "final": final, "heuristic": heuristic, "result": result}


if __name__ == "__main__":
    main()
