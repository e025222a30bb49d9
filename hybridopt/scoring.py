"""Score-function adapters: batched, vmapped or per sequence, and their validation.

A user's ``score_fn(actions, data)`` may return one number per action sequence, or per-item
rewards shaped like ``actions`` with NaN where an item's outcome was not observed. The
:class:`Scorer` turns any of these into ``[B]`` scores for ``[B, N(, H)]`` actions, the one form
both phases use.

With ``objectives=`` (M objectives, all maximised) it may instead return a tuple or list of M
numbers, a 1-D tensor of length M, or a dict of M named numbers (a ``@batched`` one: ``[B, M]``,
or a tuple/dict of ``[B]`` tensors). :class:`ScoreBatch` then carries them as ``objectives``
``[B, M]``, and ``scores`` is their scalarisation (see :mod:`hybridopt.objectives`).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from hybridopt.data import Data
from hybridopt.objectives import check_weights, parse_objectives, scalarise

F = TypeVar("F", bound=Callable)
log = logging.getLogger(__name__)


def batched(fn: F) -> F:
    """Mark ``score_fn`` as batched: it takes ``[B, N(, H)]`` actions and returns ``[B]`` scores.

    Example:
        >>> @batched
        ... def hit_rate(actions, data):
        ...     return (actions == data["label"]).float().mean(dim=-1)
    """
    fn._hybridopt_batched = True  # type: ignore[attr-defined]
    return fn


@dataclass
class ScoreBatch:
    """Scores of a batch of action sequences.

    Attributes:
        scores: ``[B]`` float64 scores; non-finite ones are left as they came (see ``finite``).
            With several objectives, their scalarisation: the mean of the objectives, or
            ``objectives @ weights`` once :attr:`Scorer.weights` is set.
        observed: bool mask shaped like the actions (True = outcome observed) when ``score_fn``
            returned per-item rewards, else None.
        finite: ``[B]`` bool, False where the score (or any objective) was NaN or infinite.
        objectives: ``[B, M]`` float64 objective values when the scorer has ``objectives``,
            else None.
    """

    scores: Tensor
    observed: Tensor | None
    finite: Tensor
    objectives: Tensor | None = None

    @property
    def n_nonfinite(self) -> int:
        return int((~self.finite).sum())

    def scalarised(
        self, weights: Tensor | None, low: Tensor | None = None, high: Tensor | None = None
    ) -> ScoreBatch:
        """The same batch with ``scores`` = :func:`~hybridopt.objectives.scalarise` of its
        objectives under ``weights`` (and ``low``/``high`` normalisation); needs objectives."""
        if self.objectives is None:
            raise ValueError("scalarised needs objectives; this batch has a single score.")
        scores = scalarise(self.objectives, weights, low, high)
        finite = torch.isfinite(scores) & torch.isfinite(self.objectives).all(dim=1)
        return ScoreBatch(scores, self.observed, finite, self.objectives)


def _as_tensor(value, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, bool) or isinstance(value, str) or value is None:
        raise TypeError(
            f"score_fn must return a number or a tensor; {what} returned "
            f"{type(value).__name__} {value!r:.60}."
        )
    if isinstance(value, (numbers.Real, np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"score_fn must return numbers; {what} returned dtype {array.dtype}.")
        return torch.as_tensor(array)
    several = ""
    if isinstance(value, (tuple, list, dict)):
        several = (
            f" ({len(value)} values: if these are several objectives, pass objectives="
            f"{len(value)} or their names)"
        )
    raise TypeError(
        f"score_fn must return a float, a 0-d tensor, or per-item rewards shaped like the "
        f"actions; {what} returned {type(value).__name__}{several}."
    )


def _reduce(raw: Tensor, actions_shape: torch.Size, batch: bool, what: str):
    """Turn a score_fn result into ([B] scores, observed mask or None)."""
    if raw.is_complex() or raw.dtype == torch.bool:
        raise TypeError(f"score_fn must return real numbers; {what} returned dtype {raw.dtype}.")
    raw = raw.to(torch.float64).cpu()
    lead = actions_shape[:1] if batch else torch.Size()
    if raw.shape == lead:
        return raw.reshape(-1), None
    if raw.shape == actions_shape:
        # Per-item rewards: NaN marks an unobserved item, which contributes nothing.
        observed = ~torch.isnan(raw)
        flat_obs = observed.reshape(len(raw) if batch else 1, -1)
        flat_raw = torch.where(observed, raw, 0.0).reshape(flat_obs.shape)
        count = flat_obs.sum(dim=1)
        # A sequence with no observed item scores 0: nothing is known about it.
        scores = flat_raw.sum(dim=1) / count.clamp(min=1)
        return scores, observed
    expected = "[B] scores" if batch else "a single number"
    several = ""
    if raw.dim() == len(lead) + 1 and raw.shape[: len(lead)] == lead:
        several = (
            f" (if these are {raw.shape[-1]} objectives, pass objectives={raw.shape[-1]} or "
            "their names)"
        )
    raise ValueError(
        f"score_fn returned shape {tuple(raw.shape)} for actions of shape "
        f"{tuple(actions_shape)}: expected {expected} or per-item rewards shaped like the "
        f"actions {tuple(actions_shape)} (NaN where unobserved){several}."
    )


class Scorer:
    """Calls ``score_fn`` on ``[B, N(, H)]`` actions in the fastest way it supports.

    A function marked :func:`batched` is called once per batch. Otherwise the scorer tries
    ``torch.func.vmap`` over the batch and keeps it if it agrees with per-sequence calls on the
    validation sample; failing that, it calls ``score_fn`` once per sequence.

    Args:
        score_fn: ``score_fn(actions, data) -> float | Tensor``; higher is better. With
            ``objectives``: M numbers per sequence (tuple, list, 1-D tensor, or dict of named
            numbers; batched: ``[B, M]`` or a tuple/dict of ``[B]``), all maximised.
        objectives: None (one score), an int M, or the M objective names. Names are fixed by
            the first call when not given: a dict's keys (in its order), else
            ``objective_0``, ``objective_1``, ...

    Attributes:
        n_objectives: M, or None for a single score.
        names: the objective names once known (after :meth:`check`), else None.
        weights: ``[M]`` scalarisation weights for ``ScoreBatch.scores``; None = the mean.
            Set it with :meth:`set_weights`.

    Example:
        >>> scorer = Scorer(lambda a, d: {"hit": hit(a, d), "rate": rate(a)}, objectives=2)
        >>> scorer.check(sample_actions, data).objectives.shape   # [B, 2]
    """

    def __init__(self, score_fn: Callable, objectives=None) -> None:
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable; got {type(score_fn).__name__}.")
        self.score_fn = score_fn
        self.mode = "batched" if getattr(score_fn, "_hybridopt_batched", False) else "unknown"
        self.n_objectives, self.names = parse_objectives(objectives)
        self.weights: Tensor | None = None

    def set_weights(self, weights) -> None:
        """Scalarise the objectives as ``objectives @ weights`` (None: back to the mean)."""
        if self.n_objectives is None:
            raise ValueError("weights need several objectives; this scorer has objectives=None.")
        self.weights = None if weights is None else check_weights(weights, self.n_objectives)

    def check(self, actions: Tensor, data: Data) -> ScoreBatch:
        """Validate ``score_fn`` on a ``[B, N(, H)]`` sample and choose the calling mode.

        Raises:
            TypeError: if ``score_fn`` returns something that is not a number or a tensor.
            ValueError: if its result has the wrong shape, or its number of values (or names)
                disagrees with ``objectives``.
            RuntimeError: if ``score_fn`` itself raises (the original error is chained).
        """
        try:
            if self.mode == "batched":
                return self(actions, data)
            per_sequence = self._per_sequence(actions, data)
            self.mode = "per_sequence"
            if self._vmapped_agrees(actions, data, per_sequence):
                self.mode = "vmap"
            log.debug("score_fn will be called in mode %s", self.mode)
            return per_sequence
        except (TypeError, ValueError):
            raise
        except Exception as err:  # the user's function failed: say so, keep the cause
            raise RuntimeError(
                f"score_fn raised {type(err).__name__} on a sample of actions of shape "
                f"{tuple(actions[0].shape)}: {err}"
            ) from err

    def __call__(self, actions: Tensor, data: Data) -> ScoreBatch:
        """Scores of ``[B, N(, H)]`` actions as a :class:`ScoreBatch`."""
        if self.mode == "batched":
            if self.n_objectives is not None:
                value = self.score_fn(actions, data)
                what = "the batched score_fn"
                return self._multi_batch(self._objectives(value, actions.shape, True, what))
            raw = _as_tensor(self.score_fn(actions, data), "the batched score_fn")
            scores, observed = _reduce(raw, actions.shape, batch=True, what="score_fn")
            return _batch(scores, observed)
        if self.mode == "vmap":
            try:
                return self._vmapped(actions, data)
            except Exception as err:  # a shape that vmap cannot batch: fall back for good
                log.warning("score_fn failed under vmap (%s); calling it per sequence", err)
                self.mode = "per_sequence"
        return self._per_sequence(actions, data)

    def _per_sequence(self, actions: Tensor, data: Data) -> ScoreBatch:
        if self.n_objectives is not None:
            rows = [self._objectives(self.score_fn(a, data), a.shape, False, "score_fn")
                    for a in actions]
            return self._multi_batch(torch.cat(rows))
        results = [
            _reduce(_as_tensor(self.score_fn(a, data), "score_fn"), a.shape, False, "score_fn")
            for a in actions
        ]
        scores = torch.cat([s for s, _ in results])
        observed = None
        if any(o is not None for _, o in results):
            observed = torch.stack(
                [o if o is not None else torch.ones(actions.shape[1:], dtype=torch.bool)
                 for _, o in results]
            )
        return _batch(scores, observed)

    def _vmapped(self, actions: Tensor, data: Data) -> ScoreBatch:
        raw = torch.func.vmap(self.score_fn, in_dims=(0, None))(actions, data)
        if self.n_objectives is not None:
            # A tuple/dict of 0-d tensors comes back as a tuple/dict of [B]
            return self._multi_batch(self._objectives(raw, actions.shape, True, "score_fn"))
        scores, observed = _reduce(_as_tensor(raw, "score_fn"), actions.shape, True, "score_fn")
        return _batch(scores, observed)

    def _vmapped_agrees(self, actions: Tensor, data: Data, reference: ScoreBatch) -> bool:
        try:
            batch = self._vmapped(actions, data)
        except Exception:
            return False
        if reference.objectives is not None:
            return bool(torch.allclose(batch.objectives, reference.objectives, rtol=1e-5,
                                       atol=1e-6, equal_nan=True))
        return bool(torch.allclose(batch.scores, reference.scores, rtol=1e-5, atol=1e-6,
                                   equal_nan=True))

    def _objectives(self, value, actions_shape: torch.Size, batch: bool, what: str) -> Tensor:
        """``[B, M]`` (``[1, M]`` for one sequence) float64 objectives from one score_fn result."""
        m = self.n_objectives
        lead = actions_shape[:1] if batch else torch.Size()
        if isinstance(value, dict):
            keys = tuple(value)
            if self.names is None and len(keys) == m and all(isinstance(k, str) for k in keys):
                self.names = keys
            if self.names is None or set(keys) != set(self.names):
                declared = self.names if self.names is not None else m
                raise ValueError(
                    f"{what} returned a dict with keys {list(keys)}; objectives = {declared!r} "
                    f"expects {m} objectives{'' if self.names is None else ' with those names'}."
                )
            values = [value[name] for name in self.names]
        elif isinstance(value, (tuple, list)):
            if len(value) != m:
                raise ValueError(
                    f"{what} returned {len(value)} values; objectives = "
                    f"{self.names or m!r} expects {m}."
                )
            values = list(value)
        else:
            raw = _real(value, what)
            if raw.shape == lead and m == 1:
                raw = raw.unsqueeze(-1)
            if raw.shape != (*lead, m):
                if raw.shape == actions_shape:
                    raise ValueError(
                        f"{what} returned per-item rewards shaped like the actions "
                        f"{tuple(actions_shape)}: per-item rewards are single-objective only; "
                        f"with objectives = {self.names or m!r}, return {m} numbers per sequence."
                    )
                expected = f"[B, M] = [{lead[0]}, {m}]" if batch else f"{m} numbers"
                raise ValueError(
                    f"{what} returned shape {tuple(raw.shape)} for actions of shape "
                    f"{tuple(actions_shape)}: objectives = {self.names or m!r} expects {expected}."
                )
            values = None
        if values is not None:
            columns = [_real(v, what) for v in values]
            for column in columns:
                if column.shape != lead:
                    raise ValueError(
                        f"{what} returned an objective of shape {tuple(column.shape)}: "
                        f"objectives = {self.names or m!r} expects "
                        f"{'[B] each' if batch else 'one number each'}."
                    )
            raw = torch.stack(columns, dim=-1)
        if self.names is None:
            self.names = tuple(f"objective_{i}" for i in range(m))
        return raw.reshape(-1, m)

    def _multi_batch(self, objectives: Tensor) -> ScoreBatch:
        scores = objectives[:, 0] if self.n_objectives == 1 else scalarise(objectives, self.weights)
        finite = torch.isfinite(scores) & torch.isfinite(objectives).all(dim=1)
        return ScoreBatch(scores=scores, observed=None, finite=finite, objectives=objectives)


def _real(value, what: str) -> Tensor:
    """A score_fn value as a float64 CPU tensor; TypeError unless real numbers."""
    raw = _as_tensor(value, what)
    if raw.is_complex() or raw.dtype == torch.bool:
        raise TypeError(f"score_fn must return real numbers; {what} returned dtype {raw.dtype}.")
    return raw.to(torch.float64).cpu()


def _batch(scores: Tensor, observed: Tensor | None) -> ScoreBatch:
    return ScoreBatch(scores=scores, observed=observed, finite=torch.isfinite(scores))
