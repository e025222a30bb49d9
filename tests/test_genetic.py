"""The genetic phase: vectorised operators, DEAP bookkeeping, elitism, seeding."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import hit_rate, mlp

import hybridopt as ho
from hybridopt.config import GeneticConfig
from hybridopt.phases import _deap
from hybridopt.phases.base import PhaseContext
from hybridopt.phases.genetic import (
    GeneticPhase,
    cx_blend,
    cx_uniform,
    mut_gaussian,
    tensor_scales,
)
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import ScoreBatch, Scorer


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_blend_keeps_shapes_and_stays_in_the_extended_box():
    a, b = torch.zeros(50, 40), torch.ones(50, 40)
    ca, cb = cx_blend(a.clone(), b.clone(), alpha=0.3, prob=1.0, generator=gen())
    assert ca.shape == cb.shape == (50, 40)
    assert ca.min() >= -0.3 - 1e-6 and ca.max() <= 1.3 + 1e-6
    # BLX keeps the pair's sum: children are mirror images around the parents' midpoint
    assert torch.allclose(ca + cb, a + b)
    same_a, same_b = cx_blend(a.clone(), b.clone(), alpha=0.3, prob=0.0, generator=gen())
    assert torch.equal(same_a, a) and torch.equal(same_b, b)


def test_uniform_swaps_genes_between_parents():
    a, b = torch.zeros(30, 100), torch.ones(30, 100)
    ca, cb = cx_uniform(a.clone(), b.clone(), swap_prob=0.5, prob=1.0, generator=gen())
    assert torch.equal(ca + cb, a + b)
    assert 0.35 < ca.mean() < 0.65


def test_gaussian_mutation_touches_the_expected_share_with_per_tensor_scale():
    x = torch.zeros(200, 1000)
    scale = torch.cat([torch.full((500,), 1.0), torch.full((500,), 0.01)])
    y = mut_gaussian(x.clone(), scale, prob=0.5, gene_prob=0.1, generator=gen())
    touched_rows = (y != 0).any(1)
    assert 0.4 < touched_rows.float().mean() < 0.6
    per_row = (y[touched_rows] != 0).sum(1).float()
    assert 80 < per_row.mean() < 100  # 100 draws with replacement, a few collide
    assert y[:, :500].std() > 30 * y[:, 500:].std()


def test_operators_are_reproducible_from_the_generator():
    x = torch.randn(20, 30, generator=gen(5))
    scale = torch.ones(30)
    assert torch.equal(
        mut_gaussian(x.clone(), scale, 1, 0.5, gen(1)),
        mut_gaussian(x.clone(), scale, 1, 0.5, gen(1)),
    )
    assert not torch.equal(
        mut_gaussian(x.clone(), scale, 1, 0.5, gen(1)),
        mut_gaussian(x.clone(), scale, 1, 0.5, gen(2)),
    )


def test_tensor_scales_follow_each_parameter_tensor():
    model = mlp()
    flat = FlatParams.from_module(model)
    with torch.no_grad():
        model[0].weight.mul_(100)
    scale = tensor_scales(flat, flat.vector(model))
    pieces = flat.split(scale)
    assert pieces[0].unique().numel() == 1
    assert pieces[0][0, 0] > 10 * pieces[2][0, 0]
    assert (scale > 0).all()


def bound(phase, model, flat, evaluate, p, fixed_data=True):
    """``phase`` bound to a context holding ``evaluate`` (the scorer is never called)."""
    phase.bind(PhaseContext(
        model=model, flat=flat, scorer=Scorer(hit_rate), evaluate=evaluate, generator=gen(),
        device=torch.device("cpu"), fixed_data=fixed_data, population_size=p,
    ))
    return phase


def _phase(p=12, fixed_data=True, **cfg):
    model = mlp()
    flat = FlatParams.from_module(model)

    def evaluate(population, data):
        # fitness: minus the distance to a target vector
        scores = -(population - 1.0).pow(2).sum(1).double()
        return ScoreBatch(scores, None, torch.isfinite(scores))

    phase = bound(GeneticPhase(GeneticConfig(**cfg)), model, flat, evaluate, p, fixed_data)
    return phase, flat, flat.vector(model)


def test_seeding_keeps_the_current_weights_as_elite():
    phase, flat, w = _phase()
    state = phase.init(w)
    assert state.population.shape == (12, flat.dim)
    assert torch.equal(state.population[0], w)
    assert not torch.equal(state.population[1], w)
    extra = torch.ones(1, flat.dim)
    state = phase.seed(w, extra)
    assert torch.equal(state.population[1], extra[0])
    # init(start, best): the best so far is kept as a second elite when it differs
    state = phase.init(w, extra[0])
    assert torch.equal(state.population[0], w) and torch.equal(state.population[1], extra[0])
    state = phase.init(w, w.clone())
    assert not torch.equal(state.population[1], w)


def test_generations_keep_elites_and_improve():
    phase, flat, w = _phase(elite=2)
    state = phase.init(w)
    state, m0 = phase.step(state, None)
    assert m0["evaluations"] == 12
    best = [m0["generation_best"]]
    for _ in range(30):
        top = state.population[torch.argsort(state.scores, descending=True)[:2]].clone()
        state, m = phase.step(state, None)
        # the two elites are carried over unchanged, and not re-evaluated on fixed data
        assert torch.equal(state.population[:2], top)
        assert m["evaluations"] <= 10
        best.append(m["generation_best"])
    assert best == sorted(best) and best[-1] > best[0]
    assert len(state.hall_of_fame) == 5
    assert state.hall_of_fame[0].fitness.values[0] == pytest.approx(best[-1])
    assert torch.equal(state.hall_of_fame[0].weights, phase.best(state)[0])
    assert len(state.logbook) == 31 and state.logbook[0]["evals"] == 12


def test_crossovers_write_through_the_pair_views_of_one_offspring_tensor():
    # The phase crosses rows (0, 1), (2, 3), ... as two strided views of one tensor
    for cross, kw in ((cx_blend, {"alpha": 0.3}), (cx_uniform, {"swap_prob": 0.5})):
        offspring = torch.randn(10, 7, generator=gen(1))
        before = offspring.clone()
        a, b = offspring[0::2], offspring[1::2]
        ca, cb = cross(a, b, prob=1.0, generator=gen(2), **kw)
        assert torch.equal(offspring[0::2], ca) and torch.equal(offspring[1::2], cb)
        assert not torch.equal(offspring, before)
        assert torch.allclose(offspring[0::2] + offspring[1::2], before[0::2] + before[1::2],
                              atol=1e-6)


def test_gaussian_mutation_adds_every_draw_of_a_gene_drawn_twice():
    # 3 draws with replacement over 3 genes per row: some genes get two noises, and both count
    x = torch.zeros(8, 3)
    y = mut_gaussian(x.clone(), torch.ones(3), prob=1.0, gene_prob=1.0, generator=gen(3))
    g = gen(3)
    torch.rand(8, generator=g)
    cols = torch.randint(3, (8, 3), generator=g)
    noise = torch.randn(8, 3, generator=g)
    assert (cols.sort(1).values.diff(dim=1) == 0).any()  # a gene drawn twice
    expected = torch.zeros(8, 3).index_put_(
        (torch.arange(8).unsqueeze(1).expand_as(cols), cols), noise, accumulate=True)
    assert torch.equal(y, expected)


def test_later_generations_never_change_weights_the_phase_handed_out():
    # The phase reuses the storage of the generation before last: the hall of fame's weights
    # (what a later handoff returns) must not move with it
    phase, _, w = _phase(p=10, fixed_data=False)
    state, _ = phase.step(phase.init(w), None)
    handed, storage = [], set()
    for _ in range(6):
        state, _ = phase.step(state, None)
        storage.add(state.population.data_ptr())
        handed += [(m.weights, m.weights.clone()) for m in state.hall_of_fame]
    assert len(storage) == 2  # two buffers, taking turns
    assert all(torch.equal(kept, copy) for kept, copy in handed)


def test_episodes_re_evaluate_everyone():
    phase, _, w = _phase(fixed_data=False)
    state, _ = phase.step(phase.init(w), None)
    assert phase.cost(state) == 12
    state, m = phase.step(state, None)
    assert m["evaluations"] == 12
    # on random episodes the candidate's score is not a training score: the optimiser re-scores
    assert phase.candidate(state)[1] is None


def test_deap_draws_do_not_touch_global_random():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    phase, _, w = _phase()
    state = phase.init(w)
    for _ in range(3):
        state, _ = phase.step(state, None)
    assert random.random() == expected


def test_user_registered_operators_are_used():
    calls = []

    def mate(a, b, generator):
        calls.append("mate")
        return b, a

    def mutate(x, scale, generator):
        calls.append("mutate")
        return x + 0.5

    def select(individuals, k):
        calls.append("select")
        return sorted(individuals, key=lambda m: m.fitness.values[0], reverse=True)[:1] * k

    phase, _, w = _phase(mate=mate, mutate=mutate, select=select, elite=0)
    state = phase.init(w)
    state, _ = phase.step(state, None)
    best = phase.best(state)[0].clone()
    state, _ = phase.step(state, None)
    assert calls == ["select", "mate", "mutate"]
    assert torch.allclose(state.population, (best + 0.5).expand_as(state.population))


def test_nonfinite_fitness_is_worst():
    model = mlp()
    flat = FlatParams.from_module(model)

    def evaluate(population, data):
        scores = torch.arange(len(population), dtype=torch.float64)
        scores[-1] = float("nan")
        return ScoreBatch(scores, None, torch.isfinite(scores))

    phase = bound(GeneticPhase(GeneticConfig()), model, flat, evaluate, 6)
    state, m = phase.step(phase.init(flat.vector(model)), None)
    assert m["nonfinite"] == 1 and state.scores[-1] == float("-inf")
    assert phase.best(state)[1] == 4.0


def test_pure_genetic_raises_the_score(bandit):
    model = mlp()
    opt = ho.HybridOptimizer(
        model, hit_rate, data=bandit, phases=("genetic",), population_size=32, seed=0
    )
    start = opt.evaluate()
    result = opt.fit(max_evaluations=1500, progress=False)
    assert result.best_score > start + 0.2
    assert all(r["phase"] == "genetic" for r in result.history)


def test_member_type_is_created_once():
    import importlib

    importlib.reload(_deap)
    assert hasattr(_deap.creator, "HybridMember")


def test_operators_registered_on_the_optimizer_toolbox_are_used(bandit):
    calls = []

    def mutate(x, scale, generator):
        calls.append(x.shape)
        return x

    opt = ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, phases=("genetic",), population_size=10, seed=0
    )
    opt.toolbox.register("mutate", mutate)
    opt.fit(max_evaluations=40, progress=False)
    assert calls and calls[0][0] == 10 - 2  # offspring only; the two elites are kept as they are


def test_a_population_of_copies_ends_the_run_instead_of_spinning(bandit):
    opt = ho.HybridOptimizer(
        mlp(),
        hit_rate,
        data=bandit,
        phases=("genetic",),
        population_size=10,
        seed=0,
        genetic=GeneticConfig(crossover_prob=0.0, mutation_prob=0.0),
    )
    result = opt.fit(max_evaluations=10_000, progress=False)
    assert result.stop_reason.startswith("converged: 10 steps in a row")
    assert result.evaluations == 11  # the starting weights and the first generation


# -- fast paths against the references they replace (issue 14: work outside evaluation) --------


def _bound_genetic(genetic, p=24, episode_length=None, seed=3, wrap=False):
    """A bound genetic phase and its first state; ``wrap`` hides the built-in operators behind
    lambdas, so the phase falls back to fingerprints."""
    from conftest import make_bandit

    from hybridopt.run_loop import bind

    opt = ho.HybridOptimizer(mlp(), hit_rate, make_bandit(n=96), phases=("genetic",),
                             population_size=p, episode_length=episode_length, backend="vmap",
                             seed=seed, genetic=genetic)
    if wrap:
        mate, mutate = opt.toolbox.mate, opt.toolbox.mutate
        opt.toolbox.register("mate", lambda a, b, generator: mate(a, b, generator=generator))
        opt.toolbox.register("mutate", lambda x, s, generator: mutate(x, s, generator=generator))
    bind(opt, None)
    phase = opt.phase_objects[0]
    start = opt.flat.vector(opt.model).detach().clone()
    return opt, phase, phase.init(start, start)


@pytest.mark.parametrize("crossover, gene_prob", [("blend", 0.1), ("uniform", 0.1),
                                                  ("uniform", 0.005)])
@pytest.mark.parametrize("episode_length", [None, 48])
def test_operator_masks_find_the_unchanged_offspring_the_fingerprints_find(
    crossover, gene_prob, episode_length
):
    cfg = GeneticConfig(crossover=crossover, gene_mutation_prob=gene_prob, mutation_prob=0.5,
                        crossover_prob=0.7)
    runs = []
    for wrap in (False, True):
        opt, phase, state = _bound_genetic(cfg, episode_length=episode_length, wrap=wrap)
        spent = copies = 0
        for _ in range(10):
            state, metrics = phase.step(state, opt.evaluation.episode())
            spent += metrics["evaluations"]
            copies += int((state.uids[2:] < state.next_uid - 22).sum())  # kept a parent's uid
        runs.append((phase.state_dict(state), spent, copies))
    (fast, fast_spent, copies), (slow, slow_spent, _) = runs
    for key in ("population", "scores", "evaluated", "uids"):
        assert torch.equal(fast[key], slow[key]), key
    assert fast["next_uid"] == slow["next_uid"] and fast_spent == slow_spent
    assert copies > 0  # some offspring were found unchanged


def test_your_own_operators_keep_the_fingerprint_check():
    cfg = GeneticConfig(crossover_prob=0.0)
    opt, phase, state = _bound_genetic(cfg)
    opt.toolbox.register("mutate", lambda x, scale, generator: x)  # changes nothing
    state, _ = phase.step(state, opt.data)
    state, metrics = phase.step(state, opt.data)
    assert metrics["evaluations"] == 0  # every offspring is a copy: nothing to score


def test_hall_of_fame_update_matches_deap_over_every_member():
    rng = torch.Generator().manual_seed(0)
    for trial in range(60):
        size = 1 + trial % 7
        fast = _deap.HallOfFame(size, similar=_deap.same_member)
        ref = _deap.HallOfFame(size, similar=_deap.same_member)
        for _ in range(6):
            p = int(torch.randint(1, 40, (1,), generator=rng))
            scores = torch.randint(0, 5, (p,), generator=rng).double()  # many ties
            scores[torch.rand(p, generator=rng) < 0.1] = -float("inf")
            uids = torch.randint(0, 30, (p,), generator=rng)  # repeats, within and across
            population = torch.randn(p, 3, generator=rng)
            _deap.update_hall_of_fame(fast, scores, uids, population)
            ref.update([_deap.make_member(i, u, s) for i, (u, s) in
                        enumerate(zip(uids.tolist(), scores.tolist()))])
            for member in ref:
                if member.weights is None:
                    member.weights = population[member.index].clone()
            assert [(m.uid, m.index, m.fitness.values) for m in fast] == [
                (m.uid, m.index, m.fitness.values) for m in ref]
            assert all(torch.equal(a.weights, b.weights) for a, b in zip(fast, ref))
            assert [k.values for k in fast.keys] == [k.values for k in ref.keys]


def test_population_stats_match_deaps_statistics():
    import numpy as np
    from deap import tools

    def finite(values):
        arr = np.asarray(values, dtype=float)
        return arr[np.isfinite(arr)] if np.isfinite(arr).any() else np.array([np.nan])

    stats = tools.Statistics(key=lambda m: m.fitness.values[0])
    for name, fn in (("avg", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
        stats.register(name, lambda v, fn=fn: float(fn(finite(v))))
    rng = torch.Generator().manual_seed(1)
    for scores in (torch.randn(300, generator=rng, dtype=torch.float64),
                   torch.tensor([1.0, -float("inf"), 0.25], dtype=torch.float64),
                   torch.full((4,), -float("inf"), dtype=torch.float64)):
        members = [_deap.make_member(i, i, s) for i, s in enumerate(scores.tolist())]
        expected, got = stats.compile(members), _deap.population_stats(scores)
        assert list(got) == list(expected)
        assert all(got[k] == expected[k] or (got[k] != got[k] and expected[k] != expected[k])
                   for k in got)  # bit for bit (NaN when nothing is finite)


@pytest.mark.parametrize("select", [_deap.tournament(3), lambda ind, k: _deap.tools.selBest(
    ind, k)])
def test_lightweight_members_select_like_full_members(select):
    scores = torch.randint(0, 6, (50,), generator=gen(2)).double()  # ties decide by order
    picks = []
    for members in (_deap.selection_members(scores),
                    [_deap.make_member(i, 0, s) for i, s in enumerate(scores.tolist())]):
        with _deap.private_random(random.Random(5)):
            picks.append([m.index for m in select(members, 40)])
    assert picks[0] == picks[1]
