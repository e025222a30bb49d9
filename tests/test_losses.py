"""Tests for hybridopt.losses: masked cross-entropy and MSE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridopt.losses import masked_cross_entropy, masked_mse

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- hand computations
def _ce_case():
    """2 samples x 3 items x 3 classes, 2 of 3 items observed per sample."""
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]],
            [[7.0, -7.0, 7.0], [0.0, math.log(2.0), 0.0], [math.log(3.0), 0.0, 0.0]],
        ],
        dtype=torch.float64,
    )
    targets = torch.tensor([[0, 2, -1], [99, 1, 0]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    # -log softmax by hand:
    #   [0,0,0] target 0        -> log 3
    #   [1,2,3] target 2        -> log(e + e^2 + e^3) - 3
    #   [0,log2,0] target 1     -> softmax [1/4, 1/2, 1/4] -> log 2
    #   [log3,0,0] target 0     -> softmax [3/5, 1/5, 1/5] -> log(5/3)
    per_item = torch.tensor(
        [
            [math.log(3.0), math.log(math.e + math.e**2 + math.e**3) - 3.0, 0.0],
            [0.0, math.log(2.0), math.log(5.0 / 3.0)],
        ],
        dtype=torch.float64,
    )
    return logits, targets, mask, per_item


def test_ce_hand_computation_each_reduction():
    logits, targets, mask, per_item = _ce_case()
    total = (
        math.log(3.0)
        + math.log(math.e + math.e**2 + math.e**3)
        - 3.0
        + math.log(2.0)
        + math.log(5.0 / 3.0)
    )
    none = masked_cross_entropy(logits, targets, mask, reduction="none")
    assert none.shape == (2, 3)
    torch.testing.assert_close(none, per_item)
    assert masked_cross_entropy(logits, targets, mask, "sum").item() == pytest.approx(total)
    assert masked_cross_entropy(logits, targets, mask).item() == pytest.approx(total / 4)


def test_ce_2d_and_mask_none():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]])
    targets = torch.tensor([1, 1])
    # log 2 and -log(3/4) = log(4/3)
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert masked_cross_entropy(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    masked = masked_cross_entropy(logits, torch.tensor([1, -1]), torch.tensor([1, 0]), "sum")
    assert masked.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_mse_hand_computation_each_reduction():
    pred = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    target = torch.tensor([[0.0, 4.0, NAN], [NAN, 5.0, 8.0]])
    mask = torch.tensor([[True, True, False], [False, True, True]])
    expected = torch.tensor([[1.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
    for m in (mask, None):  # None: observed where target is finite -> same mask here
        torch.testing.assert_close(masked_mse(pred, target, m, "none"), expected)
        assert masked_mse(pred, target, m, "sum").item() == pytest.approx(9.0)
        assert masked_mse(pred, target, m).item() == pytest.approx(9.0 / 4)


def test_mask_accepts_int_and_float_zero_one():
    logits, targets, mask, _ = _ce_case()
    ref = masked_cross_entropy(logits, targets, mask)
    for dtype in (torch.int64, torch.uint8, torch.float32):
        torch.testing.assert_close(masked_cross_entropy(logits, targets, mask.to(dtype)), ref)


# --------------------------------------------------------------------------- agreement with torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ce_agrees_with_torch_ignore_index(reduction):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, 6, generator=g)
    targets = torch.randint(0, 6, (5, 4), generator=g)
    mask = torch.rand(5, 4, generator=g) < 0.6
    ref_targets = torch.where(mask, targets, torch.full_like(targets, -100))
    ref = F.cross_entropy(logits.reshape(-1, 6), ref_targets.reshape(-1), reduction=reduction)
    got = masked_cross_entropy(logits, targets, mask, reduction)
    torch.testing.assert_close(got, ref.reshape(got.shape))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_agrees_with_torch_on_observed_subset(reduction):
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    mask = torch.rand(6, 3, generator=g) < 0.5
    ref = F.mse_loss(pred[mask], target[mask], reduction=reduction)
    torch.testing.assert_close(masked_mse(pred, target, mask, reduction), ref)


# --------------------------------------------------------------------------- gradients
def test_ce_masked_positions_get_exactly_zero_grad_even_with_garbage():
    logits, targets, mask, _ = _ce_case()
    logits = logits.clone()
    logits[0, 2] = torch.tensor([INF, NAN, -INF], dtype=logits.dtype)  # masked item
    logits[1, 0] = 1e30  # masked item, huge
    targets = targets.clone()
    targets[0, 2], targets[1, 0] = -1, 10**9
    logits.requires_grad_(True)
    for reduction in ("mean", "sum", "none"):
        logits.grad = None
        loss = masked_cross_entropy(logits, targets, mask, reduction)
        assert torch.isfinite(loss).all()
        loss.sum().backward()
        assert torch.isfinite(logits.grad).all()
        assert (logits.grad[~mask] == 0).all()
        assert (logits.grad[mask] != 0).any()


def test_mse_nan_targets_and_garbage_preds_at_masked_positions():
    pred = torch.tensor([[1.0, INF, 3.0], [NAN, 5.0, 6.0]], requires_grad=True)
    target = torch.tensor([[0.0, 4.0, NAN], [NAN, 5.0, 8.0]], requires_grad=True)
    mask = torch.tensor([[True, False, False], [False, True, True]])
    loss = masked_mse(pred, target, mask)
    assert loss.item() == pytest.approx(5.0 / 3)
    loss.backward()
    for g in (pred.grad, target.grad):
        assert torch.isfinite(g).all()
        assert (g[~mask] == 0).all()


def test_row_with_nothing_observed_contributes_nothing():
    logits, targets, mask, _ = _ce_case()
    logits = logits.clone()
    logits[0] = NAN
    mask = mask.clone()
    mask[0] = False
    logits.requires_grad_(True)
    loss = masked_cross_entropy(logits, targets, mask)
    assert loss.item() == pytest.approx((math.log(2.0) + math.log(5.0 / 3.0)) / 2)
    loss.backward()
    assert (logits.grad[0] == 0).all()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fully_masked_gives_zero_loss_and_zero_grad(reduction):
    logits = torch.full((3, 2, 4), NAN, requires_grad=True)
    targets = torch.full((3, 2), -1)
    mask = torch.zeros(3, 2, dtype=torch.bool)
    loss = masked_cross_entropy(logits, targets, mask, reduction)
    assert loss.requires_grad
    assert (loss == 0).all()
    loss.sum().backward()
    assert (logits.grad == 0).all()

    pred = torch.randn(3, 2, requires_grad=True)
    loss = masked_mse(pred, torch.full((3, 2), NAN), None, reduction)
    assert loss.requires_grad and (loss == 0).all()
    loss.sum().backward()
    assert (pred.grad == 0).all()


def test_empty_batch_mean_is_zero():
    loss = masked_cross_entropy(torch.zeros(0, 3, requires_grad=True), torch.zeros(0).long())
    assert loss.item() == 0.0 and loss.requires_grad


def test_ce_gradcheck():
    logits, targets, mask, _ = _ce_case()
    logits = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: masked_cross_entropy(x, targets, mask), (logits,))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(reduction="avg"), ValueError, r"reduction.*'avg'"),
        (dict(targets=torch.zeros(2, 4).long()), ValueError, r"targets.*\(2, 3\).*\(2, 4\)"),
        (dict(targets=torch.zeros(2, 3)), TypeError, r"targets.*integer.*float32"),
        (dict(targets=torch.zeros(2, 3).bool()), TypeError, r"targets.*integer.*bool"),
        (dict(logits=torch.zeros(2, 3, 5).long()), TypeError, r"logits.*floating.*int64"),
        (dict(logits=torch.zeros(2, 3, 5, 1)), ValueError, r"logits.*\[N, A\].*\(2, 3, 5, 1\)"),
        (dict(mask=torch.ones(3, 2).bool()), ValueError, r"mask.*\(2, 3\).*\(3, 2\)"),
        (dict(mask=torch.full((2, 3), 2)), ValueError, r"mask.*0/1"),
        (dict(mask=[[1, 1, 1], [1, 1, 1]]), TypeError, r"mask.*Tensor.*list"),
        (dict(targets=torch.full((2, 3), 5)), ValueError, r"targets.*\[0, 5\).*\[5\]"),
        (dict(targets=torch.full((2, 3), -1)), ValueError, r"targets.*\[0, 5\).*\[-1\]"),
    ],
)
def test_ce_validation(kwargs, exc, match):
    args = dict(logits=torch.zeros(2, 3, 5), targets=torch.zeros(2, 3).long(), mask=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        masked_cross_entropy(**args)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(reduction="MEAN"), ValueError, r"reduction.*'MEAN'"),
        (dict(target=torch.zeros(4)), ValueError, r"target.*\(2, 3\).*\(4,\)"),
        (dict(target=torch.zeros(2, 3).long()), TypeError, r"target.*floating.*int64"),
        (dict(pred=torch.zeros(2, 3).long()), TypeError, r"pred.*floating.*int64"),
        (dict(mask=torch.ones(2).bool()), ValueError, r"mask.*\(2, 3\).*\(2,\)"),
        (dict(mask=torch.full((2, 3), 0.5)), ValueError, r"mask.*0/1"),
    ],
)
def test_mse_validation(kwargs, exc, match):
    args = dict(pred=torch.zeros(2, 3), target=torch.zeros(2, 3), mask=None)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        masked_mse(**args)


# --------------------------------------------------------------------------- properties
@st.composite
def _problems(draw):
    n, a = draw(st.integers(1, 8)), draw(st.integers(2, 5))
    h = draw(st.one_of(st.none(), st.integers(1, 4)))  # None -> [N, A] layout
    shape = (n,) if h is None else (n, h)
    size = math.prod(shape)
    mask = torch.tensor(draw(st.lists(st.booleans(), min_size=size, max_size=size)))
    targets = torch.tensor(draw(st.lists(st.integers(0, a - 1), min_size=size, max_size=size)))
    garbage = torch.tensor(draw(st.lists(st.integers(-5, 10**6), min_size=size, max_size=size)))
    seed = draw(st.integers(0, 2**31 - 1))
    poison = draw(st.sampled_from([None, INF, -INF, NAN, 1e30]))
    return (
        shape,
        a,
        mask.reshape(shape),
        targets.reshape(shape),
        garbage.reshape(shape),
        seed,
        poison,
    )


@settings(max_examples=60, deadline=None)
@given(_problems())
def test_ce_properties(problem):
    shape, a, mask, targets, garbage, seed, poison = problem
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, a, generator=g, dtype=torch.float64) * 3
    if poison is not None:
        logits[~mask] = poison
    logits.requires_grad_(True)
    targets = torch.where(mask, targets, garbage)

    per_item = masked_cross_entropy(logits, targets, mask, "none")
    loss = masked_cross_entropy(logits, targets, mask)
    assert per_item.shape == shape
    assert torch.isfinite(loss) and torch.isfinite(per_item).all()
    assert (per_item[~mask] == 0).all()
    n_obs = int(mask.sum())
    expected = per_item[mask].sum() / n_obs if n_obs else torch.tensor(0.0, dtype=loss.dtype)
    torch.testing.assert_close(loss, expected)
    if n_obs:  # per-item values match torch on the observed subset
        ref = F.cross_entropy(logits[mask], targets[mask], reduction="none")
        torch.testing.assert_close(per_item[mask], ref)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~mask] == 0).all()


@settings(max_examples=60, deadline=None)
@given(_problems(), st.booleans())
def test_mse_properties(problem, mask_from_nan):
    shape, _, mask, _, _, seed, poison = problem
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(*shape, generator=g, dtype=torch.float64)
    target = torch.randn(*shape, generator=g, dtype=torch.float64)
    target[~mask] = NAN
    if poison is not None:
        pred[~mask] = poison
    pred.requires_grad_(True)
    given_mask = None if mask_from_nan else mask

    per_item = masked_mse(pred, target, given_mask, "none")
    loss = masked_mse(pred, target, given_mask)
    assert torch.isfinite(loss) and torch.isfinite(per_item).all()
    assert (per_item[~mask] == 0).all()
    n_obs = int(mask.sum())
    if n_obs:
        torch.testing.assert_close(loss, per_item[mask].mean())
        ref = (pred[mask] - target[mask]) ** 2
        torch.testing.assert_close(per_item[mask], ref)
    else:
        assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[~mask] == 0).all()
