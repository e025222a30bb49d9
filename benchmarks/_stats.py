"""What the benchmark scripts share: statistics over paired seeds, tables, CSVs, parallel runs.

- :func:`mean_std`, :func:`paired`: mean and sample std over seeds, and the paired difference of
  two methods run from the same initial weights on the same seeds;
- :func:`markdown_table`, :func:`pm`, :func:`verdict`: what the scripts print;
- :func:`write_csv`: one row per dict, the union of the keys as columns;
- :func:`run_parallel`: independent runs in worker processes, one torch thread each;
- :func:`hybridopt_rejects`: whether this checkout's ``HybridOptimizer`` accepts an option
  (``phases=("es",)`` before the SNES phase exists, ``population_size="auto"``), so a script
  skips what it cannot run instead of crashing.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample std (0 for a single value; NaN for none)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Paired:
    """The paired difference ``a - b`` over the seeds both were run on."""

    mean: float
    """Mean over seeds of ``a[seed] - b[seed]``."""
    std: float
    """Sample std of those differences (0 for one seed)."""
    positive: int
    """Seeds where ``a`` is strictly above ``b``."""
    n: int
    """Seeds both have."""

    def __str__(self) -> str:
        return f"{pm(self.mean, self.std)} ({self.positive}/{self.n} seeds > 0)"


def paired(a: Mapping[Any, float], b: Mapping[Any, float]) -> Paired:
    """Paired difference ``a - b`` over the seeds (keys) the two mappings share."""
    seeds = [s for s in a if s in b]
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    mean, std = mean_std(diffs)
    return Paired(mean, std, sum(d > 0 for d in diffs), len(diffs))


def pm(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std`` with ``digits`` decimals."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def verdict(ok: bool) -> str:
    """How a target line ends."""
    return "met" if ok else "missed"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned, floats with two decimals."""
    def cell(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    body = [[cell(v) for v in row] for row in rows]
    numeric = [all(_is_number(r[i]) for r in body) and bool(body) for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` (the union of their keys as columns, in first-seen order) to ``path``;
    nothing when there are no rows."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _init_worker(threads: int) -> None:
    """Worker start-up: ``threads`` torch intra-op threads (0: torch's default)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def run_parallel(fn: Callable[[Any], dict], jobs: Sequence[Any], n_jobs: int, threads: int,
                 on_result: Callable[[Any, dict], None] | None = None) -> list[dict]:
    """``[fn(job) for job in jobs]``, in ``n_jobs`` fresh processes with ``threads`` threads each.

    Results come back in the order of ``jobs``; ``on_result(job, result)`` is called as each
    finishes (for progress lines and CSVs written as the runs come in). ``fn`` must be a
    module-level function (it is pickled). With ``n_jobs=1`` the jobs run in this process.
    Processes are started with ``spawn``: a forked torch may hang on its thread pools.
    """
    if n_jobs <= 1 or len(jobs) <= 1:
        _init_worker(threads)
        results = []
        for job in jobs:
            results.append(fn(job))
            if on_result is not None:
                on_result(job, results[-1])
        return results
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the workers only
    results: list[dict | None] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=context,
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if on_result is not None:
                on_result(jobs[i], results[i])
    return results  # type: ignore[return-value]


def hybridopt_rejects(errors: tuple[type[Exception], ...] = (ValueError,),
                      **options: Any) -> str | None:
    """None if ``HybridOptimizer`` accepts ``options`` on a tiny problem; else its message.

    Only ``errors`` count as "rejected" (``phases=("es",)`` raises ``ValueError`` while the
    phase does not exist); anything else is a real failure and propagates.
    """
    import torch

    import hybridopt as ho

    def score(actions, data):
        return float((actions == 0).float().mean())

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=gen)
    try:
        ho.HybridOptimizer(torch.nn.Linear(3, 2), score, data=x, seed=0, device="cpu", **options)
    except errors as err:
        return f"{type(err).__name__}: {err}"
    return None
