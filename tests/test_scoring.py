"""Score-function adapters: batched, vmapped and per-sequence calls agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hybridopt as ho
from hybridopt.scoring import Scorer

DATA = {"x": torch.randn(20, 3), "label": torch.randint(0, 3, (20,))}
ACTIONS = torch.randint(0, 3, (7, 20), generator=torch.Generator().manual_seed(0))
EXPECTED = (ACTIONS == DATA["label"]).double().mean(-1)


def tensor_score(actions, data):
    return (actions == data["label"]).float().mean()


def python_score(actions, data):
    return float(np.mean(actions.numpy() == data["label"].numpy()))


@ho.batched
def batched_score(actions, data):
    return (actions == data["label"]).float().mean(-1)


@pytest.mark.parametrize(
    "fn, mode",
    [(tensor_score, "vmap"), (python_score, "per_sequence"), (batched_score, "batched")],
)
def test_modes_agree(fn, mode):
    scorer = Scorer(fn)
    scorer.check(ACTIONS[:2], DATA)
    assert scorer.mode == mode
    batch = scorer(ACTIONS, DATA)
    assert torch.allclose(batch.scores, EXPECTED, atol=1e-6)
    assert batch.observed is None and batch.finite.all()


def test_per_item_rewards_average_observed_items_only():
    actions = torch.tensor([[[0, 1, 2], [1, 1, 1]], [[2, 2, 2], [0, 0, 0]]])  # [B=2, N=2, H=3]

    def rewards(a, data):
        r = (a == 1).float()
        r[:, 2] = math.nan  # the third item is never observed
        return r

    scorer = Scorer(rewards)
    scorer.check(actions, None)
    batch = scorer(actions, None)
    # sequence 0: observed items (0,1),(1,1),(0,0),(1,0) -> rewards 1,1,0,1 -> 0.75
    assert batch.scores.tolist() == [0.75, 0.0]
    assert batch.observed[..., 2].sum() == 0 and batch.observed[..., :2].all()


def test_no_observed_item_scores_zero():
    scorer = Scorer(lambda a, d: torch.full(a.shape, math.nan))
    scorer.check(ACTIONS[:2], DATA)
    assert scorer(ACTIONS, DATA).scores.tolist() == [0.0] * 7


def test_nonfinite_scores_are_flagged():
    scorer = Scorer(lambda a, d: math.inf if int(a[0]) == 0 else 1.0)
    scorer.check(ACTIONS[:2], DATA)
    batch = scorer(ACTIONS, DATA)
    assert batch.n_nonfinite == int((ACTIONS[:, 0] == 0).sum())


def test_numpy_and_int_returns():
    for fn in (lambda a, d: np.float32(0.5), lambda a, d: 1, lambda a, d: np.array(2.0)):
        scorer = Scorer(fn)
        scorer.check(ACTIONS[:2], DATA)
        assert torch.all(scorer(ACTIONS, DATA).scores == float(fn(None, None)))


def test_data_preserves_structure():
    from hybridopt.data import index_data, slice_data, validate_data

    assert validate_data(DATA) == 20
    part = slice_data(DATA, 2, 5)
    assert set(part) == {"x", "label"} and part["x"].shape == (3, 3)
    tup = index_data((DATA["x"], DATA["label"]), torch.tensor([0, 3]))
    assert isinstance(tup, tuple) and tup[1].tolist() == DATA["label"][[0, 3]].tolist()
