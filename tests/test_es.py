"""The SNES phase: sampling, rank-based natural gradient, resume, and progress on real tasks."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import Tensor, nn

from hybridopt.config import ESConfig
from hybridopt.phases.base import Phase, PhaseContext
from hybridopt.phases.es import ESPhase, default_population_size, mirrored_noise, utilities
from hybridopt.population.evaluate import PopulationEvaluator
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import ScoreBatch, Scorer
from hybridopt.tasks.trading import TradingSignalModel, make_trading_data, trading_score


def linear(seed: int = 0, zero: bool = False) -> nn.Linear:
    """A tiny model: D = 10 * 3 + 3 = 33 weights."""
    torch.manual_seed(seed)
    model = nn.Linear(10, 3)
    if zero:
        nn.init.zeros_(model.weight)
        nn.init.zeros_(model.bias)
    return model


def sphere(target: Tensor, transform=lambda s: s, calls: list | None = None):
    """``evaluate(population, episode)`` scoring ``transform(-||w - target||^2)``."""

    def evaluate(population: Tensor, episode) -> ScoreBatch:
        if calls is not None:
            calls.append(population.clone())
        scores = transform(-((population - target) ** 2).sum(1).double())
        return ScoreBatch(scores=scores, observed=None, finite=torch.isfinite(scores))

    return evaluate



def context(model: nn.Module, evaluate, seed: int = 0, fixed_data: bool = True) -> PhaseContext:
    return PhaseContext(
        model=model,
        flat=FlatParams.from_module(model),
        scorer=Scorer(trading_score),
        evaluate=evaluate,
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
        fixed_data=fixed_data,
    )


def run(phase: ESPhase, ctx: PhaseContext, generations: int, state=None):
    """Bind, init from the model's weights (unless ``state``), step; returns (state, trace)."""
    phase.bind(ctx)
    if state is None:
        start = ctx.flat.vector(ctx.model)
        state = phase.init(start, start)
    trace = []
    for _ in range(generations):
        state, metrics = phase.step(state, None)
        trace.append((state.mu.clone(), state.sigma.clone(), state.best_weights.clone(), metrics))
    return state, trace


def test_default_population_size_is_the_literatures_rounded_to_even():
    for d in (1, 2, 3, 33, 483, 10_000):
        p = 4 + math.floor(3 * math.log(d))
        assert default_population_size(d) == p + p % 2
    assert default_population_size(3) == 8  # 4 + floor(3.30) = 7 -> 8
    phase = ESPhase()
    phase.bind(context(linear(), sphere(torch.zeros(33))))
    assert phase.population_size == 14 and phase.cost(None) == 15
    assert math.isclose(phase.sigma_lr, (3 + math.log(33)) / (5 * math.sqrt(33)))
    odd = ESPhase(ESConfig(population_size=7))
    odd.bind(context(linear(), sphere(torch.zeros(33))))
    assert odd.population_size == 8
    plain = ESPhase(ESConfig(population_size=7, mirrored=False))
    plain.bind(context(linear(), sphere(torch.zeros(33))))
    assert plain.population_size == 7


def test_phase_follows_the_protocol_and_takes_its_budget_from_the_config():
    phase = ESPhase(ESConfig(patience=7, max_generations=40))
    assert isinstance(phase, Phase)
    assert (phase.name, phase.unit, phase.patience, phase.max_checks) == ("es", "generation", 7, 40)
    with pytest.raises(TypeError, match="ESConfig"):
        ESPhase({"population_size": 10})  # type: ignore[arg-type]


def test_utilities_are_rank_weights_summing_to_zero():
    u = utilities(14)
    assert torch.all(u[:-1] >= u[1:]) and u[0] > 0
    assert math.isclose(float(u.sum()), 0.0, abs_tol=1e-12)
    # Only the better half gets positive weight; the rest gets exactly -1/P
    assert torch.all(u[7:] == -1 / 14) and torch.all(u[:7] > -1 / 14)


