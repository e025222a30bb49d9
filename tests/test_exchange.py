"""Exchange within the genetic phase: ERL injection and Lamarckian steps (issue 12, point 2)."""

from __future__ import annotations

import pytest
import torch
from conftest import hit_rate, make_bandit, mlp

import hybridopt as ho
from hybridopt.run_loop import bind

LEARNER = ho.GradientConfig(samples=4, warmup_steps=0, collapse_patience=None)


def optimizer(genetic=None, p=16, **kw):
    kw.setdefault("backend", "vmap")
    return ho.HybridOptimizer(mlp(), hit_rate, make_bandit(n=96), phases=("genetic",),
                              population_size=p, seed=0, genetic=genetic, **kw)


def bound_phase(genetic, p=16, **kw):
    """The genetic phase of a fresh optimiser, bound, and its first state."""
    opt = optimizer(genetic, p, **kw)
    bind(opt, None)
    phase = opt.phase_objects[0]
    start = opt.flat.vector(opt.model).detach().clone()
    return opt, phase, phase.init(start, start)


def strip(result):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in result.history]


def test_injected_learner_enters_the_population_and_its_fate_is_recorded():
    cfg = ho.GeneticConfig(inject_every=1, learner_steps=2, learner=LEARNER)
    opt, phase, state = bound_phase(cfg)
    cost = phase.cost(state)
    scores_before = None

    def spy(population, episode):  # the generation's scores, before the injection
        nonlocal scores_before
        batch = opt._evaluate_population(population, episode)
        if len(population) > 1:
            scores_before = batch.scores.clone()
        return batch

    phase.evaluate = spy
    state, metrics = phase.step(state, opt.data)
    assert metrics["evaluations"] == cost == 16 + 2 * LEARNER.samples + 1
    (row,) = state.injected.tolist()
    assert row == int(torch.argmin(scores_before))  # the worst made room
    assert int(state.uids[row]) == state.next_uid - 1 == 16  # a new individual
    expected = opt._evaluate_population(state.population[row : row + 1], opt.data).scores[0]
    assert float(state.scores[row]) == float(expected) and bool(state.evaluated[row])
    assert metrics["exchange/injected"] == 1
    assert metrics["exchange/elite"] + metrics["exchange/selected"] == 0

    # Its fate is counted at the next generation's selection
    state, metrics = phase.step(state, opt.data)
    fates = [metrics[f"exchange/{k}"] for k in ("elite", "selected", "discarded")]
    assert sum(fates) == 1 and metrics["exchange/injected"] == 2


def test_fates_add_up_over_a_run_and_the_budget_holds():
    cfg = ho.GeneticConfig(inject_every=2, learner_steps=3, learner=LEARNER)
    result = optimizer(cfg).fit(max_evaluations=600, progress=False)
    assert result.evaluations <= 600
    last = result.history[-1]
    decided = sum(last[f"exchange/{k}"] for k in ("elite", "selected", "discarded"))
    assert last["exchange/injected"] >= 3
    assert decided in (last["exchange/injected"], last["exchange/injected"] - 1)  # one pending


def test_the_injected_step_is_clipped():
    wild = ho.GradientConfig(samples=4, lr=1.0, warmup_steps=0, collapse_patience=None,
                             max_grad_norm=None)
    for clip in (0.01, None):
        cfg = ho.GeneticConfig(inject_every=1, learner_steps=3, inject_clip=clip, learner=wild)
        opt, phase, state = bound_phase(cfg)
        best = int(torch.argmax(phase.evaluate(state.population, opt.data).scores))
        start = state.population[best].clone()
        state, metrics = phase.step(state, opt.data)
        step = state.population[int(state.injected[0])] - start
        if clip is None:
            assert bool((step.abs() > 0.01 * state.scale).any())
            assert metrics["exchange/clipped"] == 0.0
        else:
            assert bool((step.abs() <= clip * state.scale + 1e-6).all())  # float rounding
            assert metrics["exchange/clipped"] > 0.0


