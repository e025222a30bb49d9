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
        (("patience = 2", "patience = 0"),
         "[stall] patience must be an int >= 1; got patience = 0"),
        # every field of [gradient], [genetic] and [stall] is checked, strings never converted
        (("samples = 4", 'samples = 4\nlr = "fast"'),
         "[gradient] lr must be a number > 0; got lr = 'fast' (str)."),
        (("samples = 4", 'samples = 4\nlr = "1e-3"'),
         "[gradient] lr must be a number > 0; got lr = '1e-3' (str). The file gives it as a "
         "string: write numbers unquoted"),
        (("samples = 4", 'samples = 4\nnormalize_advantages = "false"'),
         "[gradient] normalize_advantages must be a bool (True or False); got "
         "normalize_advantages = 'false' (str). The file gives it as a string: write true or"),
        (("samples = 4", "samples = 4\nwarmup_steps = 1.5"),
         "[gradient] warmup_steps must be an int >= 0; got warmup_steps = 1.5 (float)."),
        (("samples = 4", 'samples = 4\nmax_grad_norm = "1"'),
         "[gradient] max_grad_norm must be a number > 0 or None; got max_grad_norm = '1' (str)."),
        (("samples = 4", 'samples = 4\noptimizer = "adamm"'),
         "[gradient] optimizer must be a torch.optim optimiser name (adadelta, "),
        (("samples = 4", "samples = 4\noptimizer_kwargs = { betas = [0.9] }"),
         "[gradient] optimizer = 'adam' (torch.optim.Adam) with optimizer_kwargs = "
         "{'betas': [0.9]}: torch.optim.Adam refused them: IndexError"),
        (("samples = 4", "samples = 4\noptimizer_kwargs = { beta = 0.9 }"),
         "[gradient] optimizer_kwargs has unknown keyword(s) ['beta'] for torch.optim.Adam"),
        (("samples = 4", 'samples = 4\naux_loss = "ce"'),
         "[gradient] aux_loss must be a callable or None; got aux_loss = 'ce' (str). Give a "
         'callable as an import path "package.module:attr".'),
        (("samples = 4", 'samples = 4\nscheduler = "builtins:id"'),
         "[gradient] scheduler = <built-in function id> must return a learning-rate scheduler"),
        (("samples = 4", 'samples = 4\naux_loss = "operator:is_"'),
         "[gradient] aux_loss = <built-in function is_> must return a 0-d floating-point tensor"),
        (("[stall]", "[genetic]\nhall_of_fame = 0\n\n[stall]"),
         "[genetic] hall_of_fame must be an int >= 1; got hall_of_fame = 0 (int)."),
        (("[stall]", "[genetic]\nelite = 8\n\n[stall]"),
         "[genetic] elite must be an int with 1 <= elite < population_size = 8"),
        (("[stall]", '[genetic]\ncrossover = "sbx"\n\n[stall]'),
         '[genetic] crossover must be "blend" or "uniform"; got crossover = \'sbx\' (str).'),
        (("patience = 2", "patience = 2\nrelative = 1"),
         "[stall] relative must be a bool (True or False); got relative = 1 (int)."),
        (("trading_score", "no_such_score"), "has no attribute 'no_such_score'"),
        (('"hybridopt.tasks.trading:TradingSignalModel"', '"hybridopt.tasks.trading"'),
         'model must be an import path "package.module:attr"'),
        (("window = 8", "window = 0"), "[task] data: ValueError: window must be >= 1"),
        (("hidden_size = 4", "hiden_size = 4"), "[task] model: TypeError"),
        (("episode_length = 64", "episode_length = 100000"), "episode_length must be <="),
        (("[fit]", "[fit]\n[fit.extra]"), "unknown key 'extra' in [fit]"),
        (("seed = 1", 'seed = 1\nprecision = "bf17"'), "[optimizer]: precision must be one of"),
        (('model = "', 'model = '), "cannot parse"),
    ],
)
def test_bad_config_names_the_key(tmp_path, capsys, change, message):
    config = _write(tmp_path, TINY.replace(*change))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert not (tmp_path / "run").exists()  # nothing written: it failed before any work


def test_yaml_strings_are_not_numbers(tmp_path, capsys):
    """YAML 1.1 reads 1e-3 as a string: the error says so instead of a guess."""
    pytest.importorskip("yaml")
    tomllib = pytest.importorskip("tomllib")
    import yaml

    config = tomllib.loads(TINY)
    text = yaml.safe_dump(config) + "\n"
    text = text.replace("  samples: 4\n", "  samples: 4\n  lr: 1e-3\n")
    assert yaml.safe_load(text)["gradient"]["lr"] == "1e-3"
    assert main(["run", str(_write(tmp_path, text, "tiny.yaml"))]) == 2
    err = capsys.readouterr().err
    assert "[gradient] lr must be a number > 0; got lr = '1e-3' (str)." in err
    assert "write 1.0e-3" in err and err.count("\n") == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a CPU-only machine")
def test_cuda_device_without_cuda(tmp_path, capsys):
    config = _write(tmp_path, TINY.replace("seed = 1", 'seed = 1\ndevice = "cuda"'))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "[optimizer]: device = 'cuda' asks for CUDA" in err and err.count("\n") == 1


TASK_MODULE = """
from hybridopt.tasks.trading import make_trading_data


def data(**kwargs):
    splits = make_trading_data(**kwargs)
    return {"train": splits["train"], "validation": splits["valid"]}
"""


def test_data_factory_with_an_unknown_split(tmp_path, capsys, monkeypatch):
    (tmp_path / "hybridopt_cli_task.py").write_text(TASK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    text = TINY.replace('"hybridopt.tasks.trading:make_trading_data"',
                        '"hybridopt_cli_task:data"')
    assert main(["run", str(_write(tmp_path, text)), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert ("[task] data returned a dict with \"train\" and the unknown key(s) 'validation'; "
            "allowed keys: train, valid, test") in err
    assert "[optimizer]" not in err and err.count("\n") == 1


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
