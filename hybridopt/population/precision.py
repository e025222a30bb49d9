"""Reduced precision for population evaluation: which dtypes, where they pay, how to apply them.

Population evaluation only needs each individual's argmax action, so its matrix products can run
in bfloat16 (or float16 on CUDA) where the hardware multiplies those faster: batched products of
population shape gain 3-15x on CPUs with bf16 dot-product or AMX tile units and on CUDA GPUs of
compute capability 8 and up. Scores that are *kept* (the best so far) never come from reduced
precision: the optimiser re-scores its candidates in float32 through the user's own model.

Two ways to apply a dtype, tried in this order on a probe of two individuals and two rows:

- ``"cast"``: weights, floating inputs and floating buffers cast to the dtype, the whole forward
  (population-aware LSTM/GRU/RNN included) in it: fastest, nothing is converted per layer;
- ``"autocast"``: ``torch.autocast``, for models whose forward makes float32 tensors of its own
  (which a cast model would multiply with reduced-precision weights and fail).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

__all__ = [
    "DTYPES",
    "PRECISIONS",
    "bf16_matmul_units",
    "check_precision",
    "check_precision_name",
    "forward_context",
]

PRECISIONS = ("float32", "bfloat16", "float16", "auto")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("cast", "autocast")


def check_precision_name(precision: object) -> None:
    """Checks that ``precision`` is one of :data:`PRECISIONS`, wherever it will run (the
    optimiser calls this before it builds anything; :func:`check_precision` adds the device).

    Raises:
        ValueError: naming the bad value and the allowed ones.
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(repr(p) for p in PRECISIONS)}; "
            f"got {precision!r}."
        )


def check_precision(precision: object, device: torch.device) -> str:
    """Validates ``precision`` for population evaluation on ``device``.

    Args:
        precision: "float32", "bfloat16", "float16" (CUDA only) or "auto".
        device: where the evaluation runs.

    Returns:
        ``precision`` itself.

    Raises:
        ValueError: if ``precision`` is not one of :data:`PRECISIONS`, or is "float16" off CUDA.
    """
    check_precision_name(precision)
    if precision == "float16" and device.type != "cuda":
        raise ValueError(
            f'precision = "float16" needs CUDA, but the evaluation runs on {device.type!r} '
            '(CPU float16 products are emulated and slow); use "bfloat16" or "float32".'
        )
    return precision


def bf16_matmul_units(device: torch.device) -> str | None:
    """Names the hardware that multiplies bfloat16 matrices fast on ``device``, or None.

    CUDA: compute capability >= 8 (``"sm_80"``, ``"sm_90"``, ...). CPU: oneDNN (``mkldnn``) must
    be available, and the CPU must have AMX tiles (``"amx_bf16"``) or AVX-512 bf16 dot products
    (``"avx512_bf16"``; measured here: ``torch.bmm`` 3x float32); read from torch's own CPU probes,
    else from the CPU flags the kernel reports (what ``lscpu`` shows).
    """
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm_{major}{minor}" if major >= 8 else None
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    return _cpu_bf16_units()


@functools.lru_cache(maxsize=1)
def _cpu_bf16_units() -> str | None:
    """The CPU's bf16 matrix units (probed once per process)."""
    probes = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        with contextlib.suppress(Exception):  # private torch probes: absent in some builds
            if getattr(torch.cpu, probe)():
                return name
    flags = _cpu_flags()
    return next((name for name, _ in probes if name in flags), None)


def _cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def forward_context(
    precision: str, mode: str, device: torch.device
) -> contextlib.AbstractContextManager:
    """The context a forward in ``precision`` runs under: autocast for that mode, else none."""
    if precision == "float32" or mode == "cast":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def input_dtype(precision: str, mode: str) -> torch.dtype:
    """The dtype weights and floating inputs are cast to before the forward."""
    return DTYPES[precision] if mode == "cast" else torch.float32