def test_lamarckian_steps_change_the_elites_and_count_in_the_budget():
    cfg = ho.GeneticConfig(lamarckian=2, lamarckian_steps=3, elite=2, learner=LEARNER)
    opt, phase, state = bound_phase(cfg)
    state, metrics = phase.step(state, opt.data)
    assert metrics["exchange/lamarckian"] == 0  # no elites yet in the first generation
    order = torch.argsort(state.scores, descending=True, stable=True)
    elites = state.population[order[:2]].clone()
    cost = phase.cost(state)
    assert cost == (16 - 2) + 2 + 2 * 3 * LEARNER.samples
    state, metrics = phase.step(state, opt.data)
    assert metrics["evaluations"] <= cost
    assert metrics["evaluations"] >= 2 + 2 * 3 * LEARNER.samples  # steps and re-scoring
    assert not torch.equal(state.population[:2], elites)  # written back (Lamarckian)
    assert metrics["exchange/lamarckian"] == 2 and "exchange/lamarckian_gain" in metrics
    assert state.uids[:2].tolist() == [16 + 14, 16 + 15]  # new individuals

    # Through the optimiser: the budget is never exceeded
    result = optimizer(cfg).fit(max_evaluations=500, progress=False)
    assert result.evaluations <= 500 and result.history[-1]["exchange/lamarckian"] > 0


def test_the_model_is_left_as_found():
    cfg = ho.GeneticConfig(inject_every=1, lamarckian=1, learner=LEARNER)
    opt, phase, state = bound_phase(cfg)
    opt.model.eval()
    before = opt.flat.vector(opt.model).clone()
    for _ in range(2):
        state, _ = phase.step(state, opt.data)
    assert torch.equal(opt.flat.vector(opt.model), before) and not opt.model.training
    assert all(p.grad is None for p in opt.model.parameters())


def test_options_off_leave_the_run_unchanged():
    plain = optimizer(ho.GeneticConfig()).fit(max_evaluations=300, progress=False)
    off = optimizer(ho.GeneticConfig(inject_every=None, lamarckian=0)).fit(
        max_evaluations=300, progress=False)
    assert strip(plain) == strip(off)
    assert not any(k.startswith("exchange/") for row in plain.history for k in row)


def test_same_seed_same_run_and_global_rng_untouched():
    cfg = ho.GeneticConfig(inject_every=2, lamarckian=1, learner=LEARNER)
    opt = optimizer(cfg, episode_length=48)  # mlp() seeds torch; the library must not
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = opt.fit(max_evaluations=400, progress=False)
    assert torch.equal(torch.rand(3), expected)
    b = optimizer(cfg, episode_length=48).fit(max_evaluations=400, progress=False)
    assert strip(a) == strip(b)


def test_resume_is_bit_exact_with_the_exchange_on(tmp_path):
    cfg = ho.GeneticConfig(inject_every=2, lamarckian=1, learner=LEARNER, max_generations=4)

    def make(folder):
        return ho.HybridOptimizer(
            mlp(), hit_rate, data=make_bandit(), seed=0, population_size=12, backend="vmap",
            checkpoint_dir=folder, checkpoint_every=3,
            gradient=ho.GradientConfig(max_steps=5), genetic=cfg,
        )

    full = make(tmp_path / "a").fit(max_evaluations=900, progress=False)
    assert any("exchange/injected" in r for r in full.history)

    class StopAt(ho.Callback):
        def on_generation(self, opt, row):
            if row["step"] == 8:
                opt.request_stop()

    make(tmp_path / "b").fit(max_evaluations=900, callbacks=[StopAt()], progress=False)
    resumed = make(tmp_path / "b").fit(max_evaluations=900, progress=False, resume=True)
    assert strip(resumed) == strip(full)
    for key in full.best_state_dict:
        assert torch.equal(full.best_state_dict[key], resumed.best_state_dict[key])


def test_bad_settings_fail_at_the_door():
    with pytest.raises(ValueError, match="GeneticConfig.lamarckian"):
        ho.GeneticConfig(lamarckian=3, elite=2)
    with pytest.raises(ValueError, match="GeneticConfig.inject_every"):
        ho.GeneticConfig(inject_every=0)
    with pytest.raises(ValueError, match="GeneticConfig.inject_clip"):
        ho.GeneticConfig(inject_clip=0.0)
    with pytest.raises(TypeError, match="GeneticConfig.learner"):
        ho.GeneticConfig(learner={"lr": 0.1})


def test_several_objectives_are_refused():
    @ho.batched
    def two(actions, data):
        hits = (actions == data[1]).float().mean(-1)
        return torch.stack([hits, 1 - hits], -1)

    opt = ho.HybridOptimizer(mlp(), two, make_bandit(n=96), phases=("genetic",),
                             population_size=12, objectives=2, backend="vmap",
                             genetic=ho.GeneticConfig(inject_every=1))
    with pytest.raises(ValueError, match="single objective"):
        opt.fit(max_evaluations=100, progress=False)
