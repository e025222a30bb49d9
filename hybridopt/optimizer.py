"""HybridOptimizer: the public face of hybridopt; validates, wires the parts, runs the loop."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybridopt.callbacks import validate_callbacks
from hybridopt.checks import check_int
from hybridopt.config import ESConfig, GeneticConfig, GradientConfig, StallConfig
from hybridopt.controller import Controller
from hybridopt.data import Data, check_like, data_to, model_input, slice_data, validate_data
from hybridopt.outputs import resolve_outputs
from hybridopt.phases import PhaseContext, build_phases, validate_phases
from hybridopt.population.evaluate import PopulationEvaluator, resolve_device
from hybridopt.population.flat import FlatParams
from hybridopt.population.size import resolve_population_size
from hybridopt.result import FitResult
from hybridopt.run_loop import Budget, run
from hybridopt.scoring import Scorer
from hybridopt.selection import Selection, check_selection
from hybridopt.validation import check_model_and_score, check_options

log = logging.getLogger(__name__)
BACKENDS = ("auto", "vmap", "loop", "joblib", "ray")
IN_PROCESS = ("auto", "vmap", "loop")


class HybridOptimizer:
    """Maximise a non-differentiable score of a model's discrete actions.

    Alternates search phases (by default a policy-gradient learner and a genetic algorithm
    over the flat weights, evaluated in vectorised batches), switching when progress stalls.

    Args:
        model: maps inputs ``[N, ...]`` to logits ``[N, A]`` or ``[N, H, A]`` (or
            probabilities / log-probabilities: see ``outputs``).
        score_fn: ``score_fn(actions, data) -> float`` (higher is better), or per-item rewards
            shaped like ``actions`` with NaN where unobserved; see :func:`hybridopt.batched`.
        data: a tensor, or a tuple/list/dict of tensors sharing the leading length N; the model
            input is the tensor, ``data[0]`` or ``data["x"]``.
        phases: built-in phase names ("gradient", "genetic", "es") or phase objects
            (:class:`hybridopt.phases.base.Phase`), in order; the first starts.
        population_size: individuals per generation of the genetic phase; "auto" sizes it
            from the dimension and the first ``fit``'s budget
            (:func:`hybridopt.population.size.auto_population_size`).
        episode_length: rows per episode (contiguous slices sampled each step); None = the whole
            data is one episode.
        validation_data: if given, the best weights are chosen with it (see ``selection``).
        selection: "union" (score on training + validation rows) or "validation" (validation
            rows only); see :mod:`hybridopt.selection`.
        outputs: "auto", "logits", "probs" or "log_probs" (see :mod:`hybridopt.outputs`).
        precision: population evaluation in "float32", "bfloat16", "float16" (CUDA) or "auto";
            kept best scores are always float32.
        threads: torch threads during ``fit`` (None: as torch has it).
        backend: "auto" (in process, the faster of vmap and loop, measured), "vmap", "loop",
            "joblib" (local processes) or "ray" (actors).
        address: Ray cluster address for ``backend="ray"``; None: ``RAY_ADDRESS`` or local.
        backend_options: options of the "joblib"/"ray" backend.
        device: "auto" (CUDA when available) or a torch device.
        seed: seed of the optimiser's own generators; same seed, same result.
        gradient, genetic, es: settings of the built-in phases; stall: of the controller.
        chunk_size: individuals per vmap call (None: sized from memory).
        checkpoint_dir: if given, checkpoints go there every ``checkpoint_every`` steps, at
            every switch and at the end of ``fit``; ``fit(resume=True)`` continues from it.

    Raises:
        TypeError, ValueError: on bad input, before any long work.

    Example:
        >>> opt = HybridOptimizer(model, score_fn, data=(x, next_return), seed=0)
        >>> result = opt.fit(max_evaluations=20_000)
        >>> opt.evaluate(held_out)
    """

    def __init__(
        self,
        model: nn.Module,
        score_fn: Callable[..., Any],
        data: Data,
        *,
        phases: tuple[Any, ...] = ("gradient", "genetic"),
        population_size: int | str = "auto",
        episode_length: int | None = None,
        validation_data: Data | None = None,
        selection: str = "union",
        outputs: str = "auto",
        precision: str = "float32",
        threads: int | None = None,
        backend: str = "auto",
        address: str | None = None,
        backend_options: dict | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        gradient: GradientConfig | None = None,
        genetic: GeneticConfig | None = None,
        es: ESConfig | None = None,
        stall: StallConfig | None = None,
        chunk_size: int | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        self.phases = validate_phases(phases)
        if population_size != "auto":
            check_int("population_size", population_size, 2)
        check_int("episode_length", episode_length, 1, allow_none=True)
        check_int("seed", seed, 0)
        check_int("threads", threads, 1, allow_none=True)
        check_int("checkpoint_every", checkpoint_every, 1)
        check_selection(selection)
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, Path)):
            raise TypeError(
                f"checkpoint_dir must be a path (str or Path); got {type(checkpoint_dir).__name__}."
            )
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}.")
        if backend in ("joblib", "ray"):
            from hybridopt.backends import check_backend_options

            check_backend_options(backend, dict(backend_options or {}))
        configs = {"gradient": gradient, "genetic": genetic, "es": es, "stall": stall}
        for name, cls in (("gradient", GradientConfig), ("genetic", GeneticConfig),
                          ("es", ESConfig), ("stall", StallConfig)):
            if configs[name] is not None and not isinstance(configs[name], cls):
                raise TypeError(
                    f"{name} must be a {cls.__name__}; got {type(configs[name]).__name__}.")
        names = tuple(p if isinstance(p, str) else p.name for p in self.phases)
        check_options(gradient=gradient, genetic=genetic, stall=stall, device=device,
                      population_size=population_size, phases=names, model=model)
        self.n = validate_data(data, "data")
        if episode_length is not None and episode_length > self.n:
            raise ValueError(
                f"episode_length must be <= the data's length N = {self.n}; "
                f"got episode_length = {episode_length}."
            )
        if validation_data is not None:
            check_like(validation_data, data, "validation_data")

        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.flat = FlatParams.from_module(model)
        self.data = data_to(data, self.device)
        self.validation_data = (
            None if validation_data is None else data_to(validation_data, self.device)
        )
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every, self.episode_length = checkpoint_every, episode_length
        self.population_size: int | str = population_size
        self.backend, self.address = backend, address
        self.backend_options = dict(backend_options or {})
        self.seed, self.threads = seed, threads
        self.gradient_config = gradient or GradientConfig()
        self.stall_config = stall or StallConfig()
        self._distributed: Any = None
        self._bounds: tuple[int, int] | None = None
        self.scorer = Scorer(score_fn)
        self.generator = torch.Generator().manual_seed(seed)
        self.outputs = resolve_outputs(outputs, self.model, model_input(self._episode(True)))
        check_model_and_score(
            self.model, self.scorer, self._episode(first=True), self.validation_data, seed,
            self.device, gradient=self.gradient_config,
        )
        self.evaluator = PopulationEvaluator(
            model, self.scorer, self.flat, method=backend if backend in IN_PROCESS else "auto",
            device=self.device, chunk_size=chunk_size, precision=precision,
        )
        self._scratch = copy.deepcopy(model).eval()
        self.phase_objects = build_phases(self.phases, configs)
        self._start_weights = self.flat.vector(self.model).detach().clone()
        self._selection_rule = selection
        self.reset()

    def reset(self) -> None:
        """Forget the run: back to the starting weights and the seed's generator state; the
        next :meth:`fit` starts fresh (fitting again without a reset continues)."""
        self.flat.load(self.model, self._start_weights)
        self.generator.manual_seed(self.seed)
        self.controller = Controller(self.phase_objects, self.stall_config)
        self.selection = Selection(self._selection_rule, self._score_weights, self.data,
                                   self.validation_data)
        self._state: Any = None
        self._live: Tensor | None = None
        self._bound = False
        self._call_start: int | None = None
        self._stop_requested = False
        self.history: list[dict] = []
        self.switches: list[dict] = []
        self.events: list[dict] = []
        self.evaluations = self.nonfinite = 0
        self.threads_used = torch.get_num_threads()

    @property
    def best_score(self) -> float:
        """Selection score of the best weights so far."""
        return self.selection.best_score

    @property
    def best_weights(self) -> Tensor:
        """The best flat weights so far ``[D]``."""
        return self.selection.best_weights

    def _bind(self, max_evaluations: int | None) -> None:
        """Resolve the population size from the first budget and hand the phases their parts."""
        if self._bound:
            return
        self.population_size = resolve_population_size(
            self.population_size, self.flat.dim, max_evaluations)
        context = PhaseContext(
            model=self.model, flat=self.flat, scorer=self.scorer,
            evaluate=self._evaluate_population, generator=self.generator, device=self.device,
            fixed_data=self.episode_length is None, population_size=self.population_size,
            max_evaluations=max_evaluations, outputs=self.outputs,
        )
        for phase in self.phase_objects:
            phase.bind(context)
        self._bound = True

    def _episode(self, first: bool = False) -> Data:
        if self.episode_length is None:
            self._bounds = None
            return self.data
        start = 0
        if not first:
            high = self.n - self.episode_length + 1
            start = int(torch.randint(high, (1,), generator=self.generator))
        self._bounds = (start, start + self.episode_length)
        return slice_data(self.data, *self._bounds)

    def _evaluate_population(self, population: Tensor, episode: Data):
        """Scores of ``population`` on the current episode, in process or distributed."""
        if self.backend in IN_PROCESS:
            return self.evaluator.evaluate(population, episode)
        if self._distributed is None:
            from hybridopt.backends import make_backend

            self._distributed = make_backend(
                self.backend, model=self._scratch, score_fn=self.scorer.score_fn,
                score_mode=self.scorer.mode, flat=self.flat, data=self.data,
                address=self.address, device=self.device,
                chunk_size=self.evaluator.chunk_size, **self.backend_options,
            )
        return self._distributed.evaluate(population, self._bounds)

    def close(self) -> None:
        """Release a distributed backend's workers (Ray actors, joblib processes)."""
        if self._distributed is not None:
            self._distributed.close()
            self._distributed = None

    def __enter__(self) -> HybridOptimizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _score_model(self, model: nn.Module, data: Data) -> float:
        model.eval()
        with torch.no_grad():
            actions = model(model_input(data)).argmax(-1)
        batch = self.scorer(actions.unsqueeze(0), data)
        self.nonfinite += batch.n_nonfinite
        score = float(batch.scores[0])
        return score if math.isfinite(score) else -math.inf

    def _score_weights(self, weights: Tensor, data: Data) -> float:
        self.flat.load(self._scratch, weights)
        return self._score_model(self._scratch, data)

    def _checked(self, data: Data | None) -> Data:
        if data is None:
            return self.data
        check_like(data, self.data, "data")
        return data_to(data, self.device)

    def evaluate(self, data: Data | None = None) -> float:
        """Score of ``opt.model``'s argmax policy on ``data`` (default: the training data).

        Raises:
            TypeError, ValueError: if ``data`` is not structured like the training data.
        """
        return self._score_model(self.model, self._checked(data))

    def actions(self, data: Data | None = None) -> Tensor:
        """The argmax actions ``[N]`` or ``[N, H]`` of ``opt.model`` on ``data``."""
        data = self._checked(data)
        self.model.eval()
        with torch.no_grad():
            return self.model(model_input(data)).argmax(-1)

    @property
    def toolbox(self):
        """The genetic phase's DEAP toolbox (``select``, vectorised ``mate``/``mutate``)."""
        return next(p for p in self.phase_objects if hasattr(p, "toolbox")).toolbox

    def request_stop(self) -> None:
        """Ask a running :meth:`fit` to end after the current step (for callbacks)."""
        self._stop_requested = True

    def _score_start(self) -> None:
        """The model's own weights are the first candidate: a run never ends below them."""
        weights = self.flat.vector(self.model)
        score = self._score_weights(weights, self.data)
        self.evaluations += 1
        self.selection.offer(weights, score)

    def fit(self, max_evaluations: int | None = None, max_time: float | None = None,
            target_score: float | None = None, callbacks=(), progress: bool = True,
            resume: bool = False, patience: int | None = None) -> FitResult:
        """Run until a budget of this call is spent or the target is reached; calling it again
        continues the run (budgets counted from where the call starts).

        Args:
            max_evaluations: training score_fn calls this call may spend.
            max_time: seconds this call may take.
            target_score: stop once the best selection score reaches this.
            callbacks: objects with ``on_step``/``on_generation``/``on_switch``/``on_end``.
            progress: show progress (a bar on a terminal, plain lines elsewhere).
            resume: continue from the latest checkpoint in ``checkpoint_dir``; give the same
                budgets as the interrupted call.
            patience: end the run after this many evaluations without a new best selection
                score (early stopping).

        Returns:
            A :class:`FitResult`; ``opt.model`` then holds the best weights found.
        """
        check_int("max_evaluations", max_evaluations, 1, allow_none=True)
        check_int("patience", patience, 1, allow_none=True)
        if max_time is not None and not (isinstance(max_time, (int, float)) and max_time > 0):
            raise ValueError(f"max_time must be a number of seconds > 0; got {max_time!r}.")
        if target_score is not None and not isinstance(target_score, (int, float)):
            raise TypeError(f"target_score must be a number; got {target_score!r}.")
        if max_evaluations is None and max_time is None and target_score is None:
            raise ValueError("fit needs a budget: give max_evaluations, max_time or target_score.")
        callbacks = validate_callbacks(callbacks)
        if resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir: there is nowhere to resume from.")
        self._bind(max_evaluations)
        if resume:
            self._resume()
        self._stop_requested = False
        if self._call_start is None:
            self._call_start = self.evaluations
        budget = Budget(max_evaluations, max_time, target_score, patience, self._call_start,
                        time.perf_counter())
        threads_before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        self.threads_used = torch.get_num_threads()
        try:
            from hybridopt.callbacks import dispatch

            result = run(self, budget, callbacks, progress)
            dispatch(callbacks, "on_end", self, result)
        finally:
            torch.set_num_threads(threads_before)
        return result

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the whole run now (needs ``checkpoint_dir``)."""
        from hybridopt.checkpoint import save_checkpoint
        from hybridopt.resume import payload

        if self.checkpoint_dir is None:
            raise ValueError("save_checkpoint needs checkpoint_dir to be set.")
        return save_checkpoint(self.checkpoint_dir, len(self.history), payload(self))

    def _resume(self) -> None:
        from hybridopt.checkpoint import latest_checkpoint, load_checkpoint
        from hybridopt.resume import identity, restore

        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            log.warning("resume=True but %s holds no checkpoint: starting fresh",
                        self.checkpoint_dir)
            return
        restore(self, load_checkpoint(path, identity(self)))
        log.info("resumed from %s at step %d", path, len(self.history))
