"""The run loop of :meth:`HybridOptimizer.fit`: steps, candidates, switches, budgets, stops.

It talks to phases only through :class:`hybridopt.phases.base.Phase`, so every phase gets the
same budgets, best-so-far tracking, stall detection, history, callbacks and checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from hybridopt.callbacks import dispatch
from hybridopt.phases.base import PhaseContext
from hybridopt.population.size import resolve_population_size
from hybridopt.progress import Progress
from hybridopt.result import FitResult

log = logging.getLogger("hybridopt.optimizer")
IDLE_LIMIT = 10  # steps in a row without a single evaluation before a run ends as converged


@dataclass
class Budget:
    """The limits of one ``fit`` call, counted from where the call started."""

    max_evaluations: int | None
    max_time: float | None
    target_score: float | None
    patience: int | None
    start_evaluations: int
    start_time: float

    def spent(self, opt: Any) -> str:
        """Why the run must stop before the next step, or ""."""
        if opt._stop_requested:
            return "stopped by a callback"
        if self.target_score is not None and opt.selection.best_score >= self.target_score:
            return f"target score {self.target_score} reached"
        if self.max_time is not None and time.perf_counter() - self.start_time >= self.max_time:
            return f"max_time {self.max_time}s reached"
        if self.patience is not None and opt.selection.since_best >= self.patience:
            return (f"early stop: {opt.selection.since_best} evaluations without a new best "
                    f"selection score (patience {self.patience})")
        if self.max_evaluations is not None:
            # The step's own cost plus one evaluation for scoring its candidate
            cost = opt.controller.phase.cost(opt._state) + 1
            if opt.evaluations - self.start_evaluations + cost > self.max_evaluations:
                return f"max_evaluations {self.max_evaluations} reached"
        return ""


@contextlib.contextmanager
def threads(n: int | None):
    """torch's thread count set to ``n`` (None: unchanged) for the block, then put back."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bind(opt: Any, max_evaluations: int | None) -> None:
    """At the first ``fit``: resolve the population size from its budget and hand every phase
    its parts (:class:`PhaseContext`)."""
    if opt._bound:
        return
    opt.population_size = resolve_population_size(opt.population_size, opt.flat.dim,
                                                  max_evaluations)
    context = PhaseContext(
        model=opt.model, flat=opt.flat, scorer=opt.scorer, evaluate=opt._evaluate_population,
        generator=opt.generator, device=opt.device, fixed_data=opt.episode_length is None,
        population_size=opt.population_size, max_evaluations=max_evaluations,
        outputs=opt.outputs,
        front=lambda: None if opt.pareto_archive is None else opt.pareto_archive.weights,
    )
    for phase in opt.phase_objects:
        phase.bind(context)
    opt._bound = True


def score_start(opt: Any) -> None:
    """The model's own weights are the first candidate: a run never ends below them."""
    weights = opt.flat.vector(opt.model)
    score = opt._score_weights(weights, opt.data, train=True)
    opt.evaluations += 1
    opt.selection.offer(weights, score)


def run(opt: Any, budget: Budget, callbacks: tuple, progress: bool) -> FitResult:
    """Step the running phase until ``budget`` says stop; returns the call's result."""
    wall_before = opt.history[-1]["wall_time"] if opt.history else 0.0
    total = budget.max_evaluations
    bar = Progress(progress, None if total is None else budget.start_evaluations + total,
                   initial=budget.start_evaluations, best=opt.selection.label)
    stop_reason, idle = "", 0
    try:
        if opt._live is not None:  # fitting again: the model goes back to where it was
            opt.flat.load(opt.model, opt._live)
            opt._live = None
        if opt._state is None:
            if not opt.history:
                score_start(opt)
            best = opt.selection.best_weights
            opt.evaluation.visit(len(opt.switches))
            opt._state = opt.controller.phase.init(best, best)
        while True:
            stop_reason = budget.spent(opt)
            if stop_reason:
                break
            before = opt.evaluations
            row = step(opt, wall_before + time.perf_counter() - budget.start_time)
            # A converged population breeds only copies, which cost nothing to score:
            # without new individuals nothing can change, so end rather than spin
            idle = idle + 1 if opt.evaluations == before else 0
            if idle >= IDLE_LIMIT and (len(opt.phases) == 1 or idle >= 5 * IDLE_LIMIT):
                stop_reason = f"converged: {idle} steps in a row produced no new candidate"
                break
            unit = opt.controller.phase.unit
            dispatch(callbacks, "on_step" if unit == "step" else "on_generation", opt, row)
            bar.update(row)
            if row.get("event"):
                opt.events.append({"evaluations": row["evaluations"], "step": row["step"],
                                   "phase": row["phase"], "event": row["event"]})
                bar.event(f"{row['phase']}: {row['event']}")
            monitored = (row["selection_score"] if opt.stall_config.monitor == "selection"
                         else row["score"])
            reason = opt.controller.check(
                monitored, evaluations=opt.evaluations - before, flat=bool(row.get("flat")),
                budget=budget.max_evaluations,
            )
            if reason:
                s = switch(opt, reason, callbacks)
                bar.event(f"switch {s['from_phase']} -> {s['to_phase']} at "
                          f"{s['evaluations']} evaluations: {s['reason']}")
            if opt.checkpoint_dir is not None and (
                reason or len(opt.history) % opt.checkpoint_every == 0
            ):
                opt.save_checkpoint()
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        log.warning("interrupted: returning the best weights found so far")
    finally:
        bar.close()
    if opt.checkpoint_dir is not None and stop_reason != "interrupted":
        # The final checkpoint still holds where this call started: resuming from it (after a
        # callback's stop, or a kill before the caller saw the result) spends what is left of
        # this call's budget, not a new one
        opt.save_checkpoint()
    opt._call_start = None
    return result(opt, stop_reason, wall_before + time.perf_counter() - budget.start_time)


