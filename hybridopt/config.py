"""Tunables as frozen, keyword-only dataclasses: one per phase, one for the controller.

Checkpoints, the CLI and logged hyperparameters all derive from these objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from hybridopt.checks import UNIT, Range, above, at_least, check_fields, field_error

# Ranges of the number fields; the types come from the annotations (see hybridopt.checks).
GRADIENT_RANGES = {
    "samples": at_least(2),
    "baseline_momentum": UNIT,
    "entropy_coef": at_least(0),
    "max_grad_norm": above(0),
    "lr": above(0),
    "warmup_steps": at_least(0),
    "max_steps": at_least(1),
    "patience": at_least(1),
    "collapse_patience": at_least(1),
    "collapse_drop": above(0),
    "collapse_entropy": at_least(0),
    "revert_lr_factor": Range(low=0, high=1, low_open=True),
}
GENETIC_RANGES = {
    "tournament_size": at_least(1),
    "elite": at_least(0),
    "crossover_prob": UNIT,
    "blend_alpha": at_least(0),
    "mutation_prob": UNIT,
    "gene_mutation_prob": UNIT,
    "mutation_scale": above(0),
    "init_scale": above(0),
    "init_scale_max": above(0),
    "hall_of_fame": at_least(1),
    "max_generations": at_least(1),
    "patience": at_least(1),
    "inject_every": at_least(1),
    "learner_steps": at_least(1),
    "inject_clip": above(0),
    "lamarckian": at_least(0),
    "lamarckian_steps": at_least(1),
}
ES_RANGES = {
    "population_size": at_least(2),
    "init_sigma": above(0),
    "center_lr": above(0),
    "sigma_lr": above(0),
    "patience": at_least(1),
    "max_generations": at_least(1),
}
STALL_RANGES = {
    "patience": at_least(1),
    "min_delta": at_least(0),
    "min_steps": at_least(0),
    "flat_patience": at_least(1),
    "max_share": Range(low=0, high=1, low_open=True),
}
# Keys of optimizer_kwargs that other fields (or make_optimizer itself) already pass
RESERVED_OPTIMIZER_KWARGS = ("params", "lr")


@dataclass(frozen=True, kw_only=True)
class GradientConfig:
    """Settings of the policy-gradient score maximiser (REINFORCE with a baseline)."""

    samples: int = 16
    """K, action sequences sampled from the policy per step; each costs one evaluation."""
    baseline: Literal["loo", "running", "none"] = "loo"
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
    collapse_patience: int | None = 20
    """Collapse guard: steps in a row with the policy collapsed (entropy below
    ``collapse_entropy``) or the mean sampled score more than ``collapse_drop`` below the visit's
    best, before the model reverts to that best step's weights; None turns the guard off."""
    collapse_drop: float = 0.25
    """Relative fall of the mean sampled score below the visit's best that counts as bad."""
    collapse_entropy: float = 0.05
    """Mean per-row policy entropy (nats) below which the policy counts as collapsed."""
    revert_lr_factor: float = 0.5
    """Each revert multiplies the learning rate by this."""
    patience: int = 60
    """Steps without a new best before the phase counts as stalled: a step costs ``samples + 1``
    evaluations, a generation about ``population_size``, so steps get more checks."""

    def __post_init__(self) -> None:
        check_fields(self, GRADIENT_RANGES)
        kwargs = self.optimizer_kwargs
        if not all(isinstance(key, str) for key in kwargs):
            raise field_error(
                "GradientConfig", "optimizer_kwargs", kwargs,
                "a dict of keyword arguments with string keys", TypeError,
            )
        reserved = [key for key in RESERVED_OPTIMIZER_KWARGS if key in kwargs]
        if reserved:
            raise field_error(
                "GradientConfig", "optimizer_kwargs", kwargs,
                f"a dict without {' or '.join(map(repr, reserved))} (the learning rate is "
                "GradientConfig.lr; the parameters are the model's)",
            )
        if kwargs and callable(self.optimizer):
            # A factory is called as optimizer(params): the keywords would be ignored silently
            raise field_error(
                "GradientConfig", "optimizer_kwargs", kwargs,
                "empty when optimizer is a factory (it is called as optimizer(params), so "
                "put the keywords inside the factory, or name the optimizer instead)",
            )


