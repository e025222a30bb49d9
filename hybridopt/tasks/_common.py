"""Argument checks and train/valid/test splitting shared by the task modules."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch


def _check_int(name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_fractions(name: str, values: object, length: int, what: str) -> list[float]:
    """``values`` as ``length`` positive floats summing to 1, else a ValueError."""
    try:
        fractions = [float(f) for f in values]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of {length} numbers, got {values!r}") from None
    if len(fractions) != length:
        raise ValueError(f"{name} must have {length} fractions ({what}), got {values!r}")
    if any(not math.isfinite(f) or f <= 0 for f in fractions):
        raise ValueError(f"{name} must all be positive, got {values!r}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got {values!r} (sum {sum(fractions)})")
    return fractions


def _split_lengths(n: int, splits: Sequence[float]) -> list[int]:
    """Rows of (train, valid, test): ``round(fraction * n)``, the test split takes the rest."""
    fractions = _check_fractions("splits", splits, 3, "train, valid, test")
    n_train, n_valid = round(fractions[0] * n), round(fractions[1] * n)
    lengths = [n_train, n_valid, n - n_train - n_valid]
    if min(lengths) < 1:
        raise ValueError(f"every split needs at least one row; n={n} and splits={splits!r} "
                         f"give {lengths}")
    return lengths


def _split(tensors: dict[str, torch.Tensor], lengths: list[int]) -> dict[str, dict]:
    """Cut row-aligned tensors into consecutive train/valid/test blocks."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    start = 0
    for name, length in zip(("train", "valid", "test"), lengths):
        out[name] = {k: v[start : start + length].clone() for k, v in tensors.items()}
        start += length
    return out
