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
import dataclasses
import importlib
import inspect
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hybridopt.config import GeneticConfig, GradientConfig, StallConfig

log = logging.getLogger("hybridopt")
EXIT_BAD_CONFIG = 2
TASK_KEYS = ("model", "data", "score", "model_kwargs", "data_kwargs", "objectives")
CONFIGS = {"gradient": GradientConfig, "genetic": GeneticConfig, "stall": StallConfig}
# Config fields that take a callable: given as "package.module:attr" strings
CALLABLE_FIELDS = {"optimizer", "scheduler", "aux_loss", "select", "mate", "mutate"}
# [optimizer] keys that take a callable (the front model opt.model ends with)
OPTIMIZER_CALLABLES = ("select",)
SPLITS = ("train", "valid", "test")
TABLES = {cls.__name__: name for name, cls in CONFIGS.items()}
# "GradientConfig.lr" in an error message: said as "[gradient] lr" to the config's author
_FIELD = re.compile(r"\b(" + "|".join(TABLES) + r")\.(\w+)")


class ConfigError(ValueError):
    """A config that cannot be run; the message names the key and what was expected."""


# -- reading and checking ---------------------------------------------------------------------


def _optimizer_keys() -> tuple[str, ...]:
    from hybridopt.optimizer import HybridOptimizer

    skip = {"self", "model", "score_fn", "data", "validation_data", *CONFIGS}
    return tuple(p for p in inspect.signature(HybridOptimizer.__init__).parameters
                 if p not in skip)


def _fit_keys() -> tuple[str, ...]:
    from hybridopt.optimizer import HybridOptimizer

    skip = {"self", "callbacks", "progress"}
    return tuple(p for p in inspect.signature(HybridOptimizer.fit).parameters if p not in skip)


def allowed_keys() -> dict[str, tuple[str, ...]]:
    """Every table of a config and the keys it may hold."""
    return {
        "task": TASK_KEYS,
        "optimizer": _optimizer_keys(),
        **{name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in CONFIGS.items()},
        "fit": _fit_keys(),
    }


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) config and check its keys.

    Args:
        path: the config file.
        overrides: ``"table.key=value"`` strings applied on top (value read as TOML, else
            taken as a string), e.g. ``"optimizer.backend=ray"``.

    Raises:
        ConfigError: if the file cannot be read or parsed, or has an unknown or missing key.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err.strerror}.") from err
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            config = _toml().loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            config = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config must be a .toml, .yaml or .yml file; got {str(path)!r}.")
    except ConfigError:
        raise
    except Exception as err:  # tomllib / yaml syntax errors
        raise ConfigError(f"cannot parse {str(path)!r}: {err}") from err
    if isinstance(config, dict):
        for override in overrides:
            apply_override(config, override)
    check_config(config)
    return config


