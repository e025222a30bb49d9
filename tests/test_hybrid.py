"""The hybrid's run-level behaviour: the collapse guard, where a phase starts, early stopping,
fitting again and resetting, actions/evaluate, threads, the automatic population size, and
probability outputs (the seed's softmax model)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import hit_rate, load_example, mlp, strip

import hybridopt as ho
from hybridopt.population.size import auto_population_size
from hybridopt.tasks.trading import TradingSignalModel, make_trading_data, trading_score

RandomSearch = load_example("custom_phase").RandomSearch


class Weights(ho.Callback):
    """Records the model's weights after every step (so ``before[t]`` are those step t began
    from)."""

    def __init__(self, opt):
        self.before = [opt.flat.vector(opt.model).detach().clone()]

    def on_step(self, opt, row):
        self.before.append(opt.flat.vector(opt.model).detach().clone())


class StopAtFirst(ho.Callback):
    def on_step(self, opt, row):
        opt.request_stop()

    on_generation = on_step


# -- the collapse guard -------------------------------------------------------------------------


def test_a_forced_collapse_reverts_to_the_visits_best_weights_and_lowers_the_lr(bandit):
    # a huge learning rate collapses the policy within a few steps
    cfg = ho.GradientConfig(lr=5.0, warmup_steps=0, collapse_patience=3, collapse_entropy=0.3,
                            revert_lr_factor=0.5)
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0,
                             gradient=cfg)
    weights = Weights(opt)
    result = opt.fit(max_evaluations=17 * 20, callbacks=[weights], progress=False)
    rows = result.history

    # recorded in the history row and in result.events
    fired = [r for r in rows if r.get("event")]
    assert fired and all(r["event"].startswith("collapse guard: entropy ") for r in fired)
    assert result.events == [{"evaluations": r["evaluations"], "step": r["step"],
                              "phase": "gradient", "event": r["event"]} for r in fired]
    assert not result.switches  # an event, not a switch

    # the model went back to the weights of the visit's best step (best mean sampled score;
    # the first of equals) and the step was not taken
    t = fired[0]["step"]
    means = [r["sample_score_mean"] for r in rows[: t + 1]]
    best = means.index(max(means))
    assert best < t
    assert torch.equal(weights.before[t + 1], weights.before[best])
    if best > 0:  # the row's candidate is those weights: the model after step best - 1
        assert rows[t]["score"] == rows[best - 1]["score"]
    assert rows[t]["grad_norm"] is None

    # the learning rate is halved at each revert and stays there until the next one
    scale = 1.0
    for r in rows:
        if r.get("event"):
            scale *= 0.5
            assert r["event"].endswith(f"learning rate x{scale:g}")
        assert r["lr"] == pytest.approx(cfg.lr * scale)
    assert scale < 1.0


def test_the_collapse_guard_can_be_turned_off(bandit):
    cfg = ho.GradientConfig(lr=5.0, warmup_steps=0, collapse_patience=None,
                            collapse_entropy=0.3)
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0,
                             gradient=cfg)
    result = opt.fit(max_evaluations=17 * 12, progress=False)
    assert not result.events and not any(r.get("event") for r in result.history)
    assert {r["lr"] for r in result.history} == {5.0}


# -- where the next phase starts ----------------------------------------------------------------


class Recorder(RandomSearch):
    """The example's random search, remembering where each visit started."""

    def init(self, start, best):
        self.starts = [*getattr(self, "starts", []), start.detach().clone()]
        return super().init(start, best)


class AtSwitch(ho.Callback):
    """At each switch (after the next phase's init): the best so far, and the model."""

    def __init__(self):
        self.seen = []

    def on_switch(self, opt, switch):
        self.seen.append((switch["to_phase"], opt.selection.best_weights.clone(),
                          opt.flat.vector(opt.model).detach().clone()))


def _run_with_starts(bandit, start_from):
    recorder = Recorder(samples=8, sigma=0.3, max_steps=4)
    opt = ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, seed=0, phases=("gradient", recorder),
        gradient=ho.GradientConfig(max_steps=8, lr=0.2),
        stall=ho.StallConfig(start_from=start_from),
    )
    at_switch = AtSwitch()
    opt.fit(max_evaluations=700, callbacks=[at_switch], progress=False)
    random_visits = [s for s in at_switch.seen if s[0] == "random"]
    gradient_visits = [s for s in at_switch.seen if s[0] == "gradient"]
    assert len(random_visits) >= 2 and gradient_visits
    # the recorder's first visit is the first switch into it (init is never called before)
    assert len(recorder.starts) == len(random_visits)
    return recorder, random_visits, gradient_visits


