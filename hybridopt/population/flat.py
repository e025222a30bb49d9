"""Flat weights: a model's trainable parameters as one vector ``[D]``, a population as ``[P, D]``.

The ``[P, D]`` tensor is the single representation of a population everywhere in hybridopt; this
module maps it to and from the per-tensor views that ``torch.func.functional_call`` takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FlatParams:
    """The layout of a model's trainable parameters inside a flat vector.

    Attributes:
        names: parameter names, in ``named_parameters()`` order.
        shapes: each parameter's shape.
        offsets: start of each parameter in the flat vector.
        dim: D, the total number of trainable weights.
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    dim: int

    @classmethod
    def from_module(cls, model: nn.Module) -> FlatParams:
        """Layout of ``model``'s trainable parameters (``requires_grad=True``).

        Raises:
            ValueError: if the model has no trainable parameter.
        """
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(
                "model has no trainable parameters: expected at least one parameter with "
                "requires_grad=True."
            )
        sizes = [p.numel() for _, p in named]
        offsets = [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        return cls(
            names=tuple(n for n, _ in named),
            shapes=tuple(p.shape for _, p in named),
            offsets=tuple(offsets),
            dim=sum(sizes),
        )

    @property
    def sizes(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    def vector(self, model: nn.Module) -> Tensor:
        """The model's trainable parameters as one detached vector ``[D]``."""
        params = dict(model.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def load(self, model: nn.Module, vector: Tensor) -> None:
        """Copy ``vector`` ``[D]`` into the model's parameters, in place."""
        if vector.shape != (self.dim,):
            raise ValueError(f"vector must have shape ({self.dim},); got {tuple(vector.shape)}.")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, piece in zip(self.names, self.split(vector)):
                params[name].copy_(piece)

    def split(self, flat: Tensor) -> list[Tensor]:
        """Per-parameter views of ``flat`` ``[..., D]``, shaped ``[..., *shape]``."""
        lead = flat.shape[:-1]
        pieces = torch.split(flat, self.sizes, dim=-1)
        return [p.reshape((*lead, *s)) for p, s in zip(pieces, self.shapes)]

    def unflatten(self, population: Tensor) -> dict[str, Tensor]:
        """``{name: [P, *shape]}`` for ``population`` ``[P, D]`` (views where possible)."""
        return dict(zip(self.names, self.split(population)))

    def segment_ids(self) -> Tensor:
        """``[D]`` long tensor: which parameter tensor each weight belongs to."""
        return torch.repeat_interleave(
            torch.arange(len(self.names)), torch.tensor(self.sizes)
        )
