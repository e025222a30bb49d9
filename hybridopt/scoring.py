"""Score-function adapters: batched, vmapped or per sequence."""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def batched(fn: F) -> F:
    """Mark ``score_fn`` as batched: it takes ``[B, N(, H)]`` actions and returns ``[B]`` scores."""
    fn._hybridopt_batched = True  # type: ignore[attr-defined]
    return fn
