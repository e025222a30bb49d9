"""A deceptive bandit: the policy gradient stalls, a population can escape.

A benchmark of *stalling*, the situation hybridopt's phase switching exists for. Each row
``x`` has a best action ``y = argmax(x @ W)`` out of three, and the score rewards accuracy
plus an all-or-nothing bonus of 50 for a coordinated move: at least 90% of the "trap rows"
(``x[:, 0] > 1``, about 16% of the rows) must take action 2 at once. ``W`` is calibrated so
that action 2 is the best one on 75% of the trap rows: the accuracy-optimal policy plays 2
on about 75% of them and gets no bonus, while playing 2 on all of them costs about 4
points of accuracy and earns 50.

Why REINFORCE stalls: it learns from *sampled* actions. A policy that learned the labels
samples action 2 on about 75% of the trap rows, with a spread of about 3 points over
~200 rows, so a sample with 90% of them on action 2 essentially never occurs, the bonus
never appears in its rewards, and it converges to the accuracy optimum (score ~98).
A genetic algorithm scores the *argmax* policy of each weight vector: from weights that
are not yet committed (e.g. a fresh initialisation), a mutation that tips the uncertain
trap rows to action 2 earns the bonus outright (seed 0: the genetic phase alone reaches
~130 within 3000 evaluations). Once the gradient has made the policy confident, small
mutations around it no longer reach 90%: the jump has to come early or be large.

Everything here is deterministic given a seed and uses only local ``torch.Generator``
objects (the global RNG state is never read or changed).

Data layout:
    ``make_deceptive_data`` returns ``{"train": d, "valid": d, "test": d}`` with
    ``d = {"x": FloatTensor[N, features], "y": LongTensor[N], "trap": BoolTensor[N]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridopt.scoring import batched

# The task modules share one set of argument checks and one way to cut splits.
from hybridopt.tasks._common import _check_int, _split, _split_lengths

__all__ = [
    "BONUS",
    "JUMP_ACTION",
    "TRAP_SHARE",
    "DeceptiveMLP",
    "deceptive_score",
    "make_deceptive_data",
]

JUMP_ACTION = 2  # the action the trap rows must take together
TRAP_SHARE = 0.9  # share of the trap rows that must take JUMP_ACTION for the bonus
BONUS = 50.0  # the all-or-nothing bonus
_ACTIONS = 3
_TRAP_THRESHOLD = 1.0  # a row is a trap row when x[:, 0] > this
_TRAP_ACCURACY = 0.75  # share of the trap rows whose best action is 2 (calibrated)


def make_deceptive_data(
    n: int = 2000,
    features: int = 8,
    seed: int = 0,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
) -> dict[str, dict[str, torch.Tensor]]:
    """Build train/valid/test splits of the deceptive bandit.

    Rows have ``x ~ N(0, I)`` and the best action ``y = argmax(x @ W)``, where ``W`` of
    shape ``[features, 3]`` is ``N(0, 1)`` except its first row ``(0, 0, pull)``: feature 0
    only pulls towards action 2, and ``pull`` is set (bisection) so that action 2 is the
    best one on 75% of all trap rows (``x[:, 0] > 1``) of the ``n`` rows.
    Rows are cut into consecutive splits of ``round(fraction * n)`` rows (test takes
    the remainder).

    Args:
        n: Total number of rows (>= 3).
        features: Features per row (>= 1).
        seed: Seed of the local ``torch.Generator``; same seed gives the same data.
        splits: Three positive fractions (train, valid, test) summing to 1.

    Returns:
        ``{"train": d, "valid": d, "test": d}`` with ``d["x"]`` float32 ``[N, features]``,
        ``d["y"]`` int64 ``[N]`` in ``{0, 1, 2}`` and ``d["trap"]`` bool ``[N]``.

    Raises:
        ValueError: If an argument is invalid (the message names it and shows its value).

    Example:
        >>> d = make_deceptive_data(seed=0)
        >>> d["train"]["x"].shape, d["train"]["trap"].float().mean() > 0.1
        (torch.Size([1200, 8]), tensor(True))
    """
    n = _check_int("n", n, 3)
    features = _check_int("features", features, 1)
    seed = _check_int("seed", seed)
    lengths = _split_lengths(n, splits)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    w = torch.randn(features, _ACTIONS, generator=gen)
    x = torch.randn(n, features, generator=gen)
    trap = x[:, 0] > _TRAP_THRESHOLD
    w[0] = torch.tensor([0.0, 0.0, _calibrate_pull(x[trap], w)])
    y = (x @ w).argmax(dim=1)
    return _split({"x": x, "y": y, "trap": trap}, lengths)


def _calibrate_pull(x_trap: torch.Tensor, w: torch.Tensor) -> float:
    """Weight of x[:, 0] on action 2 that makes 2 the best action on _TRAP_ACCURACY of trap rows."""
    if len(x_trap) == 0:
        return 0.0
    # The share grows with the pull (x[:, 0] > 1 on trap rows): bisection
    rest = x_trap[:, 1:] @ w[1:]
    low, high = 0.0, 64.0
    for _ in range(40):
        pull = (low + high) / 2
        logits = rest + x_trap[:, :1] * torch.tensor([0.0, 0.0, pull])
        share = float((logits.argmax(dim=1) == JUMP_ACTION).float().mean())
        low, high = (pull, high) if share < _TRAP_ACCURACY else (low, pull)
    return high


@batched
def deceptive_score(actions: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Accuracy in percent plus an all-or-nothing bonus for a coordinated jump.

    ``score = 100 * mean(actions == y) + 50 * [share of trap rows taking action 2 >= 0.9]``
    (no bonus when the data have no trap row). Properties: range ``[0, 150]``; the
    accuracy-optimal policy (``actions == y``) scores 100 and does not earn the bonus;
    playing action 2 on every trap row and ``y`` elsewhere scores about 146, the maximum;
    uniformly random actions score about 33.

    Args:
        actions: Integer tensor of actions in ``{0, 1, 2}``, shape ``[N]`` or ``[B, N]``.
        data: Split dict; ``data["y"]`` and ``data["trap"]`` (``[N]``) are used.

    Returns:
        Float32 score: a 0-d tensor for ``[N]`` actions, shape ``[B]`` for ``[B, N]``.

    Raises:
        ValueError: If shapes do not match, ``N`` is 0 or an action is not 0, 1 or 2.
        TypeError: If ``actions`` is not an integer tensor.
    """
    y, trap = data["y"], data["trap"]
    if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise TypeError(f"actions must be an integer tensor, got dtype {actions.dtype}")
    if actions.dim() not in (1, 2):
        raise ValueError(f"actions must have shape [N] or [B, N], got {tuple(actions.shape)}")
    n = actions.shape[-1]
    if y.shape != (n,) or trap.shape != (n,):
        raise ValueError(
            f"actions have N={n} rows but data['y'] has shape {tuple(y.shape)} and "
            f"data['trap'] {tuple(trap.shape)}"
        )
    if n == 0:
        raise ValueError("actions must have at least one row, got N=0")
    if bool(((actions < 0) | (actions >= _ACTIONS)).any()):
        raise ValueError(
            f"actions must be in {{0, 1, 2}}, got values in "
            f"[{int(actions.min())}, {int(actions.max())}]"
        )
    y, trap = y.to(actions.device), trap.to(actions.device)
    accuracy = (actions == y).float().mean(dim=-1)
    # The coordinated jump: enough trap rows on action 2 at once
    jumped = ((actions == JUMP_ACTION) & trap).sum(dim=-1)
    n_trap = int(trap.sum())
    bonus = (n_trap > 0) & (jumped >= TRAP_SHARE * n_trap)
    return 100.0 * accuracy + BONUS * bonus.float()


class DeceptiveMLP(nn.Module):
    """Linear -> tanh -> Linear: logits over the three actions.

    Args:
        features: Input features per row (8 for :func:`make_deceptive_data`).
        hidden: Width of the hidden layer.
    """

    def __init__(self, features: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map rows ``[N, features]`` to action logits ``[N, 3]``."""
        return self.net(x)
