"""Three items per sample, one never observed: the partially observed task.

Think of a recommender that decides, for each user (a row of features ``x``), whether to
show each of three items. Showing (``ACT``) item ``h`` earns its outcome, +1 (a click) or
-1 (an annoyed user), which depends on a hidden noisy function of ``x`` and ``h``;
skipping it (``SKIP``) earns 0. For every row the outcome of exactly one item, chosen at
random, was never logged: its reward is NaN whatever the action. The score is the mean
reward over the observed items only, which is what hybridopt does with per-item rewards
that hold NaN where unobserved (see :func:`items_rewards`).

The same data also serve supervised training on partial targets:
:func:`observed_targets` gives the best action of every observed item and the mask, ready
for :func:`hybridopt.losses.masked_cross_entropy`.

Everything here is deterministic given a seed and uses only local ``torch.Generator``
objects (the global RNG state is never read or changed).

Data layout:
    ``make_items_data`` returns ``{"train": d, "valid": d, "test": d}`` with
    ``d = {"x": FloatTensor[N, features], "reward": FloatTensor[N, 3] (NaN where
    unobserved), "mask": BoolTensor[N, 3] (True = observed)}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridopt.scoring import batched

# The task modules share one set of argument checks and one way to cut splits.
from hybridopt.tasks._common import _check_int, _split, _split_lengths

__all__ = [
    "ACT",
    "ITEMS",
    "SKIP",
    "ItemsModel",
    "item_prior_baseline",
    "items_rewards",
    "items_score",
    "make_items_data",
    "observed_targets",
]

SKIP = 0
ACT = 1
ITEMS = 3  # H, items per row

# --- generator parameters -------------------------------------------------------------
_TEACHER_HIDDEN = 16  # width of the hidden teacher net behind the outcomes
_GAIN = 3.0  # sharpness of P(outcome = +1 | x, h): larger means less noisy outcomes
_ITEM_BIAS = (0.4, 0.0, -0.4)  # item 0 is liked more often than item 2


def make_items_data(
    n: int = 3000,
    features: int = 10,
    seed: int = 0,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
) -> dict[str, dict[str, torch.Tensor]]:
    """Build train/valid/test splits of the three-item task.

    Rows have features ``x ~ N(0, I)``. A hidden teacher net gives each item a logit
    ``z_h(x) = tanh(x @ W1) @ W2[:, h] + bias_h``; the outcome of acting on item ``h`` is
    +1 with probability ``sigmoid(3 z_h(x))`` and -1 otherwise (so even a policy that
    knows the teacher is sometimes wrong). One item per row, uniformly at random, is
    unobserved: its reward is NaN and its mask False. Rows are cut into consecutive
    splits of ``round(fraction * n)`` rows (test takes the remainder).

    Args:
        n: Total number of rows (>= 3).
        features: Features per row (>= 1).
        seed: Seed of the local ``torch.Generator``; same seed gives the same data.
        splits: Three positive fractions (train, valid, test) summing to 1.

    Returns:
        ``{"train": d, "valid": d, "test": d}`` with ``d["x"]`` float32 ``[N, features]``,
        ``d["reward"]`` float32 ``[N, 3]`` (+1 or -1, NaN at the unobserved item) and
        ``d["mask"]`` bool ``[N, 3]`` (exactly two True per row).

    Raises:
        ValueError: If an argument is invalid (the message names it and shows its value).

    Example:
        >>> d = make_items_data(seed=0)
        >>> d["train"]["reward"].shape, int(d["train"]["mask"].sum(1).min())
        (torch.Size([1800, 3]), 2)
    """
    n = _check_int("n", n, 3)
    features = _check_int("features", features, 1)
    seed = _check_int("seed", seed)
    lengths = _split_lengths(n, splits)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    # Hidden teacher: P(outcome = +1 | x, h)
    w1 = 2.0 * torch.randn(features, _TEACHER_HIDDEN, generator=gen) / features**0.5
    w2 = torch.randn(_TEACHER_HIDDEN, ITEMS, generator=gen) / _TEACHER_HIDDEN**0.5
    x = torch.randn(n, features, generator=gen)
    logits = torch.tanh(x @ w1) @ w2 + torch.tensor(_ITEM_BIAS)
    p_good = torch.sigmoid(_GAIN * logits)

    # Noisy outcomes, and one unobserved item per row
    outcome = torch.where(torch.rand(n, ITEMS, generator=gen) < p_good, 1.0, -1.0)
    hidden = torch.randint(0, ITEMS, (n,), generator=gen)
    mask = torch.arange(ITEMS) != hidden.unsqueeze(1)
    reward = torch.where(mask, outcome, torch.nan)
    return _split({"x": x, "reward": reward, "mask": mask}, lengths)


@batched
def items_rewards(actions: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-item rewards of a policy's decisions, NaN where the outcome is unobserved.

    ``ACT`` on an observed item earns its outcome (+1 or -1), ``SKIP`` earns 0, and any
    decision on the unobserved item is NaN, so hybridopt scores a sequence by the mean
    over its observed items (range ``[-1, 1]``). Only shapes and dtypes are checked: the
    function is plain tensor ops, so it also runs under ``torch.func.vmap`` (a value
    other than ``ACT`` counts as a skip). It is marked ``@batched``: on ``[B, N, 3]``
    actions it returns ``[B, N, 3]`` per-item rewards, which hybridopt accepts as is.

    Args:
        actions: Integer tensor of ``SKIP``/``ACT`` decisions, ``[N, 3]`` or ``[B, N, 3]``.
        data: Split dict; ``data["reward"]`` (``[N, 3]``) and ``data["mask"]`` are used.

    Returns:
        Float32 tensor shaped like ``actions``.

    Raises:
        ValueError: If ``actions`` does not end with the shape of ``data["reward"]``.
        TypeError: If ``actions`` is not an integer tensor.
    """
    reward, mask = data["reward"], data["mask"]
    if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise TypeError(f"actions must be an integer tensor, got dtype {actions.dtype}")
    if actions.dim() not in (2, 3) or actions.shape[-2:] != reward.shape:
        raise ValueError(
            f"actions must have shape [N, {ITEMS}] or [B, N, {ITEMS}] matching data['reward'] "
            f"{tuple(reward.shape)}, got {tuple(actions.shape)}"
        )
    earned = torch.where(actions == ACT, reward, torch.zeros((), dtype=reward.dtype))
    return torch.where(mask, earned, torch.full((), torch.nan, dtype=reward.dtype))


