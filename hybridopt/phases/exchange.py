"""Exchange between a gradient learner and the genetic population, within the genetic phase.

Two published ways for a population and a policy-gradient learner to help each other inside one
search, both off by default (:class:`hybridopt.config.GeneticConfig`):

- **Injection** (ERL, Khadka & Tumer 2018), ``inject_every``: every few generations a learner
  starts from the generation's best, takes ``learner_steps`` REINFORCE steps, and replaces the
  generation's worst individual. It is scored at once on the generation's episode, so it competes
  in the next selection like any other member. Its fate there (kept as an elite, selected as a
  parent, or discarded) is counted, so the history shows whether injection helps.
- **Lamarckian steps** (CEM-RL, Pourchot & Sigaud 2019), ``lamarckian``: every generation the
  first kept elites take ``lamarckian_steps`` REINFORCE steps and the stepped weights replace
  them, before the generation is scored (the unstepped elites were offered as candidates in the
  generation before, so nothing found is lost).

The steps are those of the built-in :class:`hybridopt.phases.gradient.GradientPhase`, bound to
the same :class:`PhaseContext`: it trains the live model, which the genetic phase does not
otherwise use, and the model's weights and train/eval mode are put back after each run of
steps. Each step costs the learner's ``samples`` evaluations, counted in the generation's
``evaluations`` and in its ``cost`` beforehand; every draw comes from the context's generator.
A step is clipped per weight to ``inject_clip`` times the weight's scale (``state.scale``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from hybridopt.config import GeneticConfig, GradientConfig
from hybridopt.data import Data
from hybridopt.phases.base import PhaseContext
from hybridopt.phases.gradient import GradientPhase

FATES = ("injected", "elite", "selected", "discarded", "lamarckian")
"""Counters of a visit (``exchange/<name>`` in the history): injected individuals, their fates
at the next generation, and Lamarckian individuals."""


def default_learner() -> GradientConfig:
    """The learner's settings when ``GeneticConfig.learner`` is None: a few steps from a fresh
    optimiser, so no learning-rate warm-up and no collapse guard."""
    return GradientConfig(warmup_steps=0, collapse_patience=None)


def fresh_counts() -> dict[str, int]:
    """Zeroed counters for a new visit."""
    return dict.fromkeys(FATES, 0)


class Exchange:
    """The learner and the bookkeeping of ERL injection and Lamarckian steps.

    Args:
        config: the genetic phase's settings (``inject_every``, ``learner_steps``,
            ``inject_clip``, ``lamarckian``, ``lamarckian_steps``, ``learner``).
    """

    def __init__(self, config: GeneticConfig) -> None:
        self.config = config
        self.learner = GradientPhase(config.learner or default_learner())
        self.samples = self.learner.config.samples
        self.active = config.inject_every is not None or config.lamarckian > 0

    def bind(self, context: PhaseContext) -> None:
        """Bind the learner to the genetic phase's context (the live model, scorer, generator).

        Raises:
            ValueError: when the exchange is on and the score has several objectives.
        """
        if self.active and context.scorer.n_objectives is not None:
            raise ValueError(
                "GeneticConfig.inject_every and GeneticConfig.lamarckian need a single "
                f"objective; got {context.scorer.n_objectives} objectives (set inject_every="
                "None and lamarckian=0)."
            )
        self.context = context
        self.learner.bind(context)

    def due(self, generation: int) -> bool:
        """Whether generation ``generation`` (from 0) ends with an injection."""
        every = self.config.inject_every
        return every is not None and (generation + 1) % every == 0

    def lamarckian_rows(self, generation: int) -> int:
        """Elites that take Lamarckian steps in ``generation`` (none in the first)."""
        return min(self.config.lamarckian, self.config.elite) if generation > 0 else 0

    def cost(self, generation: int, fixed_data: bool) -> int:
        """Evaluations the exchange adds to ``generation``: the learner's steps, the injected
        individual's score, and (on fixed data) re-scoring the stepped elites."""
        cfg = self.config
        k = self.lamarckian_rows(generation)
        cost = k * cfg.lamarckian_steps * self.samples + (k if fixed_data else 0)
        if self.due(generation):
            cost += cfg.learner_steps * self.samples + 1
        return cost

    # -- the learner ------------------------------------------------------------------------

    def train(self, start: Tensor, steps: int, episode: Data, scale: Tensor) -> tuple[
            Tensor, dict[str, int | float]]:
        """``steps`` REINFORCE steps from ``start`` ``[D]`` on ``episode``; the step clipped to
        ``inject_clip * scale`` per weight. The live model is put back as it was.

        Returns:
            The new weights ``[D]`` and ``{"evaluations", "nonfinite", "clipped"}`` (the
            fraction of weights whose step was clipped).
        """
        model, flat = self.context.model, self.context.flat
        saved, training = flat.vector(model).detach().clone(), model.training
        state = self.learner.init(start)
        spent = nonfinite = 0
        for _ in range(steps):
            state, metrics = self.learner.step(state, episode)
            spent += metrics["evaluations"]
            nonfinite += metrics.get("nonfinite", 0)
        weights = flat.vector(model).detach().clone()
        state.optimizer.zero_grad(set_to_none=True)
        flat.load(model, saved)
        model.train(training)

        # Clipped step: at most inject_clip scales per weight from the start
        clipped = 0.0
        if self.config.inject_clip is not None:
            bound = self.config.inject_clip * scale.to(weights)
            step = weights - start
            clipped = float((step.abs() > bound).float().mean())
            weights = start + torch.minimum(torch.maximum(step, -bound), bound)
        return weights, {"evaluations": spent, "nonfinite": nonfinite, "clipped": clipped}

    # -- within a generation -----------------------------------------------------------------

    def lamarckian(self, state: Any, episode: Data) -> dict:
        """Before a generation is scored: the first kept elites (rows ``[:k]``) take their
        steps and are written back, as new individuals to be scored with the generation.

        Returns:
            ``{"evaluations", "nonfinite", "rows", "before"}``: what the steps spent, the rows
            and their scores before the steps (for the gain once scored).
        """
        k = self.lamarckian_rows(state.generation)
        out = {"evaluations": 0, "nonfinite": 0, "rows": k, "before": state.scores[:k].clone()}
        for i in range(k):  # a loop over a few elites, each a run of gradient steps
            weights, spent = self.train(state.population[i], self.config.lamarckian_steps,
                                        episode, state.scale)
            state.population[i] = weights
            out["evaluations"] += spent["evaluations"]
            out["nonfinite"] += spent["nonfinite"]
        if k:
            state.scores[:k] = -math.inf
            state.evaluated[:k] = False
            state.uids[:k] = state.next_uid + torch.arange(k)
            state.next_uid += k
            state.exchange["lamarckian"] += k
        return out

    def lamarckian_gain(self, state: Any, done: dict, fixed_data: bool) -> dict:
        """The mean score change of the stepped elites (fixed data only: on random episodes
        their old scores come from another episode)."""
        k = done["rows"]
        if not k or not fixed_data:
            return {}
        return {"exchange/lamarckian_gain": float((state.scores[:k] - done["before"]).mean())}

    def inject(self, state: Any, episode: Data) -> dict:
        """After a generation is scored, when due: a learner from the generation's best
        replaces the worst individual and is scored on ``episode`` (one evaluation).

        Returns:
            ``{"evaluations", "nonfinite"}`` and, when injected, the learner's gain over its
            start (``exchange/injected_gain``) and the share of clipped weights.
        """
        if not self.due(state.generation):
            return {"evaluations": 0, "nonfinite": 0}
        best = int(torch.argmax(state.scores))
        start = state.population[best].clone()
        weights, spent = self.train(start, self.config.learner_steps, episode, state.scale)

        # Scored with the generation's evaluator, on its episode, like every member
        batch = self.context.evaluate(weights.unsqueeze(0), episode)
        score = torch.where(batch.finite, batch.scores, -math.inf).to(state.scores.dtype)

        # The worst individual (never the best itself) makes room
        others = state.scores.clone()
        others[best] = math.inf
        worst = int(torch.argmin(others))
        state.population[worst] = weights.to(state.population)
        state.scores[worst] = score[0]
        state.evaluated[worst] = True
        state.uids[worst] = state.next_uid
        state.next_uid += 1
        state.injected = torch.tensor([worst])
        state.exchange["injected"] += 1
        return {
            "evaluations": spent["evaluations"] + 1,
            "nonfinite": spent["nonfinite"] + batch.n_nonfinite,
            "exchange/injected_gain": float(score[0] - state.scores[best]),
            "exchange/clipped": spent["clipped"],
        }

    def fates(self, state: Any, elites: Tensor, parents: Tensor) -> None:
        """At the next generation's selection: count each injected row as kept among the
        ``elites``, else ``selected`` as a parent, else discarded."""
        rows = state.injected
        elite = torch.isin(rows, elites.cpu())
        selected = ~elite & torch.isin(rows, parents.cpu())
        counts = state.exchange
        counts["elite"] += int(elite.sum())
        counts["selected"] += int(selected.sum())
        counts["discarded"] += int((~elite & ~selected).sum())
        state.injected = torch.zeros(0, dtype=torch.long)

    def metrics(self, state: Any) -> dict[str, int]:
        """The visit's counters as history columns."""
        return {f"exchange/{name}": state.exchange[name] for name in FATES}
