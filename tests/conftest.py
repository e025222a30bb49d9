"""Shared fixtures: small deterministic tasks with known optima."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import hybridopt as ho


def make_bandit(n: int = 256, features: int = 6, actions: int = 3, seed: int = 1):
    """A contextual bandit: the optimal action of each row is argmax(x @ W)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, actions, generator=g)
    return x, (x @ w).argmax(1)


@ho.batched
def hit_rate(actions, data):
    """Fraction of rows where the action is the optimal one (1.0 = optimal policy)."""
    return (actions == data[1]).float().mean(-1)


def mlp(features: int = 6, actions: int = 3, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, actions))


@pytest.fixture
def bandit():
    return make_bandit()


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module (registered, so its dataclasses load)."""
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def strip(history):
    """A history without its wall times (the part a same-seed run must repeat exactly)."""
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in history]
