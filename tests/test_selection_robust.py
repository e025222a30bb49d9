"""selection="robust": a score that rests on a few rows loses to one that holds on resamples."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hybridopt as ho
from hybridopt.selection import RESAMPLES, Selection, resamples

N = 200


def threshold_score(actions: torch.Tensor, data) -> torch.Tensor:
    """A bonus of 10 when at least half the rows play action 1, plus the share playing 0."""
    ones = (actions == 1).float().mean()
    return 10.0 * (ones >= 0.5).float() + (actions == 0).float().mean()


def weights_playing_one_above(t: float) -> torch.Tensor:
    """Flat weights of ``nn.Linear(1, 2)`` (weight [2, 1], then bias [2]) whose argmax is
    action 1 exactly on the rows with ``x > t``."""
    return torch.tensor([0.0, 1.0, 0.0, -t])


@pytest.fixture
def splits():
    x = ((torch.arange(N, dtype=torch.float32) + 0.5) / N).unsqueeze(1)  # evenly in (0, 1)
    return x, x.clone()


def optimizer(splits, selection: str) -> ho.HybridOptimizer:
    train, valid = splits
    torch.manual_seed(0)
    return ho.HybridOptimizer(nn.Linear(1, 2), threshold_score, data=train,
                              validation_data=valid, phases=("gradient",), seed=0,
                              selection=selection)


# Rows with x > 0.495 play 1: 50.5% of them, the bonus just met (score 10.495 on all rows,
# lost on about half of the resamples); x > 0.3: 70%, the bonus safe (score 10.30).
EDGE, SAFE = weights_playing_one_above(0.495), weights_playing_one_above(0.3)


def test_the_two_candidates_score_as_designed(splits):
    opt = optimizer(splits, "union")
    assert opt._score_weights(EDGE, splits[0]) == pytest.approx(10.495)
    assert opt._score_weights(SAFE, splits[0]) == pytest.approx(10.30)


@pytest.mark.parametrize("order", [(EDGE, SAFE), (SAFE, EDGE)])
def test_union_keeps_the_edge_and_robust_the_safe_candidate(splits, order):
    for rule, kept in (("union", EDGE), ("robust", SAFE)):
        opt = optimizer(splits, rule)
        for w in order:
            opt.selection.offer(w, train_score=0.0)
        assert torch.equal(opt.selection.best_weights, kept), rule


def test_robust_score_is_mean_minus_std_over_the_documented_resamples(splits):
    opt = optimizer(splits, "robust")
    union = torch.cat(splits)
    drawn = resamples(union, RESAMPLES, seed=0)
    actions = opt.evaluation.actions(EDGE, union)
    scores = opt.evaluation.resample_scores(actions, union, drawn)
    assert scores.shape == (RESAMPLES,) and scores.dtype == torch.float64
    # Some resamples keep the bonus and some lose it: a spread a plain score cannot show
    assert 0 < int((scores > 10).sum()) < RESAMPLES
    judged = opt.selection.offer(EDGE, train_score=0.0)
    expected = float(scores.mean() - scores.std(correction=0))
    assert judged["selection_score"] == pytest.approx(expected)
    # Same seed, same resamples: every candidate is judged on the same rows
    again = opt.evaluation.resample_scores(actions, union, resamples(union, RESAMPLES, seed=0))
    assert torch.equal(scores, again)
    other = resamples(union, RESAMPLES, seed=1)
    assert not torch.equal(scores, opt.evaluation.resample_scores(actions, union, other))
    # Data too large to keep copies of is indexed again on every use: the same scores
    lazy = resamples(union, RESAMPLES, seed=0, keep_bytes=0)
    assert all(rows is None for _, rows in lazy)
    assert torch.equal(scores, opt.evaluation.resample_scores(actions, union, lazy))


def test_robust_fit_keeps_its_best_selection_score_and_is_reproducible(splits):
    results = [optimizer(splits, "robust").fit(max_evaluations=300, progress=False)
               for _ in range(2)]
    rows = results[0].history
    assert results[0].best_score == max(r["selection_score"] for r in rows)
    assert results[0].best_score == results[1].best_score
    assert [r["selection_score"] for r in rows] == [r["selection_score"]
                                                    for r in results[1].history]


def test_robust_without_validation_resamples_the_training_rows(splits):
    train, _ = splits
    torch.manual_seed(0)
    opt = ho.HybridOptimizer(nn.Linear(1, 2), threshold_score, data=train,
                             phases=("gradient",), seed=0, selection="robust")
    opt.selection.offer(EDGE, train_score=10.495)
    opt.selection.offer(SAFE, train_score=10.30)
    assert torch.equal(opt.selection.best_weights, SAFE)
    assert opt.selection.best_score < 10.30


def test_unknown_selection_is_refused_by_name(splits):
    with pytest.raises(ValueError, match="selection must be one of .*robust.*'best'"):
        optimizer(splits, "best")


def test_auto_is_robust_with_validation_and_the_training_score_without(splits):
    train, valid = splits
    for validation, kept in ((valid, SAFE), (None, EDGE)):
        torch.manual_seed(0)
        opt = ho.HybridOptimizer(nn.Linear(1, 2), threshold_score, data=train,
                                 validation_data=validation, phases=("gradient",), seed=0)
        for w, score in ((EDGE, 10.495), (SAFE, 10.30)):
            opt.selection.offer(w, train_score=score)
        assert torch.equal(opt.selection.best_weights, kept)
    assert opt.selection.best_score == 10.495  # without validation: the training score


def test_a_candidate_with_known_actions_gets_its_bound_without_resampling(splits):
    calls = []

    def counted(actions, data):
        calls.append(1)
        return threshold_score(actions, data)

    train, valid = splits
    torch.manual_seed(0)
    opt = ho.HybridOptimizer(nn.Linear(1, 2), counted, data=train, validation_data=valid,
                             phases=("gradient",), seed=0, selection="robust")
    first = opt.selection.offer(EDGE, train_score=0.0)["selection_score"]
    before = len(calls)
    # Twice the weights: the same argmax actions on every row, so the same bound
    again = opt.selection.offer(2 * EDGE, train_score=0.0)["selection_score"]
    assert again == first
    assert len(calls) - before < RESAMPLES  # only the validation score, no resamples
    opt.selection.offer(SAFE, train_score=0.0)
    assert len(calls) - before > RESAMPLES  # new actions: resampled


@pytest.mark.parametrize("rule, with_valid, label", [
    ("auto", True, "robust"), ("auto", False, "train"), ("robust", False, "robust"),
    ("union", True, "union"), ("union", False, "train"), ("validation", True, "valid"),
])
def test_the_label_says_what_the_best_score_is(rule, with_valid, label):
    train = torch.zeros(4, 1)
    selection = Selection(rule, lambda w, d: 0.0, train, train if with_valid else None,
                          resample=object())
    assert selection.label == label
