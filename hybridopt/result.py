"""FitResult: what a run found, as numbers, a CSV/JSONL history, a plot and a run folder.

With several objectives it also holds the Pareto front (``pareto_front``, one entry per
non-dominated model), which it writes as ``front.csv``, draws as ``front.png`` and re-scores on
other data (:meth:`FitResult.score_front`, e.g. the held-out split).
"""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn


@dataclass
class FitResult:
    """What :meth:`HybridOptimizer.fit` found.

    Attributes:
        best_score: score of the best weights: on ``validation_data`` when given, else on the
            training data.
        best_train_score: training score of those weights.
        best_state_dict: the model's ``state_dict`` with the best weights.
        evaluations: score_fn calls on the training data (one call = one action sequence).
        validation_evaluations: the selection's judgements of candidates (validation score,
            union score or robust bound: one each per candidate; see docs/outputs.md).
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
        (scores, budgets, switches), ``plot.png`` and ``best_model.pt`` (the best state_dict).

        With a Pareto front also ``front.csv`` (:meth:`front_csv`), ``front.png``
        (:meth:`plot_front`) and ``front_models.pt`` (the entries' state_dicts, in front
        order, a list that loads with ``torch.load(..., weights_only=True)``); the summary
        then has ``objectives`` (the names) and ``front_size``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.to_csv(folder / "history.csv")
        self.to_jsonl(folder / "history.jsonl")
        self.plot(folder / "plot.png")
        torch.save(self.best_state_dict, folder / "best_model.pt")
        front = {}
        if self.pareto_front is not None:
            self.front_csv(folder / "front.csv")
            self.plot_front(folder / "front.png")
            torch.save([e["state_dict"] for e in self.pareto_front if "state_dict" in e],
                       folder / "front_models.pt")
            front = {"objectives": list(self._names()), "front_size": len(self.pareto_front)}
        summary = {
            "best_score": self.best_score,
            "best_train_score": self.best_train_score,
            "evaluations": self.evaluations,
            "validation_evaluations": self.validation_evaluations,
            "wall_time": self.wall_time,
            "stop_reason": self.stop_reason,
            "nonfinite": self.nonfinite,
            "threads": self.threads,
            "switches": self.switches,
            "events": self.events,
            **front,
        }
        (folder / "summary.json").write_text(json.dumps(summary, indent=2))
        return folder

    def plot(self, path: str | Path) -> Path:
        """Plot best and current score against evaluations, phases as bands, switches marked."""
        from hybridopt.plotting import plot_history

        return plot_history(self.history, self.switches, path)

    # -- the Pareto front (several objectives) ------------------------------------------------

    def _names(self) -> list[str]:
        """The objective names; ValueError unless this result has a front."""
        if self.pareto_front is None:
            raise ValueError("this result has no Pareto front: the run had a single score "
                             "(pass objectives= to HybridOptimizer for several).")
        if self.objective_names:
            return list(self.objective_names)
        if self.pareto_front:
            return list(self.pareto_front[0]["train"])
        raise ValueError("an empty Pareto front without objective_names has no objectives.")

    def front_csv(self, path: str | Path, test: Sequence[dict] | None = None) -> Path:
        """Write the front, one row per model: ``index``, ``train_<name>``, ``valid_<name>``
        (see :func:`hybridopt.front.write_front_csv`) and, given ``test``, ``test_<name>``.

        Args:
            path: the CSV file.
            test: one ``{name: value}`` per entry, in front order (e.g. :meth:`score_front`
                on the held-out split).

        Raises:
            ValueError: if the run had a single score (no front), or ``test`` has another
                length than the front.
        """
        from hybridopt.front import write_front_csv

        names = self._names()
        path = write_front_csv(self.pareto_front, names, path)
        if test is None:
            return path
        if len(test) != len(self.pareto_front):
            raise ValueError(f"test must have one entry per front model "
                             f"({len(self.pareto_front)}); got {len(test)}.")
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns, rows = list(reader.fieldnames or []), list(reader)
        columns += [f"test_{n}" for n in names]
        for row, values in zip(rows, test):
            row.update({f"test_{n}": values[n] for n in names})
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def front_table(self, digits: int = 4) -> str:
        """The front as a small fixed-width text table (see :func:`hybridopt.front.format_front`).

        Raises:
            ValueError: if the run had a single score (no front).
        """
        from hybridopt.front import format_front

        return format_front(self.pareto_front, self._names(), digits)

    def plot_front(self, path: str | Path, reference: Sequence[float] | None = None) -> Path:
        """Draw the front (training points as a staircase, validation points beside them).

        Args:
            path: the image file (PNG, SVG or PDF by suffix).
            reference: a point to mark, e.g. the hypervolume's reference point.

        Returns:
            ``path``.

        Raises:
            ValueError: if the run had a single score (no front).

        Example:
            >>> result = opt.fit(max_evaluations=20_000)   # objectives=["hits", "rate"]
            >>> result.plot_front("runs/front.png")
        """
        from hybridopt.front import plot_front

        return plot_front(self.pareto_front, self._names(), path, reference=reference)

    def score_front(
        self, model: nn.Module, score_fn: Callable, data
    ) -> list[dict[str, float]]:
        """Each front model's objectives on ``data`` (e.g. the held-out split), in front order.

        Every entry's ``state_dict`` is loaded into a copy of ``model`` (``model`` itself is
        not changed), its argmax actions on ``data`` are computed, and all of them are scored
        in one :class:`~hybridopt.scoring.Scorer` call (``score_fn`` as given to the
        optimiser). This scores ``len(pareto_front)`` action sequences.

        Args:
            model: a model of the trained architecture (e.g. ``opt.model``).
            score_fn: the multi-objective score function of the run.
            data: the data to score on, structured like the training data.

        Returns:
            One ``{name: value}`` per front entry.

        Raises:
            ValueError: if the run had a single score, an entry has no ``state_dict``, or
                ``score_fn`` returns other objectives than the run's.

        Example:
            >>> heldout = result.score_front(opt.model, trading_objectives, splits["test"])
        """
        from hybridopt.data import data_to, model_input
        from hybridopt.scoring import Scorer

        names = self._names()
        if not self.pareto_front:
            return []
        if any("state_dict" not in e for e in self.pareto_front):
            raise ValueError("score_front needs each front entry's state_dict.")
        scratch = copy.deepcopy(model).eval()
        device = next((p.device for p in scratch.parameters()), torch.device("cpu"))
        data = data_to(data, device)
        with torch.no_grad():
            actions = []
            for entry in self.pareto_front:  # one forward pass per front model
                scratch.load_state_dict(entry["state_dict"])
                actions.append(scratch(model_input(data)).argmax(-1))
        batch = Scorer(score_fn, objectives=names).check(torch.stack(actions), data)
        return [dict(zip(names, row)) for row in batch.objectives.tolist()]
