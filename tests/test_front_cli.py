"""Several objectives at the edges: FitResult's front files, the CLI's front.csv/front.png for
examples/trading_front.toml, and examples/trading_front.py, all at tiny budgets."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import mlp

from hybridopt.cli import main
from hybridopt.result import FitResult
from hybridopt.tasks.trading import make_trading_data, trading_objectives

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "examples" / "trading_front.toml"
NAMES = ("success_rate", "operation_rate")
PNG = b"\x89PNG\r\n\x1a\n"
# The example config made tiny: small model and data, a few SNES generations, then NSGA-II
TINY = [
    "task.model_kwargs={ hidden_size = 4, linear_size = 4 }",
    "task.data_kwargs={ n_steps = 600, window = 8, seed = 0 }",
    "optimizer.population_size=8",
    "es.max_generations=3",
    "stall.patience=2",
    "fit.max_evaluations=120",
]


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _result(front: list[dict] | None, names=NAMES) -> FitResult:
    model = mlp()
    return FitResult(best_score=0.5, best_train_score=0.6, best_state_dict=model.state_dict(),
                     evaluations=10, validation_evaluations=2, wall_time=0.1,
                     history=[{"phase": "genetic", "step": 0, "evaluations": 10, "score": 0.5,
                               "best_score": 0.5, "wall_time": 0.1}],
                     pareto_front=front, objective_names=None if front is None else list(names))


def _entries(states: list[dict]) -> list[dict]:
    """A hand-made two-model front, best success rate first."""
    return [
        {"train": {"success_rate": 0.9, "operation_rate": 0.1},
         "valid": {"success_rate": 0.7, "operation_rate": 0.2}, "state_dict": states[0]},
        {"train": {"success_rate": 0.6, "operation_rate": 0.8},
         "valid": {"success_rate": 0.55, "operation_rate": 0.7}, "state_dict": states[1]},
    ]


# -- FitResult ----------------------------------------------------------------------------------


def test_result_writes_the_front_files(tmp_path):
    states = [mlp(seed=1).state_dict(), mlp(seed=2).state_dict()]
    result = _result(_entries(states))
    folder = result.save(tmp_path / "run")
    rows = _rows(folder / "front.csv")
    assert [float(r["train_success_rate"]) for r in rows] == [0.9, 0.6]
    assert [float(r["valid_operation_rate"]) for r in rows] == [0.2, 0.7]
    assert (folder / "front.png").read_bytes().startswith(PNG)
    saved = torch.load(folder / "front_models.pt", weights_only=True)
    assert len(saved) == 2 and all(torch.equal(saved[1][k], states[1][k]) for k in states[1])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["front_size"] == 2 and summary["objectives"] == list(NAMES)
    assert "success_rate" in result.front_table() and len(result.front_table().splitlines()) == 3
    # Held-out columns next to the others, one value per front model
    result.front_csv(folder / "front.csv", test=[dict.fromkeys(NAMES, 0.5)] * 2)
    assert [r["test_operation_rate"] for r in _rows(folder / "front.csv")] == ["0.5", "0.5"]
    with pytest.raises(ValueError, match="one entry per front model"):
        result.front_csv(folder / "front.csv", test=[dict.fromkeys(NAMES, 0.5)])
    assert result.plot_front(tmp_path / "f.svg", reference=(0, 0)).read_text().startswith("<?xml")


def test_single_score_result_has_no_front(tmp_path):
    result = _result(None)
    folder = result.save(tmp_path / "run")
    assert not (folder / "front.csv").exists() and not (folder / "front.png").exists()
    summary = json.loads((folder / "summary.json").read_text())
    assert "front_size" not in summary and "objectives" not in summary
    with pytest.raises(ValueError, match="no Pareto front"):
        result.plot_front(tmp_path / "front.png")


def test_score_front_rescores_each_model():
    # A model of the trading data's shape: the mean over the window, then a linear layer
    class Linear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(2, 3)

        def forward(self, x):
            return self.head(x.mean(dim=1))

    test = make_trading_data(n_steps=600, window=8, seed=0)["test"]
    models = [Linear() for _ in range(3)]
    for i, m in enumerate(models):
        torch.nn.init.normal_(m.head.weight, generator=torch.Generator().manual_seed(i))
    result = _result(_entries([m.state_dict() for m in models[:2]]))
    template = {k: v.clone() for k, v in models[2].state_dict().items()}
    heldout = result.score_front(models[2], trading_objectives, test)
    assert len(heldout) == 2
    for m, got in zip(models, heldout):
        with torch.no_grad():
            want = trading_objectives(m(test["x"]).argmax(-1), test)
        assert got == {k: float(v) for k, v in want.items()}
    # The model given is only a template: its own weights are not changed
    assert all(torch.equal(v, template[k]) for k, v in models[2].state_dict().items())


# -- the command line ---------------------------------------------------------------------------


def test_cli_writes_front_csv_and_png(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", str(CONFIG), "--out", str(out), "--no-progress"]
    assert main(args + [a for s in TINY for a in ("--set", s)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(out / "front.csv")
    assert summary["front_size"] == len(rows) >= 1
    assert summary["objectives"] == list(NAMES)
    assert f"Pareto front: {len(rows)} models over success_rate, operation_rate" in printed
    columns = [f"{split}_{n}" for split in ("train", "valid", "test") for n in NAMES]
    assert set(columns) <= set(rows[0])
    for row in rows:
        assert all(0.0 <= float(row[c]) <= 1.0 for c in columns), row
    # The front, by the training objectives: no row beaten on both by another
    points = [(float(r["train_success_rate"]), float(r["train_operation_rate"])) for r in rows]
    for p in points:
        assert not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points), points
    assert len(summary["front_test"]) == len(rows)
    assert (out / "front.png").read_bytes().startswith(PNG)
    assert len(torch.load(out / "front_models.pt", weights_only=True)) == len(rows)
    for name in ("history.csv", "plot.png", "best_model.pt", "config.toml"):
        assert (out / name).exists(), name


@pytest.mark.parametrize(
    "override, message",
    [
        ("task.objectives=['success_rate', 'success_rate']", "distinct"),
        ("task.objectives=0", "objectives must be an int >= 1"),
        ("optimizer.objectives=2", "give the objectives in \\[task\\]"),
        ("optimizer.select=7", "select must be an import path"),
    ],
)
def test_bad_objectives_config(tmp_path, capsys, override, message):
    code = main(["run", str(CONFIG), "--out", str(tmp_path / "run"), "--set", override])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# -- the example script -------------------------------------------------------------------------


def test_trading_front_example(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("trading_front",
                                                  ROOT / "examples" / "trading_front.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "run"
    done = module.main(["--max-evaluations", "150", "--population-size", "8", "--n-steps", "600",
                        "--window", "8", "--hidden-size", "4", "--out", str(out),
                        "--no-progress"])
    printed = capsys.readouterr().out
    result = done["result"]
    assert 0 < result.evaluations <= 150
    assert "train_success_rate" in printed and "test_operation_rate" in printed
    assert "hypervolume above (0.0, 0.0)" in printed
    assert len(done["heldout"]) == len(result.pareto_front) == len(_rows(out / "front.csv"))
    assert (out / "front.png").read_bytes().startswith(PNG)
