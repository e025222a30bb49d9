"""Episode data: a tensor, or a tuple/list/dict of tensors sharing the leading length N.

The model's input is the tensor itself, ``data[0]`` or ``data["x"]``. Everything here keeps the
structure the user gave, so ``score_fn`` always sees data shaped the way it was passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

Data = Any  # Tensor | tuple[Tensor, ...] | list[Tensor] | dict[str, Tensor]


def _leaves(data: Data) -> list[tuple[str, Any]]:
    if isinstance(data, Tensor):
        return [("", data)]
    if isinstance(data, Mapping):
        return [(f'["{k}"]', v) for k, v in data.items()]
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return [(f"[{i}]", v) for i, v in enumerate(data)]
    raise TypeError(
        f"data must be a tensor, or a tuple/list/dict of tensors; got {type(data).__name__}."
    )


def validate_data(data: Data, name: str = "data") -> int:
    """Check ``data``'s structure and return its common leading length N.

    Raises:
        TypeError: if ``data`` is not a tensor or a tuple/list/dict of tensors, or has no model
            input (``data[0]`` / ``data["x"]``).
        ValueError: if it is empty, or its tensors do not share the leading length N.
    """
    leaves = _leaves(data)
    if not leaves:
        raise ValueError(f"{name} is empty: expected at least one tensor.")
    lengths = {}
    for key, value in leaves:
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{name}{key} must be a torch.Tensor; got {type(value).__name__}."
            )
        if value.dim() == 0:
            raise ValueError(f"{name}{key} is a scalar: expected a leading dimension N.")
        lengths[key or "(tensor)"] = value.shape[0]
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"the tensors of {name} must share their leading length N; got lengths {lengths}."
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"{name} is empty: its leading length N is 0.")
    x = model_input(data, name)
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"the model input of {name} contains NaN or infinite values.")
    return int(n)


def model_input(data: Data, name: str = "data") -> Tensor:
    """The model's input: the tensor itself, ``data[0]`` or ``data["x"]``."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, Mapping):
        if "x" not in data:
            raise TypeError(
                f'{name} is a dict, so the model input must be under the key "x"; '
                f"got keys {list(data)}."
            )
        return data["x"]
    return data[0]


def slice_data(data: Data, start: int, stop: int) -> Data:
    """Rows ``start:stop`` of every tensor, keeping the structure."""
    return map_data(data, lambda t: t[start:stop])


def index_data(data: Data, index: Tensor) -> Data:
    """Rows ``index`` of every tensor, keeping the structure."""
    return map_data(data, lambda t: t[index.to(t.device)])


def data_bytes(data: Data) -> int:
    """Bytes held by ``data``'s tensors."""
    return sum(t.element_size() * t.numel() for _, t in _leaves(data))


def data_to(data: Data, device: torch.device | str) -> Data:
    """Move every tensor to ``device``, keeping the structure."""
    return map_data(data, lambda t: t.to(device))


def map_data(data: Data, fn) -> Data:
    """Apply ``fn`` to every tensor, keeping the structure."""
    if isinstance(data, Tensor):
        return fn(data)
    if isinstance(data, Mapping):
        return {k: fn(v) for k, v in data.items()}
    return type(data)(fn(v) for v in data) if isinstance(data, tuple) else [fn(v) for v in data]


def concat_data(a: Data, b: Data) -> Data:
    """The rows of ``a`` followed by those of ``b`` (same structure), e.g. train ∪ valid."""
    if isinstance(a, Tensor):
        return torch.cat([a, b.to(a.device)])
    if isinstance(a, Mapping):
        return {k: concat_data(a[k], b[k]) for k in a}
    return type(a)(concat_data(x, y) for x, y in zip(a, b))


def check_like(data: Data, reference: Data, name: str = "data") -> int:
    """Check that ``data`` has ``reference``'s structure (kind, keys or length, and each
    tensor's trailing shape and dtype kind); return its N.

    Raises:
        TypeError, ValueError: naming the first difference.
    """
    n = validate_data(data, name)
    mine, theirs = _leaves(data), _leaves(reference)
    if type(data) is not type(reference) or [k for k, _ in mine] != [k for k, _ in theirs]:
        raise TypeError(
            f"{name} must be structured like the training data "
            f"({[k or '(tensor)' for k, _ in theirs]}); got {[k or '(tensor)' for k, _ in mine]}."
        )
    for (key, a), (_, b) in zip(mine, theirs):
        if a.shape[1:] != b.shape[1:] or a.is_floating_point() != b.is_floating_point():
            shape = ", ".join(["N", *map(str, b.shape[1:])])
            raise ValueError(
                f"{name}{key} must be shaped [{shape}] with a {b.dtype} like the training "
                f"data; got {tuple(a.shape)} {a.dtype}."
            )
    return n