def test_snes_improves_a_shifted_sphere_substantially():
    model = linear()
    start = FlatParams.from_module(model).vector(model)
    target = start + 1.0  # start scores -33
    state, trace = run(ESPhase(), context(model, sphere(target)), 120)
    start_score = -33.0
    assert state.best_score > start_score / 1000  # three orders of magnitude closer
    centre = float(sphere(target)(state.mu[None], None).scores[0])
    assert centre > start_score / 1000
    assert all(m["evaluations"] == 15 and m["nonfinite"] == 0 for *_, m in trace)
    assert trace[-1][3]["sigma_mean"] < trace[0][3]["sigma_mean"]  # sigma shrinks near the optimum


def test_mirrored_samples_are_exact_negatives_around_the_centre():
    calls: list[Tensor] = []
    model = linear(zero=True)  # mu = 0, so mu + z and mu - z are exactly z and -z
    phase = ESPhase()
    phase.bind(context(model, sphere(torch.ones(33), calls=calls)))
    state = phase.init(torch.zeros(33), torch.zeros(33))
    assert torch.all(state.sigma > 0)  # all-zero tensors still get a floor
    phase.step(state, None)
    (population,) = calls
    p = phase.population_size
    assert population.shape == (p + 1, 33)
    assert torch.equal(population[p // 2 : p], -population[: p // 2])
    assert torch.equal(population[p], state.mu)  # the centre is the last row

    # Around a non-zero centre: the noise is exactly mirrored, the samples up to rounding
    eps = torch.randn(5, 33, generator=torch.Generator().manual_seed(3))
    assert torch.equal(mirrored_noise(eps)[5:], -eps)
    calls.clear()
    model = linear()
    phase.bind(context(model, sphere(torch.ones(33), calls=calls)))
    start = FlatParams.from_module(model).vector(model)
    state = phase.init(start, start)
    phase.step(state, None)
    offsets = calls[0][:p] - state.mu
    torch.testing.assert_close(offsets[p // 2 :], -offsets[: p // 2], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "transform", [lambda s: 3 * s + 7, lambda s: torch.exp(s / 10)], ids=["affine", "exp"]
)
def test_fitness_shaping_depends_only_on_ranks(transform):
    model = linear()
    target = FlatParams.from_module(model).vector(model) + 0.5
    _, reference = run(ESPhase(), context(model, sphere(target)), 30)
    _, shaped = run(ESPhase(), context(model, sphere(target, transform)), 30)
    for (mu, sigma, best, _), (mu2, sigma2, best2, _) in zip(reference, shaped):
        assert torch.equal(mu, mu2) and torch.equal(sigma, sigma2) and torch.equal(best, best2)


def test_state_dict_round_trip_resumes_bit_exactly():
    model = linear()
    target = FlatParams.from_module(model).vector(model) - 0.3
    phase, ctx = ESPhase(), context(model, sphere(target))
    state, _ = run(phase, ctx, 5)
    buffer = io.BytesIO()
    torch.save({"phase": phase.state_dict(state), "rng": ctx.generator.get_state()}, buffer)
    straight, trace = run(phase, ctx, 5, state)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    ctx2 = context(linear(seed=9), sphere(target), seed=123)
    ctx2.generator.set_state(saved["rng"])
    resumed_phase = ESPhase()
    resumed_phase.bind(ctx2)
    resumed, trace2 = run(resumed_phase, ctx2, 5, resumed_phase.load_state_dict(saved["phase"]))
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b) if isinstance(a, Tensor) else a == b
    assert [m for *_, m in trace] == [m for *_, m in trace2]


def test_same_seed_same_run_other_seed_other_run():
    model = linear()
    target = torch.zeros(33)
    a, _ = run(ESPhase(), context(model, sphere(target), seed=4), 10)
    b, _ = run(ESPhase(), context(model, sphere(target), seed=4), 10)
    c, _ = run(ESPhase(), context(model, sphere(target), seed=5), 10)
    assert torch.equal(a.mu, b.mu) and torch.equal(a.sigma, b.sigma)
    assert not torch.equal(a.mu, c.mu)


def test_nonfinite_scores_count_as_worst_and_are_reported():
    def evaluate(population: Tensor, episode) -> ScoreBatch:
        scores = -(population**2).sum(1).double()
        scores[::3] = math.nan  # every third row, the centre (row 14) included
        return ScoreBatch(scores=scores, observed=None, finite=torch.isfinite(scores))

    state, trace = run(ESPhase(), context(linear(), evaluate), 3)
    metrics = trace[-1][3]
    assert metrics["nonfinite"] == 5 and metrics["evaluations"] == 15
    assert math.isfinite(state.best_score) and math.isfinite(metrics["population_mean"])
    assert torch.isfinite(state.mu).all() and torch.isfinite(state.sigma).all()


def test_candidate_is_the_best_scored_point_or_the_unscored_centre():
    model = linear()
    target = FlatParams.from_module(model).vector(model) + 0.2
    phase = ESPhase()
    state, trace = run(phase, context(model, sphere(target)), 8)
    weights, score = phase.candidate(state)
    assert score == state.best_score == max(m["generation_best"] for *_, m in trace)
    assert math.isclose(float(sphere(target)(weights[None], None).scores[0]), score)
    assert torch.equal(phase.handoff(state), weights)

    # Random episodes: scores from different episodes do not compare, so offer the centre
    phase.bind(context(model, sphere(target), fixed_data=False))
    weights, score = phase.candidate(state)
    assert score is None and torch.equal(weights, state.mu)


def test_snes_improves_the_trading_score_through_the_population_evaluator():
    data = make_trading_data(n_steps=1000, window=8, seed=0)["train"]
    torch.manual_seed(0)
    model = TradingSignalModel(hidden_size=8, linear_size=8)
    flat, scorer = FlatParams.from_module(model), Scorer(trading_score)
    evaluator = PopulationEvaluator(model, scorer, flat, method="vmap", device="cpu")
    ctx = PhaseContext(
        model=model, flat=flat, scorer=scorer, evaluate=evaluator.evaluate,
        generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
    )
    phase = ESPhase()
    phase.bind(ctx)
    start = flat.vector(model)
    start_score = float(evaluator.evaluate(start[None], data).scores[0])
    state = phase.init(start, start)
    for _ in range(40):
        state, metrics = phase.step(state, data)
    weights, score = phase.candidate(state)
    assert score is not None and score > start_score + 5
    assert math.isclose(float(evaluator.evaluate(weights[None], data).scores[0]), score)
    assert metrics["center_score"] > start_score


def trading_setup():
    """A small trading problem: D = 483 weights, 592 training rows."""
    data = make_trading_data(n_steps=1000, window=8, seed=0)["train"]
    torch.manual_seed(0)
    return TradingSignalModel(hidden_size=8, linear_size=8), data


def test_optimizer_with_es_alone_improves_the_trading_score():
    import hybridopt as ho

    model, data = trading_setup()
    opt = ho.HybridOptimizer(model, trading_score, data, phases=("es",), seed=0,
                             backend="vmap", device="cpu", threads=1)
    start_score = opt.evaluate(data)
    result = opt.fit(max_evaluations=700, progress=False)
    assert result.evaluations <= 700
    assert {row["phase"] for row in result.history[1:]} == {"es"}
    assert result.best_score > start_score + 5
    assert math.isclose(opt.evaluate(data), result.best_score, rel_tol=1e-5)


def test_optimizer_switches_from_gradient_to_es():
    import hybridopt as ho

    model, data = trading_setup()
    opt = ho.HybridOptimizer(model, trading_score, data, phases=("gradient", "es"), seed=0,
                             backend="vmap", device="cpu", threads=1,
                             gradient=ho.GradientConfig(max_steps=5))
    result = opt.fit(max_evaluations=400, progress=False)
    assert result.switches and result.switches[0]["from_phase"] == "gradient"
    assert result.switches[0]["to_phase"] == "es"
    es_rows = [row for row in result.history if row["phase"] == "es"]
    assert es_rows and all(row["evaluations"] <= 400 for row in result.history)
    assert "sigma_mean" in es_rows[-1]
