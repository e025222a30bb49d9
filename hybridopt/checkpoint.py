"""Checkpoints: atomic writes of everything an exact resume needs, and reads that run no code.

A checkpoint is one ``torch.save`` file of tensors and plain data only (None, bools, numbers,
strings, bytes, lists, tuples, sets, dicts, ``torch.Size``/``device``/``dtype``); random states
are stored as that plain data (``random.Random.getstate()`` is nested tuples of ints, a
``torch.Generator`` state a byte tensor). :func:`save_checkpoint` checks the payload before
writing, turning numpy arrays and scalars into tensors and Python numbers and refusing any other
object with the key path that holds it. :func:`load_checkpoint` reads with
``torch.load(weights_only=True)``, so a file carrying a pickled object is refused before the
object is built and its code never runs.

A file is written to a temporary file in the same folder, flushed to disk, and renamed into
place; then the ``latest`` pointer is replaced the same way. A crash at any moment leaves the
previous checkpoint and pointer intact.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

FORMAT_VERSION = 2
"""2: tensors and plain data only, read with ``weights_only=True``; 1: any pickle."""
LATEST = "latest.json"

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_TORCH_PLAIN = (torch.Size, torch.device, torch.dtype)
_PLAIN = "tensors and plain data (None, bool, numbers, str, bytes, lists, tuples, sets, dicts)"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not belong to this model and configuration."""


def to_plain(value: Any, path: str = "payload") -> Any:
    """``value`` as tensors and plain data only, the one form a checkpoint may hold.

    numpy arrays become tensors and numpy scalars Python numbers; ``nn.Parameter`` becomes a
    plain tensor; containers are rebuilt with their items converted. Exact types are required:
    a subclass (a namedtuple, a ``defaultdict``, an ``IntEnum``) would be pickled with its class.

    Args:
        value: the data to convert.
        path: how to name ``value`` in an error, e.g. ``payload["phase_state"]``.

    Returns:
        The converted data.

    Raises:
        TypeError: naming the key path and the type of the first value that is not plain data.

    Example:
        >>> to_plain({"x": np.float64(1.5), "rng": random.Random(0).getstate()})["x"]
        1.5
    """
    kind = type(value)
    if kind in _SCALARS or kind in _TORCH_PLAIN:
        return value
    if kind is torch.Tensor or kind is torch.nn.Parameter:
        return value.detach()
    if kind is np.ndarray:
        if value.dtype.kind not in "biufc":
            raise TypeError(f"checkpoint {path} is a numpy array of dtype {value.dtype}; "
                            f"a checkpoint holds only {_PLAIN}.")
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        item = value.item()
        if type(item) not in _SCALARS:
            raise TypeError(f"checkpoint {path} is a numpy {kind.__name__}; "
                            f"a checkpoint holds only {_PLAIN}.")
        return item
    if kind is list or kind is tuple or kind is set:
        if kind is set:
            return {to_plain(v, f"{path}[<set item>]") for v in value}
        return kind(to_plain(v, f"{path}[{i}]") for i, v in enumerate(value))
    if kind is dict or kind is OrderedDict:
        out = kind(
            (to_plain(k, f"{path} key {k!r}"), to_plain(v, f"{path}[{k!r}]"))
            for k, v in value.items()
        )
        if hasattr(value, "_metadata"):  # a module state_dict's per-module versions
            out._metadata = to_plain(value._metadata, f"{path}._metadata")
        return out
    raise TypeError(
        f"checkpoint {path} is a {kind.__module__}.{kind.__qualname__}; a checkpoint holds only "
        f"{_PLAIN}: store it as plain data (its state, not the object)."
    )


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(folder: str | Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write ``payload`` as ``checkpoint-<step>.pt`` and point ``latest.json`` at it.

    The payload is converted with :func:`to_plain` before anything is written. Older
    checkpoints beyond the newest ``keep`` are removed.

    Raises:
        TypeError: if the payload holds an object other than tensors and plain data (the key
            path is named); nothing is written then.
    """
    folder = Path(folder)
    payload = to_plain({"format_version": FORMAT_VERSION, **payload})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoint-{step:08d}.pt"
    _atomic_write(path, lambda f: torch.save(payload, f))
    pointer = json.dumps({"file": path.name, "step": step}).encode()
    _atomic_write(folder / LATEST, lambda f: f.write(pointer))
    old = sorted(folder.glob("checkpoint-*.pt"))[:-keep]
    for stale in old:
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The file ``latest.json`` points to, or None when the folder holds no checkpoint."""
    pointer = Path(folder) / LATEST
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["file"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint pointer {pointer} is unreadable: {err}") from err
    path = Path(folder) / name
    if not path.exists():
        raise CheckpointError(f"checkpoint pointer {pointer} names a missing file {name}.")
    return path


def _refused(path: str | Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} holds something other than tensors and plain data ({what}) and "
        f"was not loaded: hybridopt checkpoints never carry code. Resume only from checkpoints "
        f"this hybridopt wrote."
    )


def load_checkpoint(path: str | Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint without running any code and check it matches ``expected``.

    Args:
        path: the checkpoint file.
        expected: values the checkpoint must hold under the same keys (model layout, options).

    Returns:
        The payload: tensors (on the CPU) and plain data.

    Raises:
        CheckpointError: if the file is unreadable, carries a pickled object (it is not built),
            is of another format version, or was written for another model layout or
            incompatible options (the mismatch is named).
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            raise _refused(path, f"the pickled global {found.group(1)}") from None
        raise CheckpointError(f"checkpoint {path} is unreadable: {str(err)[-300:]}") from None
    except Exception as err:  # truncated, not a torch file, ...
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from err
    try:  # also refuses types a caller allowlisted with torch.serialization.add_safe_globals
        to_plain(payload)
    except TypeError as err:
        raise _refused(path, str(err).split(";")[0].removeprefix("checkpoint ")) from None
    found = payload.get("format_version") if isinstance(payload, dict) else None
    if found != FORMAT_VERSION:
        older = isinstance(found, int) and found < FORMAT_VERSION
        raise CheckpointError(
            f"checkpoint {path} has format version {found!r}; this hybridopt reads version "
            f"{FORMAT_VERSION} only"
            + (" (older checkpoints were pickles that could run code): start a fresh run, or "
               "finish this one with the hybridopt that wrote it." if older else ".")
        )
    for key, value in expected.items():
        if payload.get(key) != value:
            raise CheckpointError(
                f"checkpoint {path} does not match this run: {key} is {payload.get(key)!r} "
                f"in the checkpoint but {value!r} here."
            )
    return payload
