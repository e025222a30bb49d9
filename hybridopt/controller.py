"""Which phase runs, when to switch, and why: the same rules for every phase."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hybridopt.config import StallConfig
from hybridopt.stall import PlateauDetector, budget_cap


@dataclass
class Controller:
    """Runs the phases in turn; switches when the monitored score stalls, a phase's own cap
    is spent, its scores are flat, or it used its share of the run's budget.

    Attributes:
        phases: the phase objects, in order; the first starts.
        stall: plateau settings; a phase's own ``patience`` overrides ``stall.patience``
            (a phase without ``patience`` or ``max_checks`` gets the defaults, as with None).
    """

    phases: list[Any]
    stall: StallConfig
    index: int = 0
    phase_checks: int = 0
    flat_streak: int = 0
    visit_evaluations: int = 0
    detector: PlateauDetector = field(init=False)

    def __post_init__(self) -> None:
        self.detector = PlateauDetector(self.stall)

    @property
    def phase(self) -> Any:
        """The phase running now."""
        return self.phases[self.index]

    @property
    def name(self) -> str:
        """The running phase's name."""
        return self.phase.name

    def check(self, monitored: float, evaluations: int = 0, flat: bool = False,
              budget: int | None = None) -> str | None:
        """Record one step's monitored score; return why the phase should end, or None.

        Args:
            monitored: the step's monitored score (selection or training score).
            evaluations: what the step spent (counts towards the visit's share of ``budget``).
            flat: the step saw no score differences at all (equal samples, or a population
                with one fitness): such a step neither improves nor stalls the phase, and
                ``stall.flat_patience`` of them in a row end it, unless the phase sets
                ``flat_ends = False`` (the genetic phase widens its mutations instead).
            budget: the run's ``max_evaluations``, for ``stall.max_share``.

        With a single phase there is nothing to switch to: always None.
        """
        phase = self.phase
        self.phase_checks += 1
        self.visit_evaluations += evaluations
        self.flat_streak = self.flat_streak + 1 if flat else 0
        unit = f"{phase.unit}s"
        reason = None
        if not flat:
            reason = self.detector.update(
                monitored, getattr(phase, "patience", None) or self.stall.patience,
                label=f"the {phase.name} phase's best", unit=unit,
            )
        if self.flat_streak >= self.stall.flat_patience and getattr(phase, "flat_ends", True):
            reason = (f"flat: every score of the {phase.name} phase equal for "
                      f"{self.flat_streak} {unit} (no signal to follow)")
        share = self.stall.max_share
        if share is not None and budget is not None and len(self.phases) > 1:
            if self.visit_evaluations >= share * budget:
                reason = (f"budget share: the {phase.name} phase used {self.visit_evaluations} "
                          f"evaluations, {share:g} of max_evaluations {budget}")
        reason = budget_cap(self.phase_checks, getattr(phase, "max_checks", None), unit) or reason
        return reason if len(self.phases) > 1 else None

    def switch(self) -> tuple[str, str]:
        """Move to the next phase; returns ``(from_name, to_name)``."""
        before = self.name
        self.index = (self.index + 1) % len(self.phases)
        self.phase_checks = self.flat_streak = self.visit_evaluations = 0
        self.detector.reset()
        return before, self.name

    def state_dict(self) -> dict:
        """The controller's counters as plain data."""
        d = self.detector
        return {
            "index": self.index,
            "phase_checks": self.phase_checks,
            "flat_streak": self.flat_streak,
            "visit_evaluations": self.visit_evaluations,
            "detector": [d.best, d.since_improvement, d.checks],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.index, self.phase_checks = state["index"], state["phase_checks"]
        self.flat_streak = state["flat_streak"]
        self.visit_evaluations = state["visit_evaluations"]
        d = self.detector
        d.best, d.since_improvement, d.checks = state["detector"]