def apply_override(config: dict, override: str) -> None:
    """Set ``table.key=value`` in ``config``; the value is read as TOML, else as a string.

    Raises:
        ConfigError: if ``override`` is not of the form ``table.key=value``.
    """
    name, sep, text = override.partition("=")
    table, dot, key = name.strip().partition(".")
    if not sep or not dot or not table or not key:
        raise ConfigError(f'--set needs "table.key=value"; got {override!r}.')
    try:
        value = _toml().loads(f"value = {text}")["value"]
    except Exception:  # not a TOML value: a bare string such as ray or auto
        value = text
    body = config.setdefault(table, {})
    if not isinstance(body, dict):
        raise ConfigError(f"--set {override!r}: [{table}] is not a table.")
    body[key] = value


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def check_config(config: Any) -> None:
    """Check a config's tables and keys (nothing is imported or built).

    Raises:
        ConfigError: naming the unknown, missing or mistyped key and listing the allowed ones.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a table of tables; got {type(config).__name__}.")
    allowed = allowed_keys()
    for table, body in config.items():
        if table not in allowed:
            raise ConfigError(
                f"unknown table [{table}]; allowed tables: {', '.join(allowed)}."
            )
        if not isinstance(body, Mapping):
            raise ConfigError(f"[{table}] must be a table of keys; got {body!r}.")
        for key in body:
            if key not in allowed[table]:
                raise ConfigError(
                    f"unknown key {key!r} in [{table}]; allowed keys: "
                    f"{', '.join(allowed[table])}."
                )
    task = config.get("task", {})
    for key in ("model", "data", "score"):
        if not isinstance(task.get(key), str):
            raise ConfigError(
                f'[task] needs {key} = "package.module:attr" (an import path); '
                f"got {task.get(key)!r}."
            )
    for key in ("model_kwargs", "data_kwargs"):
        if not isinstance(task.get(key, {}), Mapping):
            raise ConfigError(f"[task] {key} must be a table; got {task[key]!r}.")
    _check_objectives(task, config.get("optimizer", {}))
    _check_fit(config.get("fit", {}))
    _check_backend(config.get("optimizer", {}))


def _check_objectives(task: Mapping, options: Mapping) -> None:
    """``[task] objectives`` (None, an int M >= 1 or distinct names; only in [task]) and the
    ``[optimizer]`` callables (import paths)."""
    if "objectives" in options:
        raise ConfigError(
            "[optimizer] objectives: give the objectives in [task], next to the score that "
            'returns them (objectives = ["success_rate", "operation_rate"]).'
        )
    if task.get("objectives") is not None:
        from hybridopt.objectives import parse_objectives

        objectives = task["objectives"]
        try:
            parse_objectives(tuple(objectives) if isinstance(objectives, list) else objectives)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[task] {err}") from err
    for key in OPTIMIZER_CALLABLES:
        value = options.get(key)
        if value is not None and (not isinstance(value, str) or ":" not in value):
            raise ConfigError(
                f'[optimizer] {key} must be an import path "package.module:attr"; got {value!r}.'
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


FIT_RULES = {
    "max_evaluations": (lambda v: _is_number(v) and isinstance(v, int) and v >= 1, "an int >= 1"),
    "max_time": (lambda v: _is_number(v) and v > 0, "a number of seconds > 0"),
    "target_score": (_is_number, "a number"),
    "resume": (lambda v: isinstance(v, bool), "true or false"),
}


def _check_fit(fit: Mapping) -> None:
    """The budgets of [fit], checked here so that a bad one fails before any work."""
    if all(fit.get(k) is None for k in ("max_evaluations", "max_time", "target_score")):
        raise ConfigError("[fit] needs a budget: max_evaluations, max_time or target_score.")
    for key, value in fit.items():
        ok, expected = FIT_RULES.get(key, (lambda v: True, ""))
        if value is not None and not ok(value):
            raise ConfigError(f"[fit] {key} must be {expected}; got {key} = {value!r}.")


def _check_backend(options: Mapping) -> None:
    """The backend's own options, checked before any work (nothing is started)."""
    from hybridopt.backends import NAMES, check_backend_options

    backend, backend_options = options.get("backend", "auto"), options.get("backend_options")
    if backend_options is not None and not isinstance(backend_options, Mapping):
        raise ConfigError(f"[optimizer] backend_options must be a table; got {backend_options!r}.")
    if backend in NAMES:
        try:
            check_backend_options(backend, dict(backend_options or {}))
        except ValueError as err:
            raise ConfigError(f"[optimizer] {err}") from err


def import_path(path: str, key: str) -> Any:
    """The object named ``"package.module:attr"`` (``attr`` may be dotted).

    Raises:
        ConfigError: if the module or attribute does not exist.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f'{key} must be an import path "package.module:attr"; got {path!r}.')
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{key}: cannot import module {module_name!r} ({err}).") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{key}: {module_name!r} has no attribute {attr!r}.")
        obj = getattr(obj, part)
    return obj


# -- building -----------------------------------------------------------------------------------


def config_message(err: Exception, config: Mapping | None = None) -> str | None:
    """An error naming ``GradientConfig.lr`` etc. as the config file says it: ``[gradient] lr``.

    Args:
        err: the error raised by a config or by the optimiser's checks.
        config: the config, to add a hint when a ``TypeError`` is about a string that was
            meant as a number, a bool or an import path.

    Returns:
        The message in the file's terms, or None if it names no config field.
    """
    message = str(err)
    found = _FIELD.search(message)
    if found is None:
        return None
    text = _FIELD.sub(lambda m: f"[{TABLES[m[1]]}] {m[2]}", message)
    if not isinstance(err, TypeError) or not config:
        return text
    table, key = TABLES[found[1]], found[2]
    return text + _string_hint(key, config.get(table, {}).get(key))


def _string_hint(key: str, value: Any) -> str:
    """Why a string ended up where a number, bool or callable belongs: strings never convert."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        pass
    else:
        return (" The file gives it as a string: write numbers unquoted (YAML reads 1e-3 as a "
                "string; write 1.0e-3).")
    if value.lower() in ("true", "false", "yes", "no", "on", "off"):
        return " The file gives it as a string: write true or false, unquoted."
    if key in CALLABLE_FIELDS and ":" not in value and key != "optimizer":
        return ' Give a callable as an import path "package.module:attr".'
    return ""


def build_configs(config: dict) -> dict[str, Any]:
    """GradientConfig, GeneticConfig and StallConfig from their tables."""
    built = {}
    for name, cls in CONFIGS.items():
        kwargs = dict(config.get(name, {}))
        for key, value in kwargs.items():
            if key in CALLABLE_FIELDS and isinstance(value, str) and ":" in value:
                kwargs[key] = import_path(value, f"[{name}] {key}")
        try:
            built[name] = cls(**kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(config_message(err, config) or f"[{name}]: {err}") from err
    return built


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
