"""Generation time: in-process vmap vs Ray actors, and the overhead Ray adds per generation.

For P in {300, 1024} individuals of the seed trading model (``TradingSignalModel`` on
``make_trading_data``, scored on an episode of the training split, as ``episode_length`` does)
it times one generation's population evaluation

- in process: ``PopulationEvaluator(method="vmap")`` with all cores, and with one thread
  (the fair reference for one actor, which Ray gives one CPU),
- with ``backend="ray"``: 1 actor and 2 actors of 1 CPU each, on a local Ray,

and the same for a tiny model (one Linear layer on 16 rows), whose evaluation costs almost
nothing: there the Ray time *is* the per-generation overhead (shipping the [P, D] shard,
scheduling, returning the scores). Times are medians over ``--reps`` generations after a
warm-up; actor start-up is excluded. Ray scores are checked to equal the in-process ones.

Run: ``python benchmarks/ray_scaling.py`` (about 2-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from hybridopt.backends import make_backend
from hybridopt.data import slice_data
from hybridopt.population.evaluate import PopulationEvaluator
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import Scorer
from hybridopt.tasks.trading import TradingSignalModel, make_trading_data, trading_score

RAY_INIT = {"_node_ip_address": "127.0.0.2", "include_dashboard": False, "num_cpus": 2}


def tiny_model() -> nn.Module:
    return nn.Linear(2, 3)


def tiny_data() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(16, 2, generator=g), "next_return": torch.randn(16, generator=g)}


def population(model: nn.Module, p: int) -> torch.Tensor:
    flat = FlatParams.from_module(model)
    noise = torch.randn(p, flat.dim, generator=torch.Generator().manual_seed(p))
    return flat.vector(model) + 0.1 * noise


def median_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_process(model, data, bounds, pop, reps, threads) -> tuple[float, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        evaluator = PopulationEvaluator(model, Scorer(trading_score), FlatParams.from_module(model),
                                        method="vmap")
        episode = slice_data(data, *bounds)
        seconds = median_time(lambda: evaluator.evaluate(pop, episode), reps)
        return seconds, evaluator.evaluate(pop, episode).scores
    finally:
        torch.set_num_threads(before)


def on_ray(model, data, bounds, pops, reps, actors) -> dict[int, tuple[float, torch.Tensor]]:
    backend = make_backend(
        "ray", model=model, score_fn=trading_score, score_mode="batched",
        flat=FlatParams.from_module(model), data=data, num_actors=actors, cpus_per_actor=1,
    )
    with backend:
        results = {}
        for pop in pops:
            seconds = median_time(lambda pop=pop: backend.evaluate(pop, bounds), reps)
            results[len(pop)] = (seconds, backend.evaluate(pop, bounds).scores)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1024])
    parser.add_argument("--episode", type=int, default=256, help="rows per episode")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60: token auth is on by default
    import ray

    torch.manual_seed(0)
    cases = {
        "trading LSTM": (TradingSignalModel(hidden_size=16).eval(),
                         make_trading_data(window=16)["train"], (0, args.episode)),
        "tiny Linear": (tiny_model().eval(), tiny_data(), (0, 16)),
    }
    cores = torch.get_num_threads()
    ray.init(**RAY_INIT)
    rows = []
    try:
        for name, (model, data, bounds) in cases.items():
            pops = [population(model, p) for p in args.sizes]
            local = {len(p): in_process(model, data, bounds, p, args.reps, cores) for p in pops}
            single = {len(p): in_process(model, data, bounds, p, args.reps, 1) for p in pops}
            ray1 = on_ray(model, data, bounds, pops, args.reps, actors=1)
            ray2 = on_ray(model, data, bounds, pops, args.reps, actors=2)
            for p in args.sizes:
                same = all(torch.equal(r[p][1], local[p][1]) for r in (single, ray1, ray2))
                rows.append((name, p, FlatParams.from_module(model).dim, local[p][0],
                             single[p][0], ray1[p][0], ray2[p][0], same))
    finally:
        ray.shutdown()

    print(f"\nGeneration time (median of {args.reps}), {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__}, ray {ray.__version__}; trading episode = "
          f"{args.episode} rows")
    head = (f"{'model':<14}{'P':>6}{'D':>7}{'vmap x' + str(cores) + 'thr':>13}"
            f"{'vmap x1thr':>12}{'ray 1 actor':>13}{'ray 2 actors':>14}"
            f"{'ray overhead':>14}{'speed-up 2/1':>14}{'same':>6}")
    print(head)
    print("-" * len(head))
    for name, p, d, loc, one, r1, r2, same in rows:
        print(f"{name:<14}{p:>6}{d:>7}{loc:>12.3f}s{one:>11.3f}s{r1:>12.3f}s{r2:>13.3f}s"
              f"{r1 - one:>13.3f}s{r1 / r2:>13.2f}x{'yes' if same else 'NO':>6}")
    print("ray overhead = ray 1 actor - in process with 1 thread (the actor's share of CPU);\n"
          "on the tiny model it is the whole per-generation cost of going through Ray.")


if __name__ == "__main__":
    main()
