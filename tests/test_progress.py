"""Progress: a bar on a terminal, plain lines in a file, log records never glued to the bar.

Real tqdm and real logging throughout; time comes from an injected fake clock.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import textwrap

import pytest

from hybridopt.progress import Progress

SWITCH = "switch gradient -> genetic at 340 evaluations: stalled for 15 generations"
STAMPED = re.compile(r"^\[\s*(\d+\.\d) s\] (.*)$")


class FakeTTY(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Clock:
    """A fake clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def row(i: int, valid: bool = True) -> dict:
    """History row ``i``: 17 evaluations and 0.25 s per step."""
    return {
        "phase": "gradient", "step": i, "evaluations": 17 * (i + 1),
        "wall_time": 0.25 * i, "score": 1.0 + i, "val_score": 0.5 * i if valid else None,
        "best_score": 0.5 * i if valid else 1.0 + i, "best_train_score": 1.0 + i,
    }


def screen(text: str) -> list[str]:
    """The lines a terminal shows after ``text``: \\r returns to column 0, \\n ends a line."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    lines: list[str] = []
    line: list[str] = []
    col = 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            line[col:col + 1] = [ch]
            col += 1
    if line:
        lines.append("".join(line).rstrip())
    return lines


@pytest.fixture
def loggers():
    """The hybridopt and root loggers, put back as they were afterwards."""
    ours, root = logging.getLogger("hybridopt"), logging.getLogger()
    saved = [(lg, lg.level, list(lg.handlers)) for lg in (ours, root)]
    ours.setLevel(logging.INFO)
    yield ours, root
    for lg, level, handlers in saved:
        lg.setLevel(level)
        lg.handlers = handlers


def console(stream) -> logging.StreamHandler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


def test_off_a_terminal_one_plain_line_per_interval_plus_events_and_a_final_one():
    stream, clock = io.StringIO(), Clock()
    with Progress(True, 1000, stream=stream, interval=1.0, clock=clock) as progress:
        for i in range(42):  # 10.5 s of fake time
            clock.now = 0.25 * (i + 1)
            progress.update(row(i))
            if i == 21:
                progress.event(SWITCH)
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    stamped = [STAMPED.match(line) for line in text.splitlines()]
    assert all(stamped)
    times = [float(m.group(1)) for m in stamped]
    assert times == [1, 2, 3, 4, 5, 5.5, 6, 7, 8, 9, 10, 10.5]  # the event, then the final line
    bodies = [m.group(2) for m in stamped]
    assert bodies[5] == SWITCH
    first = bodies[0].split()
    assert first[:4] == ["gradient", "step", "3", "evaluations"]
    assert "68/1,000 (7%)  68 evals/s  train 4  valid 1.5  best(valid) 1.5" in bodies[0]
    assert "714/1,000 (71%)" in bodies[-1] and "step 41" in bodies[-1]
    assert all(body.count("/s") == 1 for i, body in enumerate(bodies) if i != 5)


def test_plain_lines_without_validation_data_label_the_training_score():
    stream, clock = io.StringIO(), Clock()
    progress = Progress(True, None, stream=stream, interval=1.0, clock=clock)
    clock.now = 1.0
    progress.update(row(3, valid=False))
    progress.close()
    progress.close()  # a second close writes nothing more
    (line,) = stream.getvalue().splitlines()  # the final line is not a copy of the one before
    assert line.endswith("evaluations 68  68 evals/s  train 4  best(train) 4")
    assert "valid" not in line


@pytest.mark.parametrize("where", ["hybridopt", "root"])
@pytest.mark.parametrize("stream_type", [io.StringIO, FakeTTY])
def test_log_records_are_on_lines_of_their_own(loggers, where, stream_type):
    stream = stream_type()
    ours, root = loggers
    handler = console(stream)
    (ours if where == "hybridopt" else root).addHandler(handler)
    clock = Clock()
    with Progress(True, 1000, stream=stream, interval=1.0, clock=clock) as progress:
        for i in range(12):
            clock.now = 0.25 * (i + 1)
            progress.update(row(i))
            logging.getLogger("hybridopt.optimizer").warning("record %d", i)
        progress.event(SWITCH)
    shown = screen(stream.getvalue())
    for i in range(12):
        assert f"WARNING hybridopt.optimizer: record {i}" in shown
    assert any(line.endswith(f"s] {SWITCH}") and line.startswith("[") for line in shown)
    # the handler is back in place, unchanged
    assert (ours if where == "hybridopt" else root).handlers[-1] is handler
    if stream_type is io.StringIO:
        assert "\r" not in stream.getvalue()


def test_handlers_added_while_the_bar_is_open_are_kept(loggers):
    ours, _ = loggers
    stream = FakeTTY()
    first, later = console(stream), console(io.StringIO())
    ours.addHandler(first)
    with Progress(True, 10, stream=stream):
        assert first not in ours.handlers  # swapped for one that writes through tqdm
        ours.addHandler(later)
    assert ours.handlers[-2:] == [first, later]


def test_disabled_writes_nothing_and_leaves_logging_alone(loggers):
    ours, _ = loggers
    for stream in (io.StringIO(), FakeTTY()):
        handler = console(io.StringIO())
        ours.addHandler(handler)
        with Progress(False, 1000, stream=stream, interval=0.0) as progress:
            assert ours.handlers[-1] is handler
            progress.update(row(0))
            progress.event(SWITCH)
        assert stream.getvalue() == ""


@pytest.mark.parametrize("valid", [True, False])
def test_on_a_terminal_the_bar_shows_one_rate_and_labelled_scores(valid):
    stream = FakeTTY()
    with Progress(True, 1000, stream=stream) as progress:
        for i in range(5):
            progress.update(row(i, valid))
    final = screen(stream.getvalue())[-1]  # the bar stays on its final state
    assert "85/1,000" in final
    assert final.count("/s") == 1 and "evals/s" in final
    assert "evals_s" not in final
    if valid:
        assert "phase=gradient train=5 valid=2 best(valid)=2" in final
    else:
        assert "phase=gradient train=5 best(train)=5" in final and "valid" not in final


def test_the_best_label_names_what_the_best_score_is():
    stream = io.StringIO()
    with Progress(True, 1000, stream=stream, interval=0.0, best="union") as progress:
        progress.update(row(3, True))
    assert "train 4  valid 1.5  best(union) 1.5" in stream.getvalue()


def test_the_stream_defaults_to_stderr_at_construction(capsys):
    progress = Progress(True, None)
    progress.event(SWITCH)
    progress.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.rstrip("\n").endswith(SWITCH)


FIT = textwrap.dedent("""
    import logging
    import torch
    from torch import nn
    import hybridopt as ho

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    best = (x @ torch.randn(4, 3, generator=g)).argmax(1)
    score = ho.batched(lambda actions, data: (actions == data[1]).float().mean(-1))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = ho.HybridOptimizer(
        model, score, (x, best), validation_data=(x[:48], best[:48]), population_size=8,
        phases=("gradient", "genetic"), gradient=ho.GradientConfig(samples=4, max_steps=3),
        genetic=ho.GeneticConfig(max_generations=2), device="cpu",
    )
    opt.fit(max_evaluations=200)
