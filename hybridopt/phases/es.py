"""SNES phase: separable natural evolution strategies over flat weights.

Separable NES (Schaul, Glasmachers and Schmidhuber 2011; Wierstra et al. 2014, JMLR 15) keeps a
Gaussian search distribution ``N(mu, diag(sigma^2))`` over the ``D`` weights. Each generation it
draws ``P`` samples ``z_k = mu + sigma * s_k`` (mirrored: ``s`` and ``-s``), scores them, turns the
scores into rank-based utilities ``u_k`` and follows the natural gradient::

    mu    <- mu + center_lr * sigma * sum_k u_k s_k
    sigma <- sigma * exp(sigma_lr / 2 * sum_k u_k (s_k^2 - 1))

Only the ranks of the scores matter, so any monotone transform of ``score_fn`` gives the same run.
The centre ``mu`` is scored in the same call as the samples (one extra row), so the phase knows the
training score of what it offers when every generation sees the same data.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from hybridopt.config import ESConfig
from hybridopt.data import Data
from hybridopt.phases.base import PhaseContext
from hybridopt.phases.genetic import tensor_scales


def default_population_size(dim: int) -> int:
    """The literature's ``4 + floor(3 ln D)`` samples, rounded up to even (mirrored pairs)."""
    p = 4 + math.floor(3 * math.log(dim))
    return p + p % 2


def utilities(p: int) -> Tensor:
    """Fitness shaping ``[P]`` float64, best rank first: ``max(0, log(P/2 + 1) - log k)``
    normalised to sum 1, minus ``1/P`` (so they sum to 0 and the worst half gets ``-1/P``)."""
    k = torch.arange(1, p + 1, dtype=torch.float64)
    u = (math.log(p / 2 + 1) - torch.log(k)).clamp(min=0)
    return u / u.sum() - 1 / p


def mirrored_noise(eps: Tensor) -> Tensor:
    """``[2M, D]`` noise ``[eps; -eps]``: row ``M + i`` is the exact negative of row ``i``."""
    return torch.cat([eps, -eps])


class ESState(NamedTuple):
    """What changes during an SNES phase."""

    mu: Tensor
    """Centre of the search distribution ``[D]``."""
    sigma: Tensor
    """Standard deviation of each weight ``[D]``."""
    generation: int
    """Generations run in this visit."""
    best_weights: Tensor
    """Best sample or centre seen in this visit ``[D]`` (meaningful with fixed data)."""
    best_score: float
    """Its score; ``-inf`` before the first generation."""
    scores: Tensor
    """Last generation's scores ``[P + 1]`` float64, the centre's last; non-finite as ``-inf``."""


