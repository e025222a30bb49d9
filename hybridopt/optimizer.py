"""HybridOptimizer and FitResult: the public face of hybridopt."""

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

from hybridopt.callbacks import dispatch, validate_callbacks
from hybridopt.config import GeneticConfig, GradientConfig, StallConfig
from hybridopt.controller import Controller, validate_phases
from hybridopt.data import Data, data_to, model_input, slice_data, validate_data
from hybridopt.phases.genetic import GeneticPhase
from hybridopt.phases.gradient import GradientPhase
from hybridopt.population.evaluate import PopulationEvaluator, resolve_device
from hybridopt.population.flat import FlatParams
from hybridopt.progress import Progress
from hybridopt.result import FitResult
from hybridopt.scoring import Scorer
from hybridopt.validation import check_model_and_score, check_options

log = logging.getLogger(__name__)
BACKENDS = ("auto", "vmap", "loop", "joblib", "ray")
IN_PROCESS = ("auto", "vmap", "loop")
IDLE_LIMIT = 10  # steps in a row without a single evaluation before a run ends as converged


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {name} = {value}.")


class HybridOptimizer:
    """Maximise a non-differentiable score of a model's discrete actions.

    Alternates a policy-gradient phase (REINFORCE with a baseline) and a genetic phase (a DEAP
    population of flat weight vectors evaluated in vectorised batches), switching when progress
    stalls.

    Args:
        model: maps inputs ``[N, ...]`` to logits ``[N, A]`` or ``[N, H, A]``.
        score_fn: ``score_fn(actions, data) -> float`` (higher is better), or per-item rewards
            shaped like ``actions`` with NaN where unobserved; see :func:`hybridopt.batched`.
        data: a tensor, or a tuple/list/dict of tensors sharing the leading length N; the model
            input is the tensor, ``data[0]`` or ``data["x"]``.
        phases: the phases allowed, in order; the first starts. ``("gradient",)`` or
            ``("genetic",)`` give the pure methods.
        population_size: P, individuals of the genetic phase.
        episode_length: rows per episode (contiguous slices sampled each step); None = the whole
            data is one episode.
        validation_data: if given, the best weights are chosen by the score on this data.
        backend: how populations are evaluated: "auto" (in process, the faster of vmap and
            loop, measured), "vmap", "loop", "joblib" (local processes) or "ray" (actors).
        address: Ray cluster address for ``backend="ray"``; None: ``RAY_ADDRESS``, else a
            local Ray.
        backend_options: options of the "joblib"/"ray" backend (e.g. ``num_actors``,
            ``cpus_per_actor``, ``gpus_per_actor``, ``n_jobs``, ``max_retries``).
        device: "auto" (CUDA when available) or a torch device; model and data are moved there.
        seed: seed of the optimiser's own generators; same seed, same result.
        gradient: settings of the gradient phase.
        genetic: settings of the genetic phase.
        stall: when a phase counts as stalled.
        chunk_size: individuals per vmap call (None: sized from memory).
        checkpoint_dir: if given, a checkpoint is written there every ``checkpoint_every``
            steps or generations, at every phase switch and at the end of ``fit``;
            ``fit(resume=True)`` continues from the latest one.
        checkpoint_every: steps or generations between periodic checkpoints.

    Raises:
        TypeError, ValueError: on bad input, before any long work (``score_fn`` is called once
            on a sample of actions).

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
        phases: tuple[str, ...] = ("gradient", "genetic"),
        population_size: int = 300,
        episode_length: int | None = None,
        validation_data: Data | None = None,
        backend: str = "auto",
        address: str | None = None,
        backend_options: dict | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        gradient: GradientConfig | None = None,
        genetic: GeneticConfig | None = None,
        stall: StallConfig | None = None,
        chunk_size: int | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 10,
    ) -> None:
        # Validate at the door
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        self.phases = validate_phases(phases)
        _check_int("population_size", population_size, 2)
        _check_int("episode_length", episode_length, 1, allow_none=True)
        _check_int("seed", seed, 0)
        _check_int("checkpoint_every", checkpoint_every, 1)
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, Path)):
            raise TypeError(
                f"checkpoint_dir must be a path (str or Path); got {type(checkpoint_dir).__name__}."
            )
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}.")
        if backend in ("joblib", "ray"):
            from hybridopt.backends import check_backend_options

            check_backend_options(backend, dict(backend_options or {}))
        for name, value, cls in (
            ("gradient", gradient, GradientConfig),
            ("genetic", genetic, GeneticConfig),
            ("stall", stall, StallConfig),
        ):
            if value is not None and not isinstance(value, cls):
                raise TypeError(f"{name} must be a {cls.__name__}; got {type(value).__name__}.")
        check_options(
            gradient=gradient, genetic=genetic, stall=stall, population_size=population_size,
            device=device, phases=self.phases, model=model,
        )
        self.n = validate_data(data, "data")
        if episode_length is not None and episode_length > self.n:
            raise ValueError(
                f"episode_length must be <= the data's length N = {self.n}; "
                f"got episode_length = {episode_length}."
            )
        if validation_data is not None:
            validate_data(validation_data, "validation_data")

        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.flat = FlatParams.from_module(model)
        self.data = data_to(data, self.device)
        self.validation_data = (
            None if validation_data is None else data_to(validation_data, self.device)
        )
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.population_size = population_size
        self.episode_length = episode_length
        self.backend = backend
        self.address = address
        self.backend_options = dict(backend_options or {})
        self._distributed: Any = None
        self._bounds: tuple[int, int] | None = None
        self.seed = seed
        self.gradient_config = gradient or GradientConfig()
        self.genetic_config = genetic or GeneticConfig()
        self.stall_config = stall or StallConfig()
        self.generator = torch.Generator().manual_seed(seed)
        self.scorer = Scorer(score_fn)
        self.output_shape = check_model_and_score(
            self.model, self.scorer, self._episode(first=True), self.validation_data, seed,
            self.device, gradient=self.gradient_config,
        )

        self.evaluator = PopulationEvaluator(
            model, self.scorer, self.flat,
            method=backend if backend in IN_PROCESS else "auto", device=self.device,
            chunk_size=chunk_size,
        )
        self._scratch = copy.deepcopy(model).eval()
        self._phases = {
            "gradient": GradientPhase(
                self.model, self.scorer, self.gradient_config, self.generator
            ),
            "genetic": GeneticPhase(
                self.flat, self._evaluate_population, self.genetic_config, population_size,
                self.generator,
            ),
        }
        self.controller = Controller(
            self.phases,
            self.stall_config,
            caps={
                "gradient": self.gradient_config.max_steps,
                "genetic": self.genetic_config.max_generations,
            },
        )
        self._state: Any = None
        self._stop_requested = False
        self.history: list[dict] = []
        self.switches: list[dict] = []
        self.evaluations = 0
        self.validation_evaluations = 0
        self.nonfinite = 0
        self.best_score = -math.inf
        self.best_train_score = -math.inf
        self.best_weights = self.flat.vector(self.model).clone()

    # -- validation --------------------------------------------------------------------------

    # -- episodes ----------------------------------------------------------------------------

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

    # -- population evaluation ---------------------------------------------------------------

    def _evaluate_population(self, population: Tensor, episode: Data):
        """Scores of ``population`` on the current episode, in process or distributed."""
        if self.backend in IN_PROCESS:
            return self.evaluator.evaluate(population, episode)
        if self._distributed is None:
            from hybridopt.backends import make_backend

            self._distributed = make_backend(
                self.backend,
                model=self._scratch,
                score_fn=self.scorer.score_fn,
                score_mode=self.scorer.mode,
                flat=self.flat,
                data=self.data,
                address=self.address,
                device=self.device,
                chunk_size=self.evaluator.chunk_size,
                **self.backend_options,
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

    # -- scoring single weight vectors -------------------------------------------------------

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

    def evaluate(self, data: Data | None = None) -> float:
        """Score of ``opt.model``'s argmax policy on ``data`` (default: the training data).

        Raises:
            TypeError, ValueError: if ``data`` is not shaped like the training data.
        """
        if data is None:
            data = self.data
        else:
            validate_data(data, "data")
            data = data_to(data, self.device)
        return self._score_model(self.model, data)

    @property
    def toolbox(self):
        """The genetic phase's DEAP toolbox: ``select(individuals, k)``, and the vectorised
        ``mate(a, b, generator)`` / ``mutate(x, scale, generator)`` over ``[M, D]`` tensors.
        Register your own operators here (or pass them in :class:`GeneticConfig`)."""
        return self._phases["genetic"].toolbox

    def request_stop(self) -> None:
        """Ask a running :meth:`fit` to end after the current step (for callbacks)."""
        self._stop_requested = True

    # -- the run -----------------------------------------------------------------------------

    def fit(
        self,
        max_evaluations: int | None = None,
        max_time: float | None = None,
        target_score: float | None = None,
        callbacks=(),
        progress: bool = True,
        resume: bool = False,
    ) -> FitResult:
        """Run the hybrid optimisation until a budget is spent or the target is reached.

        Args:
            max_evaluations: stop before the score_fn calls on training data would exceed this.
            max_time: stop after this many seconds.
            target_score: stop once the best score reaches this.
            callbacks: objects with ``on_step``/``on_generation``/``on_switch``/``on_end``.
            progress: show a progress bar.
            resume: continue from the latest checkpoint in ``checkpoint_dir`` (a fresh start
                when there is none yet). Give the same budgets as the interrupted call.

        Returns:
            A :class:`FitResult`; ``opt.model`` then holds the best weights found.

        Raises:
            ValueError: if a budget is not positive, or no budget is given at all, or
                ``resume`` without a ``checkpoint_dir``.
            hybridopt.checkpoint.CheckpointError: if the latest checkpoint is unreadable or
                belongs to another model or configuration.
        """
        _check_int("max_evaluations", max_evaluations, 1, allow_none=True)
        if max_time is not None and not (isinstance(max_time, (int, float)) and max_time > 0):
            raise ValueError(f"max_time must be a number of seconds > 0; got {max_time!r}.")
        if target_score is not None and not isinstance(target_score, (int, float)):
            raise TypeError(f"target_score must be a number; got {target_score!r}.")
        if max_evaluations is None and max_time is None and target_score is None:
            raise ValueError(
                "fit needs a budget: give max_evaluations, max_time or target_score."
            )
        callbacks = validate_callbacks(callbacks)
        if resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir: there is nowhere to resume from.")
        if resume:
            self._resume()
        self._stop_requested = False
        start = time.perf_counter()
        wall_before = self.history[-1]["wall_time"] if self.history else 0.0
        bar = Progress(progress, max_evaluations, initial=self.evaluations)
        stop_reason = ""
        idle = 0
        try:
            if self._state is None:
                if not self.history:
                    self._score_start()
                self._state = self._start_phase(self.controller.phase)
            while True:
                stop_reason = self._budget_spent(max_evaluations, max_time, target_score, start)
                if stop_reason:
                    break
                evaluations_before = self.evaluations
                row = self._step(wall_before + time.perf_counter() - start)
                # A converged population breeds only copies, which cost nothing to score:
                # without new individuals nothing can change, so end rather than spin
                idle = idle + 1 if self.evaluations == evaluations_before else 0
                if idle >= IDLE_LIMIT and (len(self.phases) == 1 or idle >= 5 * IDLE_LIMIT):
                    stop_reason = (
                        f"converged: {idle} generations in a row produced no new individual"
                    )
                    break
                event = "on_step" if row["phase"] == "gradient" else "on_generation"
                dispatch(callbacks, event, self, row)
                bar.update(row)
                reason = self.controller.check(
                    row["selection_score"] if self.stall_config.monitor == "selection"
                    else row["score"],
                    flat=row.get("flat", False),
                )
                if reason:
                    self._switch(reason, callbacks)
                    s = self.switches[-1]
                    bar.event(f"switch {s['from_phase']} -> {s['to_phase']} at "
                              f"{s['evaluations']} evaluations: {s['reason']}")
                if self.checkpoint_dir is not None and (
                    reason or len(self.history) % self.checkpoint_every == 0
                ):
                    self.save_checkpoint()
        except KeyboardInterrupt:
            stop_reason = "interrupted"
            log.warning("interrupted: returning the best weights found so far")
        finally:
            bar.close()
        if self.checkpoint_dir is not None and stop_reason != "interrupted":
            self.save_checkpoint()
        self.flat.load(self.model, self.best_weights)
        result = self._result(stop_reason, wall_before + time.perf_counter() - start)
        dispatch(callbacks, "on_end", self, result)
        return result

    # -- checkpoints -------------------------------------------------------------------------

    def _identity(self) -> dict:
        """What a checkpoint must match to be resumed here."""
        return {
            "layout": [[n, list(sh)] for n, sh in zip(self.flat.names, self.flat.shapes)],
            "phases": list(self.phases),
            "population_size": self.population_size,
            "episode_length": self.episode_length,
            "seed": self.seed,
            "data_length": self.n,
        }

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the whole run now (needs ``checkpoint_dir``)."""
        from hybridopt.checkpoint import save_checkpoint

        if self.checkpoint_dir is None:
            raise ValueError("save_checkpoint needs checkpoint_dir to be set.")
        phase = self.controller.phase
        payload = {
            **self._identity(),
            "version": __import__("hybridopt").__version__,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "phase_state": None if self._state is None
            else self._phases[phase].state_dict(self._state),
            "controller": self.controller.state_dict(),
            "generator": self.generator.get_state(),
            "counters": {
                "evaluations": self.evaluations,
                "validation_evaluations": self.validation_evaluations,
                "nonfinite": self.nonfinite,
                "best_score": self.best_score,
                "best_train_score": self.best_train_score,
            },
            "best_weights": self.best_weights.cpu(),
            "history": self.history,
            "switches": self.switches,
            "scorer_mode": self.scorer.mode,
            "evaluator": {"choice": self.evaluator.choice,
                          "chunk_size": self.evaluator.chunk_size},
        }
        return save_checkpoint(self.checkpoint_dir, len(self.history), payload)

    def _resume(self) -> None:
        from hybridopt.checkpoint import latest_checkpoint, load_checkpoint

        path = latest_checkpoint(self.checkpoint_dir)
        if path is None:
            log.warning("resume=True but %s holds no checkpoint: starting fresh",
                        self.checkpoint_dir)
            return
        saved = load_checkpoint(path, self._identity())
        self.model.load_state_dict(saved["model"])
        self.controller.load_state_dict(saved["controller"])
        self.generator.set_state(saved["generator"])
        for key, value in saved["counters"].items():
            setattr(self, key, value)
        self.best_weights = saved["best_weights"].to(self.device)
        self.history = list(saved["history"])
        self.switches = list(saved["switches"])
        self.scorer.mode = saved["scorer_mode"]
        self.evaluator.choice = saved["evaluator"]["choice"]
        self.evaluator.chunk_size = saved["evaluator"]["chunk_size"]
        phase, state = self.controller.phase, saved["phase_state"]
        if state is None:
            self._state = None
        elif phase == "gradient":
            self._state = self._phases["gradient"].load_state_dict(state)
        else:
            self._state = self._phases["genetic"].load_state_dict(state, self.device)
        log.info("resumed from %s at step %d", path, len(self.history))

    def _score_start(self) -> None:
        """The model's own weights are the first candidate: a run never ends below them."""
        weights = self.flat.vector(self.model)
        score = self._score_weights(weights, self.data)
        self.evaluations += 1
        selection = score
        if self.validation_data is not None:
            selection = self._score_weights(weights, self.validation_data)
            self.validation_evaluations += 1
        self.best_score, self.best_train_score = selection, score
        self.best_weights = weights.detach().clone()

    def _budget_spent(self, max_evaluations, max_time, target_score, start) -> str:
        if self._stop_requested:
            return "stopped by a callback"
        if target_score is not None and self.best_score >= target_score:
            return f"target score {target_score} reached"
        if max_time is not None and time.perf_counter() - start >= max_time:
            return f"max_time {max_time}s reached"
        if max_evaluations is not None:
            if self.evaluations + self._next_step_cost() > max_evaluations:
                return f"max_evaluations {max_evaluations} reached"
        return ""

    def _next_step_cost(self) -> int:
        if self.controller.phase == "gradient":
            return self.gradient_config.samples + 1
        state = self._state
        tracking = 0 if self.episode_length is None else 1
        if self.episode_length is None and state is not None and state.generation == 0:
            return int((~state.evaluated).sum()) + tracking
        return self.population_size - (self.genetic_config.elite if self.episode_length is None
                                       else 0) + tracking

    def _start_phase(self, phase: str, reason: str = "") -> Any:
        if phase == "gradient":
            return self._phases["gradient"].init()
        current = self.flat.vector(self.model)
        extra = None
        if not torch.equal(current, self.best_weights):
            extra = self.best_weights.unsqueeze(0)
        return self._phases["genetic"].init(current, extra)

    def _step(self, wall_time: float) -> dict:
        phase = self.controller.phase
        episode = self._episode()
        chosen_before = self.evaluator.choice is not None
        self._state, metrics = self._phases[phase].step(
            self._state, episode, **({} if phase == "gradient"
                                     else {"fixed_data": self.episode_length is None})
        )
        self.evaluations += metrics.pop("evaluations")
        self.nonfinite += metrics.get("nonfinite", 0)

        # The phase's candidate and its training score
        if phase == "gradient":
            candidate = self.flat.vector(self.model)
            score = self._score_model(self.model, self.data)
            self.evaluations += 1
        else:
            candidate, score = self._phases["genetic"].best(self._state)
            if self.episode_length is not None:
                score = self._score_weights(candidate, self.data)
                self.evaluations += 1

        # Choose what to keep: validation score when given, else training score
        val_score = None
        selection = score
        if self.validation_data is not None:
            val_score = self._score_weights(candidate, self.validation_data)
            self.validation_evaluations += 1
            selection = val_score
        if selection > self.best_score or (
            selection == self.best_score and score > self.best_train_score
        ):
            self.best_score, self.best_train_score = selection, score
            self.best_weights = candidate.detach().clone()

        row = {
            "phase": phase,
            "step": len(self.history),
            "phase_step": self.controller.phase_checks,
            "evaluations": self.evaluations,
            "wall_time": wall_time,
            "score": score,
            "val_score": val_score,
            "selection_score": selection,
            "best_score": self.best_score,
            "best_train_score": self.best_train_score,
            "nonfinite_total": self.nonfinite,
            **metrics,
        }
        if not chosen_before and self.evaluator.choice is not None:
            row["backend"] = self.evaluator.choice["method"]  # auto chose during this step
        self.history.append(row)
        return row

    def _switch(self, reason: str, callbacks) -> None:
        from_phase, to_phase = self.controller.switch()
        # Hand-off: genetic -> gradient loads the phase's best individual into the model
        if from_phase == "genetic":
            state = self._state
            if self.episode_length is None and len(state.hall_of_fame):
                weights = state.hall_of_fame[0].weights
            else:
                weights = self._phases["genetic"].best(state)[0]
            self.flat.load(self.model, weights)
        self._state = self._start_phase(to_phase, reason)
        switch = {
            "evaluations": self.evaluations,
            "step": len(self.history),
            "from_phase": from_phase,
            "to_phase": to_phase,
            "reason": reason,
        }
        self.switches.append(switch)
        log.info("switch %s -> %s at %d evaluations: %s", from_phase, to_phase,
                 self.evaluations, reason)
        dispatch(callbacks, "on_switch", self, switch)

    def _result(self, stop_reason: str, wall_time: float) -> FitResult:
        return FitResult(
            best_score=self.best_score,
            best_train_score=self.best_train_score,
            best_state_dict={k: v.detach().clone() for k, v in self.model.state_dict().items()},
            evaluations=self.evaluations,
            validation_evaluations=self.validation_evaluations,
            wall_time=wall_time,
            history=list(self.history),
            switches=list(self.switches),
            stop_reason=stop_reason,
            nonfinite=self.nonfinite,
        )
