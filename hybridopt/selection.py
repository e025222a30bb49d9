"""Best so far: which candidate weights a run keeps, and on which data it judges them.

Every step a phase offers one candidate. With validation data the candidate is kept when its
*selection score* beats the best one's:

- ``"union"`` (default): the score on the training and validation rows together. A genetic
  phase offers a new candidate every generation; the maximum of many validation scores overfits
  the validation split itself, while a score on the union moves less with the luck of one split
  (measured: see the README's "Which weights are kept").
- ``"validation"``: the score on the validation data alone.

Without validation data the training score decides. Ties on the selection score go to the
higher training score.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from hybridopt.data import Data, concat_data

SELECTIONS = ("union", "validation")


def check_selection(selection: object) -> str:
    """Check the ``selection`` option."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}; got selection = {selection!r}.")
    return str(selection)


class Selection:
    """Keeps the best candidate by its selection score.

    Args:
        rule: "union" or "validation" (see the module docstring).
        score: ``score(weights, data) -> float``, the argmax policy's score in float32.
        train: the training data; valid: the validation data or None.
    """

    def __init__(self, rule: str, score: Callable[[Tensor, Data], float], train: Data,
                 valid: Data | None) -> None:
        self.rule, self.score = rule, score
        self.valid = valid
        self.judge = None
        if valid is not None:
            self.judge = concat_data(train, valid) if rule == "union" else valid
        self.best_score = -math.inf
        self.best_train_score = -math.inf
        self.best_valid_score: float | None = None
        self.best_weights: Tensor | None = None
        self.evaluations = 0
        self.since_best = 0

    def offer(self, weights: Tensor, train_score: float, spent: int = 0) -> dict:
        """Judge a candidate with its training score; keep it if it is the best so far.

        ``spent`` is what the step cost (training evaluations), for ``fit(patience=)``.
        Returns the row's ``val_score`` and ``selection_score``."""
        valid = selection = None
        if self.valid is not None:
            valid = self.score(weights, self.valid)
            self.evaluations += 1
            selection = valid
            if self.rule == "union":
                selection = self.score(weights, self.judge)
                self.evaluations += 1
        else:
            selection = train_score
        # The first candidate is always kept, even when it scores -inf (a non-finite
        # score): best_weights must never be None once a candidate was offered
        if self.best_weights is None or selection > self.best_score or (
            selection == self.best_score and train_score > self.best_train_score
        ):
            self.keep(weights, selection, train_score, valid)
        else:
            self.since_best += spent
        return {"val_score": valid, "selection_score": selection}

    def keep(self, weights: Tensor, selection: float, train: float, valid: float | None) -> None:
        """Make ``weights`` the best so far."""
        self.best_score, self.best_train_score = selection, train
        self.best_valid_score = valid
        self.best_weights = weights.detach().clone()
        self.since_best = 0

    def state_dict(self) -> dict:
        """Tensors and plain data, for checkpoints."""
        return {
            "best_score": self.best_score, "best_train_score": self.best_train_score,
            "best_valid_score": self.best_valid_score,
            "best_weights": self.best_weights.cpu(), "evaluations": self.evaluations,
            "since_best": self.since_best,
        }

    def load_state_dict(self, saved: dict, device) -> None:
        """Restore :meth:`state_dict` output."""
        self.best_score, self.best_train_score = saved["best_score"], saved["best_train_score"]
        self.best_valid_score = saved["best_valid_score"]
        self.best_weights = saved["best_weights"].to(device)
        self.evaluations, self.since_best = saved["evaluations"], saved["since_best"]
