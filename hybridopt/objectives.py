"""Several objectives: parsing, scalarisation, Pareto dominance and the Pareto front archive.

All objectives are maximised. ``objectives`` is ``[B, M]`` (float64 on the CPU, as the
:class:`~hybridopt.scoring.Scorer` gives them); everything here is plain torch (DEAP's NSGA-II
lives in :mod:`hybridopt.phases._deap`).

Scalarisation (what the gradient and ES phases maximise, and ``ScoreBatch.scores``): the mean of
the objectives by default, ``objectives @ weights`` once weights are set. :func:`visit_weights`
gives a different weight vector per phase visit so successive visits spread along the front.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "ParetoArchive",
    "check_weights",
    "crowded_tournament",
    "crowding_distance",
    "nondominated_mask",
    "parse_objectives",
    "scalarise",
    "visit_weights",
]

_BLOCK = 1024  # rows compared at once in nondominated_mask: memory [block, Q, M]


def parse_objectives(objectives) -> tuple[int | None, tuple[str, ...] | None]:
    """``(M, names)`` from the ``objectives`` option: None, an int M >= 1, or distinct names.

    Raises:
        TypeError, ValueError: naming ``objectives`` and the bad value.
    """
    if objectives is None:
        return None, None
    if isinstance(objectives, bool) or isinstance(objectives, (str, bytes)):
        raise TypeError(
            f"objectives must be None, an int M >= 1 or a sequence of distinct names; got "
            f"{type(objectives).__name__} {objectives!r} (one named objective: [{objectives!r}])."
        )
    if isinstance(objectives, int):
        if objectives < 1:
            raise ValueError(f"objectives must be an int >= 1; got objectives = {objectives}.")
        return objectives, None
    if not isinstance(objectives, Sequence):
        raise TypeError(
            f"objectives must be None, an int M >= 1 or a sequence of distinct names; got "
            f"{type(objectives).__name__}."
        )
    names = tuple(objectives)
    distinct = len(set(names)) == len(names)
    if not names or not distinct or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"objectives must be a non-empty sequence of distinct non-empty strings; got "
            f"objectives = {objectives!r}."
        )
    return len(names), names


def check_weights(weights, m: int) -> Tensor:
    """``weights`` as a float64 ``[M]`` tensor: finite, >= 0, not all zero.

    Raises:
        ValueError: naming ``weights`` and the bad value.
    """
    w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
    if w.shape != (m,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or w.sum() <= 0:
        raise ValueError(
            f"weights must be {m} finite numbers >= 0, not all zero (one per objective); got "
            f"weights = {w.tolist()}."
        )
    return w


def scalarise(
    objectives: Tensor,
    weights: Tensor | None = None,
    low: Tensor | None = None,
    high: Tensor | None = None,
) -> Tensor:
    """One number per row of ``objectives`` ``[B, M]``: ``[B]``.

    Args:
        objectives: ``[B, M]`` objective values (maximised).
        weights: ``[M]``; None = the mean of the objectives (equal weights ``1 / M``).
        low, high: ``[M]`` each; if given, every objective is first mapped to
            ``(o - low) / (high - low)`` (a zero span counts as 1), so objectives on very
            different scales weigh as the weights say (e.g. :meth:`ParetoArchive.bounds`).

    Returns:
        ``[B]`` scalarised scores, in the dtype of ``objectives``.
    """
    if low is not None and high is not None:
        span = (high - low).to(objectives.dtype)
        objectives = (objectives - low) / torch.where(span > 0, span, torch.ones_like(span))
    if weights is None:
        return objectives.mean(dim=-1)
    return objectives @ weights.to(objectives.dtype)


def _van_der_corput(n: int) -> float:
    """The n-th element (n >= 1) of the base-2 van der Corput sequence: 1/2, 1/4, 3/4, 1/8, ..."""
    value, denominator = 0.0, 1.0
    while n:
        denominator *= 2.0
        n, bit = divmod(n, 2)
        value += bit / denominator
    return value


def visit_weights(m: int, visit: int, generator: torch.Generator | None = None) -> Tensor:
    """The scalarisation weights for the ``visit``-th visit (0, 1, ...) of a phase: ``[M]``.

    Visit 0 weighs every objective equally (``1 / M``). After that:

    - M = 2: ``(t, 1 - t)`` with ``t`` the van der Corput sequence 1/2, 1/4, 3/4, 1/8, 3/8, ...
      (deterministic; each visit fills the widest gap left along the front so far, and neither
      objective is ever dropped entirely);
    - M >= 3: a draw from the flat Dirichlet distribution (uniform on the simplex) from
      ``generator``, which is then required.

    Raises:
        ValueError: if ``m < 1``, ``visit < 0``, or M >= 3 and visit >= 1 without a generator.
    """
    if m < 1 or visit < 0:
        raise ValueError(f"visit_weights needs m >= 1, visit >= 0; got m = {m}, visit = {visit}.")
    if visit == 0 or m == 1:
        return torch.full((m,), 1.0 / m, dtype=torch.float64)
    if m == 2:
        t = _van_der_corput(visit + 1)
        return torch.tensor([t, 1.0 - t], dtype=torch.float64)
    if generator is None:
        raise ValueError("visit_weights needs a generator for m >= 3 objectives (Dirichlet draws).")
    # Flat Dirichlet: normalised standard exponentials
    e = -torch.log1p(-torch.rand(m, generator=generator, dtype=torch.float64))
    return e / e.sum()


def nondominated_mask(objectives: Tensor) -> Tensor:
    """``[Q]`` bool: True where no other row dominates this one (maximisation).

    Row j dominates row i when it is >= everywhere and > somewhere. Of rows with identical
    objectives only the first is kept, so earlier rows (an archive's members) win ties.
    """
    o = objectives
    keep = torch.empty(len(o), dtype=torch.bool, device=o.device)
    index = torch.arange(len(o), device=o.device)
    for start in range(0, len(o), _BLOCK):
        rows = o[start : start + _BLOCK, None, :]  # [b, 1, M] against all [1, Q, M]
        ge = (o[None] >= rows).all(-1)  # [b, Q]: j >= i everywhere
        dominated = (ge & (o[None] > rows).any(-1)).any(-1)
        earlier = index[None] < index[start : start + _BLOCK, None]
        equal_earlier = (o[None] == rows).all(-1) & earlier
        keep[start : start + _BLOCK] = ~dominated & ~equal_earlier.any(-1)
    return keep


def crowding_distance(objectives: Tensor) -> Tensor:
    """NSGA-II crowding distance of each row of ``objectives`` ``[K, M]``: ``[K]``.

    Per objective, the rows are sorted; the two ends get infinity, the others the gap between
    their neighbours divided by ``M * span`` (as DEAP's ``assignCrowdingDist``); summed.
    """
    k, m = objectives.shape
    if k <= 2:
        return torch.full((k,), math.inf, dtype=torch.float64)
    o = objectives.to(torch.float64)
    order = o.argsort(dim=0, stable=True)
    ranked = o.gather(0, order)
    span = ranked[-1] - ranked[0]
    gaps = (ranked[2:] - ranked[:-2]) / (m * torch.where(span > 0, span, torch.ones_like(span)))
    contributions = torch.cat([
        torch.full((1, m), math.inf, dtype=torch.float64),
        torch.where(span > 0, gaps, torch.zeros_like(gaps)),
        torch.full((1, m), math.inf, dtype=torch.float64),
    ])
    return torch.zeros_like(o).scatter_(0, order, contributions).sum(dim=1)


def crowded_tournament(
    rank: Tensor, crowding: Tensor, k: int, generator: torch.Generator, size: int = 2
) -> Tensor:
    """``k`` parents by NSGA-II's crowded comparison, ``size`` contestants per tournament.

    A contestant wins on a lower front rank, then on a larger crowding distance, then by being
    drawn first. Contestants are drawn with replacement from ``generator``; vectorised.

    Returns:
        ``[k]`` long indices into ``rank``.
    """
    contestants = torch.randint(len(rank), (k, size), generator=generator)
    # Lexicographic key: rank first, crowding second (finite stand-in for inf = max + 1)
    finite = torch.isfinite(crowding)
    top = crowding[finite].max() + 1.0 if bool(finite.any()) else torch.tensor(1.0)
    crowd = torch.where(finite, crowding, top.to(crowding.dtype)).to(torch.float64)
    crowd = crowd / (crowd.max() + 1.0)  # in [0, 1)
    key = rank.to(torch.float64) - crowd  # lower is better
    winner = key[contestants].argmin(dim=1)  # argmin keeps the first of equal keys
    return contestants.gather(1, winner[:, None]).squeeze(1)


class ParetoArchive:
    """The non-dominated models seen so far: weights ``[K, D]`` and objectives ``[K, M]``.

    Membership is decided on the training objectives; validation objectives (if any) are kept
    alongside, ``valid_known`` saying which are set. Over ``max_size`` members, the most
    crowded (smallest crowding distance) is dropped, one at a time, so the ends stay.

    Example:
        >>> archive = ParetoArchive(max_size=50)
        >>> new = archive.update(population, batch.objectives)   # [P, D], [P, M]
        >>> archive.set_valid(new, valid_objectives)              # scored on validation data
    """

    def __init__(self, max_size: int = 100) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"max_size must be an int >= 1; got max_size = {max_size!r}.")
        self.max_size = max_size
        self.weights: Tensor | None = None  # [K, D]
        self.objectives: Tensor | None = None  # [K, M] float64, CPU
        self.valid: Tensor | None = None  # [K, M] float64 (NaN where not known)
        self.valid_known: Tensor | None = None  # [K] bool
        self.ids: Tensor | None = None  # [K] long: a stable id per member, in order of arrival
        self.next_id = 0

    def __len__(self) -> int:
        return 0 if self.objectives is None else len(self.objectives)

    def update(self, weights: Tensor, objectives: Tensor, valid: Tensor | None = None) -> Tensor:
        """Offer ``weights`` ``[P, D]``, their ``objectives`` ``[P, M]`` (and ``valid`` ``[P, M]``).

        Rows with a non-finite objective never enter. Members win ties with identical
        objectives (the archive is not churned by copies).

        Returns:
            Long indices (into the updated archive) of the rows that entered.
        """
        objectives = objectives.detach().to(torch.float64).cpu()
        finite = torch.isfinite(objectives).all(dim=1)
        weights, objectives = weights.detach()[finite.to(weights.device)], objectives[finite]
        n = len(objectives)
        new_valid = torch.full_like(objectives, math.nan)
        if valid is not None:
            new_valid = valid.detach().to(torch.float64).cpu()[finite]
        ids = torch.arange(self.next_id, self.next_id + n)
        self.next_id += n
        if self.objectives is not None:
            weights = torch.cat([self.weights, weights.to(self.weights.device)])
            objectives = torch.cat([self.objectives, objectives])
            new_valid = torch.cat([self.valid, new_valid])
            known = torch.cat([self.valid_known, torch.full((n,), valid is not None)])
            ids = torch.cat([self.ids, ids])
        else:
            known = torch.full((n,), valid is not None)
        keep = nondominated_mask(objectives).nonzero().squeeze(1)
        # Crowding truncation: drop the most crowded member until the archive fits
        while len(keep) > self.max_size:
            distance = crowding_distance(objectives[keep])
            # Of equally crowded members, drop the newest
            drop = len(keep) - 1 - int(distance.flip(0).argmin())
            keep = torch.cat([keep[:drop], keep[drop + 1 :]])
        first_new = self.next_id - n
        self.weights = weights[keep.to(weights.device)].clone()
        self.objectives, self.valid = objectives[keep], new_valid[keep]
        self.valid_known, self.ids = known[keep], ids[keep]
        return (self.ids >= first_new).nonzero().squeeze(1)

    def set_valid(self, indices: Tensor, valid: Tensor) -> None:
        """Set the validation objectives ``[len(indices), M]`` of members ``indices``."""
        self.valid[indices] = valid.detach().to(torch.float64).cpu()
        self.valid_known[indices] = True

    def missing_valid(self) -> Tensor:
        """Long indices of members without validation objectives yet."""
        if self.valid_known is None:
            return torch.zeros(0, dtype=torch.long)
        return (~self.valid_known).nonzero().squeeze(1)

    def bounds(self) -> tuple[Tensor, Tensor] | None:
        """``(low [M], high [M])``: the members' smallest and largest objectives (None if empty)."""
        if not len(self):
            return None
        return self.objectives.min(dim=0).values, self.objectives.max(dim=0).values

    def entries(self) -> list[dict]:
        """One dict per member: ``weights`` [D], ``train`` [M], ``valid`` [M] or None."""
        return [
            {
                "weights": self.weights[i],
                "train": self.objectives[i],
                "valid": self.valid[i] if bool(self.valid_known[i]) else None,
            }
            for i in range(len(self))
        ]

    def state_dict(self) -> dict:
        """Tensors and plain data only: loads with ``torch.load(..., weights_only=True)``."""
        cpu = None if self.weights is None else self.weights.cpu()
        return {
            "max_size": self.max_size, "next_id": self.next_id, "weights": cpu,
            "objectives": self.objectives, "valid": self.valid,
            "valid_known": self.valid_known, "ids": self.ids,
        }

    def load_state_dict(self, saved: dict, device: torch.device | str | None = None) -> None:
        """Restore what :meth:`state_dict` saved; weights go to ``device`` (default: CPU)."""
        self.max_size, self.next_id = int(saved["max_size"]), int(saved["next_id"])
        weights = saved["weights"]
        self.weights = None if weights is None else weights.to(device or "cpu")
        self.objectives, self.valid = saved["objectives"], saved["valid"]
        self.valid_known, self.ids = saved["valid_known"], saved["ids"]
