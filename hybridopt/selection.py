"""Best so far: which candidate weights a run keeps, and on which data it judges them.

Every step a phase offers one candidate. With validation data the candidate is kept when its
*selection score* beats the best one's:

- ``"auto"`` (default): ``"robust"`` with validation data; without it, the training score
  (``best_score`` is then the kept weights' score on ``data``).
- ``"robust"``: a lower confidence bound on the union's score (the training and
  validation rows together): the mean minus one standard deviation of the score over
  :data:`RESAMPLES` bootstrap resamples of the union's rows (the same resamples for every
  candidate). A candidate whose score rests on a few rows (a bonus just over a threshold, a
  handful of lucky trades) loses against one whose score holds on most resamples. Without
  validation data it resamples the training rows. It costs up to :data:`RESAMPLES`
  ``score_fn`` calls per candidate, and no extra forward pass; a candidate whose actions on
  the judged rows are those of one judged before gets that one's bound without the calls
  (``score_fn`` is taken to be deterministic, as everywhere in hybridopt). Not resampling a
  candidate whose plain score is below the kept bound was tried and dropped: on trading, a
  ratio of counts, the bootstrap mean can sit well above the plain score, and it changed the
  choice on 2 of 12 runs.
- ``"union"``: the plain score on the union. A genetic phase offers a new candidate every
  generation; the maximum of many validation scores overfits the validation split itself,
  while a score on the union moves less with the luck of one split. Cheaper than
  ``"robust"`` when ``score_fn`` is slow.
- ``"validation"``: the score on the validation data alone.

Measured: see the README's "Which weights are kept". Without validation data the training
score decides (except with ``"robust"``, which resamples the training rows). Ties on the
selection score go to the higher training score.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from hybridopt.data import Data, concat_data, data_bytes, index_data, validate_data

SELECTIONS = ("auto", "robust", "union", "validation")
RESAMPLES = 64
"""Bootstrap resamples of ``selection="robust"`` (replayed on the deceptive task's candidates,
20 seeds: 16 resamples kept the held-out bonus on 11 seeds, 32 on 15, 64 on 17)."""
KEEP_BYTES = 256 * 2**20
"""Resampled copies of the judged rows are kept up to this size (faster); beyond it the rows
are indexed again for every candidate."""
KNOWN = 4096
"""Bounds remembered by the candidates' actions (``"robust"``); the oldest go first."""


class Judge(Protocol):
    """What ``selection="robust"`` needs to score a candidate (an
    :class:`~hybridopt.evaluation.Evaluation`)."""

    def actions(self, weights: Tensor, data: Data) -> Tensor: ...

    def resample_scores(self, actions: Tensor, data: Data,
                        resamples: list[tuple[Tensor, Data | None]]) -> Tensor: ...


def check_selection(selection: object) -> str:
    """Check the ``selection`` option."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}; got selection = {selection!r}.")
    return str(selection)


def resamples(data: Data, count: int, seed: int,
              keep_bytes: int = KEEP_BYTES) -> list[tuple[Tensor, Data | None]]:
    """``count`` bootstrap resamples of ``data``'s ``N`` rows: ``(index [N], rows)`` each,
    ``rows`` the data at ``index`` while all copies together fit in ``keep_bytes`` (else None:
    indexed again on every use). Drawn from a generator seeded with ``seed``."""
    n = validate_data(data, "the selection data")
    rows = torch.Generator().manual_seed(seed)
    keep = count * data_bytes(data) <= keep_bytes
    out = []
    for _ in range(count):
        index = torch.randint(n, (n,), generator=rows)
        out.append((index, index_data(data, index) if keep else None))
    return out


class Selection:
    """Keeps the best candidate by its selection score.

    Args:
        rule: "auto", "robust", "union" or "validation" (see the module docstring).
        score: ``score(weights, data) -> float``, the argmax policy's score in float32.
        train: the training data; valid: the validation data or None.
        resample: what scores actions on row resamples (needed by ``"robust"``).
        seed: the resamples' seed (``"robust"``): :data:`RESAMPLES` index vectors of ``N``
            rows drawn with replacement, drawn once, so every candidate is judged on the
            same rows (a paired comparison).
    """

    def __init__(self, rule: str, score: Callable[[Tensor, Data], float], train: Data,
                 valid: Data | None,
                 resample: Judge | None = None,
                 seed: int = 0) -> None:
        if rule == "auto":
            rule = "robust" if valid is not None else "union"
        if rule == "robust" and resample is None:
            raise ValueError("selection='robust' needs a judge that scores resamples (resample=).")
        self.rule, self.score, self.resample, self.seed = rule, score, resample, seed
        self._resamples: list[tuple[Tensor, Data | None]] | None = None
        self._known: dict[bytes, float] = {}  # bound by digest of the candidate's actions
        self.valid = valid
        self.judge = None
        if valid is not None:
            self.judge = valid if rule == "validation" else concat_data(train, valid)
        elif rule == "robust":
            self.judge = train
        self.best_score = -math.inf
        self.best_train_score = -math.inf
        self.best_valid_score: float | None = None
        self.best_weights: Tensor | None = None
        self.evaluations = 0
        self.since_best = 0

    @property
    def label(self) -> str:
        """What :attr:`best_score` is: "robust", "union", "valid" (the validation score) or
        "train" (no validation data, and not robust)."""
        if self.rule == "robust":
            return "robust"
        if self.valid is None:
            return "train"
        return "valid" if self.rule == "validation" else "union"

    def offer(self, weights: Tensor, train_score: float, spent: int = 0) -> dict:
        """Judge a candidate with its training score; keep it if it is the best so far.

        ``spent`` is what the step cost (training evaluations), for ``fit(patience=)``.
        Returns the row's ``val_score`` and ``selection_score``."""
        valid = None
        selection = train_score
        if self.valid is not None:
            valid = self.score(weights, self.valid)
            self.evaluations += 1
            selection = valid
        if self.rule == "union" and self.valid is not None:
            selection = self.score(weights, self.judge)
            self.evaluations += 1
        elif self.rule == "robust":
            selection = self.robust_score(weights)
            self.evaluations += 1
        # The first candidate is always kept, even when it scores -inf (a non-finite
        # score): best_weights must never be None once a candidate was offered
        if self.best_weights is None or selection > self.best_score or (
            selection == self.best_score and train_score > self.best_train_score
        ):
            self.keep(weights, selection, train_score, valid)
        else:
            self.since_best += spent
        return {"val_score": valid, "selection_score": selection}

    def robust_score(self, weights: Tensor) -> float:
        """Mean minus one standard deviation of the judge's bootstrap scores (``"robust"``)."""
        if self._resamples is None:
            self._resamples = resamples(self.judge, RESAMPLES, self.seed)
        actions = self.resample.actions(weights, self.judge)
        key = hashlib.blake2b(actions.cpu().numpy().tobytes(), digest_size=16).digest()
        if key in self._known:
            return self._known[key]
        scores = self.resample.resample_scores(actions, self.judge, self._resamples)
        bound = (float(scores.mean() - scores.std(correction=0))
                 if bool(torch.isfinite(scores).all()) else -math.inf)
        if len(self._known) >= KNOWN:
            del self._known[next(iter(self._known))]
        self._known[key] = bound
        return bound

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
