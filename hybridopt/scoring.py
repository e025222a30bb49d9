"""Score-function adapters: batched, vmapped or per sequence, and their validation.

A user's ``score_fn(actions, data)`` may return one number per action sequence, or per-item
rewards shaped like ``actions`` with NaN where an item's outcome was not observed. The
:class:`Scorer` turns any of these into ``[B]`` scores for ``[B, N(, H)]`` actions, the one form
both phases use.
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
        observed: bool mask shaped like the actions (True = outcome observed) when ``score_fn``
            returned per-item rewards, else None.
        finite: ``[B]`` bool, False where the score was NaN or infinite.
    """

    scores: Tensor
    observed: Tensor | None
    finite: Tensor

    @property
    def n_nonfinite(self) -> int:
        return int((~self.finite).sum())


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
    raise TypeError(
        f"score_fn must return a float, a 0-d tensor, or per-item rewards shaped like the "
        f"actions; {what} returned {type(value).__name__}."
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
    raise ValueError(
        f"score_fn returned shape {tuple(raw.shape)} for actions of shape "
        f"{tuple(actions_shape)}: expected {expected} or per-item rewards shaped like the "
        f"actions {tuple(actions_shape)} (NaN where unobserved)."
    )


class Scorer:
    """Calls ``score_fn`` on ``[B, N(, H)]`` actions in the fastest way it supports.

    A function marked :func:`batched` is called once per batch. Otherwise the scorer tries
    ``torch.func.vmap`` over the batch and keeps it if it agrees with per-sequence calls on the
    validation sample; failing that, it calls ``score_fn`` once per sequence.

    Args:
        score_fn: ``score_fn(actions, data) -> float | Tensor``; higher is better.
    """

    def __init__(self, score_fn: Callable) -> None:
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable; got {type(score_fn).__name__}.")
        self.score_fn = score_fn
        self.mode = "batched" if getattr(score_fn, "_hybridopt_batched", False) else "unknown"

    def check(self, actions: Tensor, data: Data) -> ScoreBatch:
        """Validate ``score_fn`` on a ``[B, N(, H)]`` sample and choose the calling mode.

        Raises:
            TypeError: if ``score_fn`` returns something that is not a number or a tensor.
            ValueError: if its result has the wrong shape.
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
        scores, observed = _reduce(_as_tensor(raw, "score_fn"), actions.shape, True, "score_fn")
        return _batch(scores, observed)

    def _vmapped_agrees(self, actions: Tensor, data: Data, reference: ScoreBatch) -> bool:
        try:
            scores = self._vmapped(actions, data).scores
        except Exception:
            return False
        return bool(torch.allclose(scores, reference.scores, rtol=1e-5, atol=1e-6, equal_nan=True))


def _batch(scores: Tensor, observed: Tensor | None) -> ScoreBatch:
    return ScoreBatch(scores=scores, observed=observed, finite=torch.isfinite(scores))
