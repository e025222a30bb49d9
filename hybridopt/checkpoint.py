"""Checkpoints: atomic writes of everything an exact resume needs, and safe reads.

A checkpoint is one ``torch.save`` file of plain data (tensors, numbers, lists, dicts). It is
written to a temporary file in the same folder, flushed to disk, and renamed into place; then
the ``latest`` pointer is replaced the same way. A crash at any moment leaves the previous
checkpoint and pointer intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
LATEST = "latest.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not belong to this model and configuration."""


def _atomic_write(path: Path, write) -> None:
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

    Older checkpoints beyond the newest ``keep`` are removed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"checkpoint-{step:08d}.pt"
    payload = {"format_version": FORMAT_VERSION, **payload}
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


def load_checkpoint(path: str | Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check it matches ``expected`` (model layout, options).

    Raises:
        CheckpointError: if the file is unreadable, of another format version, or was written
            for another model layout or incompatible options (the mismatch is named).
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated, not a torch file, ...
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from err
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else None
        raise CheckpointError(
            f"checkpoint {path} has format version {found!r}; this hybridopt reads "
            f"version {FORMAT_VERSION}."
        )
    for key, value in expected.items():
        if payload.get(key) != value:
            raise CheckpointError(
                f"checkpoint {path} does not match this run: {key} is {payload.get(key)!r} "
                f"in the checkpoint but {value!r} here."
            )
    return payload
