"""What a model's outputs are: logits, probabilities or log-probabilities, and their logits.

Every phase works on logits: the gradient phase samples from their softmax, the evaluators take
their argmax. A model that ends in ``softmax`` gives probabilities instead; sampling from a
softmax of probabilities is nearly uniform, so such a model would train silently and badly.
:func:`resolve_outputs` finds out once, on a sample input, which of the three a model returns,
and :func:`to_logits` turns its outputs into logits (``log p`` for probabilities: the argmax is
unchanged and ``softmax(log p) == p``).
"""

from __future__ import annotations

import difflib
import logging

import torch
from torch import Tensor, nn

OUTPUTS = ("auto", "logits", "probs", "log_probs")
"""Values of the ``outputs`` option; the first three after resolution are the modes."""

log = logging.getLogger(__name__)

_TOLERANCE = 1e-4
"""How far a row sum may be from 1 in float32 (looser for coarser dtypes and longer rows)."""


def _check_option(outputs: object) -> str:
    if not isinstance(outputs, str):
        raise TypeError(
            f"outputs must be one of {', '.join(map(repr, OUTPUTS))}; got "
            f"{type(outputs).__name__} {outputs!r:.60}."
        )
    if outputs not in OUTPUTS:
        close = difflib.get_close_matches(outputs, OUTPUTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"outputs must be one of {', '.join(map(repr, OUTPUTS))}; got {outputs!r}{hint}."
        )
    return outputs


def _sample_output(model: nn.Module, x: Tensor) -> Tensor:
    """The model's output on ``x``, in eval mode and without gradients (modes restored)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()  # no dropout draws, no batch-norm statistics updated by this look
        with torch.no_grad():
            out = model(x)
    finally:
        for module, training in modes:
            module.training = training
    if not isinstance(out, Tensor) or not out.is_floating_point():
        what = f"a {out.dtype} tensor" if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"model must return a float tensor [N, A] or [N, H, A]; it returned "
                        f"{what}.")
    if out.dim() < 2 or out.numel() == 0:
        raise ValueError(f"model must return outputs [N, A] or [N, H, A] with at least one "
                         f"row; it returned shape {list(out.shape)}.")
    return out.detach()


def _describe(out: Tensor) -> tuple[bool, bool, str]:
    """(rows are probabilities, rows are log-probabilities, the evidence in words)."""
    values = out.double()
    rows = values.reshape(-1, values.shape[-1])
    tolerance = max(_TOLERANCE, torch.finfo(out.dtype).eps * rows.shape[-1])
    sums, log_sums = rows.sum(-1), rows.exp().sum(-1)
    probs = bool(
        torch.isfinite(rows).all() and (rows >= 0).all()
        and ((sums - 1).abs() <= tolerance).all()
    )
    log_probs = bool(
        not torch.isnan(rows).any() and (rows <= tolerance).all()
        and ((log_sums - 1).abs() <= tolerance).all()
    )
    evidence = (
        f"over {rows.shape[0]} rows of {rows.shape[-1]} values: min "
        f"{rows.min().item():.4g}, max {rows.max().item():.4g}, row sums in "
        f"[{sums.min().item():.4g}, {sums.max().item():.4g}], sums of exp in "
        f"[{log_sums.min().item():.4g}, {log_sums.max().item():.4g}]"
    )
    return probs, log_probs, evidence


def resolve_outputs(outputs: str, model: nn.Module, x: Tensor) -> str:
    """Check the ``outputs`` option and say what the model returns: a mode for :func:`to_logits`.

    The model is run once on ``x`` (eval mode, no gradients; its modes are restored). ``"auto"``
    decides ``"probs"`` when every row along the last dimension is non-negative and sums to 1,
    ``"log_probs"`` when every value is <= 0 and the exponentials of each row sum to 1, else
    ``"logits"``, and logs the decision and its evidence at INFO. An explicit ``"probs"`` or
    ``"log_probs"`` is checked the same way; an explicit ``"logits"`` is kept, with a warning when
    the rows look like probabilities.

    Args:
        outputs: one of :data:`OUTPUTS`.
        model: the user's model, mapping ``x`` to ``[N, A]`` or ``[N, H, A]``.
        x: a sample input on the model's device (a few rows are enough).

    Returns:
        ``"logits"``, ``"probs"`` or ``"log_probs"``.

    Raises:
        TypeError: if ``outputs`` is not a string, or the model does not return a float tensor.
        ValueError: if ``outputs`` is not one of :data:`OUTPUTS`, or the model's rows are not
            what an explicit ``"probs"``/``"log_probs"`` says.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=-1))
        >>> resolve_outputs("auto", model, torch.randn(8, 4))
        'probs'
    """
    outputs = _check_option(outputs)
    probs, log_probs, evidence = _describe(_sample_output(model, x))
    if outputs == "auto":
        mode = "probs" if probs else "log_probs" if log_probs else "logits"
        why = {
            "probs": "rows are non-negative and sum to 1: probabilities, their log is used as "
                     "logits",
            "log_probs": "rows are <= 0 and their exponentials sum to 1: log-probabilities, "
                         "used as logits",
            "logits": "rows are not probabilities or log-probabilities: used as logits",
        }[mode]
        log.info("outputs='auto' decided %r: %s (%s)", mode, why, evidence)
        return mode
    if outputs == "probs" and not probs:
        raise ValueError(
            f"outputs='probs' but the model's rows are not probabilities (non-negative, summing "
            f"to 1 along the last dimension) {evidence}; pass outputs='auto' or 'logits'."
        )
    if outputs == "log_probs" and not log_probs:
        raise ValueError(
            f"outputs='log_probs' but the model's rows are not log-probabilities (<= 0, "
            f"exponentials summing to 1 along the last dimension) {evidence}; pass "
            f"outputs='auto' or 'logits'."
        )
    if outputs == "logits" and probs:
        log.warning(
            "outputs='logits' but the model's rows are non-negative and sum to 1 (%s): sampling "
            "from a softmax of probabilities is nearly uniform; pass outputs='probs' or 'auto'",
            evidence,
        )
    return outputs


def to_logits(out: Tensor, mode: str) -> Tensor:
    """Logits from model outputs of the given mode (from :func:`resolve_outputs`).

    Logits and log-probabilities are returned as they are; probabilities become
    ``log(p.clamp_min(tiny))``: the argmax is unchanged, ``softmax`` of the result gives ``p``
    back, and gradients flow through it (zero where ``p`` was clamped).

    Args:
        out: model outputs ``[..., A]``.
        mode: ``"logits"``, ``"probs"`` or ``"log_probs"``.

    Returns:
        Logits shaped like ``out``.

    Raises:
        ValueError: if ``mode`` is not one of the three (``"auto"`` must be resolved first).
    """
    if mode in ("logits", "log_probs"):
        return out
    if mode == "probs":
        return torch.log(out.clamp_min(torch.finfo(out.dtype).tiny))
    raise ValueError(
        f"mode must be 'logits', 'probs' or 'log_probs' (resolve outputs='auto' with "
        f"resolve_outputs first); got {mode!r}."
    )