def test_start_from_best_starts_every_phase_from_the_selections_best_weights(bandit):
    recorder, random_visits, gradient_visits = _run_with_starts(bandit, "best")
    for start, (_, best, _) in zip(recorder.starts, random_visits):
        assert torch.equal(start, best)
    for _, best, model in gradient_visits:  # the gradient phase loads its start into the model
        assert torch.equal(model, best)
    # not vacuous: where the gradient phase ended (the model, untouched by the random search's
    # init) was not the best at least once
    assert any(not torch.equal(model, best) for _, best, model in random_visits)


def test_start_from_handoff_continues_where_the_last_phase_ended(bandit):
    recorder, random_visits, gradient_visits = _run_with_starts(bandit, "handoff")
    # gradient -> random: the gradient phase hands off the model as it is
    for start, (_, _, model) in zip(recorder.starts, random_visits):
        assert torch.equal(start, model)
    assert any(not torch.equal(start, best)
               for start, (_, best, _) in zip(recorder.starts, random_visits))


# -- early stopping -----------------------------------------------------------------------------


def test_fit_patience_stops_after_that_many_evaluations_without_a_new_best(bandit):
    patience = 120
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0)
    result = opt.fit(max_evaluations=20_000, patience=patience, progress=False)
    assert result.stop_reason.startswith("early stop: ")
    assert result.stop_reason.endswith(f"without a new best selection score (patience {patience})")
    rows = result.history
    kept = [i for i in range(len(rows))
            if i == 0 or (rows[i]["best_score"], rows[i]["best_train_score"])
            != (rows[i - 1]["best_score"], rows[i - 1]["best_train_score"])]
    last = kept[-1]
    assert last > 0 and last < len(rows) - 1
    since = rows[-1]["evaluations"] - rows[last]["evaluations"]
    before = rows[-2]["evaluations"] - rows[last]["evaluations"]
    # stopped at the first check with >= patience evaluations since the last new best
    assert since >= patience > before
    assert f"early stop: {since} evaluations" in result.stop_reason
    assert result.evaluations < 20_000 - 17


# -- fitting again, and resetting ---------------------------------------------------------------


def test_two_fit_calls_add_up_and_continue_the_same_run(bandit):
    def make():
        return ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0)

    opt = make()
    first = opt.fit(max_evaluations=200, progress=False)
    second = opt.fit(max_evaluations=200, progress=False)
    # the second call's budget counts from where it started
    assert first.evaluations == 1 + 11 * 17  # the start, then 17 a step while 17 more fit
    assert second.evaluations == first.evaluations + 11 * 17
    assert second.stop_reason == "max_evaluations 200 reached"
    # history, steps and wall time continue
    assert strip(second.history[: len(first.history)]) == strip(first.history)
    assert [r["step"] for r in second.history] == list(range(len(second.history)))
    assert second.history[len(first.history)]["wall_time"] >= first.history[-1]["wall_time"]
    assert second.best_score >= first.best_score
    # and it is the same run as one longer call
    whole = make().fit(max_evaluations=2 * 11 * 17 + 1, progress=False)
    assert strip(whole.history) == strip(second.history)
    for key in whole.best_state_dict:
        assert torch.equal(whole.best_state_dict[key], second.best_state_dict[key])


def test_two_hybrid_fit_calls_continue_switches_and_history(bandit):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, seed=0, population_size=8,
                             gradient=ho.GradientConfig(max_steps=3),
                             genetic=ho.GeneticConfig(max_generations=2))
    first = opt.fit(max_evaluations=150, progress=False)
    second = opt.fit(max_evaluations=150, progress=False)
    assert first.evaluations < second.evaluations <= first.evaluations + 150
    assert second.switches[: len(first.switches)] == first.switches
    assert len(second.switches) > len(first.switches)
    assert strip(second.history[: len(first.history)]) == strip(first.history)


def test_reset_starts_fresh_like_a_new_optimiser(bandit):
    def make():
        return ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=3)

    opt = make()
    start = opt.evaluate()
    opt.fit(max_evaluations=300, progress=False)
    opt.reset()
    assert opt.evaluate() == start and not opt.history and opt.evaluations == 0
    again = opt.fit(max_evaluations=200, progress=False)
    fresh = make().fit(max_evaluations=200, progress=False)
    assert strip(again.history) == strip(fresh.history)
    assert again.evaluations == fresh.evaluations and again.switches == fresh.switches
    for key in fresh.best_state_dict:
        assert torch.equal(again.best_state_dict[key], fresh.best_state_dict[key])


def test_reset_resolves_an_automatic_population_size_again(bandit):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, seed=0)
    opt.fit(max_evaluations=8_000, callbacks=[StopAtFirst()], progress=False)
    assert opt.population_size == auto_population_size(opt.flat.dim, 8_000) == 40
    opt.reset()
    opt.fit(max_evaluations=4_000, callbacks=[StopAtFirst()], progress=False)
    # as a new optimiser would: "auto" sized from this first budget
    assert opt.population_size == auto_population_size(opt.flat.dim, 4_000) == 20