""")


def test_a_real_fit_with_stderr_to_a_file_writes_short_plain_lines(tmp_path):
    err = tmp_path / "stderr.txt"
    with err.open("w") as f:
        done = subprocess.run([sys.executable, "-c", FIT], stderr=f, timeout=300)
    assert done.returncode == 0, err.read_text()
    data = err.read_bytes()
    assert b"\r" not in data and data.endswith(b"\n")
    lines = data.decode().splitlines()
    # every line is either a log record or a stamped progress line, never both glued together;
    # progress lines are short (log records say what they need, e.g. outputs='auto''s evidence)
    log_record = re.compile(r"^(DEBUG|INFO|WARNING|ERROR) hybridopt[\w.]*: ")
    for line in lines:
        assert bool(log_record.match(line)) != bool(STAMPED.match(line)), line
        assert not re.search(r"\[\s*\d+\.\d s\]", line[1:]), line
    progress = [line for line in lines if STAMPED.match(line)]
    assert all(len(line) < 200 for line in progress), max(progress, key=len)
    assert any(line.startswith("INFO hybridopt.optimizer: switch gradient -> genetic")
               for line in lines)  # the log record, on its own line
    assert any(STAMPED.match(line) and "] switch gradient -> genetic" in line for line in lines)
    final = STAMPED.match(lines[-1])
    # the default selection with validation data is "robust": the label says so
    assert final and "evaluations" in final.group(2) and "best(robust)" in final.group(2)