@batched
def items_score(actions: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean reward over the observed items, times 100 (higher is better).

    The scalar form of :func:`items_rewards`, equal to what hybridopt computes from it
    times 100. Properties: range ``[-100, 100]``; always ``SKIP`` scores 0; acting exactly
    on the observed +1 outcomes scores ``100 * (share of +1 among observed items)``
    (about 51 on the default train split); uniformly random decisions score about half of
    always ``ACT`` (always ``ACT`` scores about 1, the feature-blind
    :func:`item_prior_baseline` about 12).

    Args:
        actions: Integer tensor of ``SKIP``/``ACT`` decisions, ``[N, 3]`` or ``[B, N, 3]``.
        data: Split dict with ``"reward"`` and ``"mask"``.

    Returns:
        Float32 score: a 0-d tensor for ``[N, 3]`` actions, ``[B]`` for ``[B, N, 3]``.

    Raises:
        ValueError: If shapes do not match or an action is not ``SKIP`` or ``ACT``.
        TypeError: If ``actions`` is not an integer tensor.
    """
    rewards = items_rewards(actions, data)
    if actions.numel() and bool(((actions != SKIP) & (actions != ACT)).any()):
        raise ValueError(
            f"actions must be SKIP ({SKIP}) or ACT ({ACT}), got values in "
            f"[{int(actions.min())}, {int(actions.max())}]"
        )
    mask = data["mask"].to(rewards.device)
    total = torch.where(mask, rewards, 0.0).sum(dim=(-2, -1))
    return 100.0 * total / mask.sum().clamp_min(1)


def observed_targets(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Best action of every observed item, for supervised losses on partial targets.

    Example:
        >>> targets, mask = observed_targets(d["train"])
        >>> loss = masked_cross_entropy(model(d["train"]["x"]), targets, mask)

    Args:
        data: Split dict with ``"reward"`` and ``"mask"``.

    Returns:
        ``(targets, mask)``: long ``[N, 3]`` with ``ACT`` where the observed outcome is
        +1, ``SKIP`` where it is -1 and -1 where unobserved; and a copy of ``data["mask"]``.
    """
    mask = data["mask"].clone()
    best = torch.where(data["reward"] > 0, ACT, SKIP)
    return torch.where(mask, best, -1).long(), mask


class ItemsModel(nn.Module):
    """Shared MLP trunk -> one head per item: logits ``[N, 3, 2]`` over (skip, act).

    Args:
        features: Input features per row (10 for :func:`make_items_data`).
        hidden: Width of the two hidden layers.
    """

    def __init__(self, features: int = 10, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, ITEMS * 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map rows ``[N, features]`` to logits ``[N, 3, 2]`` (index ``SKIP``/``ACT``)."""
        return self.net(x).view(x.shape[0], ITEMS, 2)


def item_prior_baseline(
    data: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Hand-made baseline: act on an item for every row iff its mean observed reward is > 0.

    It ignores the features: the best a policy can do knowing only each item's
    popularity, measured on ``reference`` (e.g. the train split; default ``data``).

    Args:
        data: Split dict with ``"mask"`` (its rows get the decisions).
        reference: Split dict with ``"reward"`` and ``"mask"`` to measure popularity on.

    Returns:
        Long tensor ``[N, 3]`` of ``SKIP``/``ACT`` decisions for the rows of ``data``.
    """
    reference = data if reference is None else reference
    mask = reference["mask"]
    mean = torch.where(mask, reference["reward"], 0.0).sum(0) / mask.sum(0).clamp_min(1)
    return torch.where(mean > 0, ACT, SKIP).long().expand_as(data["mask"]).clone()
