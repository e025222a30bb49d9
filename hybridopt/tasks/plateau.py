"""A plateau task: the sampled policy gradient sees a flat score, a population does not.

Rows ``x ~ N(0, I)`` have a best action ``y = argmax(x @ W)`` among four. The score counts only
accuracy above a threshold::

    score = 100 * max(0, accuracy - threshold) / (1 - threshold)

A near-uniform softmax samples sequences whose accuracy is about 25% +- 1%, so every sampled
sequence scores exactly 0: REINFORCE gets no signal and stays on the plateau. The argmax
policies of a population of weight vectors spread much wider, so some clear the threshold and
selection can climb; once the policy is good enough, sampled sequences clear it too and the
gradient phase refines it faster than mutation does. This is the stalling task of the hybrid
vs pure benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridopt.scoring import batched
from hybridopt.tasks._common import _check_int, _split, _split_lengths

__all__ = ["THRESHOLD", "PlateauMLP", "make_plateau_data", "plateau_score"]

THRESHOLD = 0.5
_ACTIONS = 4


def make_plateau_data(
    n: int = 2000, features: int = 8, seed: int = 0, splits: Sequence[float] = (0.6, 0.2, 0.2)
) -> dict[str, dict[str, torch.Tensor]]:
    """Train/valid/test splits ``{"x": [N, features], "y": [N]}`` of the plateau task.

    Raises:
        ValueError: if an argument is invalid (named, with its value).
    """
    n = _check_int("n", n, 3)
    features = _check_int("features", features, 1)
    seed = _check_int("seed", seed)
    lengths = _split_lengths(n, splits)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(features, _ACTIONS, generator=gen)
    x = torch.randn(n, features, generator=gen)
    return _split({"x": x, "y": (x @ w).argmax(1)}, lengths)


@batched
def plateau_score(actions: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Accuracy above :data:`THRESHOLD`, rescaled to 0..100; ``[N]`` -> 0-d, ``[B, N]`` -> [B]."""
    accuracy = (actions == data["y"]).float().mean(-1)
    return 100 * (accuracy - THRESHOLD).clamp(min=0) / (1 - THRESHOLD)


class PlateauMLP(nn.Module):
    """Linear -> tanh -> Linear: logits over the four actions."""

    def __init__(self, features: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, 4]``."""
        return self.net(x)
