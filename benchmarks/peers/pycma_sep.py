"""pycma's separable CMA-ES on the flat weights: ask/tell, one candidate evaluated at a time.

Settings, from pycma's documentation:

- ``cma.CMAEvolutionStrategy(x0, sigma0, {"CMA_diagonal": True, "seed": seed + 1,
  "popsize": 4 + floor(3 ln D)})``: sep-CMA-ES (diagonal covariance throughout) from the
  model's initial weights, the default population size written out, ``sigma0 = sigma`` (pycma:
  "the optimum is expected to lie within about x0 +- 3 sigma0"); pycma seeds with the time
  for seed 0, hence ``seed + 1``;
- pycma minimises: it is told the negated scores (NaN/inf as a very large value);
- when ``es.stop()`` fires before the budget is spent (``tolflatfitness`` on a score that is
  flat around x0, say), it restarts as ``cma.fmin(..., restarts=k, incpopsize=2)`` does (IPOP):
  from x0, with the population size doubled;
- each generation offers its best candidate and the distribution mean (``es.mean``, pycma's
  "favorite" solution; scoring it on training data costs one evaluation) to the tracker.
"""

from __future__ import annotations

import math

import cma
import numpy as np
import torch

from peers._common import Setup, Tracker, evaluate_one

WORST = 1e30  # what pycma is told for a non-finite score


def run(setup: Setup) -> dict:
    """sep-CMA-ES with IPOP restarts on one task and seed, within the budget."""
    tracker = Tracker(setup)
    model = tracker.model
    x0 = setup.x0.double().numpy()
    popsize = setup.population(int(4 + math.floor(3 * math.log(setup.dim))))
    restarts, stops = 0, []

    def start(popsize: int, restart: int) -> cma.CMAEvolutionStrategy:
        options = {"CMA_diagonal": True, "seed": setup.seed + 1 + 1000 * restart,
                   "popsize": popsize, "verbose": -9}
        return cma.CMAEvolutionStrategy(x0, setup.sigma, options)

    es = start(popsize, 0)
    while tracker.affordable(es.popsize + 1):
        candidates = es.ask()
        scores = [
            evaluate_one(model, torch.as_tensor(x, dtype=torch.float32), setup.train,
                         setup.score_fn)
            for x in candidates
        ]
        tracker.count(len(candidates))
        es.tell(candidates, [-s if math.isfinite(s) else WORST for s in scores])
        best = int(np.argmax(scores))
        tracker.offer(torch.as_tensor(candidates[best]), scores[best])
        mean = torch.as_tensor(es.mean)
        tracker.offer(mean, tracker.train_score(mean))
        tracker.end_generation()
        if es.stop():
            stops.append(",".join(sorted(es.stop())))
            restarts += 1
            es = start(2 * es.popsize, restarts)
    stop = "budget" if not stops else f"budget; {restarts} IPOP restarts after {stops[0]}"
    return tracker.result(population=popsize, eval_path="per-candidate loop",
                          stop_reason=stop)
