"""The examples run end to end with tiny budgets (smoke tests)."""

from __future__ import annotations

import pytest
import torch
from conftest import load_example

from hybridopt.data import concat_data
from hybridopt.selection import RESAMPLES, resamples
from hybridopt.tasks.trading import TradingSignalModel, make_trading_data, trading_score

load = load_example


def test_trading_signals_example(tmp_path, capsys):
    out = tmp_path / "run"
    summary = load("trading_signals").main(
        [
            "--max-evaluations",
            "700",
            "--population-size",
            "16",
            "--episode-length",
            "128",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert "momentum heuristic" in printed and "model after fit" in printed
    for name in ("history.csv", "plot.png", "best_model.pt", "summary.json"):
        assert (out / name).exists(), name
    result = summary["result"]
    assert 0 < result.evaluations <= 700
    # the model ends with the weights chosen by the selection score: with validation data and
    # selection="auto" (the default: "robust"), the mean minus one std of the score over the
    # documented bootstrap resamples of the training and validation rows together
    chosen = [r for r in result.history if r["selection_score"] == result.best_score]
    if chosen:
        assert summary["final"]["valid"] in [r["val_score"] for r in chosen]
    else:  # nothing beat the starting weights
        assert summary["final"] == summary["start"]
    splits = make_trading_data(window=16, seed=0)
    union = concat_data(splits["train"], splits["valid"])

    def robust_score(model):
        with torch.no_grad():
            actions = model(union["x"]).argmax(-1)
        scores = torch.tensor([float(trading_score(actions[i].unsqueeze(0), rows))
                               for i, rows in resamples(union, RESAMPLES, seed=0)],
                              dtype=torch.float64)
        return float(scores.mean() - scores.std(correction=0))

    torch.manual_seed(0)  # the example's own initialisation
    start = TradingSignalModel(hidden_size=16)
    final = TradingSignalModel(hidden_size=16)
    final.load_state_dict(result.best_state_dict)
    assert robust_score(final) == pytest.approx(result.best_score, rel=1e-9)
    # a run never ends below its starting weights by the selection score
    assert robust_score(final) >= robust_score(start)


def test_custom_phase_example(capsys):
    summary = load("custom_phase").main(["--max-evaluations", "600", "--no-progress"])
    printed = capsys.readouterr().out
    assert "gradient + random search on the trading task" in printed and "held-out" in printed
    result = summary["result"]
    assert 0 < result.evaluations <= 600
    assert set(summary["steps"]) == {"gradient", "random"}  # max_share switches half-way
    assert any(s["to_phase"] == "random" for s in result.switches)
