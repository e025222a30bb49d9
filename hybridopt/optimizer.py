"""HybridOptimizer: the public face of hybridopt; validates, wires the parts, runs the loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hybridopt.arguments import check_arguments, check_data, check_fit
from hybridopt.callbacks import dispatch
from hybridopt.checkpoint import save_checkpoint
from hybridopt.config import ESConfig, GeneticConfig, GradientConfig, StallConfig
from hybridopt.controller import Controller
from hybridopt.data import Data, check_like, data_to, model_input, slice_data
from hybridopt.evaluation import IN_PROCESS, Evaluation
from hybridopt.outputs import resolve_outputs
from hybridopt.phases import build_phases, default_phases
from hybridopt.population.evaluate import PopulationEvaluator, resolve_device
from hybridopt.population.flat import FlatParams
from hybridopt.result import FitResult
from hybridopt.resume import payload, resume_latest
from hybridopt.run_loop import Budget, bind, run, threads
from hybridopt.scoring import Scorer
from hybridopt.selection import Selection
from hybridopt.validation import check_model_and_score


class HybridOptimizer:
    """Maximise a non-differentiable score of a model's discrete actions.

    Alternates search phases (by default a policy-gradient learner, SNES and a genetic
    algorithm over the flat weights, populations evaluated in vectorised batches), switching
    when progress stalls.

    Args:
        model: maps inputs ``[N, ...]`` to logits ``[N, A]`` or ``[N, H, A]`` (or
            probabilities / log-probabilities: see ``outputs``).
        score_fn: ``score_fn(actions, data) -> float`` (higher is better), or per-item rewards
            shaped like ``actions`` with NaN where unobserved; see :func:`hybridopt.batched`.
        data: a tensor, or a tuple/list/dict of tensors sharing the leading length N; the model
            input is the tensor, ``data[0]`` or ``data["x"]``.
        phases: built-in phase names ("gradient", "genetic", "es") or phase objects
            (:class:`hybridopt.phases.base.Phase`), in order; the first starts. Default
            "auto", chosen by measurement (README): ``("gradient", "es", "genetic")`` when every
            step sees the whole data (no ``episode_length``), ``("es", "genetic",
            "gradient")`` with episodes, ``("es", "genetic")`` with several ``objectives``
            (:func:`hybridopt.phases.default_phases`).
        population_size: individuals per generation of the genetic phase; "auto" sizes it
            from the dimension and the first ``fit``'s budget
            (:func:`hybridopt.population.size.auto_population_size`).
        episode_length: rows per episode (contiguous slices sampled each step); None = the whole
            data is one episode.
        validation_data: if given, the best weights are chosen with it (see ``selection``).
        selection: "auto" (default: "robust" with validation data, else the training score),
            "robust" (mean minus one std of the score over bootstrap resamples of the
            training + validation rows, or of the training rows alone),
            "union" (the score on training + validation rows: cheaper when ``score_fn`` is
            slow) or "validation" (validation rows only); see :mod:`hybridopt.selection`.
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
        objectives: None (one score), or M / the M names of the objectives ``score_fn``
            returns (all maximised; see :mod:`hybridopt.objectives`).
        objective_weights: fixed scalarisation weights ``[M]`` for the gradient/ES phases and
            the kept best; None: the mean for the kept best, a new weight vector per visit.
        select: ``select(pareto_front) -> index``: the front model ``opt.model`` ends with
            (default: the best by the scalarisation).

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
        phases: tuple[Any, ...] | str = "auto",
        population_size: int | str = "auto",
        episode_length: int | None = None,
        validation_data: Data | None = None,
        selection: str = "auto",
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
        objectives: int | tuple[str, ...] | None = None,
        objective_weights: Any = None,
        select: Callable[[list[dict]], int] | None = None,
    ) -> None:
        configs = dict(gradient=gradient, genetic=genetic, es=es, stall=stall)
        if isinstance(phases, str) and phases == "auto":
            phases = default_phases(episode_length, objectives)
        self.phases = check_arguments(
            model=model, phases=phases, population_size=population_size,
            episode_length=episode_length, seed=seed, threads=threads,
            checkpoint_every=checkpoint_every, checkpoint_dir=checkpoint_dir,
            selection=selection, backend=backend, backend_options=backend_options,
            device=device, configs=configs, precision=precision)
        self.n = check_data(data, validation_data, episode_length)

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
        self._population_option = population_size
        self.backend_options = dict(backend_options or {})
        self.seed, self.threads = seed, threads
        self.gradient_config = gradient or GradientConfig()
        self.stall_config = stall or StallConfig()
        self.scorer = Scorer(score_fn, objectives=objectives)
        self.generator = torch.Generator().manual_seed(seed)
        first = self.data if episode_length is None else slice_data(self.data, 0, episode_length)
        check_model_and_score(self.model, self.scorer, first, self.validation_data, seed,
                              self.device, gradient=self.gradient_config)
        self.outputs = resolve_outputs(outputs, self.model, model_input(first))
        self.evaluator = PopulationEvaluator(
            model, self.scorer, self.flat, method=backend if backend in IN_PROCESS else "auto",
            device=self.device, chunk_size=chunk_size, precision=precision,
        )
        self._evaluation_options = dict(
            backend=backend, address=address, backend_options=self.backend_options,
            device=self.device, episode_length=episode_length, generator=self.generator,
            objective_weights=objective_weights)
        self.select, self._selection_rule = select, selection
        self.phase_objects = build_phases(self.phases, configs)
        self._start_weights = self.flat.vector(self.model).detach().clone()
        self.reset()

    def reset(self) -> None:
        """Forget the run: back to the starting weights and the seed's generator state; the
        next :meth:`fit` starts fresh (fitting again without a reset continues)."""
        self.flat.load(self.model, self._start_weights)
        self.generator.manual_seed(self.seed)
        self.population_size = self._population_option
        if getattr(self, "evaluation", None) is not None:
            self.evaluation.close()
        self.evaluation = Evaluation(self.model, self.scorer, self.flat, self.data,
                                     self.evaluator, **self._evaluation_options)
        self.controller = Controller(self.phase_objects, self.stall_config)
        self.selection = Selection(self._selection_rule, self._score_weights, self.data,
                                   self.validation_data, self.evaluation,
                                   seed=self.seed)
        self._state: Any = None
        self._live: Tensor | None = None
        self._bound = False
        self._call_start: int | None = None
        self._stop_requested = False
        self.history: list[dict] = []
        self.switches: list[dict] = []
        self.events: list[dict] = []
        self.evaluations = 0
        self.threads_used = torch.get_num_threads()

    @property
    def best_score(self) -> float:
        """Selection score of the best weights so far."""
        return self.selection.best_score

    nonfinite = property(lambda self: self.evaluation.nonfinite,
                         lambda self, v: setattr(self.evaluation, "nonfinite", v),
                         doc="Scores that were NaN or infinite so far (counted as the worst).")

    @property
    def pareto_archive(self):
        """The non-dominated models so far (:class:`hybridopt.objectives.ParetoArchive`), with
        several objectives; else None."""
        return self.evaluation.archive

    def load_front(self, i: int) -> None:
        """Load entry ``i`` of the last result's ``pareto_front`` into ``opt.model``."""
        front = self.front()
        if not isinstance(i, int) or not -len(front) <= i < len(front):
            raise ValueError(f"i must index the Pareto front of {len(front)} models; got {i!r}.")
        self.flat.load(self.model, front[i]["weights"].to(self.device))

    def front(self) -> list[dict]:
        """The Pareto front now: one dict per non-dominated model (see ``FitResult``)."""
        return self.evaluation.front(self.validation_data, self.model)

    @property
    def best_weights(self) -> Tensor:
        """The best flat weights so far ``[D]``."""
        return self.selection.best_weights

    def _evaluate_population(self, population: Tensor, episode: Data):
        return self.evaluation.population(population, episode)

    def _score_weights(self, weights: Tensor, data: Data, train: bool = False) -> float:
        return self.evaluation.score(weights, data, train)

    def close(self) -> None:
        """Release a distributed backend's workers (Ray actors, joblib processes)."""
        self.evaluation.close()

    def __enter__(self) -> HybridOptimizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        return self.evaluation.score_model(self.model, self._checked(data))

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
        callbacks = check_fit(max_evaluations, max_time, target_score, callbacks, resume,
                              patience, self.checkpoint_dir)
        bind(self, max_evaluations)
        if resume:
            resume_latest(self)
        self._stop_requested = False
        if self._call_start is None:
            self._call_start = self.evaluations
        budget = Budget(max_evaluations, max_time, target_score, patience, self._call_start,
                        time.perf_counter())
        with threads(self.threads):
            self.threads_used = torch.get_num_threads()
            result = run(self, budget, callbacks, progress)
            dispatch(callbacks, "on_end", self, result)
        return result

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the whole run now (needs ``checkpoint_dir``)."""
        if self.checkpoint_dir is None:
            raise ValueError("save_checkpoint needs checkpoint_dir to be set.")
        return save_checkpoint(self.checkpoint_dir, len(self.history), payload(self))
