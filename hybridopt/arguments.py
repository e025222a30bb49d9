"""The optimiser's own arguments, checked at the door before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from hybridopt.callbacks import validate_callbacks
from hybridopt.checks import check_int
from hybridopt.config import ESConfig, GeneticConfig, GradientConfig, StallConfig
from hybridopt.data import check_like, validate_data
from hybridopt.phases import validate_phases
from hybridopt.population.precision import check_precision_name
from hybridopt.selection import check_selection
from hybridopt.validation import check_options

BACKENDS = ("auto", "vmap", "loop", "joblib", "ray")


def check_arguments(*, model: Any, phases: Any, population_size: Any, episode_length: Any,
                    seed: Any, threads: Any, checkpoint_every: Any, checkpoint_dir: Any,
                    selection: Any, backend: Any, backend_options: Any, device: Any,
                    configs: dict[str, Any], precision: Any = "float32") -> tuple[Any, ...]:
    """Check :class:`~hybridopt.optimizer.HybridOptimizer`'s keyword arguments; returns the
    checked ``phases``.

    Raises:
        TypeError, ValueError: naming the argument and the bad value.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    phases = validate_phases(phases)
    if population_size != "auto":
        check_int("population_size", population_size, 2)
    check_int("episode_length", episode_length, 1, allow_none=True)
    check_int("seed", seed, 0)
    check_int("threads", threads, 1, allow_none=True)
    check_int("checkpoint_every", checkpoint_every, 1)
    check_selection(selection)
    check_precision_name(precision)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, Path)):
        raise TypeError(
            f"checkpoint_dir must be a path (str or Path); got {type(checkpoint_dir).__name__}."
        )
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}.")
    if backend in ("joblib", "ray"):
        from hybridopt.backends import check_backend_options

        check_backend_options(backend, dict(backend_options or {}), precision)
    for name, cls in (("gradient", GradientConfig), ("genetic", GeneticConfig),
                      ("es", ESConfig), ("stall", StallConfig)):
        if configs[name] is not None and not isinstance(configs[name], cls):
            raise TypeError(
                f"{name} must be a {cls.__name__}; got {type(configs[name]).__name__}.")
    names = tuple(p if isinstance(p, str) else p.name for p in phases)
    check_options(gradient=configs["gradient"], genetic=configs["genetic"],
                  stall=configs["stall"], device=device,
                  population_size=population_size, phases=names, model=model)
    return phases


def check_data(data: Any, validation_data: Any, episode_length: int | None) -> int:
    """Check the data (and validation data like it) and the episode length; returns N."""
    n = validate_data(data, "data")
    if episode_length is not None and episode_length > n:
        raise ValueError(
            f"episode_length must be <= the data's length N = {n}; "
            f"got episode_length = {episode_length}."
        )
    if validation_data is not None:
        check_like(validation_data, data, "validation_data")
    return n


def check_fit(max_evaluations: Any, max_time: Any, target_score: Any, callbacks: Any,
              resume: Any, patience: Any, checkpoint_dir: Path | None) -> tuple:
    """Check :meth:`~hybridopt.optimizer.HybridOptimizer.fit`'s arguments; returns the
    checked callbacks."""
    check_int("max_evaluations", max_evaluations, 1, allow_none=True)
    check_int("patience", patience, 1, allow_none=True)
    if max_time is not None and not (isinstance(max_time, (int, float)) and max_time > 0):
        raise ValueError(f"max_time must be a number of seconds > 0; got {max_time!r}.")
    if target_score is not None and not isinstance(target_score, (int, float)):
        raise TypeError(f"target_score must be a number; got {target_score!r}.")
    if max_evaluations is None and max_time is None and target_score is None:
        raise ValueError("fit needs a budget: give max_evaluations, max_time or target_score.")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir: there is nowhere to resume from.")
    return validate_callbacks(callbacks)
