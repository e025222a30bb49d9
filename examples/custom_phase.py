"""A phase of your own: random search around the start, plugged in next to the gradient phase.

A phase is any object with a ``name``, the ``unit`` of its step, ``patience`` and ``max_checks``
(None: the controller's defaults) and the methods of :class:`hybridopt.phases.base.Phase`. The
optimiser hands it a :class:`~hybridopt.phases.base.PhaseContext` once (``bind``): the model's
weight layout, ``evaluate(population [P, D], episode) -> ScoreBatch`` on the configured backend,
and the optimiser's generator, through which every random draw must go (same seed, same
result, also after a resume). Budgets, best-so-far tracking, validation, stall detection,
switching, history, callbacks and checkpoints then work as for the built-in phases.

This one is a (1 + K) random search: each step scores the centre and K samples
``centre + sigma * noise`` on the same episode and moves the centre to the best of them.

Run:  python examples/custom_phase.py                      (~30 s on one core)
      python examples/custom_phase.py --max-evaluations 10000 --samples 32 --sigma 0.02
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
from torch import Tensor

import hybridopt as ho
from hybridopt.phases.base import PhaseContext
from hybridopt.tasks.trading import TradingSignalModel, make_trading_data, trading_score


@dataclass
class RandomSearchState:
    """What changes during a visit: the centre, its score on the last episode, the steps."""

    center: Tensor
    score: float | None = None
    steps: int = 0


class RandomSearch:
    """(1 + K) random search around the incoming weights.

    Args:
        samples: K, weight vectors sampled around the centre per step (each costs one
            evaluation, the centre one more).
        sigma: standard deviation of the noise added to every weight.
        patience: steps without a new best before the controller switches away; None: the
            controller's ``StallConfig.patience``.
        max_steps: steps per visit; None: until it stalls.
    """

    name = "random"
    unit = "step"

    def __init__(self, samples: int = 16, sigma: float = 0.05, patience: int | None = None,
                 max_steps: int | None = None) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an int >= 1; got samples = {samples!r}.")
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0; got sigma = {sigma!r}.")
        self.samples, self.sigma = samples, float(sigma)
        self.patience, self.max_checks = patience, max_steps

    def bind(self, context: PhaseContext) -> None:
        """Keep what the optimiser hands over: layout, evaluator, generator, device."""
        self.context = context

    def init(self, start: Tensor, best: Tensor) -> RandomSearchState:
        """Start a visit at ``start`` (``best`` is not needed: the centre is always kept)."""
        return RandomSearchState(center=start.detach().clone())

    def step(self, state: RandomSearchState, episode) -> tuple[RandomSearchState, dict]:
        """Score the centre and K samples on ``episode``; move the centre to the best."""
        ctx = self.context
        # Samples around the centre, drawn on the optimiser's generator (CPU), then moved
        noise = torch.randn(self.samples, ctx.flat.dim, generator=ctx.generator)
        noise = noise.to(state.center.device, state.center.dtype)
        population = torch.cat([state.center[None], state.center + self.sigma * noise])

        # One call scores them all (vmap, loop, joblib or ray, as configured)
        batch = ctx.evaluate(population, episode)
        scores = torch.where(batch.finite, batch.scores, -math.inf)

        # Keep the best; on a tie the centre stays (index 0 comes first)
        best = int(torch.argmax(scores))
        state.center = population[best].clone()
        state.score = float(scores[best])
        state.steps += 1
        return state, {
            "evaluations": len(population),
            "nonfinite": batch.n_nonfinite,
            "flat": bool(scores.max() == scores.min()),
            "moved": best != 0,
            "sample_score_max": float(scores[1:].max()),
        }

    def candidate(self, state: RandomSearchState) -> tuple[Tensor, float | None]:
        """The centre; its score is a training score only when every step sees all the data."""
        fixed = self.context.fixed_data and state.score is not None
        return state.center, state.score if fixed else None

    def cost(self, state: RandomSearchState) -> int:
        """The centre and K samples."""
        return self.samples + 1

    def handoff(self, state: RandomSearchState) -> Tensor:
        """The next phase starts from the centre (with ``StallConfig(start_from="handoff")``)."""
        return state.center

    def state_dict(self, state: RandomSearchState) -> dict:
        """Tensors and plain numbers only: checkpoints load with ``weights_only=True``."""
        return {"center": state.center.detach().cpu(), "score": state.score,
                "steps": state.steps}

    def load_state_dict(self, saved: dict) -> RandomSearchState:
        """The state :meth:`state_dict` wrote, on the optimiser's device."""
        return RandomSearchState(center=saved["center"].to(self.context.device),
                                 score=saved["score"], steps=saved["steps"])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--max-evaluations", type=int, default=4_000)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--sigma", type=float, default=0.05)
    p.add_argument("--hidden-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # the example's own model init; the library never seeds
    splits = make_trading_data(window=16, seed=args.seed)
    model = TradingSignalModel(hidden_size=args.hidden_size)
    opt = ho.HybridOptimizer(
        model, trading_score, data=splits["train"], validation_data=splits["valid"],
        phases=("gradient", RandomSearch(samples=args.samples, sigma=args.sigma, patience=20)),
        gradient=ho.GradientConfig(patience=30), episode_length=512, seed=args.seed,
    )
    start = opt.evaluate(splits["test"])
    result = opt.fit(max_evaluations=args.max_evaluations, progress=not args.no_progress)
    held_out = opt.evaluate(splits["test"])

    steps = {}
    for row in result.history:
        steps[row["phase"]] = steps.get(row["phase"], 0) + 1
    print(f"\ngradient + random search on the trading task: {result.evaluations} evaluations, "
          f"steps per phase {steps}")
    for s in result.switches:
        print(f"  at {s['evaluations']:>6} evaluations {s['from_phase']} -> {s['to_phase']}: "
              f"{s['reason']}")
    print(f"best selection score {result.best_score:.2f} (train {result.best_train_score:.2f}); "
          f"held-out {start:.2f} at the start, {held_out:.2f} after fit")
    return {"result": result, "start": start, "held_out": held_out, "steps": steps}


if __name__ == "__main__":
    main()
