"""Population evaluator: ``[P, D]`` weights + episode data -> ``[P]`` scores.

Each individual acts by the argmax of its logits. Two in-process methods compute those actions:

- ``vmap``: ``torch.func.functional_call`` over stacked parameters under ``torch.func.vmap``, in
  chunks sized to fit memory, on CUDA when present. Recurrent layers are swapped for
  population-aware versions (:mod:`hybridopt.population.recurrent`).
- ``loop``: one individual at a time through the user's own module: the reference.

Either runs in float32 or in a reduced precision (:mod:`hybridopt.population.precision`);
``auto`` (for the method, the precision or both) measures the candidates on a sample of each new
size of population and episode and keeps the fastest (:mod:`hybridopt.population.auto`),
recording what it chose in :attr:`PopulationEvaluator.choice`.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from hybridopt.data import Data, model_input
from hybridopt.population.auto import AutoSettings, agreement, measure, pick, size_key
from hybridopt.population.device import activation_elements, clock, clock_name, resolve_device
from hybridopt.population.flat import FlatParams
from hybridopt.population.precision import (
    MODES,
    bf16_matmul_units,
    check_precision,
    forward_context,
    input_dtype,
)
from hybridopt.population.recurrent import make_vectorizable
from hybridopt.scoring import ScoreBatch, Scorer

__all__ = ["CPU_ROWS_PER_CHUNK", "METHODS", "PopulationEvaluator", "resolve_device"]

log = logging.getLogger(__name__)
METHODS = ("auto", "vmap", "loop")
CPU_ROWS_PER_CHUNK = 4096
LOOP_CHUNK = 64


def _cast(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


class PopulationEvaluator:
    """Scores a population of flat weight vectors of one model.

    Args:
        model: the user's model; it is copied, never modified.
        scorer: the :class:`~hybridopt.scoring.Scorer` wrapping ``score_fn``.
        flat: layout of the trainable parameters in a flat vector.
        method: "auto", "vmap" or "loop".
        device: where the forward passes run.
        chunk_size: individuals per vmap call; None sizes chunks from ``memory_budget``.
        memory_budget: bytes a vmap chunk may use (None: 256 MiB on CPU, 40% of free on CUDA).
        precision: dtype of the forward passes: "float32", "bfloat16", "float16" (CUDA only),
            or "auto" (bfloat16 where the hardware has bf16 matrix units and it measures clearly
            faster, else float32). Only argmax actions come out of it; scores the optimiser
            keeps are re-scored in float32 through the user's own model.
        auto: how ``auto`` measures and decides.

    Attributes:
        precision: the ``precision`` asked for ("auto" stays "auto"; what it chose for the last
            size is ``choice["precision"]``).
        choice: None until ``auto`` has measured; then a plain dict (saved in checkpoints):
            ``method``, ``precision``, ``rows``, ``population``, ``timings`` (estimated seconds
            for the whole population, keyed ``"method/precision"``), ``agree`` (vmap and loop
            agree in float32), ``precision_agreement`` (share of rows where reduced precision
            picks float32's action), ``hardware`` (bf16 matrix units, or None), ``clock``
            ("thread_time": CPU time of the calling thread, with one torch thread on a CPU;
            else "wall") and ``sizes`` (every size timed so far and what was chosen for it).
            Assigning a saved choice restores those decisions: a resumed run does not time again.

    Raises:
        ValueError: if ``method``, ``precision``, ``chunk_size`` or ``device`` is not valid
            ("float16" off CUDA included).

    Example:
        >>> ev = PopulationEvaluator(model, Scorer(score_fn), FlatParams.from_module(model),
        ...                          precision="auto")
        >>> scores = ev.evaluate(population, data).scores   # [P]
        >>> ev.choice["method"], ev.choice["precision"]     # e.g. ("vmap", "bfloat16")
    """

    def __init__(
        self,
        model: nn.Module,
        scorer: Scorer,
        flat: FlatParams,
        *,
        method: str = "auto",
        device: torch.device | str = "cpu",
        chunk_size: int | None = None,
        memory_budget: int | None = None,
        precision: str = "float32",
        auto: AutoSettings | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None; got {chunk_size!r}.")
        self.device = resolve_device(device)
        self.precision = check_precision(precision, self.device)
        self.scorer = scorer
        self.flat = flat
        self.method = method
        self.memory_budget = memory_budget
        self.auto = auto or AutoSettings()
        self._chunk_fixed = chunk_size
        self._chunks: dict[int, int] = {}  # rows -> individuals per vmap call
        self._last_chunk: int | None = None
        self._loop_model = copy.deepcopy(model).to(self.device).eval()
        for p in self._loop_model.parameters():
            p.requires_grad_(False)
        self._models: dict[tuple[str, torch.dtype], nn.Module] = {}
        self._vmap_error: str | None = None
        self._vmap_checked = False
        self._modes: dict[str, str] = {"float32": "cast"}  # precision -> "cast" / "autocast"
        self._plans: dict[tuple[int, int], tuple[str, str]] = {}
        self._default_plan: tuple[str, str] | None = None
        self._choice: dict | None = None

    # -- what auto chose ---------------------------------------------------------------------

    @property
    def choice(self) -> dict | None:
        """What ``auto`` chose, for the latest size it timed (see the class docstring)."""
        return self._choice

    @choice.setter
    def choice(self, saved: dict | None) -> None:
        self._choice = saved
        self._plans, self._default_plan = {}, None
        if not saved:
            return
        if "sizes" not in saved:  # a choice saved before sizes were recorded: holds for all
            self._default_plan = (saved["method"], saved.get("precision", "float32"))
            return
        for size in saved["sizes"]:
            key = size_key(size["rows"], size["population"])
            self._plans[key] = (size["method"], size["precision"])

    @property
    def chunk_size(self) -> int | None:
        """Individuals per vmap call: as given, else the last one sized from memory."""
        return self._chunk_fixed if self._chunk_fixed is not None else self._last_chunk

    @chunk_size.setter
    def chunk_size(self, value: int | None) -> None:
        self._chunk_fixed = value

    # -- the two ways to get actions ---------------------------------------------------------

    def _model(self, kind: str, dtype: torch.dtype) -> nn.Module:
        """The loop or vmap copy of the model, its parameters and buffers in ``dtype``."""
        key = (kind, dtype)
        if key not in self._models:
            base = self._loop_model if dtype == torch.float32 else (
                copy.deepcopy(self._loop_model).to(dtype))
            self._models[key] = base if kind == "loop" else make_vectorizable(base).eval()
        return self._models[key]

    def _chunk(self, x: Tensor) -> int:
        if self._chunk_fixed is not None:
            return self._chunk_fixed
        if len(x) not in self._chunks:
            self._chunks[len(x)] = self._size_chunk(x)
        self._last_chunk = self._chunks[len(x)]
        return self._last_chunk

    def _size_chunk(self, x: Tensor) -> int:
        budget = self.memory_budget
        if budget is None:
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                budget = int(0.4 * free)
            else:
                budget = 256 * 2**20
        per_individual = 4 * (3 * activation_elements(self._loop_model, x) + self.flat.dim)
        chunk = max(1, min(1024, budget // max(per_individual, 1)))
        if self.device.type == "cpu":
            # On a CPU, chunks of about 4096 rows (individuals x N) stay in cache: measured
            # 2.1x the loop for the seed LSTM at N=64 with chunks of 64, 1.6x with 300
            chunk = min(chunk, max(1, CPU_ROWS_PER_CHUNK // max(len(x), 1)))
        return chunk

    def _setup(self, precision: str | None) -> tuple[str, str, torch.dtype]:
        """(precision, mode, dtype of weights and inputs) of a forward in ``precision``."""
        precision = precision or self._fixed_precision()
        mode = self._modes.get(precision, "cast")
        if mode == "unusable":
            precision, mode = "float32", "cast"
        return precision, mode, input_dtype(precision, mode)

    def _fixed_precision(self) -> str:
        """The precision in use when none is asked for: the fixed one, else auto's last choice."""
        if self.precision == "auto":
            return self._choice["precision"] if self._choice else "float32"
        return "float32" if self._modes.get(self.precision) == "unusable" else self.precision

    def logits_vmap(self, population: Tensor, x: Tensor, precision: str | None = None) -> Tensor:
        """Logits ``[P, N(, H), A]`` of every individual, vmapped in chunks (float32 out)."""
        precision, mode, dtype = self._setup(precision)
        model = self._model("vmap", dtype)

        def forward(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
            return torch.func.functional_call(model, params, (inputs,))

        batched = torch.func.vmap(forward, in_dims=(0, None))
        chunk, inputs = self._chunk(x), _cast(x, dtype)
        with torch.no_grad(), forward_context(precision, mode, self.device):
            return torch.cat([
                batched(self.flat.unflatten(part.to(dtype)), inputs).float()
                for part in population.split(chunk)
            ])

    def logits_loop(self, population: Tensor, x: Tensor, precision: str | None = None) -> Tensor:
        """Logits of every individual, one forward each through the user's own module."""
        return torch.stack(self._loop(population, x, precision, lambda out: out)).float()

    def _loop(self, population: Tensor, x: Tensor, precision: str | None,
              keep: Callable[[Tensor], Tensor]) -> list[Tensor]:
        """``keep(output)`` of each individual's forward through the user's own module, in the
        model's dtype. The chunk is cast to that dtype once, not tensor by tensor (the same
        values); a model of mixed dtypes gets each tensor's own cast from ``flat.load``."""
        precision, mode, dtype = self._setup(precision)
        model, inputs = self._model("loop", dtype), _cast(x, dtype)
        dtypes = {p.dtype for p in model.parameters()}
        kept = []
        with torch.no_grad(), forward_context(precision, mode, self.device):
            if len(dtypes) == 1:
                population = population.to(dtypes.pop())
            for weights in population:
                self.flat.load(model, weights)
                kept.append(keep(model(inputs)))
        return kept

    def actions(
        self, population: Tensor, data: Data, method: str | None = None,
        precision: str | None = None,
    ) -> Tensor:
        """Argmax actions ``[P, N(, H)]`` of every individual on ``data``.

        ``method``/``precision`` None: the evaluator's own (``auto`` measures first if needed).
        """
        if method is None or precision is None:
            planned = self._plan(population, data)
            method, precision = method or planned[0], precision or planned[1]
        x = model_input(data)
        population = population.to(self.device)
        if method == "vmap":
            return torch.cat([self.logits_vmap(part, x, precision).argmax(-1)
                              for part in population.split(self._chunk(x))])
        # Each individual's argmax at once: its logits are never stacked or copied to float32
        # (which changes no comparison, so the actions are those of logits_loop)
        return torch.cat([torch.stack(self._loop(part, x, precision, lambda out: out.argmax(-1)))
                          for part in population.split(LOOP_CHUNK)])

    # -- scores ------------------------------------------------------------------------------

    def evaluate(self, population: Tensor, data: Data) -> ScoreBatch:
        """Scores ``[P]`` of the population on ``data`` (one evaluation per individual)."""
        if population.dim() != 2 or population.shape[1] != self.flat.dim:
            raise ValueError(
                f"population must have shape [P, {self.flat.dim}]; got {tuple(population.shape)}."
            )
        method, precision = self._plan(population, data)
        return self.scorer(self.actions(population, data, method, precision), data)

    def _plan(self, population: Tensor, data: Data) -> tuple[str, str]:
        """(method, precision) for this size of population and episode."""
        if self.precision != "auto" and self.precision != "float32":
            self._probe_precision(self.precision, data)
        if self.method != "auto" and self.precision != "auto":
            return self._method_for(data), self._fixed_precision()
        key = size_key(len(model_input(data)), len(population))
        if key not in self._plans:
            if self._default_plan is not None:
                return self._default_plan
            self._plans[key] = self._choose(population, data)
        return self._plans[key]

    def _method_for(self, data: Data) -> str:
        if self.method == "vmap" and self._vmap_error is None and not self._vmap_works(data):
            warnings.warn(
                f"the model cannot run under torch.func.vmap ({self._vmap_error}); "
                "evaluating the population with the loop instead.",
                RuntimeWarning,
                stacklevel=4,
            )
        if self.method == "vmap":
            return "vmap" if self._vmap_error is None else "loop"
        return "loop"

    def _vmap_works(self, data: Data) -> bool:
        """Try vmap on two individuals once; remember why it failed, if it does."""
        if self._vmap_checked:
            return self._vmap_error is None
        self._vmap_checked = True
        x = model_input(data)[:2]
        try:
            probe = self.flat.vector(self._loop_model).to(self.device).expand(2, -1)
            self.logits_vmap(probe.contiguous(), x, "float32")
            return True
        except Exception as err:  # any failure means: this model cannot be vmapped here
            self._vmap_error = f"{type(err).__name__}: {err}"
            return False

    def _probe_precision(self, precision: str, data: Data) -> bool:
        """Find how ``precision`` runs on this model (cast, else autocast); False if neither."""
        if precision in self._modes:
            return self._modes[precision] != "unusable"
        x = model_input(data)[:2]
        probe = self.flat.vector(self._loop_model).to(self.device).expand(2, -1).contiguous()
        vmap_ok = self.method != "loop" and self._vmap_works(data)
        errors = []
        for mode in MODES:
            self._modes[precision] = mode
            try:
                self.logits_loop(probe, x, precision)
                if vmap_ok:
                    self.logits_vmap(probe, x, precision)
                return True
            except Exception as err:  # this model cannot run in that mode
                errors.append(f"{mode}: {type(err).__name__}: {err}")
        self._modes[precision] = "unusable"
        warnings.warn(
            f"the model cannot run in precision = {precision!r} ({'; '.join(errors)}); "
            "evaluating the population in float32 instead.",
            RuntimeWarning,
            stacklevel=4,
        )
        return False

    def _choose(self, population: Tensor, data: Data) -> tuple[str, str]:
        """Time the allowed (method, precision) pairs on a sample; keep the fastest."""
        x = model_input(data)
        population = population.to(self.device)
        reason = None
        methods = ["vmap", "loop"] if self.method == "auto" else [self.method]
        if "vmap" in methods and not self._vmap_works(data):
            if self.method == "auto":
                log.warning("vmap unavailable for this model (%s); using the loop",
                            self._vmap_error)
            methods, reason = ["loop"], self._vmap_error
        hardware = bf16_matmul_units(self.device)
        if self.precision == "auto":
            precisions = ["float32"] + (["bfloat16"] if hardware else [])
        else:
            precisions = [self._fixed_precision()]
        precisions = [p for p in precisions if p == "float32" or self._probe_precision(p, data)]

        # Time every pair on the same sample: at least one vmap chunk, scaled to the whole P
        size = max(self.auto.sample, self._chunk(x) if "vmap" in methods else 1)
        sample = population[: min(len(population), size)]
        candidates = {
            f"{m}/{p}": functools.partial(self.actions, sample, data, m, p)
            for m in methods for p in precisions
        }
        if len(candidates) > 1:
            per_call, outputs = measure(candidates, self.auto, clock(self.device))
        else:
            per_call, outputs = {name: 0.0 for name in candidates}, {}
        timings = {name: s * len(population) / len(sample) for name, s in per_call.items()}
        reduced_agree = agreement(outputs, "bfloat16")
        methods_agree = agreement(outputs, "vmap/loop")
        method, precision = pick(timings, reduced_agree, self.auto)

        sizes = (self._choice or {}).get("sizes", [])
        self._choice = {
            "method": method,
            "precision": precision,
            "rows": len(x),
            "population": len(population),
            "timings": timings,
            "agree": None if methods_agree is None else methods_agree > 0.99,  # in float32
            "precision_agreement": reduced_agree,
            "hardware": hardware,
            "device": str(self.device),
            "sample": len(sample),
            "repeats": self.auto.repeats,
            "clock": clock_name(self.device),
            **({"reason": reason} if reason else {}),
            "sizes": [*sizes, {"rows": len(x), "population": len(population),
                               "method": method, "precision": precision}],
        }
        log.info("auto chose %s in %s at rows=%d, P=%d (%s)", method, precision, len(x),
                 len(population), ", ".join(f"{k} {v:.3f}s" for k, v in timings.items()))
        return method, precision
