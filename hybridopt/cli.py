"""The ``hybridopt`` command: ``hybridopt run CONFIG`` trains from a TOML or YAML file.

A config names the task by import path and sets every option of
:class:`~hybridopt.optimizer.HybridOptimizer` and of its ``fit``::

    [task]
    model = "hybridopt.tasks.trading:TradingSignalModel"   # called with model_kwargs
    data = "hybridopt.tasks.trading:make_trading_data"     # called with data_kwargs
    score = "hybridopt.tasks.trading:trading_score"
    model_kwargs = { hidden_size = 16 }
    data_kwargs = { window = 16 }
    # objectives = ["success_rate", "operation_rate"]  # when score returns several objectives

    [optimizer]          # HybridOptimizer keyword arguments (backend, backend_options, ...)
    [gradient]           # GradientConfig
    [genetic]            # GeneticConfig
    [es]                 # ESConfig (the SNES phase)
    [stall]              # StallConfig
    [fit]                # max_evaluations, max_time, target_score, ...

The data factory returns the training data, or a dict with "train" and optionally "valid"
(the validation data that picks the best weights) and "test" (scored once at the end: the
held-out score). Every key is checked before any work starts; a bad config exits with code 2.
The run folder holds ``FitResult.save``'s files, a copy of the config and, in
``summary.json``, the held-out score.

Several objectives: ``[task] objectives`` names what ``score`` returns (a list of names, or
their number), e.g. ``score = "hybridopt.tasks.trading:trading_objectives"`` with
``objectives = ["success_rate", "operation_rate"]``; ``[optimizer] objective_weights`` and
``select`` (an import path) are passed through. The run folder then also holds the Pareto
front: ``front.csv`` (with ``test_<name>`` columns, each front model's held-out objectives,
when there is a "test" split), ``front.png`` and ``front_models.pt``; ``summary.json`` has
``front_size``, ``objectives`` and ``front_test``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hybridopt.config_file import (
    EXIT_BAD_CONFIG,
    OPTIMIZER_CALLABLES,
    SPLITS,
    ConfigError,
    build_configs,
    config_message,
    import_path,
    load_config,
)

log = logging.getLogger("hybridopt")


def split_data(data: Any) -> tuple[Any, Any, Any]:
    """(train, valid, test) from a data factory's result; valid and test may be None.

    A dict with a "train" key is a dict of splits, so its other keys must be splits too.

    Raises:
        ConfigError: if a dict of splits has a key other than "train", "valid" and "test".
    """
    if isinstance(data, Mapping) and "train" in data:
        unknown = [key for key in data if key not in SPLITS]
        if unknown:
            raise ConfigError(
                f"[task] data returned a dict with \"train\" and the unknown key(s) "
                f"{', '.join(map(repr, unknown))}; allowed keys: {', '.join(SPLITS)} "
                '("valid" picks the best weights, "test" is scored once at the end).'
            )
        return data["train"], data.get("valid"), data.get("test")
    return data, None, None


def _call(factory: Callable, kwargs: Mapping, key: str) -> Any:
    if not callable(factory):
        raise ConfigError(f"[task] {key} must name a callable; got {type(factory).__name__}.")
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as err:  # bad keyword arguments or values
        raise ConfigError(f"[task] {key}: {type(err).__name__}: {err}") from err


def build(config: dict):
    """The optimizer, held-out data and fit arguments that ``config`` describes.

    Raises:
        ConfigError: if anything the config names cannot be imported or built.
    """
    import torch

    from hybridopt.optimizer import HybridOptimizer

    configs = build_configs(config)
    task = config["task"]
    model_factory = import_path(task["model"], "[task] model")
    data_factory = import_path(task["data"], "[task] data")
    score_fn = import_path(task["score"], "[task] score")
    options = dict(config.get("optimizer", {}))
    if isinstance(options.get("phases"), list):
        options["phases"] = tuple(options["phases"])
    for key in OPTIMIZER_CALLABLES:
        if isinstance(options.get(key), str):
            options[key] = import_path(options[key], f"[optimizer] {key}")
    objectives = task.get("objectives")
    if objectives is not None:
        options["objectives"] = tuple(objectives) if isinstance(objectives, list) else objectives
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"[optimizer] seed must be an int >= 0; got seed = {seed!r}.")
    train, valid, test = split_data(_call(data_factory, task.get("data_kwargs", {}), "data"))
    # The model's initial weights come from torch's global generator: seed it for this call only
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _call(model_factory, task.get("model_kwargs", {}), "model")
    try:
        opt = HybridOptimizer(model, score_fn, train, validation_data=valid, **options,
                              **configs)
    except (TypeError, ValueError) as err:
        raise ConfigError(config_message(err, config) or f"[optimizer]: {err}") from err
    return opt, test, dict(config.get("fit", {}))


# -- the run ----------------------------------------------------------------------------------


def _run_folder(out: Path | None) -> Path:
    if out is not None:
        return out
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        folder, n = base.with_name(f"{base.name}-{n}"), n + 1
    return folder


def run(
    config_path: Path, out: Path | None = None, progress: bool = True, overrides: list[str] = ()
) -> dict:
    """Train as ``config_path`` says, write the run folder and return its summary.

    Args:
        config_path: the TOML or YAML config.
        out: the run folder (default ``runs/<timestamp>``).
        progress: show a progress bar.
        overrides: ``"table.key=value"`` settings applied on top of the file.

    Raises:
        ConfigError: if the config is bad (before any training).
    """
    config = load_config(config_path, overrides)
    if os.getcwd() not in sys.path:  # modules next to the config, as with `python -m`
        sys.path.insert(0, os.getcwd())
    opt, test, fit_kwargs = build(config)
    folder = _run_folder(out)
    with opt:
        result = opt.fit(progress=progress, **fit_kwargs)
        test_score = None if test is None else opt.evaluate(test)
    result.save(folder)
    front_test = None
    if result.pareto_front is not None and test is not None:
        # Each front model's held-out objectives: in summary.json and as front.csv columns
        front_test = result.score_front(opt.model, opt.scorer.score_fn, test)
        result.front_csv(folder / "front.csv", test=front_test)
    shutil.copyfile(config_path, folder / f"config{config_path.suffix.lower()}")
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(test_score=test_score, config=f"config{config_path.suffix.lower()}",
                   overrides=list(overrides))
    if result.pareto_front is not None:
        summary["front_test"] = front_test
    summary_path.write_text(json.dumps(summary, indent=2))
    summary["folder"] = str(folder)
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridopt",
        description="Train PyTorch models to maximise a score they cannot differentiate.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_parser = commands.add_parser(
        "run", help="train as a TOML/YAML config says and write a run folder",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_parser.add_argument("config", type=Path, help="the config file (.toml, .yaml, .yml)")
    run_parser.add_argument("--out", type=Path, default=None,
                            help="run folder (default: runs/<timestamp>)")
    run_parser.add_argument("--set", dest="overrides", action="append", default=[],
                            metavar="TABLE.KEY=VALUE",
                            help="override a config key, e.g. --set optimizer.backend=ray "
                                 "--set fit.max_time=600 (repeatable)")
    run_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    run_parser.add_argument("--log-level", default="INFO",
                            choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hybridopt`` console script; returns the exit code.

    Exit codes: 0 done, 1 the run failed, 2 bad command line or config.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_CONFIG
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args.config, args.out, progress=not args.no_progress,
                      overrides=args.overrides)
    except ConfigError as err:
        message = " ".join(str(err).split())  # one line, whatever the cause's message held
        print(f"hybridopt: bad config {str(args.config)!r}: {message}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    test = summary["test_score"]
    print(f"best score {summary['best_score']:.4g} (train {summary['best_train_score']:.4g}), "
          f"held-out {'-' if test is None else f'{test:.4g}'}; "
          f"{summary['evaluations']} evaluations in {summary['wall_time']:.1f} s "
          f"({summary['stop_reason']})")
    if "front_size" in summary:
        print(f"Pareto front: {summary['front_size']} models over "
              f"{', '.join(summary['objectives'])} (front.csv, front.png)")
    print(f"run folder: {summary['folder']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
