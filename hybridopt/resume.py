"""What a checkpoint of a run holds, and putting a run back from one (exact resume).

:mod:`hybridopt.checkpoint` writes and reads the files; this module decides their content: the
model, the running phase's state (through the phase protocol, so any phase resumes), the
paused phases' states, the controller, the generator, the counters, the selection, the history.
Everything is tensors and plain data, loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from typing import Any

from hybridopt.checkpoint import latest_checkpoint, load_checkpoint

log = logging.getLogger("hybridopt.optimizer")


def identity(opt: Any) -> dict:
    """What a checkpoint must match to be resumed by ``opt``."""
    return {
        "layout": [[n, list(sh)] for n, sh in zip(opt.flat.names, opt.flat.shapes)],
        "phases": [p.name for p in opt.phase_objects],
        "population_size": opt.population_size,
        "episode_length": opt.episode_length,
        "seed": opt.seed,
        "data_length": opt.n,
        "selection": opt.selection.rule,
        "precision": getattr(opt.evaluator, "precision", "float32"),
    }


def payload(opt: Any) -> dict:
    """The whole run now, as tensors and plain data."""
    phase = opt.controller.phase
    return {
        **identity(opt),
        "version": __import__("hybridopt").__version__,
        "model": {k: v.detach().cpu() for k, v in opt.model.state_dict().items()},
        "phase_state": None if opt._state is None else phase.state_dict(opt._state),
        "controller": opt.controller.state_dict(),
        "generator": opt.generator.get_state(),
        "counters": {"evaluations": opt.evaluations, "nonfinite": opt.nonfinite,
                     "call_start": opt._call_start},
        "selection_state": opt.selection.state_dict(),
        "history": opt.history,
        "switches": opt.switches,
        "events": opt.events,
        "scorer_mode": opt.scorer.mode,
        "evaluator": {"choice": opt.evaluator.choice, "chunk_size": opt.evaluator.chunk_size},
        "archive": None if opt.pareto_archive is None else opt.pareto_archive.state_dict(),
    }


def restore(opt: Any, saved: dict) -> None:
    """Put ``opt`` back to the run ``saved`` holds (its identity already checked)."""
    opt.model.load_state_dict(saved["model"])
    opt.controller.load_state_dict(saved["controller"])
    opt.generator.set_state(saved["generator"])
    counters = saved["counters"]
    opt.evaluations, opt.nonfinite = counters["evaluations"], counters["nonfinite"]
    opt._call_start = counters["call_start"]
    opt.selection.load_state_dict(saved["selection_state"], opt.device)
    opt.history = list(saved["history"])
    opt.switches = list(saved["switches"])
    opt.events = list(saved["events"])
    opt.scorer.mode = saved["scorer_mode"]
    opt.evaluator.choice = saved["evaluator"]["choice"]
    opt.evaluator.chunk_size = saved["evaluator"]["chunk_size"]
    if saved["archive"] is not None:
        opt.pareto_archive.load_state_dict(saved["archive"], opt.device)
    state = saved["phase_state"]
    opt._state = None if state is None else opt.controller.phase.load_state_dict(state)
    opt._live = None


def resume_latest(opt: Any) -> None:
    """Put ``opt`` back to the latest checkpoint in its ``checkpoint_dir`` (a warning and a
    fresh start when there is none yet)."""
    path = latest_checkpoint(opt.checkpoint_dir)
    if path is None:
        log.warning("resume=True but %s holds no checkpoint: starting fresh", opt.checkpoint_dir)
        return
    restore(opt, load_checkpoint(path, identity(opt)))
    log.info("resumed from %s at step %d", path, len(opt.history))
