"""The phase protocol: what every search method plugged into the optimiser provides.

A phase is one way of improving a flat weight vector ``[D]``: the policy-gradient learner, the
genetic algorithm, SNES, or one of your own. The optimiser and the controller only ever talk to a
phase through this protocol, so budgets, best-so-far tracking, validation, stall detection,
switching, history, callbacks and checkpoints work the same for every phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from hybridopt.data import Data
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import ScoreBatch, Scorer


@dataclass
class PhaseContext:
    """What the optimiser hands a phase in :meth:`Phase.bind`.

    Attributes:
        model: the live model; a phase that trains it in place (gradient) leaves its weights
            there, others load weights into it only through ``flat``.
        flat: layout of the trainable weights (``flat.vector(model)``, ``flat.load(model, w)``).
        scorer: the checked score function (``scorer(actions [B, N(, H)], data)``).
        evaluate: ``evaluate(population [P, D], episode) -> ScoreBatch`` on the configured
            backend (vmap, loop, joblib, ray): the one way to score many weight vectors.
        generator: the optimiser's torch generator; every random draw goes through it.
        device: where the model and data live.
        fixed_data: True when every step sees the same data (no ``episode_length``), so a
            score once computed stays valid.
        population_size: the resolved population size (for population phases that use it).
        max_evaluations: the budget of the current ``fit`` call, if any.
        front: ``front() -> [K, D] | None``: the Pareto archive's weights with several
            objectives (None otherwise), e.g. to seed a population along the front.
        outputs: what the model's outputs are ("logits", "probs", "log_probs"; see
            :mod:`hybridopt.outputs`); phases that need logits use ``to_logits``.
    """

    model: nn.Module
    flat: FlatParams
    scorer: Scorer
    evaluate: Callable[[Tensor, Data], ScoreBatch]
    generator: torch.Generator
    device: torch.device
    fixed_data: bool = True
    population_size: int = 300
    max_evaluations: int | None = None
    outputs: str = "logits"
    front: Callable[[], Tensor | None] = lambda: None


@runtime_checkable
class Phase(Protocol):
    """One search method, driven step by step by the optimiser.

    Attributes:
        name: shown in the history, switches and logs (distinct within one optimiser).
        unit: what one step is called, "step" or "generation" (logs and budget messages).
        patience: checks without a new best before the phase counts as stalled; None: the
            controller's ``StallConfig.patience``.
        max_checks: the phase's own budget in steps per visit; None: no cap.
        flat_ends (optional, default True): whether ``StallConfig.flat_patience`` flat steps
            in a row end the phase; a phase that handles flat scores itself sets False.
    """

    name: str
    unit: str
    patience: int | None
    max_checks: int | None

    def bind(self, context: PhaseContext) -> None:
        """Receive the model, evaluator and generator; called once by the optimiser."""

    def init(self, start: Tensor, best: Tensor) -> Any:
        """Begin a visit from ``start`` ``[D]``; ``best`` ``[D]`` is the best so far (which may
        be kept, e.g. as an elite). Returns the phase's state."""

    def step(self, state: Any, episode: Data) -> tuple[Any, dict]:
        """One step or generation on ``episode``. ``metrics["evaluations"]`` (required) is
        what it spent; ``metrics["flat"]`` says it saw no score differences at all;
        ``metrics["event"]`` (optional) is recorded like a switch; other numbers go to the
        history row."""

    def candidate(self, state: Any) -> tuple[Tensor, float | None]:
        """The phase's current offer for "best so far" and its training score, or None when
        the optimiser has to score it on the training data."""

    def cost(self, state: Any) -> int:
        """Evaluations the next :meth:`step` will spend (so ``max_evaluations`` holds)."""

    def handoff(self, state: Any) -> Tensor:
        """The weights the next phase should start from."""

    def state_dict(self, state: Any) -> dict:
        """The state as tensors and plain data (loadable with ``weights_only=True``)."""

    def load_state_dict(self, saved: dict) -> Any:
        """Rebuild a state from :meth:`state_dict` output."""


REQUIRED = ("name", "unit", "bind", "init", "step", "candidate", "cost", "handoff",
            "state_dict", "load_state_dict")


def check_phase(phase: Any) -> None:
    """Raise ``TypeError`` naming what a user-given phase object lacks."""
    missing = [a for a in REQUIRED if not hasattr(phase, a)]
    if missing:
        raise TypeError(
            f"phases: {phase!r} is not a phase: it lacks {', '.join(missing)} "
            "(see hybridopt.phases.base.Phase)."
        )
    if not isinstance(phase.name, str) or not phase.name:
        raise TypeError(f"phases: a phase's name must be a non-empty str; got {phase.name!r}.")
    if phase.unit not in ("step", "generation"):
        raise ValueError(
            f"phases: phase {phase.name!r} has unit {phase.unit!r}; expected 'step' or "
            "'generation'."
        )
