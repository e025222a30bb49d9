"""Masked losses for partially observed targets.

Each sample has ``H`` items of which only some are observed (``mask`` True). Unobserved
items never reach an indexing or arithmetic op with their raw values: logits, predictions and
targets at masked positions are replaced with ``torch.where`` *before* any computation, so
garbage targets (``-1``, out of range), NaN targets and even ``inf``/NaN logits or predictions
there give a finite loss and an exactly zero gradient. Non-finite values at *observed* positions
are not filtered and propagate to the loss as usual.

Reductions: ``"mean"`` averages over observed items (item-weighted, like
``F.cross_entropy(..., ignore_index=...)``; a row with more observed items weighs more),
``"sum"`` sums them, ``"none"`` returns per-item losses shaped like the targets, 0 where masked.
If nothing is observed, ``"mean"`` and ``"sum"`` return 0 still attached to the graph
(zero gradient), never NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["masked_cross_entropy", "masked_mse"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")


def _as_bool_mask(mask: Tensor, shape: torch.Size) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask: expected a Tensor or None, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(f"mask: expected shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"mask: expected bool or 0/1 values, got {mask.dtype} with other values")
    return mask != 0


def _reduce(per_item: Tensor, mask: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_item
    total = per_item.sum()
    if reduction == "sum":
        return total
    return total / mask.sum().clamp(min=1).to(total.dtype)


def masked_cross_entropy(
    logits: Tensor, targets: Tensor, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy over observed items only.

    Args:
        logits: Float tensor ``[N, A]`` or ``[N, H, A]`` of unnormalised scores.
        targets: Integer tensor ``[N]`` or ``[N, H]``. Any value (e.g. ``-1``) is allowed
            where ``mask`` is False; observed targets must lie in ``[0, A)``.
        mask: Bool (or 0/1) tensor shaped like ``targets``, True = observed. ``None`` means
            everything is observed.
        reduction: ``"mean"`` over observed items, ``"sum"``, or ``"none"`` (per-item losses
            shaped like ``targets``, 0 where masked).

    Returns:
        A scalar, or a ``targets``-shaped tensor for ``reduction="none"``.

    Raises:
        TypeError: ``logits`` not floating point, ``targets`` not integer, ``mask`` not a tensor.
        ValueError: mismatched shapes, bad ``reduction``, non-0/1 mask, observed target out
            of range.

    Example:
        >>> logits = torch.zeros(1, 3, 2)
        >>> targets = torch.tensor([[0, -1, 1]])
        >>> mask = torch.tensor([[True, False, True]])
        >>> round(masked_cross_entropy(logits, targets, mask).item(), 4)  # log(2)
        0.6931
    """
    _check_reduction(reduction)
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating-point Tensor, got {_describe(logits)}")
    if not isinstance(targets, Tensor) or not _is_integer(targets):
        raise TypeError(f"targets: expected an integer Tensor, got {_describe(targets)}")
    if logits.dim() not in (2, 3) or logits.shape[-1] < 1:
        raise ValueError(
            f"logits: expected shape [N, A] or [N, H, A] with A >= 1, got {tuple(logits.shape)}"
        )
    if targets.shape != logits.shape[:-1]:
        raise ValueError(
            f"targets: expected shape {tuple(logits.shape[:-1])} (logits without "
            f"the class dim), got {tuple(targets.shape)}"
        )
    n_classes = logits.shape[-1]
    if mask is None:
        mask = torch.ones_like(targets, dtype=torch.bool)
    else:
        mask = _as_bool_mask(mask, targets.shape)
    safe_targets = torch.where(mask, targets, torch.zeros_like(targets)).long()
    bad = (safe_targets < 0) | (safe_targets >= n_classes)
    if bad.any():
        raise ValueError(
            f"targets: observed targets must be in [0, {n_classes}), "
            f"got {targets[bad].unique().tolist()}"
        )
    # Replace masked logits before log-softmax: where() routes exactly 0 gradient to them
    # and inf/NaN there never enters the arithmetic.
    safe_logits = torch.where(
        mask.unsqueeze(-1), logits, torch.zeros((), dtype=logits.dtype, device=logits.device)
    )
    nll = -torch.log_softmax(safe_logits, dim=-1).gather(-1, safe_targets.unsqueeze(-1))
    per_item = torch.where(
        mask, nll.squeeze(-1), torch.zeros((), dtype=nll.dtype, device=nll.device)
    )
    return _reduce(per_item, mask, reduction)


def masked_mse(
    pred: Tensor, target: Tensor, mask: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Squared error over observed elements only.

    Args:
        pred: Float tensor of any shape (e.g. ``[N]`` or ``[N, H]``).
        target: Float tensor shaped like ``pred``; may hold NaN/inf where unobserved.
        mask: Bool (or 0/1) tensor shaped like ``target``, True = observed. ``None`` means
            observed wherever ``target`` is finite.
        reduction: ``"mean"`` over observed elements, ``"sum"``, or ``"none"``.

    Returns:
        A scalar, or a ``target``-shaped tensor for ``reduction="none"``.

    Raises:
        TypeError: ``pred``/``target`` not floating point, ``mask`` not a tensor.
        ValueError: mismatched shapes, bad ``reduction``, non-0/1 mask.

    Example:
        >>> pred = torch.tensor([[1.0, 2.0, 3.0]])
        >>> target = torch.tensor([[0.0, float("nan"), 5.0]])
        >>> masked_mse(pred, target).item()  # (1 + 4) / 2
        2.5
    """
    _check_reduction(reduction)
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point Tensor, got {_describe(t)}")
    if target.shape != pred.shape:
        raise ValueError(
            f"target: expected shape {tuple(pred.shape)} (like pred), got {tuple(target.shape)}"
        )
    mask = torch.isfinite(target) if mask is None else _as_bool_mask(mask, target.shape)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    diff = torch.where(mask, pred, zero) - torch.where(mask, target, zero.to(target.dtype))
    per_item = torch.where(mask, diff.square(), zero.to(diff.dtype))
    return _reduce(per_item, mask, reduction)


def _is_integer(t: Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"Tensor of dtype {x.dtype}, shape {tuple(x.shape)}"
    return type(x).__name__
