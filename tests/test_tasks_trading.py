"""Tests of the synthetic trading task (hybridopt.tasks.trading)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hybridopt.tasks import (
    ACTIONS,
    BUY,
    HOLD,
    SELL,
    TradingSignalModel,
    make_trading_data,
    momentum_heuristic,
    synthetic_prices,
    trading_score,
)


@pytest.fixture(scope="module")
def data():
    return make_trading_data()


def _perfect(r: torch.Tensor) -> torch.Tensor:
    return torch.where(r > 0, BUY, torch.where(r < 0, SELL, HOLD))


# --- synthetic_prices ---------------------------------------------------------------


def test_action_convention():
    assert (BUY, SELL, HOLD) == (0, 1, 2)
    assert ACTIONS == ("buy", "sell", "hold")


def test_prices_deterministic_and_seed_dependent():
    a = synthetic_prices(1000, seed=3)
    assert a.dtype == torch.float32 and a.shape == (1000,)
    assert torch.isfinite(a).all()
    assert torch.equal(a, synthetic_prices(1000, seed=3))
    assert not torch.equal(a, synthetic_prices(1000, seed=4))
    # a longer series with the same seed starts with the same returns
    assert torch.equal(a, synthetic_prices(1500, seed=3)[:1000])


def test_prices_leave_global_rng_alone():
    state = torch.get_rng_state()
    synthetic_prices(200, seed=1)
    make_trading_data(n_steps=400, window=8, seed=1)
    assert torch.equal(state, torch.get_rng_state())


def test_prices_scale_and_volatility_clustering():
    r = synthetic_prices(20000, seed=0).double()
    assert 0.005 < r.std().item() < 0.02
    a = r.abs() - r.abs().mean()
    lag1_abs_corr = (a[1:] * a[:-1]).mean() / a.var()
    assert lag1_abs_corr > 0.05  # GARCH: big moves cluster


# --- make_trading_data ----------------------------------------------------------------


def test_split_shapes_and_dtypes(data):
    assert set(data) == {"train", "valid", "test"}
    lengths = {"train": 3600, "valid": 1200, "test": 1200}
    for name, d in data.items():
        assert set(d) == {"x", "next_return"}
        n = lengths[name] - 32
        assert d["x"].shape == (n, 32, 2) and d["x"].dtype == torch.float32
        assert d["next_return"].shape == (n,) and d["next_return"].dtype == torch.float32
        assert torch.isfinite(d["x"]).all() and torch.isfinite(d["next_return"]).all()


def _expected(n_steps, window, seed, lengths, stats_from):
    r = synthetic_prices(n_steps, seed)
    ref = r[:stats_from]
    f0 = (r - ref.mean()) / ref.std()
    f1 = (r.abs() - ref.abs().mean()) / ref.abs().std()
    feats = torch.stack([f0, f1], -1)
    out, start = [], 0
    for length in lengths:
        idx = torch.arange(start + window, start + length)  # target positions
        win = idx[:, None] - window + torch.arange(window)  # feature positions
        out.append((feats[win], r[idx], win.min().item(), idx.max().item()))
        start += length
    return out


def test_windows_are_chronological_without_overlap_and_train_normalised():
    n_steps, window, seed = 1000, 16, 5
    d = make_trading_data(n_steps, window, seed, splits=(0.5, 0.3, 0.2))
    expected = _expected(n_steps, window, seed, [500, 300, 200], stats_from=500)
    spans = []
    for name, (x, nr, first, last) in zip(("train", "valid", "test"), expected):
        torch.testing.assert_close(d[name]["x"], x)
        assert torch.equal(d[name]["next_return"], nr)
        spans.append((first, last))
    # every return a split touches (windows and targets) lies strictly after the previous split's
    assert spans[0][1] < spans[1][0] and spans[1][1] < spans[2][0]
    # statistics come from the train segment only, not from the whole series
    whole = _expected(n_steps, window, seed, [500, 300, 200], stats_from=n_steps)
    assert not torch.allclose(d["valid"]["x"], whole[1][0])


def test_data_deterministic(data):
    again = make_trading_data()
    for name in data:
        assert torch.equal(data[name]["x"], again[name]["x"])
        assert torch.equal(data[name]["next_return"], again[name]["next_return"])
    other = make_trading_data(seed=1)
    assert not torch.equal(data["train"]["next_return"], other["train"]["next_return"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_steps": 0}, r"n_steps.*0"),
        ({"n_steps": 10.5}, r"n_steps.*10\.5"),
        ({"window": 0}, r"window.*0"),
        ({"window": True}, r"window.*True"),
        ({"seed": "a"}, r"seed.*'a'"),
        ({"splits": (0.5, 0.5)}, r"splits.*\(0\.5, 0\.5\)"),
        ({"splits": (0.6, 0.6, -0.2)}, r"splits.*-0\.2"),
        ({"splits": (0.5, 0.3, 0.3)}, r"splits.*0\.3"),
        ({"splits": "abc"}, r"splits.*'abc'"),
        ({"n_steps": 100, "window": 32}, r"window=32"),
    ],
)
def test_make_trading_data_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_trading_data(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_steps": -3}, r"n_steps.*-3"), ({"n_steps": 5, "seed": 1.0}, r"seed.*1\.0")],
)
def test_synthetic_prices_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_prices(**kwargs)


# --- trading_score --------------------------------------------------------------------


def test_score_is_marked_batched():
    assert getattr(trading_score, "_hybridopt_batched", False) is True


def test_all_hold_scores_exactly_zero(data):
    d = data["valid"]
    n = d["next_return"].shape[0]
    s = trading_score(torch.full((n,), HOLD), d)
    assert s.shape == () and s.dtype == torch.float32 and s.item() == 0.0
    sb = trading_score(torch.full((4, n), HOLD), d)
    assert sb.shape == (4,) and torch.equal(sb, torch.zeros(4))


def test_perfect_foresight_and_its_opposite(data):
    for d in data.values():
        r = d["next_return"]
        assert trading_score(_perfect(r), d).item() == pytest.approx(100.0)
        opposite = torch.where(r > 0, SELL, BUY)
        assert trading_score(opposite, d).item() == pytest.approx(-100.0)


def test_random_policy_scores_about_zero(data):
    # A policy independent of the returns scores N(0, (100 / sqrt(N))^2): std ~1.7 on train.
    d = data["train"]
    n = d["next_return"].shape[0]
    g = torch.Generator().manual_seed(0)
    s = trading_score(torch.randint(0, 3, (400, n), generator=g), d)
    assert abs(s.mean().item()) < 0.5  # 6 standard errors
    assert s.std().item() == pytest.approx(100 / math.sqrt(n), rel=0.2)
    # same for a random policy that trades rarely
    rare = torch.where(torch.rand(400, n, generator=g) < 0.05, BUY, HOLD)
    s = trading_score(rare, d)
    assert abs(s.mean().item()) < 0.5
    assert s.std().item() == pytest.approx(100 / math.sqrt(n), rel=0.2)


def test_few_lucky_trades_cannot_score_high(data):
    d = data["train"]
    r = d["next_return"]
    actions = torch.full_like(r, HOLD, dtype=torch.long)
    actions[:5] = _perfect(r[:5])  # 5 perfect trades, hold otherwise
    s = trading_score(actions, d).item()
    assert 0 < s <= 100 * math.sqrt(5 / r.shape[0]) + 1e-4
    assert s < 5


def test_selective_edge_is_rewarded(data):
    d = data["train"]
    r = d["next_return"]
    n = r.shape[0]
    g = torch.Generator().manual_seed(1)
    right = _perfect(r)
    wrong = torch.where(r > 0, SELL, BUY)
    # 60% success on every step vs 80% success on a quarter of the steps
    all_60 = torch.where(torch.rand(n, generator=g) < 0.6, right, wrong)
    sel = torch.rand(n, generator=g) < 0.25
    sel_80 = torch.where(sel, torch.where(torch.rand(n, generator=g) < 0.8, right, wrong), HOLD)
    s60, s80 = trading_score(all_60, d).item(), trading_score(sel_80, d).item()
    assert 15 < s60 < 25 and 25 < s80 < 35  # 100 * 0.2 * 1 = 20 vs 100 * 0.6 * 0.5 = 30


def test_batched_equals_stacked_rows(data):
    d = data["test"]
    n = d["next_return"].shape[0]
    g = torch.Generator().manual_seed(2)
    actions = torch.randint(0, 3, (7, n), generator=g)
    actions[0] = HOLD
    actions[1] = _perfect(d["next_return"])
    batch = trading_score(actions, d)
    assert batch.shape == (7,) and torch.isfinite(batch).all()
    torch.testing.assert_close(batch, torch.stack([trading_score(a, d) for a in actions]))


def test_score_handles_zero_returns_and_small_inputs():
    d = {"next_return": torch.tensor([0.0, 0.0, 1.0])}
    s = trading_score(torch.tensor([[BUY, SELL, BUY], [HOLD, HOLD, HOLD], [HOLD, HOLD, SELL]]), d)
    expected = torch.tensor([100 * (1 - 2) / 3, 0.0, 100 * -1 / math.sqrt(3)])
    torch.testing.assert_close(s, expected)


@pytest.mark.parametrize(
    ("actions", "error", "match"),
    [
        (torch.zeros(5, dtype=torch.long), ValueError, r"N=5"),
        (torch.zeros(2, 3, 4, dtype=torch.long), ValueError, r"\(2, 3, 4\)"),
        (torch.tensor([0, 1, 3, 0]), ValueError, r"\[0, 3\]"),
        (torch.tensor([0, -1, 2, 0]), ValueError, r"\[-1, 2\]"),
        (torch.zeros(4), TypeError, r"float32"),
    ],
)
def test_score_validates(actions, error, match):
    d = {"next_return": torch.ones(4)}
    with pytest.raises(error, match=match):
        trading_score(actions, d)


def test_score_rejects_empty():
    with pytest.raises(ValueError, match="N=0"):
        trading_score(torch.zeros(0, dtype=torch.long), {"next_return": torch.zeros(0)})


# --- model and heuristic --------------------------------------------------------------


def test_model_output_shape(data):
    torch.manual_seed(0)
    model = TradingSignalModel()
    assert type(model.lstm) is nn.LSTM and model.lstm.batch_first
    x = data["valid"]["x"][:50]
    logits = model(x)
    assert logits.shape == (50, 3) and torch.isfinite(logits).all()
    small = TradingSignalModel(n_features=2, hidden_size=4, linear_size=5)
    assert small(x).shape == (50, 3)


def test_momentum_heuristic(data):
    for d in data.values():
        a = momentum_heuristic(d)
        assert a.dtype == torch.long and a.shape == d["next_return"].shape
        assert set(a.unique().tolist()) <= {BUY, SELL}
        assert torch.equal(a == BUY, d["x"][..., 0].mean(-1) > 0)
    # it has some edge on the trending train period, far beyond the random spread (~1.7)
    assert trading_score(momentum_heuristic(data["train"]), data["train"]).item() > 5
