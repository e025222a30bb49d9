"""NSGA-II for the genetic phase when the score has several objectives.

(mu + lambda) as in Deb et al. 2002: each generation's P offspring are bred from the survivors by
the crowded tournament (front rank, then crowding distance), and the next survivors are the best P
of parents and offspring together by DEAP's ``selNSGA2`` (non-dominated sorting, crowding
distance). Everything works on ``[P, M]`` objective tensors and row indices; DEAP only ever sees
lightweight members (:mod:`hybridopt.phases._deap`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from hybridopt.objectives import crowded_tournament
from hybridopt.phases import _deap


def parents(objectives: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` parent rows by NSGA-II's crowded tournament (binary, with replacement)."""
    rank, crowding = _deap.rank_and_crowding(objectives)
    return crowded_tournament(rank, crowding, k, generator)


def survivors(objectives: Tensor, k: int) -> Tensor:
    """The ``k`` best rows of ``objectives`` ``[Q, M]`` by ``selNSGA2``, best front first."""
    return _deap.nsga2_select(objectives, k)
