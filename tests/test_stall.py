"""Stall detection fires exactly when it should; the controller switches and hands off."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import hit_rate, mlp

import hybridopt as ho
from hybridopt.config import StallConfig
from hybridopt.controller import Controller
from hybridopt.phases.genetic import GeneticPhase
from hybridopt.phases.gradient import GradientPhase
from hybridopt.stall import PlateauDetector, budget_cap, improved


def fire_points(scores, **kw):
    detector = PlateauDetector(StallConfig(**kw))
    return [i for i, s in enumerate(scores) if detector.update(s)]


def test_plateau_fires_after_patience_checks_without_improvement():
    # improves at 0..2, then flat: the 3rd flat check (index 5) is the first to fire
    assert fire_points([1, 2, 3, 3, 3, 3, 3], patience=3, min_steps=1) == [5, 6]


def test_improvement_resets_patience():
    assert fire_points([1, 1, 1, 2, 2, 2, 2], patience=3, min_steps=1) == [6]


def test_min_delta_absolute_and_relative():
    small_steps = [1.0, 1.04, 1.08, 1.12, 1.16]
    # 1.12 beats 1.0 by more than 0.1 and resets the count
    assert fire_points(small_steps, patience=2, min_delta=0.1, min_steps=1) == [2]
    assert fire_points(small_steps, patience=2, min_delta=0.01, min_steps=1) == []
    big = [100.0, 100.5, 101.0, 101.5]
    # 1% of 100: 101.0 is not enough (fires), 101.5 is
    assert fire_points(big, patience=2, min_delta=0.01, relative=True, min_steps=1) == [2]


def test_min_steps_delays_the_verdict():
    assert fire_points([5, 5, 5, 5, 5], patience=1, min_steps=4) == [3, 4]


def test_nonfinite_scores_never_count_as_progress():
    assert not improved(math.nan, 1.0, 0.0, False)
    assert not improved(-math.inf, 1.0, 0.0, False)
    assert improved(0.5, -math.inf, 0.0, False)
    assert fire_points([1, math.nan, math.inf, -math.inf], patience=3, min_steps=1) == [3]


def test_budget_cap():
    assert budget_cap(4, 5, "steps") is None
    assert budget_cap(5, 5, "steps") == "budget: phase used its 5 steps"
    assert budget_cap(10**6, None, "steps") is None


def phases(gradient=None, genetic=None):
    """The two built-in phases (unbound: the controller only reads name, unit, patience and
    max_checks)."""
    return [GradientPhase(gradient), GeneticPhase(genetic)]


def test_controller_switches_on_plateau_and_cap():
    ctl = Controller(
        phases(ho.GradientConfig(patience=2), ho.GeneticConfig(max_generations=3)),
        StallConfig(patience=2, min_steps=1),
    )
    reasons = [ctl.check(s) for s in (1.0, 1.0, 1.0)]
    assert reasons[:2] == [None, None]
    # the reason says whose best it means
    assert reasons[2] == (
        "plateau: the gradient phase's best 1 not improved by more than 0 (absolute) for 2 steps"
    )
    assert ctl.switch() == ("gradient", "genetic")
    reasons = [ctl.check(s) for s in (1.0, 2.0, 3.0)]
    assert reasons[2] == "budget: phase used its 3 generations"
    assert ctl.switch() == ("genetic", "gradient")


def test_single_phase_never_switches():
    ctl = Controller([GeneticPhase()], StallConfig(patience=1, min_steps=1))
    assert [ctl.check(1.0) for _ in range(5)] == [None] * 5


def test_forced_stall_switches_and_best_never_goes_backwards(bandit):
    opt = ho.HybridOptimizer(
        mlp(),
        hit_rate,
        data=bandit,
        seed=0,
        phases=("gradient", "genetic"),
        population_size=16,
        stall=StallConfig(patience=2, min_steps=2),
        gradient=ho.GradientConfig(max_steps=6, patience=2),
        genetic=ho.GeneticConfig(max_generations=4),
    )
    result = opt.fit(max_evaluations=1500, progress=False)
    assert len(result.switches) >= 3
    assert {s["from_phase"] for s in result.switches} == {"gradient", "genetic"}
    assert all(s["reason"] for s in result.switches)
    best = [r["best_score"] for r in result.history]
    assert best == sorted(best)
    phases = [r["phase"] for r in result.history]
    assert phases[0] == "gradient" and "genetic" in phases
    # gradient -> genetic keeps the current model as an elite: the first generation's best is
    # at least the last gradient step's score
    for s in result.switches:
        i = s["step"]
        if s["from_phase"] == "gradient" and i < len(result.history):
            assert result.history[i]["score"] >= result.history[i - 1]["score"]
    # opt.model holds the best weights
    assert opt.evaluate() == pytest.approx(result.best_score)


def test_genetic_to_gradient_hand_off_loads_best_individual(bandit):
    opt = ho.HybridOptimizer(
        mlp(),
        hit_rate,
        data=bandit,
        seed=0,
        population_size=16,
        phases=("genetic", "gradient"),
        genetic=ho.GeneticConfig(max_generations=3),
    )
    opt.fit(max_evaluations=16 + 3 * 14, progress=False)
    assert opt.controller.name == "gradient"
    hof_best = opt.switches[0]
    assert hof_best["from_phase"] == "genetic"
    # the model now holds the hall of fame's best (the best of the phase)
    assert opt.evaluate() == pytest.approx(opt.history[-1]["best_train_score"])


def test_budgets_stop_at_the_right_count(bandit):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0)
    result = opt.fit(max_evaluations=100, progress=False)
    # one evaluation of the starting weights, then 17 per step (16 samples + the tracked score)
    assert result.evaluations == 86 and len(result.history) == 5
    assert result.stop_reason.startswith("max_evaluations")
    opt = ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, phases=("genetic",), population_size=20, seed=0
    )
    result = opt.fit(max_evaluations=100, progress=False)
    assert result.evaluations <= 100 and result.evaluations > 100 - 20
    result = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, seed=0).fit(
        target_score=0.0, progress=False
    )
    # the starting weights already reach the target: no step is taken
    assert result.stop_reason.startswith("target score") and len(result.history) == 0
    result = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, seed=0).fit(
        max_time=0.5, progress=False
    )
    assert result.stop_reason.startswith("max_time") and result.wall_time < 5


def test_keyboard_interrupt_returns_best_so_far(bandit):
    class Interrupt(ho.Callback):
        def on_step(self, opt, row):
            if row["step"] == 3:
                raise KeyboardInterrupt

    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0)
    result = opt.fit(max_evaluations=10_000, callbacks=[Interrupt()], progress=False)
    assert result.stop_reason == "interrupted" and len(result.history) == 4
    assert math.isfinite(result.best_score)
    assert opt.evaluate() == pytest.approx(result.best_score)


def test_callbacks_see_every_event(bandit):
    events = []

    class Recorder:
        def on_step(self, opt, row):
            events.append("step")

        def on_generation(self, opt, row):
            events.append("generation")

        def on_switch(self, opt, switch):
            events.append("switch")

        def on_end(self, opt, result):
            events.append("end")

    opt = ho.HybridOptimizer(
        mlp(),
        hit_rate,
        data=bandit,
        seed=0,
        phases=("gradient", "genetic"),
        population_size=8,
        gradient=ho.GradientConfig(max_steps=2),
    )
    opt.fit(max_evaluations=80, callbacks=[Recorder()], progress=False)
    assert events[:3] == ["step", "step", "switch"] and "generation" in events
    assert events[-1] == "end"


def test_validation_data_chooses_the_best(bandit):
    x, best = bandit
    # validation labels disagree with training labels on half the rows
    flipped = best.clone()
    flipped[::2] = (flipped[::2] + 1) % 3
    opt = ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, validation_data=(x, flipped), phases=("gradient",), seed=0,
        selection="validation",
    )
    result = opt.fit(max_evaluations=600, progress=False)
    rows = result.history
    assert all(r["val_score"] is not None for r in rows)
    assert result.best_score == max(r["val_score"] for r in rows)
    assert opt.evaluate((x, flipped)) == pytest.approx(result.best_score)
    assert result.validation_evaluations == len(rows) + 1  # + the starting weights


def test_union_selection_judges_on_train_and_validation_rows(bandit):
    x, best = bandit
    flipped = best.clone()
    flipped[::2] = (flipped[::2] + 1) % 3
    opt = ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, validation_data=(x, flipped), phases=("gradient",), seed=0,
        selection="union",
    )
    result = opt.fit(max_evaluations=600, progress=False)
    rows = result.history
    # hit_rate is a mean over rows: on train + valid (equal lengths) it is the mean of the two
    for r in rows:
        assert r["selection_score"] == pytest.approx((r["score"] + r["val_score"]) / 2)
    assert result.best_score == max(r["selection_score"] for r in rows)
    union = (torch.cat([x, x]), torch.cat([best, flipped]))
    assert opt.evaluate(union) == pytest.approx(result.best_score)
    assert result.validation_evaluations == 2 * (len(rows) + 1)  # valid and union, each


def test_history_csv_and_plot(tmp_path, bandit):
    opt = ho.HybridOptimizer(
        mlp(),
        hit_rate,
        data=bandit,
        seed=0,
        population_size=8,
        gradient=ho.GradientConfig(max_steps=3),
    )
    result = opt.fit(max_evaluations=150, progress=False)
    csv_path = result.to_csv(tmp_path / "history.csv")
    lines = csv_path.read_text().strip().splitlines()
    assert len(lines) == 1 + len(result.history)
    assert lines[0].startswith("phase,step,phase_step,evaluations,wall_time,score")
    png = result.plot(tmp_path / "plot.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    jsonl = result.to_jsonl(tmp_path / "history.jsonl")
    assert len(jsonl.read_text().splitlines()) == len(result.history)


def test_progress_bar_runs(bandit, capsys):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0)
    opt.fit(max_evaluations=60, progress=True)
    assert "eval" in capsys.readouterr().err


def test_history_rows_have_the_contract_keys(bandit):
    opt = ho.HybridOptimizer(
        mlp(),
        hit_rate,
        data=bandit,
        seed=0,
        population_size=8,
        gradient=ho.GradientConfig(max_steps=2),
    )
    result = opt.fit(max_evaluations=100, progress=False)
    for row in result.history:
        assert {"phase", "step", "evaluations", "wall_time", "score", "best_score"} <= set(row)
    for s in result.switches:
        assert {"evaluations", "from_phase", "to_phase", "reason"} <= set(s)
    assert torch.is_tensor(next(iter(result.best_state_dict.values())))


def test_gradient_phase_has_its_own_patience():
    ctl = Controller(phases(ho.GradientConfig(patience=4)), StallConfig(patience=2, min_steps=1))
    fired = [ctl.check(1.0) is not None for _ in range(5)]
    assert fired == [False, False, False, False, True]  # 4 checks without improvement
    ctl.switch()
    fired = [ctl.check(1.0) is not None for _ in range(3)]
    assert fired == [False, False, True]  # the genetic phase uses patience=2


def test_flat_steps_switch_after_flat_patience():
    ctl = Controller(phases(), StallConfig(flat_patience=3))
    assert [ctl.check(0.0, flat=True) for _ in range(2)] == [None, None]
    assert ctl.check(0.0, flat=True) == (
        "flat: every score of the gradient phase equal for 3 steps (no signal to follow)"
    )
    ctl.switch()
    # the genetic phase sets flat_ends = False: flat generations widen its mutations and
    # count neither towards its patience nor towards a flat switch
    assert [ctl.check(0.0, flat=True) for _ in range(40)] == [None] * 40


def test_flat_steps_end_any_phase_that_does_not_opt_out():
    other = SimpleNamespace(name="other", unit="generation", patience=None, max_checks=None)
    ctl = Controller([GradientPhase(), other], StallConfig(flat_patience=3))
    ctl.switch()
    assert [ctl.check(0.0, flat=True) for _ in range(2)] == [None, None]
    assert ctl.check(0.0, flat=True) == (
        "flat: every score of the other phase equal for 3 generations (no signal to follow)"
    )


def test_flat_steps_do_not_count_towards_the_plateau():
    ctl = Controller(phases(ho.GradientConfig(patience=2)),
                     StallConfig(min_steps=1, flat_patience=3))
    # flat steps between non-flat ones neither improve nor stall the phase
    checks = [(1.0, False), (0.0, True), (0.0, True), (1.0, False), (0.0, True), (0.0, True)]
    assert [ctl.check(s, flat=f) for s, f in checks] == [None] * 6
    assert ctl.check(1.0).startswith("plateau: the gradient phase's best 1 ")


def test_budget_share_ends_a_visit():
    ctl = Controller(phases(), StallConfig(max_share=0.5))
    assert ctl.check(1.0, evaluations=40, budget=100) is None
    assert ctl.check(2.0, evaluations=10, budget=100) == (
        "budget share: the gradient phase used 50 evaluations, 0.5 of max_evaluations 100"
    )
    ctl.switch()
    assert ctl.visit_evaluations == 0 and ctl.check(3.0, evaluations=49, budget=100) is None


def test_plateau_task_hybrid_escapes_where_the_gradient_cannot():
    from hybridopt.tasks.plateau import PlateauMLP, make_plateau_data, plateau_score

    d = make_plateau_data(seed=0)
    torch.manual_seed(1)
    opt = ho.HybridOptimizer(
        PlateauMLP(), plateau_score, data=d["train"], seed=1, population_size=64,
        phases=("gradient", "genetic"),
    )
    result = opt.fit(max_evaluations=3000, progress=False)
    first = result.switches[0]
    assert first["from_phase"] == "gradient" and first["reason"].startswith("flat")
    assert first["evaluations"] <= 100
    assert result.best_score > 20
    flats = [r["flat"] for r in result.history if r["phase"] == "genetic"]
    assert flats[0] and not flats[-1]  # the widened population found differences


def test_auto_phases_follow_the_episodes_and_leave_flat_phases_early_on_the_plateau():
    from hybridopt.phases import EPISODE_PHASES, FIXED_DATA_PHASES, OBJECTIVES_PHASES
    from hybridopt.tasks.plateau import PlateauMLP, make_plateau_data, plateau_score

    d = make_plateau_data(seed=0)
    torch.manual_seed(1)
    with_episodes = ho.HybridOptimizer(PlateauMLP(), plateau_score, data=d["train"],
                                       episode_length=200, seed=1)
    assert with_episodes.phases == EPISODE_PHASES == ("es", "genetic", "gradient")
    two = ho.HybridOptimizer(PlateauMLP(), lambda a, data: (plateau_score(a, data), 0.0),
                             data=d["train"], objectives=2, seed=1)
    assert two.phases == OBJECTIVES_PHASES == ("es", "genetic")  # SNES, then NSGA-II
    torch.manual_seed(1)
    opt = ho.HybridOptimizer(PlateauMLP(), plateau_score, data=d["train"], seed=1)
    assert opt.phases == FIXED_DATA_PHASES == ("gradient", "es", "genetic")
    result = opt.fit(max_evaluations=3000, progress=False)
    # REINFORCE and SNES both see one score everywhere: each hands over within a few steps
    first, second = result.switches[:2]
    assert (first["from_phase"], first["to_phase"]) == ("gradient", "es")
    assert (second["from_phase"], second["to_phase"]) == ("es", "genetic")
    assert first["reason"].startswith("flat") and second["reason"].startswith("flat")
    assert second["evaluations"] <= 300
    assert result.best_score > 20
