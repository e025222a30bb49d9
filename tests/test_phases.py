"""Phases are plug-ins: a user-written phase through fit, budgets, switches and resume; the
phases= argument; the built-in SNES phase in and out of the cycle; no phase named in the
optimiser or the controller."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import hit_rate, load_example, mlp, strip

import hybridopt as ho

ROOT = Path(__file__).resolve().parents[1]
RandomSearch = load_example("custom_phase").RandomSearch


def hybrid(bandit, *, samples=8, random_steps=3, gradient_steps=4, **kw):
    return ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, seed=0,
        phases=("gradient", RandomSearch(samples=samples, sigma=0.1, max_steps=random_steps)),
        gradient=ho.GradientConfig(max_steps=gradient_steps), **kw,
    )


# -- a user-defined phase through fit -----------------------------------------------------------


def test_a_user_phase_runs_through_fit_with_budgets_switches_and_history(bandit):
    opt = hybrid(bandit)
    start = opt.evaluate()
    result = opt.fit(max_evaluations=300, progress=False)

    # the budget holds: no step started that would have gone past it
    assert result.stop_reason == "max_evaluations 300 reached"
    assert result.evaluations <= 300
    next_cost = {"gradient": 16 + 1, "random": 8 + 1}[opt.controller.name]
    assert result.evaluations + next_cost + 1 > 300

    # switches to and from it, with its name and its cap in the reason
    pairs = [(s["from_phase"], s["to_phase"]) for s in result.switches]
    assert ("gradient", "random") in pairs and ("random", "gradient") in pairs
    assert all(s["reason"] == "budget: phase used its 3 steps"
               for s in result.switches if s["from_phase"] == "random")

    # history rows carry its name and its own metrics
    rows = [r for r in result.history if r["phase"] == "random"]
    assert rows and all("moved" in r and "sample_score_max" in r for r in rows)
    assert [r["phase_step"] for r in rows[:3]] == [0, 1, 2]  # checks before the step
    # on fixed data its candidate's score is a training score: a step costs K + 1, no re-score
    spent = {r["step"]: r["evaluations"] - result.history[r["step"] - 1]["evaluations"]
             for r in rows}
    assert set(spent.values()) == {9}
    # the centre only moves to a better (or equal) sample: its score never falls in a visit
    for a, b in zip(rows, rows[1:]):
        if b["phase_step"] > 0:
            assert b["score"] >= a["score"]

    best = [r["best_score"] for r in result.history]
    assert best == sorted(best) and result.best_score >= start
    assert opt.evaluate() == pytest.approx(result.best_score)


def test_a_user_phase_on_random_episodes_has_its_candidate_rescored(bandit):
    opt = hybrid(bandit, episode_length=64)
    result = opt.fit(max_evaluations=250, progress=False)
    rows = [r for r in result.history if r["phase"] == "random"]
    assert rows
    # the candidate's score on one episode is not a training score: the optimiser re-scores it
    for r in rows:
        assert r["evaluations"] - result.history[r["step"] - 1]["evaluations"] == 10


def test_a_phase_without_patience_or_max_checks_gets_the_defaults(bandit):
    class Bare(RandomSearch):
        pass

    phase = Bare(samples=4)
    del phase.patience, phase.max_checks  # only the protocol's methods, name and unit
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, seed=0, phases=("gradient", phase),
                             stall=ho.StallConfig(patience=2, min_steps=1))
    result = opt.fit(max_evaluations=200, progress=False)
    assert any(r["phase"] == "random" for r in result.history)
    assert any(s["from_phase"] == "random" and s["reason"].startswith("plateau")
               and s["reason"].endswith("for 2 steps") for s in result.switches)


# -- checkpoint and resume ----------------------------------------------------------------------


@pytest.mark.parametrize("stop_in", ["random", "gradient"])
def test_a_user_phase_resumes_bit_exact(tmp_path, bandit, stop_in):
    def make(folder):
        # one backend named: "auto" picks by timing, and same result needs the same backend
        return hybrid(bandit, episode_length=64, checkpoint_dir=folder, checkpoint_every=2,
                      backend="vmap")

    full = make(tmp_path / "full").fit(max_evaluations=400, progress=False)
    assert {r["phase"] for r in full.history} == {"gradient", "random"}

    class StopInside(ho.Callback):
        """Stops in the middle of a visit of ``stop_in`` (its state goes into the checkpoint)."""

        def on_step(self, opt, row):
            if row["phase"] == stop_in and row["phase_step"] == 2 and row["step"] > 5:
                opt.request_stop()

    part = make(tmp_path / "b").fit(max_evaluations=400, callbacks=[StopInside()],
                                    progress=False)
    assert part.stop_reason == "stopped by a callback"
    assert part.history[-1]["phase"] == stop_in and len(part.history) < len(full.history)

    resumed = make(tmp_path / "b").fit(max_evaluations=400, progress=False, resume=True)
    assert strip(resumed.history) == strip(full.history)
    assert resumed.switches == full.switches
    assert resumed.evaluations == full.evaluations and resumed.best_score == full.best_score
    for key in full.best_state_dict:
        assert torch.equal(resumed.best_state_dict[key], full.best_state_dict[key]), key


# -- the phases= argument -----------------------------------------------------------------------


class Counting:
    """A score_fn that counts its calls: nothing may run before phases= is checked."""

    def __init__(self):
        self.calls = 0

    def __call__(self, actions, data):
        self.calls += 1
        return (actions == data[1]).float().mean()


class Lacking:
    name, unit = "half", "step"

    def step(self, state, episode):
        return state, {"evaluations": 0}


class BadUnit(RandomSearch):
    unit = "epoch"


class Nameless(RandomSearch):
    name = ""


@pytest.mark.parametrize(
    "phases, error, match",
    [
        (("gradient", "annealing"), ValueError,
         r"phases: unknown phase 'annealing'; built-in phases are \('gradient', 'genetic', 'es'\)"),
        (("gradient", "gradient"), ValueError, "phases with distinct names"),
        ((RandomSearch(), RandomSearch()), ValueError, "phases with distinct names"),
        (("gradient", Lacking()), TypeError,
         r"phases: .*Lacking.* is not a phase: it lacks bind, init, candidate, cost, handoff, "
         r"state_dict, load_state_dict \(see hybridopt.phases.base.Phase\)"),
        (("gradient", object()), TypeError, "it lacks name, unit, bind, init, step"),
        ((BadUnit(),), ValueError, "phase 'random' has unit 'epoch'; expected 'step' or"),
        ((Nameless(),), TypeError, "a phase's name must be a non-empty str"),
        ((), ValueError, "phases must be a non-empty sequence"),
        (5, TypeError, "phases must be a tuple of phase names"),
    ],
)
def test_bad_phases_fail_at_the_door(bandit, phases, error, match):
    score = Counting()
    with pytest.raises(error, match=match):
        ho.HybridOptimizer(mlp(), score, data=bandit, phases=phases)
    assert score.calls == 0


def test_a_single_phase_object_is_accepted_without_a_tuple(bandit):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=RandomSearch(samples=4))
    result = opt.fit(max_evaluations=60, progress=False)
    assert {r["phase"] for r in result.history} == {"random"} and not result.switches


# -- the SNES phase, alone and in a three-phase cycle -------------------------------------------


def test_es_alone_runs_and_improves(bandit):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("es",), seed=0)
    start = opt.evaluate()
    result = opt.fit(max_evaluations=800, progress=False)
    assert {r["phase"] for r in result.history} == {"es"} and not result.switches
    assert result.evaluations <= 800 and result.best_score > start


def test_gradient_es_genetic_cycle_runs_in_order(bandit):
    opt = ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, seed=0, population_size=8,
        phases=("gradient", "es", "genetic"),
        gradient=ho.GradientConfig(max_steps=3), es=ho.ESConfig(max_generations=3),
        genetic=ho.GeneticConfig(max_generations=2),
    )
    result = opt.fit(max_evaluations=600, progress=False)
    pairs = [(s["from_phase"], s["to_phase"]) for s in result.switches]
    cycle = [("gradient", "es"), ("es", "genetic"), ("genetic", "gradient")]
    assert len(pairs) >= 4 and pairs == (cycle * len(pairs))[: len(pairs)]
    assert result.evaluations <= 600
    best = [r["best_score"] for r in result.history]
    assert best == sorted(best)


# -- the optimiser and the controller name no phase ---------------------------------------------


def _allowed_lines(path: Path) -> set[int]:
    """Line numbers of docstrings and of default values of function arguments."""
    tree = ast.parse(path.read_text())
    lines: set[int] = set()

    def cover(node):
        lines.update(range(node.lineno, node.end_lineno + 1))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant
        ) and isinstance(body[0].value.value, str):
            cover(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if default is not None:
                    cover(default)
    return lines


def test_optimizer_and_controller_name_no_phase_outside_defaults_and_docstrings():
    files = ["hybridopt/optimizer.py", "hybridopt/controller.py"]
    found = subprocess.run(
        ["git", "grep", "-n", '"gradient"\\|"genetic"', "--", *files],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert found.returncode in (0, 1), found.stderr  # 1: no match at all
    offending = []
    for hit in found.stdout.splitlines():
        name, line, text = hit.split(":", 2)
        if int(line) not in _allowed_lines(ROOT / name):
            offending.append(f"{name}:{line}: {text.strip()}")
    assert not offending, "phase names outside defaults and docstrings:\n" + "\n".join(offending)
