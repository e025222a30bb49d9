"""Synthetic trading task: a deterministic stand-in for the seed scenario.

A model (LSTM -> linear -> 3-way softmax) sees a window of past returns and picks one
action per step: buy, sell or hold. Its score is computed from all of its actions over a
whole dataset and relates the success rate of its operations to how many it makes, so it
cannot be differentiated with respect to the model's weights.

Everything here is deterministic given a seed and uses only local ``torch.Generator``
objects (the global RNG state is never read or changed).

Data layout:
    ``make_trading_data`` returns ``{"train": d, "valid": d, "test": d}`` with
    ``d = {"x": FloatTensor[N, window, 2], "next_return": FloatTensor[N]}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hybridopt.scoring import batched
from hybridopt.tasks._common import _check_fractions, _check_int

__all__ = [
    "ACTIONS",
    "BUY",
    "HOLD",
    "SELL",
    "TradingSignalModel",
    "make_trading_data",
    "momentum_heuristic",
    "synthetic_prices",
    "trading_objectives",
    "trading_score",
]

BUY = 0
SELL = 1
HOLD = 2
ACTIONS = ("buy", "sell", "hold")

# --- generator parameters (per-step log-returns) -------------------------------------
_SIGMA = 0.01  # long-run volatility of the innovations
_P_STAY = 0.98  # regime persistence: mean regime length 1 / (1 - 0.98) = 50 steps
# regime order: 0 up-trend, 1 down-trend, 2 choppy / mean-reverting
_DRIFT = (0.3 * _SIGMA, -0.3 * _SIGMA, 0.0)
_PHI = (0.05, 0.05, -0.5)  # AR(1) coefficient: momentum in trends, reversal in chop
_GARCH_A = 0.08  # GARCH(1,1) reaction to the last squared shock
_GARCH_B = 0.90  # GARCH(1,1) persistence of the variance
_BURN_IN = 500  # steps simulated and discarded so the series starts near stationarity
_CHUNK = 1024  # random numbers are drawn this many steps at a time


def synthetic_prices(n_steps: int, seed: int = 0) -> torch.Tensor:
    """Generate a deterministic synthetic series of per-step log-returns.

    The series is a regime-switching AR(1) process with GARCH(1,1) volatility:

    * a hidden Markov regime ``s_t`` in {up-trend, down-trend, choppy} stays put with
      probability 0.98 per step (mean length 50 steps) and otherwise jumps to one of the
      other two regimes with equal probability;
    * ``r_t = drift[s_t] + phi[s_t] * r_{t-1} + e_t`` with drift +-0.3 sigma in the
      trends (0 in chop) and ``phi`` = 0.05 in trends (weak momentum), -0.5 in chop
      (strong mean reversion);
    * ``e_t = sqrt(h_t) * z_t``, ``z_t ~ N(0, 1)``, with
      ``h_t = w + 0.08 * e_{t-1}^2 + 0.90 * h_{t-1}`` (volatility clustering) and long-run
      standard deviation sigma = 0.01.

    A window of past returns therefore carries partial information about the sign of the
    next return (the regime's drift and AR term), but the innovations dominate: an oracle
    that knows the regime and the exact conditional mean is right on only ~63-65% of the
    steps (:func:`trading_score` ~26-30), :func:`momentum_heuristic`, which ignores the choppy
    regime, scores ~10 on average (from about 0 to 18 on a given split, depending on its
    mix of regimes), and a flexible model can easily overfit the noise.

    Args:
        n_steps: Number of returns to generate (>= 1).
        seed: Seed of the local ``torch.Generator``; same seed gives the same series.

    Returns:
        Float32 tensor of shape ``[n_steps]`` with the log-returns. A longer series with
        the same seed starts with the shorter one.

    Raises:
        ValueError: If ``n_steps`` is not a positive int or ``seed`` is not an int.
    """
    n_steps = _check_int("n_steps", n_steps, 1)
    seed = _check_int("seed", seed)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    total = n_steps + _BURN_IN
    regime = int(torch.randint(0, 3, (1,), generator=gen).item())
    # draw in fixed-size chunks so that a longer series extends a shorter one (same seed)
    z: list[float] = []
    u: list[float] = []
    while len(z) < total:
        z += torch.randn(_CHUNK, generator=gen, dtype=torch.float64).tolist()
        u += torch.rand(_CHUNK, generator=gen, dtype=torch.float64).tolist()

    omega = _SIGMA**2 * (1.0 - _GARCH_A - _GARCH_B)
    h = _SIGMA**2
    e_prev = 0.0
    r_prev = 0.0
    out = [0.0] * total
    for t in range(total):
        if u[t] >= _P_STAY:  # switch to one of the two other regimes
            step = 1 if (u[t] - _P_STAY) / (1.0 - _P_STAY) < 0.5 else 2
            regime = (regime + step) % 3
        h = omega + _GARCH_A * e_prev * e_prev + _GARCH_B * h
        e = math.sqrt(h) * z[t]
        r = _DRIFT[regime] + _PHI[regime] * r_prev + e
        out[t] = r
        e_prev, r_prev = e, r
    return torch.tensor(out[_BURN_IN:], dtype=torch.float32)


def make_trading_data(
    n_steps: int = 6000,
    window: int = 32,
    seed: int = 0,
    splits: Sequence[float] = (0.6, 0.2, 0.2),
) -> dict[str, dict[str, torch.Tensor]]:
    """Build chronological train/valid/test splits of windowed features.

    The series from :func:`synthetic_prices` is cut into three contiguous segments of
    ``round(fraction * n_steps)`` steps (the test segment takes the remainder). Inside a
    segment of length ``L`` there is one sample per step ``t`` in ``[window, L)``: its
    features are the ``window`` returns before ``t`` and its target is the return at
    ``t``. Windows and targets never cross a segment boundary, so no return is shared
    between splits.

    Features (``F = 2``) per past step:
        0. the return standardised with the mean and std of the train segment's returns;
        1. the absolute return standardised with the mean and std of the train segment's
           absolute returns.

    Args:
        n_steps: Length of the underlying return series.
        window: Number of past steps in each sample's features (>= 1).
        seed: Seed passed to :func:`synthetic_prices`.
        splits: Three positive fractions (train, valid, test) summing to 1.

    Returns:
        ``{"train": d, "valid": d, "test": d}`` where each ``d`` has ``"x"``
        (float32 ``[N, window, 2]``) and ``"next_return"`` (float32 ``[N]``, the raw
        log-return of the step after the window).

    Raises:
        ValueError: If an argument is invalid or a segment is not longer than
            ``window``.
    """
    n_steps = _check_int("n_steps", n_steps, 1)
    window = _check_int("window", window, 1)
    seed = _check_int("seed", seed)
    fractions = _check_fractions("splits", splits, 3, "train, valid, test")

    n_train = round(fractions[0] * n_steps)
    n_valid = round(fractions[1] * n_steps)
    lengths = [n_train, n_valid, n_steps - n_train - n_valid]
    if min(lengths) <= window:
        raise ValueError(
            f"every split must be longer than window={window}; n_steps={n_steps} and "
            f"splits={splits!r} give segment lengths {lengths}"
        )

    returns = synthetic_prices(n_steps, seed)
    train_r = returns[:n_train]
    absolute = returns.abs()
    r_mean, r_std = train_r.mean(), train_r.std().clamp_min(1e-12)
    a_mean, a_std = train_r.abs().mean(), train_r.abs().std().clamp_min(1e-12)
    features = torch.stack([(returns - r_mean) / r_std, (absolute - a_mean) / a_std], dim=-1)

    out: dict[str, dict[str, torch.Tensor]] = {}
    start = 0
    for name, length in zip(("train", "valid", "test"), lengths):
        seg_x = features[start : start + length]  # [L, 2]
        seg_r = returns[start : start + length]
        # unfold -> [L - window + 1, 2, window]; drop the last window (it has no target)
        x = seg_x.unfold(0, window, 1)[:-1].transpose(1, 2).contiguous()
        out[name] = {"x": x, "next_return": seg_r[window:].clone()}
        start += length
    return out


def _check_actions(actions: torch.Tensor, next_return: torch.Tensor) -> None:
    """The checks both trading scores make on ``actions`` ``[N]`` or ``[B, N]``."""
    if actions.dtype.is_floating_point or actions.dtype.is_complex or actions.dtype == torch.bool:
        raise TypeError(f"actions must be an integer tensor, got dtype {actions.dtype}")
    if actions.dim() not in (1, 2):
        raise ValueError(f"actions must have shape [N] or [B, N], got {tuple(actions.shape)}")
    n = actions.shape[-1]
    if next_return.dim() != 1 or next_return.shape[0] != n:
        raise ValueError(
            f"actions have N={n} steps but data['next_return'] has shape {tuple(next_return.shape)}"
        )
    if n == 0:
        raise ValueError("actions must have at least one step, got N=0")
    if actions.numel() and bool(((actions < 0) | (actions > 2)).any()):
        raise ValueError(
            f"actions must be in {{0, 1, 2}}, got values in "
            f"[{int(actions.min())}, {int(actions.max())}]"
        )


def _hits_and_ops(actions: torch.Tensor, next_return: torch.Tensor):
    """Float32 counts of hits and of operations (BUY or SELL) along the last dimension."""
    r = next_return.to(device=actions.device)
    buy = actions == BUY
    sell = actions == SELL
    hits = ((buy & (r > 0)) | (sell & (r < 0))).sum(dim=-1).to(torch.float32)
    ops = (buy | sell).sum(dim=-1).to(torch.float32)
    return hits, ops


@batched
def trading_objectives(
    actions: torch.Tensor, data: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Two objectives of a policy's actions, both maximised: how right and how active it is.

    * ``success_rate = hits / ops``: the fraction of its operations (BUY or SELL) whose
      direction matches the sign of the next return (a zero return is a miss); 0 for a policy
      that never trades (nothing to be right about, so it is dominated by any that trades);
    * ``operation_rate = ops / N``: the fraction of the rows on which it trades.

    Use with ``HybridOptimizer(..., objectives=["success_rate", "operation_rate"])``: the front
    is the trade-off between trading rarely and precisely and trading often. A random policy
    has success rate ~0.5 at any operation rate; :func:`trading_score` is
    ``100 * (2 * success_rate - 1) * sqrt(operation_rate)``.

    Args:
        actions: Integer tensor of actions, shape ``[N]`` or ``[B, N]``.
        data: Split dict; only ``data["next_return"]`` (shape ``[N]``) is used.

    Returns:
        ``{"success_rate": ..., "operation_rate": ...}``, float32, each 0-d for ``[N]``
        actions and ``[B]`` for ``[B, N]``.

    Raises:
        ValueError: If shapes do not match, ``N`` is 0 or an action is not 0, 1 or 2.
        TypeError: If ``actions`` is not an integer tensor.
    """
    next_return = data["next_return"]
    _check_actions(actions, next_return)
    hits, ops = _hits_and_ops(actions, next_return)
    return {
        "success_rate": hits / ops.clamp_min(1.0),
        "operation_rate": ops / actions.shape[-1],
    }


@batched
def trading_score(actions: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Score a policy's actions over a whole dataset (higher is better).

    An operation is a BUY or a SELL; it is a hit when its direction matches the sign of
    the next return (BUY and ``r > 0``, SELL and ``r < 0``) and a miss otherwise
    (a zero return counts as a miss). With ``N`` samples::

        score = 100 * (hits - misses) / sqrt(max(ops, 1) * N)
              = 100 * (2 * success_rate - 1) * sqrt(ops / N)

    i.e. the t-statistic of the hits against a fair coin, ``(hits - misses) / sqrt(ops)``,
    scaled by ``100 / sqrt(N)``. Properties:

    * range ``[-100, 100]``; perfect foresight (right direction on every step) scores 100;
    * always HOLD scores exactly 0 (no operation, no NaN);
    * any policy whose directions are independent of the returns (e.g. uniformly random)
      scores 0 on average with standard deviation ``100 / sqrt(N)`` however often it
      trades (about 1.7 on the default train split, 2.9 on valid/test);
    * with ``k`` operations the score is at most ``100 * sqrt(k / N)``, so a handful of
      lucky trades cannot score high; trading less pays only if it raises the success
      rate enough (halving the operations must raise the edge ``2 * sr - 1`` by ~41%).

    Args:
        actions: Integer tensor of actions (``BUY``, ``SELL``, ``HOLD``), shape ``[N]``
            or ``[B, N]``.
        data: Split dict; only ``data["next_return"]`` (shape ``[N]``) is used.

    Returns:
        Float32 score: a 0-d tensor for ``[N]`` actions, shape ``[B]`` for ``[B, N]``.

    Raises:
        ValueError: If shapes do not match, ``N`` is 0 or an action is not 0, 1 or 2.
        TypeError: If ``actions`` is not an integer tensor.
    """
    next_return = data["next_return"]
    _check_actions(actions, next_return)
    n = actions.shape[-1]
    hits, ops = _hits_and_ops(actions, next_return)
    misses = ops - hits
    return 100.0 * (hits - misses) / torch.sqrt(ops.clamp_min(1.0) * n)


class TradingSignalModel(nn.Module):
    """LSTM -> last step -> linear -> tanh -> linear: logits over (buy, sell, hold).

    The LSTM is a plain ``nn.LSTM`` attribute (``self.lstm``) on purpose: hybridopt
    replaces it by a vectorised equivalent by type when evaluating a population.

    Args:
        n_features: Features per time step (2 for :func:`make_trading_data`).
        hidden_size: LSTM hidden size.
        linear_size: Width of the hidden linear layer.
    """

    def __init__(self, n_features: int = 2, hidden_size: int = 32, linear_size: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden_size, batch_first=True)
        self.hidden = nn.Linear(hidden_size, linear_size)
        self.head = nn.Linear(linear_size, len(ACTIONS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows to action logits.

        Args:
            x: Float tensor ``[N, window, n_features]``.

        Returns:
            Logits ``[N, 3]`` in the order ``ACTIONS`` (buy, sell, hold).
        """
        out, _ = self.lstm(x)
        return self.head(torch.tanh(self.hidden(out[:, -1])))


def momentum_heuristic(data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hand-made baseline: BUY if the window's mean normalised return is > 0, else SELL.

    Uses feature 0 of ``data["x"]`` (returns standardised with train statistics), so it
    compares the window's mean return with the train segment's mean return. It never holds.

    Args:
        data: Split dict with ``"x"`` of shape ``[N, window, F]``.

    Returns:
        Long tensor ``[N]`` of ``BUY`` / ``SELL`` actions.
    """
    mean = data["x"][..., 0].mean(dim=-1)
    return torch.where(mean > 0, BUY, SELL).to(torch.long)
