"""What a running fit shows: a tqdm bar on a terminal, plain timestamped lines elsewhere.

On a terminal the bar counts evaluations; log records of the ``hybridopt`` loggers and of the
root logger that would land on the same screen are written through ``tqdm.write`` while the bar
is open, so they are never glued to it. Off a terminal (a file, a pipe) nothing is redrawn: one
newline-terminated line every ``interval`` seconds, one per event and a final one.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed file
        return False


def _num(value: float | None, digits: int = 4) -> str:
    """A score or rate, short: 12.35, 0.0123, 1,234."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


class _BarSafeHandler(logging.Handler):
    """Does what ``inner`` would do, but writes through ``tqdm.write`` (clearing the bar)."""

    def __init__(self, inner: logging.StreamHandler) -> None:
        super().__init__(inner.level)
        self.inner = inner

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.inner.filter(record):
            return False
        try:
            tqdm.write(self.inner.format(record), file=self.inner.stream,
                       end=self.inner.terminator)
            self.inner.flush()
        except Exception:  # as logging does: report, never raise into the run
            self.inner.handleError(record)
        return True


class Progress:
    """What a running fit shows: a bar on a terminal, plain lines elsewhere.

    Args:
        enabled: False shows nothing at all.
        total: the evaluation budget (``max_evaluations``), or None when there is none.
        stream: where to write; default ``sys.stderr`` as it is when the object is made.
        interval: seconds between two plain lines off a terminal.
        initial: evaluations already done before this fit (a resumed run), so that the rate
            counts only this fit's work.
        best: what the best score is, for its label ``best(...)``: the selection's
            :attr:`~hybridopt.selection.Selection.label`; None: "valid" on rows with a
            validation score, else "train".
        clock: seconds as a float (default ``time.monotonic``); tests inject a fake one.

    The rate shown (evaluations/s, the only one) is the average since the object was made.
    Use as a context manager, or call :meth:`close` when the run ends.

    Example:
        >>> with Progress(True, 20_000) as progress:
        ...     progress.update(row)                      # after each step or generation
        ...     progress.event("switch gradient -> genetic at 1,234 evaluations: stalled")
    """

    def __init__(self, enabled: bool, total: int | None, *, stream: TextIO | None = None,
                 interval: float = 5.0, initial: int = 0, best: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total, self.interval, self.initial, self._clock = total, interval, initial, clock
        self.best = best
        self._start = clock()
        self._due = self._start + interval
        self._row: dict | None = None  # the latest row, and the one the latest line shows
        self._shown: dict | None = None
        self._saved: list[tuple[logging.Logger | None, list[_BarSafeHandler]]] = []
        self._bar: tqdm | None = None
        self._open = bool(enabled) and self.stream is not None
        if self._open and _isatty(self.stream):
            bar = "{l_bar}{bar}| {n:,}/{total:,} [{elapsed}<{remaining}, " if total else \
                "{n:,} evaluations [{elapsed}, "
            self._bar = tqdm(total=total, initial=initial, file=self.stream, unit=" evals",
                             unit_scale=True, smoothing=0, dynamic_ncols=True, leave=True,
                             bar_format=bar + "{rate_noinv_fmt}{postfix}]", disable=False)
            self._redirect_logging()

    # -- the three calls ---------------------------------------------------------------------

    def update(self, row: dict) -> None:
        """Show a history row (after every step or generation); off a terminal, at most one
        line per ``interval`` seconds."""
        if not self._open:
            return
        self._row = row
        if self._bar is not None:
            self._bar.set_postfix_str(
                " ".join(f"{k}={v}" for k, v in self._scores(row)), refresh=False)
            self._bar.update(row["evaluations"] - self._bar.n)
        elif self._clock() >= self._due:
            self._line(self._status(row))
            self._due, self._shown = self._clock() + self.interval, row

    def event(self, text: str) -> None:
        """Show ``text`` (a switch, a revert, the end) on a line of its own, timestamped."""
        if self._open:
            self._line(text)
            self._shown = None

    def close(self) -> None:
        """End the display: the bar stays on its final state, or a final plain line shows the
        latest row (unless the line just before shows it); log handlers are restored. Safe to
        call twice."""
        if not self._open:
            return
        self._open = False
        try:
            if self._bar is not None:
                self._bar.close()
            elif self._row is not None and self._row is not self._shown:
                self._line(self._status(self._row))
        finally:
            self._restore_logging()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- formatting --------------------------------------------------------------------------

    def _scores(self, row: dict) -> list[tuple[str, str]]:
        valid = row.get("val_score")
        pairs = [("phase", row["phase"]), ("train", _num(row["score"]))]
        if valid is not None:
            pairs.append(("valid", _num(valid)))
        label = self.best or ("train" if valid is None else "valid")
        pairs.append((f"best({label})", _num(row["best_score"])))
        return pairs

    def _status(self, row: dict) -> str:
        evaluations = row["evaluations"]
        done = f"{evaluations:,}"
        if self.total:
            done += f"/{self.total:,} ({100 * evaluations / self.total:.0f}%)"
        elapsed = self._clock() - self._start
        rate = (evaluations - self.initial) / elapsed if elapsed > 0 else None
        scores = "  ".join(f"{k} {v}" for k, v in self._scores(row)[1:])
        return (f"{row['phase']:<8}  step {row['step']}  evaluations {done}  "
                f"{_num(rate, 3)} evals/s  {scores}")

    def _line(self, text: str) -> None:
        line = f"[{self._clock() - self._start:7.1f} s] {text}"
        if self._bar is not None:
            tqdm.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    # -- logging while the bar is open -------------------------------------------------------

    def _same_screen(self, handler: Any) -> bool:
        """True for a console handler whose lines would land on the bar's screen."""
        if not isinstance(handler, logging.StreamHandler) or isinstance(handler, _BarSafeHandler):
            return False
        stream, consoles = handler.stream, (sys.stdout, sys.stderr)
        return stream is self.stream or (stream in consoles and self.stream in consoles)

    def _redirect_logging(self) -> None:
        names = [n for n in list(logging.Logger.manager.loggerDict)
                 if n == "hybridopt" or n.startswith("hybridopt.")]
        for logger in [logging.getLogger(), *map(logging.getLogger, names)]:
            if any(self._same_screen(h) for h in logger.handlers):
                swapped = [_BarSafeHandler(h) if self._same_screen(h) else h
                           for h in logger.handlers]
                self._saved.append((logger, [h for h in swapped if isinstance(h, _BarSafeHandler)]))
                logger.handlers = swapped
        if self._same_screen(logging.lastResort):  # records with no handler at all (WARNING+)
            self._saved.append((None, [_BarSafeHandler(logging.lastResort)]))
            logging.lastResort = self._saved[-1][1][0]

    def _restore_logging(self) -> None:
        for logger, mine in reversed(self._saved):
            if logger is None:
                logging.lastResort = mine[0].inner
            else:  # keep handlers added meanwhile; put back the originals of ours
                logger.handlers = [h.inner if any(h is m for m in mine) else h
                                   for h in logger.handlers]
        self._saved = []
