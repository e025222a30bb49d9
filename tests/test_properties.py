"""Property tests (hypothesis) for the vectorised variation operators and long runs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import hybridopt as ho
from hybridopt.phases.genetic import cx_blend, cx_uniform, mut_gaussian

dims = st.tuples(st.integers(1, 12), st.integers(1, 40))


def population(m, d, seed):
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(dims, st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(0, 10**6))
def test_blend_properties(shape, alpha, prob, seed):
    a, b = population(*shape, seed), population(*shape, seed + 1)
    ca, cb = cx_blend(a.clone(), b.clone(), alpha, prob, torch.Generator().manual_seed(seed))
    assert ca.shape == a.shape and cb.shape == b.shape
    # children are mirror images around the parents' midpoint (up to rounding)
    assert torch.allclose(ca + cb, a + b, atol=1e-5)
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    span = (hi - lo) * alpha + 1e-5
    assert bool(((ca >= lo - span) & (ca <= hi + span)).all())
    # pairs are either crossed or left exactly as they were
    same = (ca == a).all(1) & (cb == b).all(1)
    changed = (ca != a).any(1)
    assert bool((same | changed).all())
    again = cx_blend(a.clone(), b.clone(), alpha, prob, torch.Generator().manual_seed(seed))
    assert torch.equal(again[0], ca) and torch.equal(again[1], cb)


@settings(max_examples=60, deadline=None)
@given(dims, st.floats(0.0, 1.0), st.integers(0, 10**6))
def test_uniform_crossover_only_swaps(shape, prob, seed):
    a, b = population(*shape, seed), population(*shape, seed + 1)
    ca, cb = cx_uniform(a.clone(), b.clone(), 0.5, prob, torch.Generator().manual_seed(seed))
    # every gene comes from one parent and its partner gets the other one
    from_a = ca == a
    assert bool((from_a | (ca == b)).all())
    assert torch.equal(cb, torch.where(from_a, b, a))


@settings(max_examples=60, deadline=None)
@given(dims, st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(0, 10**6))
def test_mutation_properties(shape, prob, gene_prob, seed):
    m, d = shape
    x = population(m, d, seed)
    scale = torch.rand(d, generator=torch.Generator().manual_seed(seed)) + 0.1
    y = mut_gaussian(x.clone(), scale, prob, gene_prob, torch.Generator().manual_seed(seed))
    assert y.shape == x.shape and torch.isfinite(y).all()
    touched = (y != x).sum(1)
    assert int(touched.max()) <= max(1, round(gene_prob * d))
    again = mut_gaussian(x.clone(), scale, prob, gene_prob, torch.Generator().manual_seed(seed))
    assert torch.equal(again, y)


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 12), st.integers(0, 4), st.integers(0, 10**4))
def test_generations_keep_shape_elites_and_seed(p, elite, seed):
    from hybridopt.config import GeneticConfig
    from hybridopt.phases.base import PhaseContext
    from hybridopt.phases.genetic import GeneticPhase
    from hybridopt.population.flat import FlatParams
    from hybridopt.scoring import ScoreBatch, Scorer

    model = nn.Linear(3, 2)
    flat = FlatParams.from_module(model)

    def evaluate(pop, data):
        s = -(pop**2).sum(1).double()
        return ScoreBatch(s, None, torch.isfinite(s))

    def run():
        phase = GeneticPhase(GeneticConfig(elite=elite))
        phase.bind(PhaseContext(
            model=model, flat=flat, scorer=Scorer(lambda a, d: 0.0), evaluate=evaluate,
            generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"),
            population_size=p,
        ))
        state, _ = phase.step(phase.init(flat.vector(model)), None)
        for _ in range(3):
            top = state.scores.sort(descending=True, stable=True).values[: min(elite, p)]
            state, _ = phase.step(state, None)
            assert state.population.shape == (p, flat.dim)
            assert torch.equal(state.scores[: len(top)], top)
        return state.population

    assert torch.equal(run(), run())


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.slow
def test_memory_stays_flat_over_1000_generations():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x @ torch.randn(6, 3, generator=g)).argmax(1)

    @ho.batched
    def score(actions, data):
        return (actions == data[1]).float().mean(-1)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = ho.HybridOptimizer(
        model,
        score,
        data=(x, y),
        phases=("genetic",),
        population_size=16,
        episode_length=32,
        backend="vmap",
        seed=0,
    )
    rss = {}

    class Probe(ho.Callback):
        def on_generation(self, opt, row):
            if row["step"] in (200, 999):
                rss[row["step"]] = _rss_mb()
            if row["step"] == 999:
                opt.request_stop()

    opt.fit(max_evaluations=10**7, callbacks=[Probe()], progress=False)
    assert len(opt.history) == 1000
    # history rows (about 1 kB each) are the only thing that should grow
    assert rss[999] - rss[200] < 25, rss
