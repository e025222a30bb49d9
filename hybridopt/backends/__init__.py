"""Distributed population evaluation: the "joblib" and "ray" backends behind one protocol.

Both split a population ``[P, D]`` into contiguous shards, score each shard in a worker that holds
the model and the training data (sent once), and put the scores back in population order. The
results are those of :class:`~hybridopt.population.evaluate.PopulationEvaluator` in one process.

Ray and joblib are imported only when a backend is made, so ``import hybridopt`` stays fast.
Workers run torch with one thread per CPU they were given (joblib: ``threads_per_worker``, 1;
ray: ``cpus_per_actor`` rounded). :mod:`hybridopt.backends.ray_code` carries the user's own
modules to Ray workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from hybridopt.data import Data
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import ScoreBatch

NAMES = ("joblib", "ray")

__all__ = ["NAMES", "Backend", "check_backend_options", "make_backend"]


class Backend(Protocol):
    """What the optimizer needs from a distributed backend."""

    def evaluate(self, population: Tensor, bounds: tuple[int, int] | None) -> ScoreBatch:
        """Scores ``[P]`` (and objectives ``[P, M]``) of ``population`` on rows ``bounds`` of
        the workers' data."""

    def close(self) -> None:
        """Release the workers."""


def check_backend_options(name: str, options: dict, precision: str = "float32") -> None:
    """Check backend ``name``'s options, and that its workers can evaluate in ``precision``,
    without starting anything (Ray is not imported).

    Joblib workers run on the CPU, Ray actors on the CPU unless ``gpus_per_actor`` is set:
    "float16" needs CUDA, so it is refused there.

    Raises:
        ValueError: if ``name`` or an option is unknown, or an option has a bad value, or
            the workers cannot run ``precision``.
    """
    from hybridopt.backends.local import parse_options
    from hybridopt.population.precision import check_precision

    if name == "joblib":
        from hybridopt.backends.joblib_backend import JoblibOptions

        parse_options(name, JoblibOptions, options)
        device = "cpu"
    elif name == "ray":
        from hybridopt.backends.ray_options import RayOptions

        device = "cuda" if parse_options(name, RayOptions, options).gpus_per_actor else "cpu"
    else:
        raise ValueError(f"backend must be one of {NAMES}; got {name!r}.")
    check_precision(precision, torch.device("cuda"))  # a known precision at all
    try:
        check_precision(precision, torch.device(device))
    except ValueError as err:
        raise ValueError(f"{err} (backend = {name!r}: its workers run on {device})") from err


def make_backend(
    name: str,
    *,
    model: nn.Module,
    score_fn: Any,
    score_mode: str,
    flat: FlatParams,
    data: Data,
    address: str | None = None,
    device: str | torch.device = "cpu",
    chunk_size: int | None = None,
    objectives: Sequence[str] | int | None = None,
    precision: str = "float32",
    **options: Any,
) -> Backend:
    """Start the workers of backend ``name`` and return it.

    Args:
        name: "joblib" (local processes) or "ray" (Ray actors, local or on a cluster).
        model: the model (eval mode); each worker loads weight rows into its own copy.
        score_fn: the user's score function.
        score_mode: the :class:`~hybridopt.scoring.Scorer` mode chosen on the driver.
        flat: layout of the trainable weights.
        data: the whole training data, sent once to every worker.
        address: Ray cluster address (None: ``RAY_ADDRESS``, else a local Ray); Ray only.
        device: the optimizer's device; workers choose their own.
        chunk_size: individuals per vmap call (None: sized from memory).
        objectives: None (one score), or the driver scorer's objective names (``Scorer.names``;
            an int M also works): every worker scores with ``Scorer(score_fn,
            objectives=objectives)`` and the batches carry ``objectives [P, M]``. Their
            ``scores`` are the mean of the objectives; re-scalarise on the driver if its
            scorer has weights.
        precision: what every worker's evaluator runs its forward passes in (see
            :class:`~hybridopt.population.evaluate.PopulationEvaluator`; "auto": each worker
            measures and chooses for itself).
        **options: the backend's options, see
            :class:`~hybridopt.backends.ray_backend.RayOptions` and
            :class:`~hybridopt.backends.joblib_backend.JoblibOptions`.

    Returns:
        A backend with ``evaluate(population, bounds) -> ScoreBatch`` and ``close()``.

    Raises:
        ValueError: if ``name`` or an option is unknown, or an option has a bad value, or
            ``objectives`` is not None, an int >= 1 or distinct names, or the workers cannot
            run ``precision``.

    Example:
        >>> backend = make_backend("joblib", model=model, score_fn=score, score_mode="vmap",
        ...                        flat=flat, data=data, n_jobs=2)
        >>> backend.evaluate(population, None).scores
        >>> backend.close()
    """
    from hybridopt.objectives import parse_objectives

    m, names = parse_objectives(objectives)  # checked here, before any worker starts
    check_backend_options(name, options, precision)  # also the name: joblib or ray from here
    common = dict(
        model=model, score_fn=score_fn, score_mode=score_mode, flat=flat, data=data,
        chunk_size=chunk_size, objectives=names if names is not None else m,
        precision=precision,
    )
    if name == "joblib":
        from hybridopt.backends.joblib_backend import JoblibBackend

        return JoblibBackend(**common, **options)
    from hybridopt.backends.ray_backend import RayBackend

    return RayBackend(**common, address=address, **options)
