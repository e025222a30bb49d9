"""The examples run end to end with tiny budgets (smoke tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    # the model ends with the weights chosen on the validation split
    assert summary["final"]["valid"] == result.best_score
    assert summary["final"]["valid"] >= summary["start"]["valid"]
