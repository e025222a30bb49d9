"""``backend="joblib"``: shards of the population scored in local worker processes (loky).

Meant for score functions written in plain Python or numpy, which ``torch.func.vmap`` cannot
batch: scoring then costs one Python call per individual, and processes run those calls in
parallel. The model and the data are sent once per worker process (loky's initializer), not with
every shard; a shard travels as a numpy array. Workers run on the CPU, each with
``threads_per_worker`` torch threads (1 by default: the processes are the parallelism, and more
threads per process would only make ``n_jobs`` processes fight over the cores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import Tensor

from hybridopt.backends.local import (
    Bounds,
    ShardScores,
    Worker,
    WorkerSpec,
    check_method,
    check_number,
    cpu_model,
    merge,
    parse_options,
    shard_bounds,
)
from hybridopt.scoring import ScoreBatch

_WORKER: Worker | None = None  # this process's worker, set by the pool's initializer


@dataclass(frozen=True, kw_only=True)
class JoblibOptions:
    """Options of ``backend="joblib"`` (``backend_options`` of the optimizer)."""

    n_jobs: int = 2
    """Worker processes; -1 = one per CPU core."""
    method: str = "loop"
    """How each worker computes actions: "loop" (the reference), "vmap" or "auto"."""
    timeout: float | None = 600.0
    """Seconds a generation's shards may take before a ``TimeoutError``; None = no limit."""
    threads_per_worker: int = 1
    """Torch intra-op threads in each worker process."""

    def __post_init__(self) -> None:
        if self.n_jobs != -1:
            check_number("JoblibOptions", "n_jobs", self.n_jobs, 1, integer=True)
        check_method("JoblibOptions", self.method)
        check_number("JoblibOptions", "threads_per_worker", self.threads_per_worker, 1,
                     integer=True)
        check_number("JoblibOptions", "timeout", self.timeout, 0, strict=True, allow_none=True)

    @property
    def workers(self) -> int:
        """The number of worker processes."""
        return (os.cpu_count() or 1) if self.n_jobs == -1 else self.n_jobs


def _init_worker(spec: WorkerSpec, data, num_threads: int) -> None:
    """Build this process's worker once, when loky starts the process."""
    global _WORKER
    _WORKER = Worker(spec, data, "cpu", num_threads)


def _threads() -> int:
    """Torch threads of this worker process."""
    import torch

    return torch.get_num_threads()


def _evaluate_shard(shard, bounds: Bounds) -> ShardScores:
    """Score one shard with this process's worker."""
    if _WORKER is None:
        raise RuntimeError("joblib worker used before its initializer ran.")
    return _WORKER.evaluate(shard, bounds)


class JoblibBackend:
    """Scores population shards in ``n_jobs`` local processes; see :class:`JoblibOptions`.

    Args:
        model: the model (eval mode).
        score_fn: the user's score function.
        score_mode: the Scorer mode chosen on the driver.
        flat: layout of the trainable weights.
        data: the whole training data, sent once to each process.
        chunk_size: individuals per vmap call (None: sized from memory).
        objectives: None, or the objective names (or their number M) the workers' scorers
            use; the batches then carry ``objectives [P, M]``.
        precision: the workers' forward passes (``WorkerSpec.precision``).
        **options: fields of :class:`JoblibOptions`.

    Raises:
        ValueError: if an option is unknown or has a bad value.
    """

    def __init__(self, *, model, score_fn, score_mode, flat, data, chunk_size=None,
                 objectives=None, precision="float32", **options):
        self.options = parse_options("joblib", JoblibOptions, options)
        from joblib.externals.loky import ProcessPoolExecutor

        from hybridopt.data import data_to

        workers = self.options.workers
        spec = WorkerSpec(
            model=cpu_model(model), score_fn=score_fn, score_mode=score_mode, flat=flat,
            method=self.options.method, chunk_size=chunk_size, objectives=objectives,
            precision=precision,
        )
        self._executor = ProcessPoolExecutor(
            max_workers=workers, initializer=_init_worker,
            initargs=(spec, data_to(data, "cpu"), self.options.threads_per_worker),
        )

    def evaluate(self, population: Tensor, bounds: Bounds) -> ScoreBatch:
        """Scores ``[P]`` (and objectives ``[P, M]``) of ``population`` on rows ``bounds`` of
        the data, in order.

        Raises:
            TimeoutError: if the shards take longer than ``timeout``.
            RuntimeError: if a worker process died.
        """
        from joblib.externals.loky import BrokenProcessPool

        host = population.detach().cpu().numpy()
        pieces = shard_bounds(len(host), self.options.workers)
        futures = [self._executor.submit(_evaluate_shard, host[a:b], bounds) for a, b in pieces]
        try:
            return merge([f.result(timeout=self.options.timeout) for f in futures])
        except BrokenProcessPool as err:
            raise RuntimeError(
                f"a joblib worker process died while scoring the population ({err}); "
                "backend='ray' re-runs lost shards, this backend does not."
            ) from err

    def worker_threads(self) -> list[int]:
        """Torch threads of the worker processes (one answer per submitted call)."""
        futures = [self._executor.submit(_threads) for _ in range(self.options.workers)]
        return [f.result(timeout=self.options.timeout) for f in futures]

    def close(self) -> None:
        """Stop the worker processes."""
        self._executor.shutdown(wait=True, kill_workers=True)

    def __enter__(self) -> JoblibBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
