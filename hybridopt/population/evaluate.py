"""Population evaluator: ``[P, D]`` weights + episode data -> ``[P]`` scores.

Each individual acts by the argmax of its logits. Two in-process methods compute those actions:

- ``vmap``: ``torch.func.functional_call`` over stacked parameters under ``torch.func.vmap``, in
  chunks sized to fit memory, on CUDA when present. Recurrent layers are swapped for
  population-aware versions (:mod:`hybridopt.population.recurrent`).
- ``loop``: one individual at a time through the user's own module: the reference.

``auto`` times both on the first population it sees and keeps the faster.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings

import torch
from torch import Tensor, nn

from hybridopt.data import Data, model_input
from hybridopt.population.flat import FlatParams
from hybridopt.population.recurrent import make_vectorizable
from hybridopt.scoring import ScoreBatch, Scorer

log = logging.getLogger(__name__)
METHODS = ("auto", "vmap", "loop")
CPU_ROWS_PER_CHUNK = 4096


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


def _activation_elements(model: nn.Module, x: Tensor) -> int:
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
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None; got {chunk_size!r}.")
        self.scorer = scorer
        self.flat = flat
        self.device = resolve_device(device)
        self.method = method
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self.choice: dict | None = None
        self._loop_model = copy.deepcopy(model).to(self.device).eval()
        for p in self._loop_model.parameters():
            p.requires_grad_(False)
        self._vmap_model: nn.Module | None = None
        self._vmap_error: str | None = None

    # -- the two ways to get actions ---------------------------------------------------------

    def _vectorised(self) -> nn.Module:
        if self._vmap_model is None:
            self._vmap_model = make_vectorizable(self._loop_model).eval()
        return self._vmap_model

    def _chunk(self, x: Tensor) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        budget = self.memory_budget
        if budget is None:
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                budget = int(0.4 * free)
            else:
                budget = 256 * 2**20
        per_individual = 4 * (3 * _activation_elements(self._loop_model, x) + self.flat.dim)
        chunk = max(1, min(1024, budget // max(per_individual, 1)))
        if self.device.type == "cpu":
            # On a CPU, chunks of about 4096 rows (individuals x N) stay in cache: measured
            # 2.1x the loop for the seed LSTM at N=64 with chunks of 64, 1.6x with 300
            chunk = min(chunk, max(1, CPU_ROWS_PER_CHUNK // max(len(x), 1)))
        self.chunk_size = chunk
        return self.chunk_size

    def logits_vmap(self, population: Tensor, x: Tensor) -> Tensor:
        """Logits ``[P, N(, H), A]`` of every individual, vmapped in chunks."""
        model = self._vectorised()

        def forward(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
            return torch.func.functional_call(model, params, (inputs,))

        batched = torch.func.vmap(forward, in_dims=(0, None))
        chunk = self._chunk(x)
        with torch.no_grad():
            return torch.cat(
                [batched(self.flat.unflatten(part), x) for part in population.split(chunk)]
            )

    def logits_loop(self, population: Tensor, x: Tensor) -> Tensor:
        """Logits of every individual, one forward each through the user's own module."""
        outputs = []
        with torch.no_grad():
            for weights in population:
                self.flat.load(self._loop_model, weights)
                outputs.append(self._loop_model(x))
        return torch.stack(outputs)

    def actions(self, population: Tensor, data: Data, method: str | None = None) -> Tensor:
        """Argmax actions ``[P, N(, H)]`` of every individual on ``data``."""
        method = method or self._method_for(population, data)
        x = model_input(data)
        population = population.to(self.device)
        if method == "vmap":
            chunk = self._chunk(x)
            return torch.cat(
                [self.logits_vmap(part, x).argmax(-1) for part in population.split(chunk)]
            )
        return torch.cat(
            [self.logits_loop(part, x).argmax(-1) for part in population.split(64)]
        )

    # -- scores ------------------------------------------------------------------------------

    def evaluate(self, population: Tensor, data: Data) -> ScoreBatch:
        """Scores ``[P]`` of the population on ``data`` (one evaluation per individual)."""
        if population.dim() != 2 or population.shape[1] != self.flat.dim:
            raise ValueError(
                f"population must have shape [P, {self.flat.dim}]; got {tuple(population.shape)}."
            )
        if self.method == "auto" and self.choice is None:
            return self._choose(population, data)
        return self.scorer(self.actions(population, data), data)

    def _method_for(self, population: Tensor, data: Data) -> str:
        if self.method == "vmap" and self._vmap_error is None and not self._vmap_works(data):
            warnings.warn(
                f"the model cannot run under torch.func.vmap ({self._vmap_error}); "
                "evaluating the population with the loop instead.",
                RuntimeWarning,
                stacklevel=3,
            )
        if self.method == "vmap":
            return "vmap" if self._vmap_error is None else "loop"
        if self.method == "auto":
            return self.choice["method"] if self.choice else "loop"
        return "loop"

    def _vmap_works(self, data: Data) -> bool:
        """Try vmap on two individuals; remember why it failed, if it does."""
        x = model_input(data)[:2]
        try:
            probe = self.flat.vector(self._loop_model).to(self.device).expand(2, -1)
            self.logits_vmap(probe.contiguous(), x)
            return True
        except Exception as err:  # any failure means: this model cannot be vmapped here
            self._vmap_error = f"{type(err).__name__}: {err}"
            return False

    def _choose(self, population: Tensor, data: Data) -> ScoreBatch:
        """Time vmap on the whole population and the loop on a sample; keep the faster."""
        x = model_input(data)
        population = population.to(self.device)
        if not self._vmap_works(data):
            log.warning("vmap unavailable for this model (%s); using the loop", self._vmap_error)
            self.choice = {"method": "loop", "reason": self._vmap_error}
            return self.scorer(self.actions(population, data, "loop"), data)
        self.logits_vmap(population[: min(2, len(population))], x)  # warm-up
        start = _now(self.device)
        actions = self.actions(population, data, "vmap")
        vmap_s = _now(self.device) - start
        sample = population[: max(2, min(len(population), len(population) // 8))]
        self.logits_loop(sample[:1], x)  # warm-up
        start = _now(self.device)
        loop_actions = self.actions(sample, data, "loop")
        loop_s = (_now(self.device) - start) * len(population) / len(sample)
        method = "vmap" if vmap_s <= loop_s else "loop"
        self.choice = {
            "method": method,
            "vmap_s": vmap_s,
            "loop_s_estimated": loop_s,
            "population": len(population),
            "device": str(self.device),
            "agree": bool((loop_actions == actions[: len(sample)]).float().mean() > 0.99),
        }
        log.info("backend auto chose %s (vmap %.3fs, loop ~%.3fs)", method, vmap_s, loop_s)
        return self.scorer(actions, data)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