def step(opt: Any, wall_time: float) -> dict:
    """One step of the running phase; its candidate offered to the selection; the history row."""
    phase = opt.controller.phase
    episode = opt.evaluation.episode()
    chosen_before = opt.evaluator.choice is not None
    opt._state, metrics = phase.step(opt._state, episode)
    opt.evaluations += metrics.pop("evaluations")
    opt.nonfinite += metrics.get("nonfinite", 0)

    # The phase's candidate and its training score (scored here when the phase has none)
    weights, score = phase.candidate(opt._state)
    if score is None or opt.scorer.n_objectives is not None:
        score = opt._score_weights(weights, opt.data, train=True)
        opt.evaluations += 1
    spent = opt.evaluations - (opt.history[-1]["evaluations"] if opt.history else 0)
    judged = opt.selection.offer(weights, score, spent)
    row = {
        "phase": phase.name,
        "step": len(opt.history),
        "phase_step": opt.controller.phase_checks,
        "evaluations": opt.evaluations,
        "wall_time": wall_time,
        "score": score,
        **judged,
        "best_score": opt.selection.best_score,
        "best_train_score": opt.selection.best_train_score,
        "nonfinite_total": opt.nonfinite,
        **metrics,
    }
    if not chosen_before and opt.evaluator.choice is not None:
        row["backend"] = opt.evaluator.choice["method"]  # auto chose during this step
    opt.history.append(row)
    return row


def switch(opt: Any, reason: str, callbacks: tuple) -> dict:
    """End the running phase and start the next one from the best (or the handed-off)
    weights; returns the switch record."""
    handoff = opt.controller.phase.handoff(opt._state)
    from_phase, to_phase = opt.controller.switch()
    best = opt.selection.best_weights
    start = best if opt.stall_config.start_from == "best" else handoff
    opt.evaluation.visit(len(opt.switches) + 1)
    opt._state = opt.controller.phase.init(start, best)
    record = {
        "evaluations": opt.evaluations,
        "step": len(opt.history),
        "from_phase": from_phase,
        "to_phase": to_phase,
        "reason": reason,
    }
    opt.switches.append(record)
    log.info("switch %s -> %s at %d evaluations: %s", from_phase, to_phase,
             opt.evaluations, reason)
    dispatch(callbacks, "on_switch", opt, record)
    return record


def result(opt: Any, stop_reason: str, wall_time: float) -> FitResult:
    """The run so far as a :class:`FitResult` (the model then holds the best weights; where
    the running phase had it is kept for the next ``fit``)."""
    opt._live = opt.flat.vector(opt.model).detach().clone()
    opt.flat.load(opt.model, opt.selection.best_weights)
    front = None
    if opt.pareto_archive is not None:
        front = opt.front()
        if opt.select is not None and front:
            opt.load_front(opt.select(front))
    return FitResult(
        best_score=opt.selection.best_score,
        best_train_score=opt.selection.best_train_score,
        best_state_dict={k: v.detach().clone() for k, v in opt.model.state_dict().items()},
        evaluations=opt.evaluations,
        validation_evaluations=opt.selection.evaluations,
        wall_time=wall_time,
        history=list(opt.history),
        switches=list(opt.switches),
        events=list(opt.events),
        stop_reason=stop_reason,
        nonfinite=opt.nonfinite,
        threads=opt.threads_used,
        pareto_front=front,
        objective_names=None if front is None else list(opt.scorer.names),
    )