# -- actions and evaluate -----------------------------------------------------------------------


def test_actions_are_the_argmax_of_the_model(bandit):
    x, _ = bandit
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0)
    opt.fit(max_evaluations=100, progress=False)
    with torch.no_grad():
        expected = opt.model(x).argmax(-1)
    assert torch.equal(opt.actions(bandit), expected)
    assert torch.equal(opt.actions(), expected)  # default: the training data
    other = (x[:10] * 2, torch.zeros(10, dtype=torch.long))
    with torch.no_grad():
        assert torch.equal(opt.actions(other), opt.model(other[0]).argmax(-1))
    assert opt.evaluate() == pytest.approx(hit_rate(expected[None], bandit)[0].item())


@pytest.mark.parametrize(
    "data, error, match",
    [
        (lambda x, y: {"x": x, "y": y}, TypeError, "data must be structured like the training"),
        (lambda x, y: x, TypeError, "data must be structured like the training"),
        (lambda x, y: (x, y, y), TypeError, "data must be structured like the training"),
        (lambda x, y: (x[:, :4], y), ValueError, r"data\[0\] must be shaped \[N, 6\]"),
        (lambda x, y: (x, y.float()), ValueError, r"data\[1\] must be shaped \[N\] with a "
                                                  r"torch.int64"),
        (lambda x, y: (x[:5], y[:4]), ValueError, "share their leading length N"),
    ],
)
def test_evaluate_and_actions_refuse_data_of_another_structure(bandit, data, error, match):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=0)
    bad = data(*bandit)
    with pytest.raises(error, match=match):
        opt.evaluate(bad)
    with pytest.raises(error, match=match):
        opt.actions(bad)


# -- threads ------------------------------------------------------------------------------------


def test_threads_are_recorded_and_restored(bandit):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), threads=1)
        result = opt.fit(max_evaluations=60, progress=False)
        assert result.threads == 1
        assert torch.get_num_threads() == 2  # put back after the fit
        opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",))
        assert opt.fit(max_evaluations=60, progress=False).threads == 2  # None: as torch has it
    finally:
        torch.set_num_threads(before)


# -- population_size="auto" ---------------------------------------------------------------------


@pytest.mark.parametrize("budget, expected", [(8_000, 40), (2_000, 19), (100_000, 300)])
def test_auto_population_size_resolves_at_the_first_fit(bandit, budget, expected):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("genetic",), seed=0)
    assert opt.population_size == "auto"
    # D = 163 weights: low = max(16, 4 + floor(3 ln 163)) = 19; P = clamp(budget // 200, 19, 300)
    assert opt.flat.dim == 163 and auto_population_size(163, budget) == expected
    result = opt.fit(max_evaluations=budget, callbacks=[StopAtFirst()], progress=False)
    assert opt.population_size == expected
    # the first generation scores every one of the P individuals
    assert result.history[0]["evaluations"] - 1 == expected
    # a second fit keeps the size (the run continues)
    opt.fit(max_evaluations=500, callbacks=[StopAtFirst()], progress=False)
    assert opt.population_size == expected


def test_auto_population_size_without_a_budget_is_the_upper_end(bandit):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("genetic",), seed=0)
    opt.fit(max_time=30, callbacks=[StopAtFirst()], progress=False)
    assert opt.population_size == 300


# -- probability outputs: the seed's softmax model trains like its logit twin -------------------


class SoftmaxTradingModel(TradingSignalModel):
    """The seed question's model: the same network ending in a softmax over the actions."""

    def forward(self, x):
        out = super().forward(x)
        return torch.softmax(out, dim=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_softmax_model_trains_like_its_logit_twin(seed):
    splits = make_trading_data(window=16, seed=seed)
    torch.manual_seed(seed)
    logit = TradingSignalModel(hidden_size=16)
    softmax = SoftmaxTradingModel(hidden_size=16)
    softmax.load_state_dict(logit.state_dict())  # same initial weights
    held_out = {}
    for name, model in (("logits", logit), ("probs", softmax)):
        opt = ho.HybridOptimizer(model, trading_score, data=splits["train"],
                                 validation_data=splits["valid"], episode_length=512,
                                 seed=seed, threads=1)
        assert opt.outputs == name  # "auto" recognised the probabilities
        opt.fit(max_evaluations=2_000, progress=False)
        held_out[name] = opt.evaluate(splits["test"])
    assert abs(held_out["probs"] - held_out["logits"]) <= 1.0, held_out


def test_the_run_folder_records_the_thread_count(tmp_path):
    from conftest import make_bandit

    opt = ho.HybridOptimizer(mlp(), hit_rate, data=make_bandit(n=64), threads=1,
                             population_size=8, seed=0)
    opt.fit(max_evaluations=120, progress=False).save(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["threads"] == 1 and "events" in summary