@dataclass(frozen=True, kw_only=True)
class GeneticConfig:
    """Settings of the genetic phase over flat weight vectors (DEAP + vectorised variation)."""

    tournament_size: int = 3
    """Individuals per selection tournament."""
    elite: int = 2
    """Best individuals copied unchanged into the next generation."""
    crossover: Literal["blend", "uniform"] = "blend"
    """Vectorised crossover: "blend" (BLX-alpha, as DEAP's cxBlend) or "uniform"."""
    crossover_prob: float = 0.5
    """Probability that a pair of parents is crossed."""
    blend_alpha: float = 0.3
    """Alpha of the blend crossover."""
    mutation_prob: float = 0.8
    """Probability that an offspring is mutated."""
    gene_mutation_prob: float = 0.1
    """Probability that each weight of a mutated offspring gets Gaussian noise."""
    mutation_scale: float = 1.0
    """Noise std relative to each parameter tensor's own scale (its RMS at seeding). Until
    this release the field was documented as 0.1 but not applied (the noise was 1x the
    scale); 1.0 keeps the behaviour every benchmark measured."""
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
    patience: int | None = None
    """Generations without a new best before the phase counts as stalled; None: the
    controller's ``StallConfig.patience``."""
    select: Callable[..., Any] | None = None
    """Your own DEAP selection ``select(individuals, k) -> list``; default tournament."""
    mate: Callable[..., Any] | None = None
    """Your own vectorised crossover ``mate(a [M, D], b [M, D], generator) -> (a', b')``."""
    mutate: Callable[..., Any] | None = None
    """Your own vectorised mutation ``mutate(x [M, D], scale [D], generator) -> x'``."""
    inject_every: int | None = None
    """Exchange, ERL-style (Khadka & Tumer 2018): every this many generations a gradient
    learner starts from the generation's best, takes ``learner_steps`` REINFORCE steps on the
    generation's episode and replaces the generation's worst individual (scored at once, one
    evaluation); the fate of each injected individual at the next generation (elite, selected,
    discarded) goes to the history. None: off. Single objective only."""
    learner_steps: int = 5
    """REINFORCE steps of the injected learner; each costs the learner's ``samples``."""
    inject_clip: float | None = 1.0
    """Each weight of an injected (or Lamarckian) step is clipped to this many of its
    per-tensor scales from where the learner started, so a learner far from the population
    cannot collapse it; None: unclipped."""
    lamarckian: int = 0
    """Exchange, CEM-RL-style (Pourchot & Sigaud 2019): this many of the kept elites (at most
    ``elite``) take ``lamarckian_steps`` REINFORCE steps every generation and are written back
    (Lamarckian), then scored with the generation. 0: off. Single objective only."""
    lamarckian_steps: int = 2
    """REINFORCE steps of each Lamarckian elite; each costs the learner's ``samples``."""
    learner: GradientConfig | None = None
    """Settings of the exchange's REINFORCE steps; None: ``GradientConfig(warmup_steps=0,
    collapse_patience=None)`` (a few steps from a fresh optimiser: no warm-up, no guard)."""

    def __post_init__(self) -> None:
        check_fields(self, GENETIC_RANGES)
        if self.init_scale_max < self.init_scale:
            raise field_error(
                "GeneticConfig", "init_scale_max", self.init_scale_max,
                f"a number >= init_scale = {self.init_scale!r}",
            )
        if self.lamarckian > self.elite:
            raise field_error(
                "GeneticConfig", "lamarckian", self.lamarckian,
                f"an int <= elite = {self.elite!r} (the Lamarckian steps go to kept elites)",
            )


@dataclass(frozen=True, kw_only=True)
class ESConfig:
    """Settings of the SNES phase (separable natural evolution strategies) over flat weights."""

    population_size: int | None = None
    """Samples per generation (rounded up to even: mirrored pairs); None: the literature's
    4 + floor(3 ln D)."""
    init_sigma: float = 1.0
    """Starting sigma of each weight, relative to its parameter tensor's RMS."""
    center_lr: float = 1.0
    """Learning rate of the centre (the literature's 1)."""
    sigma_lr: float | None = None
    """Learning rate of log sigma; None: the literature's (3 + ln D) / (5 sqrt D)."""
    mirrored: bool = True
    """Antithetic samples: each noise vector is used as +e and -e."""
    patience: int | None = 30
    """Generations without a new best before the phase counts as stalled; None: the
    controller's ``StallConfig.patience``."""
    max_generations: int | None = None
    """Budget cap of one SNES phase, in generations; None = until it stalls."""

    def __post_init__(self) -> None:
        check_fields(self, ES_RANGES)


@dataclass(frozen=True, kw_only=True)
class StallConfig:
    """When the controller decides a phase has stalled and switches to the other one."""

    patience: int = 15
    """Checks without improvement before a switch, for a phase that sets no patience of its
    own (``GradientConfig.patience``, ``GeneticConfig.patience``, ``ESConfig.patience``)."""
    min_delta: float = 0.0
    """Improvement of the best score that counts as progress (must exceed this)."""
    relative: bool = False
    """Read ``min_delta`` as a fraction of ``|best|`` instead of an absolute amount."""
    monitor: Literal["selection", "train"] = "selection"
    """"selection": the score that picks the best weights (validation when given);
    "train": the training score."""
    min_steps: int = 5
    """A phase runs at least this many checks before it may be judged stalled."""
    flat_patience: int = 5
    """Gradient steps in a row whose K sampled scores were all equal (the policy gradient is
    exactly zero: a flat score, as pycma's flat-fitness criterion) before a switch. A flat
    generation of the genetic phase does not count towards its patience: it widens its
    mutations and keeps exploring instead."""

    max_share: float | None = 0.5
    """A phase visit ends once it has spent this fraction of ``fit``'s ``max_evaluations``, so
    one phase cannot take the whole budget (None: no share)."""
    start_from: Literal["best", "handoff"] = "best"
    """Where the next phase starts: "best", the best weights by the selection score (the
    validation score when given), so a switch never continues from a degraded model; or
    "handoff", where the last phase ended (its hall of fame's best, or the model)."""

    def __post_init__(self) -> None:
        check_fields(self, STALL_RANGES)


def to_dict(config: Any) -> dict:
    """A config as plain data (callables shown by name), for logs and checkpoints."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = getattr(value, "__name__", repr(value)) if callable(value) else value
    return out
