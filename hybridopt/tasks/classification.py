"""Imbalanced multi-class classification scored by macro-F1.

Macro-F1 averages the F1 of every class, so a rare class counts as much as the majority
class; it depends on the whole set of predictions at once and cannot be differentiated
with respect to the model's weights. This task is the "metric" case of hybridopt: a
classifier trained to maximise macro-F1 directly instead of a cross-entropy surrogate.

The classes overlap on purpose: each class is a mixture of two Gaussian clusters with
unit noise whose centres lie close together, so boundaries are non-linear and even the
best classifier errs. With the defaults, always predicting the majority class scores
18.75, a small MLP trained by cross-entropy reaches about 55 to 65 on the held-out splits
and nothing reaches 100.

Everything here is deterministic given a seed and uses only local ``torch.Generator``
objects (the global RNG state is never read or changed).

Data layout:
    ``make_classification_data`` returns ``{"train": d, "valid": d, "test": d}`` with
    ``d = {"x": FloatTensor[N, features], "y": LongTensor[N]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridopt.scoring import batched
from hybridopt.tasks._common import _check_fractions, _check_int, _split, _split_lengths

__all__ = [
    "ClassifierMLP",
    "macro_f1",
    "majority_baseline",
    "make_classification_data",
]

# --- generator parameters -------------------------------------------------------------
_MODES = 2  # Gaussian clusters per class: two modes make the boundaries non-linear
_CENTRE_SCALE = 0.6  # std of the cluster centres; the noise around a centre has std 1


def make_classification_data(
    n: int = 4000,
    features: int = 12,
    classes: int = 4,
    imbalance: Sequence[float] = (0.6, 0.25, 0.1, 0.05),
    seed: int = 0,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
) -> dict[str, dict[str, torch.Tensor]]:
    """Build shuffled train/valid/test splits of an imbalanced, overlapping class set.

    Class ``c`` gets exactly its share ``imbalance[c]`` of the ``n`` rows (largest
    remainder rounding). Each class owns two cluster centres drawn from
    ``N(0, 0.6^2 I)``; a row of class ``c`` picks one of them at random and adds
    ``N(0, I)`` noise. Rows are shuffled, then cut into consecutive splits of
    ``round(fraction * n)`` rows (test takes the remainder), so every split has about
    the same class mix.

    Args:
        n: Total number of rows (>= 3).
        features: Features per row (>= 1).
        classes: Number of classes (>= 2).
        imbalance: ``classes`` positive class frequencies summing to 1.
        seed: Seed of the local ``torch.Generator``; same seed gives the same data.
        splits: Three positive fractions (train, valid, test) summing to 1.

    Returns:
        ``{"train": d, "valid": d, "test": d}`` with ``d["x"]`` float32 ``[N, features]``
        and ``d["y"]`` int64 ``[N]`` in ``[0, classes)``.

    Raises:
        ValueError: If an argument is invalid (the message names it and shows its value).

    Example:
        >>> d = make_classification_data(seed=0)
        >>> d["train"]["x"].shape, d["train"]["y"].shape
        (torch.Size([2400, 12]), torch.Size([2400]))
    """
    n = _check_int("n", n, 3)
    features = _check_int("features", features, 1)
    classes = _check_int("classes", classes, 2)
    seed = _check_int("seed", seed)
    shares = _check_fractions("imbalance", imbalance, classes, "one per class")
    lengths = _split_lengths(n, splits)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    # Exact class counts (largest remainder), then a shuffle
    raw = torch.tensor(shares, dtype=torch.float64) * n
    counts = raw.floor().long()
    extra = n - int(counts.sum())
    counts[torch.argsort(raw - counts, descending=True)[:extra]] += 1
    y = torch.repeat_interleave(torch.arange(classes), counts)
    y = y[torch.randperm(n, generator=gen)]

    # Two overlapping Gaussian clusters per class
    centres = _CENTRE_SCALE * torch.randn(classes, _MODES, features, generator=gen)
    mode = torch.randint(0, _MODES, (n,), generator=gen)
    x = centres[y, mode] + torch.randn(n, features, generator=gen)
    return _split({"x": x.float(), "y": y}, lengths)


@batched
def macro_f1(
    actions: torch.Tensor, data: dict[str, torch.Tensor], classes: int | None = None
) -> torch.Tensor:
    """Macro-averaged F1 of predicted classes, in percent (higher is better).

    For each class ``c``: ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``; a class with no
    predicted and no true rows has ``F1_c = 0`` (scikit-learn's ``zero_division=0``).
    The score is ``100 * mean_c F1_c`` over the classes ``0 .. C - 1``, where ``C`` is
    ``classes`` if given, else ``max(max(y), max(predictions)) + 1`` (per sequence),
    i.e. ``sklearn.metrics.f1_score(y, pred, average="macro", labels=range(C),
    zero_division=0) * 100``. Properties:

    * range ``[0, 100]``; predicting every row right scores 100;
    * predicting the majority class everywhere scores ``100 * 2p / (1 + p) / C`` for a
      majority share ``p`` (18.75 with the default imbalance);
    * uniformly random predictions score about ``100 * mean_c 2 p_c / (1 + C p_c)``
      (about 20.7 with the default imbalance);
    * vectorised: one pass over the rows per class, no Python loop over rows.

    Args:
        actions: Integer tensor of predicted classes, shape ``[N]`` or ``[B, N]``.
        data: Split dict; only ``data["y"]`` (int ``[N]``) is used.
        classes: Number of classes to average over; None infers it as above.

    Returns:
        Float32 score: a 0-d tensor for ``[N]`` actions, shape ``[B]`` for ``[B, N]``.

    Raises:
        ValueError: If shapes do not match, ``N`` is 0, a class is negative or not below
            ``classes``.
        TypeError: If ``actions`` or ``data["y"]`` is not an integer tensor.
    """
    y = data["y"]
    for name, t in (("actions", actions), ('data["y"]', y)):
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if actions.dim() not in (1, 2):
        raise ValueError(f"actions must have shape [N] or [B, N], got {tuple(actions.shape)}")
    n = actions.shape[-1]
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"actions have N={n} rows but data['y'] has shape {tuple(y.shape)}")
    if n == 0:
        raise ValueError("actions must have at least one row, got N=0")
    y = y.to(actions.device)
    lowest = min(int(actions.min()), int(y.min()))
    highest = max(int(actions.max()), int(y.max()))
    if lowest < 0:
        raise ValueError(f"classes must be >= 0, got a class {lowest}")
    if classes is not None:
        classes = _check_int("classes", classes, 1)
        if highest >= classes:
            raise ValueError(f"classes={classes} but actions or labels contain class {highest}")

    # Classes averaged over, per sequence
    if classes is None:
        n_classes = torch.maximum(actions.max(dim=-1).values, y.max()) + 1
    else:
        n_classes = torch.full(actions.shape[:-1], classes, device=actions.device)
    f1_sum = torch.zeros(actions.shape[:-1], dtype=torch.float32, device=actions.device)
    for c in range(highest + 1):  # classes above a sequence's C add exactly 0
        predicted = actions == c
        true = y == c
        tp = (predicted & true).sum(dim=-1)
        denominator = predicted.sum(dim=-1) + true.sum()
        f1_sum += torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), 0.0)
    return 100.0 * f1_sum / n_classes.to(torch.float32)


class ClassifierMLP(nn.Module):
    """Linear -> ReLU -> Linear -> ReLU -> Linear: logits over the classes.

    Args:
        features: Input features per row (12 for :func:`make_classification_data`).
        classes: Number of classes (the logits' last dimension).
        hidden: Width of the two hidden layers.
    """

    def __init__(self, features: int = 12, classes: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map rows ``[N, features]`` to class logits ``[N, classes]``."""
        return self.net(x)


def majority_baseline(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hand-made baseline: predict the most frequent class of ``data["y"]`` for every row.

    Ties go to the lowest class. With the default imbalance it scores 18.75 macro-F1.

    Args:
        data: Split dict with ``"y"`` of shape ``[N]``.

    Returns:
        Long tensor ``[N]`` filled with the majority class.
    """
    y = data["y"]
    majority = int(torch.bincount(y).argmax())
    return torch.full_like(y, majority, dtype=torch.long)
