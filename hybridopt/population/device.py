"""Where population evaluation runs: ``"auto"``, ``"cpu"``, ``"cuda[:i]"``, checked up front."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["activation_elements", "clock", "clock_name", "now", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as given, if it is usable.

    Raises:
        ValueError: if ``device`` is not a device, or one this torch build or machine lacks
            (``"cuda"`` on a CPU build or without a visible GPU, ``"cuda:3"`` with two GPUs).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f'device must be "auto" or a torch device; got {device!r}.') from err
    shown = repr(device if isinstance(device, str) else str(device))
    if resolved.type == "cuda":
        # Checked here, not at the first .to(device), which fails deep inside torch
        if not torch.cuda.is_available():
            why = (f"torch {torch.__version__} is a CPU build" if torch.version.cuda is None
                   else "no GPU is visible to this process")
            raise ValueError(
                f"device = {shown} asks for CUDA, but torch.cuda.is_available() is False "
                f'({why}); use device="auto" or "cpu".'
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device = {shown}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), numbered from 0."
            )
    elif resolved.type != "cpu":
        try:
            torch.empty(0, device=resolved)
        except Exception as err:  # e.g. "mps" off a Mac, a backend this build lacks
            first = (str(err).splitlines() or [""])[0][:200]  # torch's lists every backend
            raise ValueError(
                f"device = {shown} is not usable here: {type(err).__name__}: {first}"
            ) from err
    return resolved


def now(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work is done (CUDA runs async)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def clock(device: torch.device) -> Callable[[], float]:
    """The clock that times work on ``device`` best.

    On a CPU with one torch thread every operation runs in the calling thread, so its CPU time
    (``time.thread_time``) measures the work alone: time slices lost to other processes on a
    shared machine do not count. With more threads, or on CUDA, wall time (after a sync).
    """
    if device.type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return lambda: now(device)


def clock_name(device: torch.device) -> str:
    """``"thread_time"`` or ``"wall"``: which :func:`clock` applies."""
    return "thread_time" if clock(device) is time.thread_time else "wall"


def activation_elements(model: nn.Module, x: Tensor) -> int:
    """Elements of every module output in one forward: a proxy for per-individual memory."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        for t in output if isinstance(output, tuple) else (output,):
            if isinstance(t, Tensor):
                total += t.numel()
            elif isinstance(t, tuple):
                total += sum(u.numel() for u in t if isinstance(u, Tensor))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total
