"""The `hybridopt` command: tiny-budget runs of the trading task, and bad configs (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybridopt.cli import main

HYBRIDOPT = str(Path(sys.executable).with_name("hybridopt"))
EXAMPLE = Path(__file__).parents[1] / "examples" / "trading.toml"

TINY = """
[task]
model = "hybridopt.tasks.trading:TradingSignalModel"
data = "hybridopt.tasks.trading:make_trading_data"
score = "hybridopt.tasks.trading:trading_score"
model_kwargs = { hidden_size = 4, linear_size = 4 }
data_kwargs = { n_steps = 600, window = 8 }

[optimizer]
phases = ["gradient", "genetic"]
population_size = 8
episode_length = 64
seed = 1

[gradient]
samples = 4
max_steps = 3

[stall]
patience = 2
min_steps = 1

[fit]
max_evaluations = 60
"""


def _write(folder: Path, text: str, name: str = "tiny.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_run_writes_the_run_folder(tmp_path):
    config = _write(tmp_path, TINY)
    out = tmp_path / "run"
    done = subprocess.run(
        [HYBRIDOPT, "run", str(config), "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"run folder: {out}" in done.stdout
    for name in ("history.csv", "history.jsonl", "summary.json", "plot.png", "best_model.pt",
                 "config.toml"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert isinstance(summary["test_score"], float)  # the held-out split, scored once
    assert summary["evaluations"] <= 60 and summary["config"] == "config.toml"
    assert (out / "config.toml").read_text() == TINY
    phases = {json.loads(line)["phase"] for line in (out / "history.jsonl").open()}
    assert phases == {"gradient", "genetic"}


def test_yaml_config_and_overrides(tmp_path, capsys):
    yaml = pytest.importorskip("yaml")
    tomllib = pytest.importorskip("tomllib")
    config = _write(tmp_path, yaml.safe_dump(tomllib.loads(TINY)), "tiny.yaml")
    out = tmp_path / "run"
    code = main(["run", str(config), "--out", str(out), "--no-progress",
                 "--set", "optimizer.phases=['genetic']", "--set", "fit.max_evaluations=24"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluations"] <= 24 and summary["config"] == "config.yaml"
    assert summary["overrides"] == ["optimizer.phases=['genetic']", "fit.max_evaluations=24"]
    assert {json.loads(line)["phase"] for line in (out / "history.jsonl").open()} == {"genetic"}


def test_bad_config_exits_2_from_the_console_script(tmp_path):
    config = _write(tmp_path, TINY.replace("population_size", "populaton_size"))
    done = subprocess.run([HYBRIDOPT, "run", str(config)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "unknown key 'populaton_size' in [optimizer]" in done.stderr
    assert "population_size" in done.stderr  # the allowed keys are listed


@pytest.mark.parametrize(
    "change, message",
    [
        (("[stall]", "[stal]"), "unknown table [stal]; allowed tables: task, optimizer"),
        (("samples = 4", "sample = 4"), "unknown key 'sample' in [gradient]; allowed keys: "),
        (("max_evaluations = 60", "max_evals = 60"), "unknown key 'max_evals' in [fit]"),
        (("max_evaluations = 60", "max_evaluations = 0"), "max_evaluations must be an int >= 1"),
        (("max_evaluations = 60", ""), "[fit] needs a budget"),
        (("seed = 1", 'backend = "ray"\nbackend_options = { num_actor = 2 }'),
         "unknown backend_options ['num_actor']"),
        (("seed = 1", 'backend = "spark"'), "backend must be one of"),
        (("patience = 2", "patience = 0"), "StallConfig.patience must be an int >= 1"),
        (("trading_score", "no_such_score"), "has no attribute 'no_such_score'"),
        (('"hybridopt.tasks.trading:TradingSignalModel"', '"hybridopt.tasks.trading"'),
         'model must be an import path "package.module:attr"'),
        (("window = 8", "window = 0"), "[task] data: ValueError: window must be >= 1"),
        (("hidden_size = 4", "hiden_size = 4"), "[task] model: TypeError"),
        (("episode_length = 64", "episode_length = 100000"), "episode_length must be <="),
        (("[fit]", "[fit]\n[fit.extra]"), "unknown key 'extra' in [fit]"),
        (('model = "', 'model = '), "cannot parse"),
    ],
)
def test_bad_config_names_the_key(tmp_path, capsys, change, message):
    config = _write(tmp_path, TINY.replace(*change))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "run").exists()  # nothing written: it failed before any work


def test_config_file_errors(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
    assert main(["run", str(_write(tmp_path, TINY, "tiny.ini"))]) == 2
    assert "must be a .toml, .yaml or .yml file" in capsys.readouterr().err
    assert main(["run", str(_write(tmp_path, TINY)), "--set", "backend=ray"]) == 2
    assert '--set needs "table.key=value"' in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "run" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text and "[task]" in text
    assert main([]) == 2


def test_example_config_is_valid():
    from hybridopt.cli import load_config

    config = load_config(EXAMPLE)
    assert config["task"]["model"] == "hybridopt.tasks.trading:TradingSignalModel"
    assert config["fit"]["max_time"] <= 120