class ESPhase:
    """Separable NES over the model's flat weights, one generation per step.

    Args:
        config: the phase's settings (:class:`~hybridopt.config.ESConfig`); None: the defaults.

    Example:
        >>> phase = ESPhase(ESConfig(population_size=20))
        >>> phase.bind(context)
        >>> state = phase.init(start, best)
        >>> state, metrics = phase.step(state, episode)
        >>> weights, score = phase.candidate(state)
    """

    name = "es"
    unit = "generation"

    def __init__(self, config: ESConfig | None = None) -> None:
        if config is not None and not isinstance(config, ESConfig):
            raise TypeError(f"config must be an ESConfig or None; got {type(config).__name__}.")
        self.config = config or ESConfig()
        self.patience = self.config.patience
        self.max_checks = self.config.max_generations
        self.context: PhaseContext | None = None
        self.population_size = 0
        self.sigma_lr = 0.0
        self._utilities = torch.zeros(0, dtype=torch.float64)

    def bind(self, context: PhaseContext) -> None:
        """Keep the context and size the population and learning rates from ``D``."""
        cfg, d = self.config, context.flat.dim
        p = cfg.population_size or default_population_size(d)
        self.population_size = p + p % 2 if cfg.mirrored else p
        self.sigma_lr = cfg.sigma_lr or (3 + math.log(d)) / (5 * math.sqrt(d))
        self._utilities = utilities(self.population_size)
        self.context = context

    def _ctx(self) -> PhaseContext:
        if self.context is None:
            raise RuntimeError("ESPhase.bind(context) must be called before the phase is used.")
        return self.context

    def init(self, start: Tensor, best: Tensor) -> ESState:
        """Centre the search at ``start`` ``[D]`` with ``sigma = init_sigma * RMS`` of each
        parameter tensor (floored, so an all-zero tensor still gets explored). ``best`` is not
        needed: the optimiser keeps it."""
        ctx = self._ctx()
        mu = start.detach().to(ctx.device).clone()
        sigma = self.config.init_sigma * tensor_scales(ctx.flat, mu)
        return ESState(
            mu=mu,
            sigma=sigma,
            generation=0,
            best_weights=mu.clone(),
            best_score=-math.inf,
            scores=torch.empty(0, dtype=torch.float64),
        )

    def step(self, state: ESState, episode: Data) -> tuple[ESState, dict]:
        """One generation: sample around ``mu``, score samples and centre, natural gradient."""
        ctx, p = self._ctx(), self.population_size
        mu, sigma = state.mu, state.sigma

        # Sampling: standard normal noise, drawn with the optimiser's generator on its device
        rows = p // 2 if self.config.mirrored else p
        eps = torch.randn(
            rows, ctx.flat.dim, generator=ctx.generator, device=ctx.generator.device,
            dtype=mu.dtype,
        ).to(mu.device)
        noise = mirrored_noise(eps) if self.config.mirrored else eps
        population = torch.cat([mu + sigma * noise, mu.unsqueeze(0)])

        # Evaluation of the P samples and the centre (last row) in one call; non-finite = worst
        batch = ctx.evaluate(population, episode)
        scores = torch.where(batch.finite, batch.scores.double(), -math.inf).cpu()

        # Fitness shaping: the k-th best sample gets u_k (stable ranks: ties keep their order)
        order = torch.argsort(scores[:p], descending=True, stable=True)
        u = torch.empty(p, dtype=torch.float64).index_copy_(0, order, self._utilities)
        u = u.to(device=mu.device, dtype=mu.dtype)

        # Natural gradient of the expected utility w.r.t. mu and log sigma
        grad_mu = u @ noise
        grad_sigma = u @ (noise * noise - 1)
        new_mu = mu + self.config.center_lr * sigma * grad_mu
        new_sigma = sigma * torch.exp(self.sigma_lr / 2 * grad_sigma)

        # Best of this generation (centre included) against the best of the visit
        top = int(torch.argmax(scores))
        best_weights, best_score = state.best_weights, state.best_score
        if float(scores[top]) > best_score:
            best_weights = population[top].clone()
            best_score = float(scores[top])

        finite = scores[torch.isfinite(scores)]
        finite_samples = scores[:p][torch.isfinite(scores[:p])]
        metrics = {
            "evaluations": p + 1,
            "nonfinite": batch.n_nonfinite,
            "flat": finite.numel() == 0 or bool(finite.max() == finite.min()),
            "generation_best": float(scores[top]),
            "population_mean": (
                float(finite_samples.mean()) if finite_samples.numel() else -math.inf
            ),
            "center_score": float(scores[p]),
            "sigma_mean": float(new_sigma.mean()),
        }
        new_state = ESState(
            mu=new_mu,
            sigma=new_sigma,
            generation=state.generation + 1,
            best_weights=best_weights,
            best_score=best_score,
            scores=scores,
        )
        return new_state, metrics

    def candidate(self, state: ESState) -> tuple[Tensor, float | None]:
        """With fixed data: the best centre or sample scored so far and its score. With random
        episodes scores are not comparable across generations, so the current centre, unscored."""
        if self._ctx().fixed_data and state.generation > 0:
            return state.best_weights, state.best_score
        return state.mu, None

    def cost(self, state: ESState) -> int:
        """P samples plus the centre."""
        return self.population_size + 1

    def handoff(self, state: ESState) -> Tensor:
        """The candidate's weights."""
        return self.candidate(state)[0]

    def state_dict(self, state: ESState) -> dict:
        """The state as tensors and numbers (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "mu": state.mu.cpu(),
            "sigma": state.sigma.cpu(),
            "generation": state.generation,
            "best_weights": state.best_weights.cpu(),
            "best_score": state.best_score,
            "scores": state.scores.cpu(),
        }

    def load_state_dict(self, saved: dict) -> ESState:
        """Rebuild the state from :meth:`state_dict` output, on the context's device."""
        device = self._ctx().device
        return ESState(
            mu=saved["mu"].to(device),
            sigma=saved["sigma"].to(device),
            generation=int(saved["generation"]),
            best_weights=saved["best_weights"].to(device),
            best_score=float(saved["best_score"]),
            scores=saved["scores"],
        )
