"""Plateau criteria: each judges a sequence of scores and says whether, and why, it fired.

Like pycma's ``stop()``, a criterion returns the reason it fired (a short string) or None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hybridopt.config import StallConfig


def improved(new: float, best: float, min_delta: float, relative: bool) -> bool:
    """Whether ``new`` beats ``best`` by more than ``min_delta`` (absolute or relative)."""
    if not math.isfinite(new):
        return False
    if not math.isfinite(best):
        return True
    threshold = min_delta * abs(best) if relative else min_delta
    return new - best > threshold


@dataclass
class PlateauDetector:
    """Fires when the best score has not improved by more than ``min_delta`` for ``patience``
    consecutive checks (and the phase has run at least ``min_steps`` checks)."""

    config: StallConfig
    best: float = -math.inf
    since_improvement: int = 0
    checks: int = 0
    history: list[float] = field(default_factory=list)

    def reset(self) -> None:
        """Start judging a new phase from scratch."""
        self.best, self.since_improvement, self.checks = -math.inf, 0, 0

    def update(self, score: float, patience: int | None = None, label: str = "best",
               unit: str = "checks") -> str | None:
        """Record one check's score; return the reason if the phase has stalled.

        ``patience`` overrides the configured one (phases have their own); ``label`` says
        whose best the reason means, ``unit`` what a check is called."""
        cfg = self.config
        patience = patience or cfg.patience
        self.checks += 1
        if improved(score, self.best, cfg.min_delta, cfg.relative):
            self.best, self.since_improvement = score, 0
        else:
            self.since_improvement += 1
        if self.checks >= cfg.min_steps and self.since_improvement >= patience:
            kind = "relative" if cfg.relative else "absolute"
            return (
                f"plateau: {label} {self.best:.4g} not improved by more than "
                f"{cfg.min_delta:g} ({kind}) for {self.since_improvement} {unit}"
            )
        return None


def budget_cap(steps: int, cap: int | None, unit: str) -> str | None:
    """Fires when a phase has used its own budget of ``cap`` steps or generations."""
    if cap is not None and steps >= cap:
        return f"budget: phase used its {cap} {unit}"
    return None
