"""Tunables as frozen, keyword-only dataclasses: one per phase, one for the controller.

Checkpoints, the CLI and logged hyperparameters all derive from these objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{owner}.{name} must be > 0; got {name} = {value!r}.")


def _unit(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not 0 <= value <= 1:
            raise ValueError(f"{owner}.{name} must be in [0, 1]; got {name} = {value!r}.")


@dataclass(frozen=True, kw_only=True)
class GradientConfig:
    """Settings of the policy-gradient score maximiser (REINFORCE with a baseline)."""

    samples: int = 16
    """K, action sequences sampled from the policy per step; each costs one evaluation."""
    baseline: str = "loo"
    """"loo" (leave-one-out mean of the other K-1 scores), "running" (running mean of past
    scores, the classic one) or "none"."""
    baseline_momentum: float = 0.9
    """Decay of the running-mean baseline."""
    normalize_advantages: bool = True
    """Divide advantages by their standard deviation over the K samples."""
    entropy_coef: float = 0.003
    """Weight of the entropy bonus, which keeps the policy from collapsing too early."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global norm to this; None disables clipping."""
    optimizer: str | Callable[..., Any] = "adam"
    """A ``torch.optim`` class name ("adam", "sgd", "adamw", ...) or a factory
    ``params -> Optimizer``."""
    lr: float = 2e-2
    """Learning rate passed to the optimiser when ``optimizer`` is a name."""
    optimizer_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments for the named optimiser."""
    warmup_steps: int = 10
    """Linear learning-rate warm-up at the start of every gradient phase, so that a fresh
    Adam does not jolt weights handed over by the genetic phase; 0 disables it (and a
    ``scheduler`` replaces it)."""
    scheduler: Callable[..., Any] | None = None
    """Optional factory ``optimizer -> LRScheduler``, stepped once per gradient step."""
    aux_loss: Callable[..., Any] | None = None
    """Optional differentiable auxiliary loss ``aux_loss(logits, data) -> Tensor``, e.g. a
    :func:`hybridopt.losses.masked_cross_entropy` on the observed items."""
    aux_weight: float = 1.0
    """Weight of ``aux_loss`` in the total loss."""
    max_steps: int | None = None
    """Budget cap of one gradient phase, in steps; None = until it stalls."""

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 2:
            raise ValueError(f"GradientConfig.samples must be an int >= 2; got {self.samples!r}.")
        if self.baseline not in ("loo", "running", "none"):
            raise ValueError(
                f'GradientConfig.baseline must be "loo", "running" or "none"; '
                f"got {self.baseline!r}."
            )
        _positive("GradientConfig", lr=self.lr)
        _unit("GradientConfig", baseline_momentum=self.baseline_momentum)
        if self.entropy_coef < 0:
            raise ValueError(f"GradientConfig.entropy_coef must be >= 0; got {self.entropy_coef}.")


@dataclass(frozen=True, kw_only=True)
class GeneticConfig:
    """Settings of the genetic phase over flat weight vectors (DEAP + vectorised variation)."""

    tournament_size: int = 3
    """Individuals per selection tournament."""
    elite: int = 2
    """Best individuals copied unchanged into the next generation."""
    crossover: str = "blend"
    """Vectorised crossover: "blend" (BLX-alpha, as DEAP's cxBlend) or "uniform"."""
    crossover_prob: float = 0.5
    """Probability that a pair of parents is crossed."""
    blend_alpha: float = 0.3
    """Alpha of the blend crossover."""
    mutation_prob: float = 0.8
    """Probability that an offspring is mutated."""
    gene_mutation_prob: float = 0.1
    """Probability that each weight of a mutated offspring gets Gaussian noise."""
    mutation_scale: float = 0.1
    """Noise std relative to each parameter tensor's own scale (its RMS at seeding)."""
    init_scale: float = 0.05
    """Smallest spread of the seeded population around the current weights (relative to each
    parameter tensor's RMS)."""
    init_scale_max: float = 1.0
    """Largest spread: seeded individuals' spreads run log-evenly from ``init_scale`` to this,
    so a population handed a stalled model both refines it and explores far from it."""
    hall_of_fame: int = 5
    """Size of DEAP's HallOfFame of the best individuals ever seen."""
    max_generations: int | None = None
    """Budget cap of one genetic phase, in generations; None = until it stalls."""
    select: Callable[..., Any] | None = None
    """Your own DEAP selection ``select(individuals, k) -> list``; default tournament."""
    mate: Callable[..., Any] | None = None
    """Your own vectorised crossover ``mate(a [M, D], b [M, D], generator) -> (a', b')``."""
    mutate: Callable[..., Any] | None = None
    """Your own vectorised mutation ``mutate(x [M, D], scale [D], generator) -> x'``."""

    def __post_init__(self) -> None:
        if self.crossover not in ("blend", "uniform"):
            raise ValueError(
                f'GeneticConfig.crossover must be "blend" or "uniform"; got {self.crossover!r}.'
            )
        if self.tournament_size < 1:
            raise ValueError(
                f"GeneticConfig.tournament_size must be >= 1; got {self.tournament_size}."
            )
        if self.elite < 0:
            raise ValueError(f"GeneticConfig.elite must be >= 0; got {self.elite}.")
        _unit(
            "GeneticConfig",
            crossover_prob=self.crossover_prob,
            mutation_prob=self.mutation_prob,
            gene_mutation_prob=self.gene_mutation_prob,
        )
        _positive("GeneticConfig", mutation_scale=self.mutation_scale, init_scale=self.init_scale)
        if self.init_scale_max < self.init_scale:
            raise ValueError(
                f"GeneticConfig.init_scale_max must be >= init_scale = {self.init_scale}; "
                f"got {self.init_scale_max!r}."
            )


@dataclass(frozen=True, kw_only=True)
class StallConfig:
    """When the controller decides a phase has stalled and switches to the other one."""

    patience: int = 15
    """Checks (generations, or steps when ``gradient_patience`` is None) without improvement
    before a switch."""
    gradient_patience: int | None = 60
    """Patience of the gradient phase, in steps: a step costs ``samples + 1`` evaluations,
    a generation about ``population_size``, so steps get more checks."""
    min_delta: float = 0.0
    """Improvement of the best score that counts as progress (must exceed this)."""
    relative: bool = False
    """Read ``min_delta`` as a fraction of ``|best|`` instead of an absolute amount."""
    monitor: str = "selection"
    """"selection": the score that picks the best weights (validation when given);
    "train": the training score."""
    min_steps: int = 5
    """A phase runs at least this many checks before it may be judged stalled."""
    flat_patience: int = 5
    """Gradient steps in a row whose K sampled scores were all equal (the policy gradient is
    exactly zero: a flat score, as pycma's flat-fitness criterion) before a switch. A flat
    generation of the genetic phase does not count towards its patience: it widens its
    mutations and keeps exploring instead."""

    def __post_init__(self) -> None:
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"StallConfig.patience must be an int >= 1; got {self.patience!r}.")
        if self.gradient_patience is not None and self.gradient_patience < 1:
            raise ValueError(
                f"StallConfig.gradient_patience must be >= 1 or None; "
                f"got {self.gradient_patience!r}."
            )
        if self.min_delta < 0:
            raise ValueError(f"StallConfig.min_delta must be >= 0; got {self.min_delta!r}.")
        if self.monitor not in ("selection", "train"):
            raise ValueError(
                f'StallConfig.monitor must be "selection" or "train"; got {self.monitor!r}.'
            )


def to_dict(config: Any) -> dict:
    """A config as plain data (callables shown by name), for logs and checkpoints."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = getattr(value, "__name__", repr(value)) if callable(value) else value
    return out
