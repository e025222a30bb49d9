"""Run configs for the ``hybridopt`` command: reading TOML/YAML, overrides, checking every key
before any work, and the config objects they build (see :mod:`hybridopt.cli`)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridopt.config import ESConfig, GeneticConfig, GradientConfig, StallConfig

log = logging.getLogger("hybridopt")
EXIT_BAD_CONFIG = 2
TASK_KEYS = ("model", "data", "score", "model_kwargs", "data_kwargs", "objectives")
CONFIGS = {"gradient": GradientConfig, "genetic": GeneticConfig, "es": ESConfig,
           "stall": StallConfig}
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
            check_backend_options(backend, dict(backend_options or {}),
                                  options.get("precision", "float32"))
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
