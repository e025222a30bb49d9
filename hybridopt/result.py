"""FitResult: what a run found, as numbers, a CSV/JSONL history, a plot and a run folder."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor


@dataclass
class FitResult:
    """What :meth:`HybridOptimizer.fit` found.

    Attributes:
        best_score: score of the best weights: on ``validation_data`` when given, else on the
            training data.
        best_train_score: training score of those weights.
        best_state_dict: the model's ``state_dict`` with the best weights.
        evaluations: score_fn calls on the training data (one call = one action sequence).
        validation_evaluations: score_fn calls on the validation data.
        wall_time: seconds spent in ``fit``.
        history: one dict per step or generation.
        switches: one dict per phase switch, with its reason.
        stop_reason: why the run ended.
        nonfinite: scores that were NaN or infinite (counted as the worst).
        events: one dict per event inside a phase (e.g. a collapse guard's revert), with
            ``evaluations``, ``step``, ``phase`` and ``event``.
        threads: torch threads during the run.
        pareto_front: with several objectives, one dict per non-dominated model: ``train``
            and ``valid`` (``{name: value}``; ``valid`` None without validation data),
            ``weights`` and ``state_dict``; else None.
        objective_names: the objectives' names, with several objectives.
    """

    best_score: float
    best_train_score: float
    best_state_dict: dict[str, Tensor]
    evaluations: int
    validation_evaluations: int
    wall_time: float
    history: list[dict] = field(default_factory=list)
    switches: list[dict] = field(default_factory=list)
    stop_reason: str = ""
    nonfinite: int = 0
    events: list[dict] = field(default_factory=list)
    threads: int | None = None
    pareto_front: list[dict] | None = None
    objective_names: list[str] | None = None

    def to_csv(self, path: str | Path) -> Path:
        """Write the history, one row per step or generation, as CSV."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        return path

    def to_jsonl(self, path: str | Path) -> Path:
        """Write the history as JSON lines."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for row in self.history:
                f.write(json.dumps(row) + "\n")
        return path

    def save(self, folder: str | Path) -> Path:
        """Write a run folder: ``history.csv``, ``history.jsonl``, ``summary.json``
        (scores, budgets, switches), ``plot.png`` and ``best_model.pt`` (the best state_dict)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.to_csv(folder / "history.csv")
        self.to_jsonl(folder / "history.jsonl")
        self.plot(folder / "plot.png")
        torch.save(self.best_state_dict, folder / "best_model.pt")
        summary = {
            "best_score": self.best_score,
            "best_train_score": self.best_train_score,
            "evaluations": self.evaluations,
            "validation_evaluations": self.validation_evaluations,
            "wall_time": self.wall_time,
            "stop_reason": self.stop_reason,
            "nonfinite": self.nonfinite,
            "switches": self.switches,
        }
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        return folder

    def plot(self, path: str | Path) -> Path:
        """Plot best and current score against evaluations, phases as bands, switches marked."""
        from hybridopt.plotting import plot_history

        return plot_history(self.history, self.switches, path)
