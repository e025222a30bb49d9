"""Callbacks: hooks a user can attach to :meth:`HybridOptimizer.fit`.

A callback is any object with some of these methods; missing ones are skipped. Each receives the
optimiser first, so it can read ``opt.model`` or ask the run to end with ``opt.request_stop()``.
"""

from __future__ import annotations

from typing import Any


class Callback:
    """Base class with no-op hooks; subclass and override what you need."""

    def on_step(self, opt: Any, row: dict) -> None:
        """After each gradient step, with its history row."""

    def on_generation(self, opt: Any, row: dict) -> None:
        """After each generation of the genetic phase, with its history row."""

    def on_switch(self, opt: Any, switch: dict) -> None:
        """After a phase switch, with the switch record."""

    def on_end(self, opt: Any, result: Any) -> None:
        """When the run ends, with its :class:`~hybridopt.optimizer.FitResult`."""


EVENTS = ("on_step", "on_generation", "on_switch", "on_end")


def dispatch(callbacks, event: str, opt: Any, payload: Any) -> None:
    """Call ``event`` on every callback that has it."""
    for cb in callbacks:
        hook = getattr(cb, event, None)
        if hook is not None:
            hook(opt, payload)


def validate_callbacks(callbacks) -> tuple:
    """Check that every callback has at least one known hook."""
    callbacks = tuple(callbacks or ())
    for cb in callbacks:
        if not any(callable(getattr(cb, e, None)) for e in EVENTS):
            raise TypeError(
                f"callbacks must be objects with one of the methods {EVENTS}; "
                f"got {type(cb).__name__}."
            )
    return callbacks
