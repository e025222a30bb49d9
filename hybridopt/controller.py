"""Which phase runs, when to switch, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridopt.config import StallConfig
from hybridopt.stall import PlateauDetector, budget_cap

PHASES = ("gradient", "genetic")


def validate_phases(phases) -> tuple[str, ...]:
    """Check the ``phases`` argument: a non-empty sequence of known, distinct phase names."""
    if isinstance(phases, str):
        phases = (phases,)
    try:
        phases = tuple(phases)
    except TypeError:
        raise TypeError(
            f"phases must be a tuple of phase names from {PHASES}; got {phases!r}."
        ) from None
    unknown = [p for p in phases if p not in PHASES]
    if not phases or unknown or len(set(phases)) != len(phases):
        raise ValueError(
            f"phases must be distinct names from {PHASES}, the first one starting; "
            f"got {phases!r}."
        )
    return phases


@dataclass
class Controller:
    """Runs the phases in turn; switches when the monitored score stalls or a cap is spent.

    Attributes:
        phases: the phases allowed, in order; the first starts.
        stall: plateau settings.
        caps: per-phase budget caps in checks (None = no cap).
    """

    phases: tuple[str, ...]
    stall: StallConfig
    caps: dict[str, int | None] = field(default_factory=dict)
    index: int = 0
    phase_checks: int = 0
    flat_streak: int = 0
    detector: PlateauDetector = field(init=False)

    def __post_init__(self) -> None:
        self.detector = PlateauDetector(self.stall)

    @property
    def phase(self) -> str:
        """The phase running now."""
        return self.phases[self.index]

    def check(self, monitored: float, flat: bool = False) -> str | None:
        """Record one step's monitored score; return why the phase should end, or None.

        ``flat`` says the step saw no score differences at all (K equal samples, or a whole
        population with one fitness). With a single phase there is nothing to switch to.
        """
        self.phase_checks += 1
        self.flat_streak = self.flat_streak + 1 if flat else 0
        reason = None
        if self.phase == "gradient":
            reason = self.detector.update(monitored, self.stall.gradient_patience)
            if self.flat_streak >= self.stall.flat_patience:
                reason = (
                    f"flat: all sampled scores equal for {self.flat_streak} steps "
                    "(no policy-gradient signal)"
                )
        elif not flat:
            reason = self.detector.update(monitored)
        unit = "steps" if self.phase == "gradient" else "generations"
        reason = budget_cap(self.phase_checks, self.caps.get(self.phase), unit) or reason
        return reason if len(self.phases) > 1 else None

    def switch(self) -> tuple[str, str]:
        """Move to the next phase; returns ``(from_phase, to_phase)``."""
        before = self.phase
        self.index = (self.index + 1) % len(self.phases)
        self.phase_checks = 0
        self.flat_streak = 0
        self.detector.reset()
        return before, self.phase

    def state_dict(self) -> dict:
        d = self.detector
        return {
            "index": self.index,
            "phase_checks": self.phase_checks,
            "flat_streak": self.flat_streak,
            "detector": [d.best, d.since_improvement, d.checks],
        }

    def load_state_dict(self, state: dict) -> None:
        self.index, self.phase_checks = state["index"], state["phase_checks"]
        self.flat_streak = state["flat_streak"]
        d = self.detector
        d.best, d.since_improvement, d.checks = state["detector"]
