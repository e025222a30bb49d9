"""backend="joblib" against the in-process loop, and what every backend shares (no Ray here)."""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
import pytest
import torch
from conftest import make_bandit, mlp

from hybridopt import GeneticConfig, HybridOptimizer
from hybridopt.backends import make_backend
from hybridopt.backends.joblib_backend import JoblibOptions
from hybridopt.backends.local import ShardScores, merge, shard_bounds
from hybridopt.backends.ray_options import RayOptions
from hybridopt.data import slice_data
from hybridopt.population.evaluate import PopulationEvaluator
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import Scorer


def np_hits(actions, data):
    """A plain-Python/numpy score that torch.func.vmap cannot batch."""
    a, best = np.asarray(actions), np.asarray(data[1])
    return float(sum(int(u == v) for u, v in zip(a.tolist(), best.tolist())) / len(a))


def _population(model, p, seed=0, scale=0.3):
    flat = FlatParams.from_module(model)
    noise = torch.randn(p, flat.dim, generator=torch.Generator().manual_seed(seed))
    return flat.vector(model) + scale * noise


def _fit(backend: str):
    x, best = make_bandit()
    opt = HybridOptimizer(
        mlp(), np_hits, (x, best), backend=backend,
        backend_options={"n_jobs": 2} if backend == "joblib" else None,
        phases=("genetic",), population_size=16, episode_length=64, seed=2,
        genetic=GeneticConfig(elite=2),
    )
    return opt, opt.fit(max_evaluations=16 * 4, progress=False)


def test_joblib_equals_in_process_loop():
    _, expected = _fit("loop")
    opt, got = _fit("joblib")
    with opt:
        # The same fit, generation by generation
        assert [r["score"] for r in got.history] == [r["score"] for r in expected.history]
        assert got.best_score == expected.best_score

        # The same scores as the loop, whatever the population size and row slice
        backend, model, data = opt.evaluation.distributed, mlp().eval(), make_bandit()
        assert backend.worker_threads() == [1, 1]  # one torch thread per worker by default
        scorer = Scorer(np_hits)
        scorer.mode = "per_sequence"
        loop = PopulationEvaluator(model, scorer, FlatParams.from_module(model), method="loop")
        for p, bounds in ((25, None), (9, (30, 150)), (1, (0, 5))):
            population = _population(model, p, seed=p)
            episode = data if bounds is None else slice_data(data, *bounds)
            want = loop.evaluate(population, episode)
            have = backend.evaluate(population, bounds)
            assert torch.equal(have.scores, want.scores)
            assert torch.equal(have.finite, want.finite)


# -- shared pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize("total, parts", [(10, 3), (3, 8), (1, 1), (300, 7)])
def test_shard_bounds_cover_in_order(total, parts):
    bounds = shard_bounds(total, parts)
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_merge_keeps_order_and_fills_observed():
    first = ShardScores(torch.tensor([1.0, 2.0], dtype=torch.float64), torch.ones(2, dtype=bool),
                        None)
    second = ShardScores(torch.tensor([float("nan")], dtype=torch.float64),
                         torch.zeros(1, dtype=bool), torch.tensor([[True, False]]))
    batch = merge([first, second])
    assert batch.scores[:2].tolist() == [1.0, 2.0] and batch.n_nonfinite == 1
    assert batch.observed.tolist() == [[True, True], [True, True], [True, False]]


# -- option validation ------------------------------------------------------------------------


def _make(name, **options):
    model = mlp().eval()
    return make_backend(name, model=model, score_fn=np_hits, score_mode="per_sequence",
                        flat=FlatParams.from_module(model), data=make_bandit(), **options)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        _make("spark")


@pytest.mark.parametrize("name, known", [("ray", RayOptions), ("joblib", JoblibOptions)])
def test_unknown_option_is_named_with_the_known_ones(name, known):
    with pytest.raises(ValueError, match="num_worker") as info:
        _make(name, num_worker=2)
    for field in known.__dataclass_fields__:
        assert field in str(info.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_actors": 0}, "num_actors must be >= 1"),
        ({"num_actors": 1.5}, "num_actors must be an int"),
        ({"cpus_per_actor": 0}, "cpus_per_actor must be > 0"),
        ({"gpus_per_actor": -1}, "gpus_per_actor must be >= 0"),
        ({"method": "jit"}, "method must be one of"),
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"max_retries": True}, "max_retries must be an int"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"start_timeout": -5}, "start_timeout must be > 0"),
        ({"start_timeout": "60"}, "start_timeout must be a number"),
        ({"ship_code": "yes"}, "ship_code must be True or False"),
        ({"init_options": "num_cpus=2"}, "init_options must be a dict"),
    ],
)
def test_bad_ray_option_values(options, message):
    # Validated before Ray is imported or started
    with pytest.raises(ValueError, match=message):
        _make("ray", **options)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_jobs": 0}, "n_jobs must be >= 1"),
        ({"n_jobs": "2"}, "n_jobs must be an int"),
        ({"method": "fast"}, "method must be one of"),
        ({"timeout": -1}, "timeout must be > 0"),
        ({"threads_per_worker": 0}, "threads_per_worker must be >= 1"),
        ({"threads_per_worker": 1.5}, "threads_per_worker must be an int"),
    ],
)
def test_bad_joblib_option_values(options, message):
    with pytest.raises(ValueError, match=message):
        _make("joblib", **options)


def test_joblib_threads_per_worker():
    with _make("joblib", n_jobs=1, threads_per_worker=2) as backend:
        assert backend.worker_threads() == [2]


def test_optimizer_passes_backend_options_through():
    x, best = make_bandit()
    with pytest.raises(ValueError, match="unknown backend_options \\['n_job'\\]"):
        # Raised when the backend starts, or at the door if the optimizer checks it there
        opt = HybridOptimizer(mlp(), np_hits, (x, best), backend="joblib",
                              backend_options={"n_job": 2}, phases=("genetic",),
                              population_size=4)
        opt.fit(max_evaluations=8, progress=False)


# -- several objectives -----------------------------------------------------------------------


OBJECTIVES = ("hits", "zeros")


def np_two_objectives(actions, data):
    """Two objectives in plain numpy (not vmappable): hit rate and share of action 0."""
    a, best = np.asarray(actions), np.asarray(data[1])
    return {"hits": float((a == best).mean()), "zeros": float((a == 0).mean())}


def _multi_scorer() -> Scorer:
    scorer = Scorer(np_two_objectives, objectives=list(OBJECTIVES))
    scorer.mode = "per_sequence"
    return scorer


def test_merge_carries_objectives_in_order():
    first = ShardScores(torch.tensor([0.5, 1.0], dtype=torch.float64), torch.ones(2, dtype=bool),
                        None, torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64))
    second = ShardScores(torch.tensor([0.25], dtype=torch.float64), torch.ones(1, dtype=bool),
                         None, torch.tensor([[0.5, 0.0]], dtype=torch.float64))
    batch = merge([first, second])
    assert batch.objectives.tolist() == [[0.0, 1.0], [1.0, 1.0], [0.5, 0.0]]
    assert batch.scores.tolist() == [0.5, 1.0, 0.25]
    # A single-score shard has no objectives (the three-field form still builds)
    assert merge([ShardScores(first.scores, first.finite, None)]).objectives is None
    with pytest.raises(ValueError, match="with and without objectives"):
        merge([first, ShardScores(second.scores, second.finite, None)])


def test_joblib_carries_objectives_like_the_in_process_loop():
    model, data = mlp().eval(), make_bandit()
    flat = FlatParams.from_module(model)
    loop = PopulationEvaluator(model, _multi_scorer(), flat, method="loop")
    with make_backend("joblib", model=model, score_fn=np_two_objectives,
                      score_mode="per_sequence", flat=flat, data=data,
                      objectives=list(OBJECTIVES), n_jobs=2) as backend:
        for p, bounds in ((11, None), (5, (40, 120))):
            population = _population(model, p, seed=p)
            episode = data if bounds is None else slice_data(data, *bounds)
            want = loop.evaluate(population, episode)
            have = backend.evaluate(population, bounds)
            assert have.objectives.shape == (p, len(OBJECTIVES))
            assert have.objectives.dtype == torch.float64
            assert torch.equal(have.objectives, want.objectives)
            assert torch.equal(have.scores, want.scores)  # the mean of the objectives
            assert torch.equal(have.finite, want.finite)
            # Re-scalarised on the driver, as under the driver scorer's weights
            weights = torch.tensor([0.8, 0.2], dtype=torch.float64)
            assert torch.equal(have.scalarised(weights).scores, want.objectives @ weights)


def test_single_score_backend_has_no_objectives():
    with _make("joblib", n_jobs=1) as backend:
        model = mlp().eval()
        assert backend.evaluate(_population(model, 3), None).objectives is None


def test_bad_objectives_fail_before_workers_start():
    with pytest.raises(ValueError, match="distinct"):
        _make("joblib", objectives=["hits", "hits"])


@pytest.mark.ray
def test_ray_carries_objectives_like_the_in_process_loop(monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # Ray 2.60 turns token auth on by default
    # A local Ray of its own: loopback 127.0.0.2, its files in a temp dir, no dashboard
    temp_dir = tempfile.mkdtemp(prefix="hxobj-")  # short: Ray's socket paths must fit 107 bytes
    local = {"_node_ip_address": "127.0.0.2", "include_dashboard": False, "num_cpus": 2,
             "_temp_dir": temp_dir}
    model, data = mlp().eval(), make_bandit()
    flat = FlatParams.from_module(model)
    loop = PopulationEvaluator(model, _multi_scorer(), flat, method="loop")
    population = _population(model, 7, seed=3)
    try:
        with make_backend("ray", model=model, score_fn=np_two_objectives,
                          score_mode="per_sequence", flat=flat, data=data,
                          objectives=list(OBJECTIVES), num_actors=2, method="loop",
                          init_options=local) as backend:
            have = backend.evaluate(population, (10, 90))
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not ray.is_initialized()  # the backend stopped the Ray it started
    want = loop.evaluate(population, slice_data(data, 10, 90))
    assert torch.equal(have.objectives, want.objectives)
    assert torch.equal(have.scores, want.scores)


def _front_fit(backend: str, weights):
    x, best = make_bandit()
    opt = HybridOptimizer(
        mlp(), np_two_objectives, (x, best), objectives=list(OBJECTIVES), backend=backend,
        backend_options={"n_jobs": 2} if backend == "joblib" else None,
        phases=("genetic",), population_size=12, seed=3, objective_weights=weights,
    )
    return opt, opt.fit(max_evaluations=12 * 4, progress=False)


@pytest.mark.parametrize("weights", [None, [0.8, 0.2]])
def test_joblib_front_equals_in_process_loop(weights):
    # With weights, the workers' mean is re-scalarised on the driver: the same scores again
    _, expected = _front_fit("loop", weights)
    opt, got = _front_fit("joblib", weights)
    with opt:
        assert [r["score"] for r in got.history] == [r["score"] for r in expected.history]
        assert [e["train"] for e in got.pareto_front] == [e["train"] for e in expected.pareto_front]
        assert len(got.pareto_front) >= 1


# -- precision reaches the workers -------------------------------------------------------------


def test_joblib_workers_evaluate_in_the_precision_asked_for():
    model, data = mlp().eval(), make_bandit()
    flat = FlatParams.from_module(model)
    scorer = Scorer(np_hits)
    scorer.mode = "per_sequence"
    population = _population(model, 40, seed=4, scale=3.0)
    want = {p: PopulationEvaluator(model, scorer, flat, method="loop", precision=p)
            .evaluate(population, data).scores for p in ("float32", "bfloat16")}
    assert not torch.equal(want["bfloat16"], want["float32"])  # the two can be told apart
    for precision in ("float32", "bfloat16"):
        with _make("joblib", n_jobs=2, method="loop", precision=precision) as backend:
            assert torch.equal(backend.evaluate(population, None).scores, want[precision])


def test_float16_on_cpu_workers_fails_before_they_start():
    with pytest.raises(ValueError, match=r'"float16" needs CUDA.*backend = .joblib.'):
        _make("joblib", n_jobs=2, precision="float16")
    x, best = make_bandit()
    for backend, options in (("joblib", {"n_jobs": 2}), ("ray", {"num_actors": 2})):
        with pytest.raises(ValueError, match=rf"float16.*backend = .{backend}.: its workers run"):
            HybridOptimizer(mlp(), np_hits, (x, best), backend=backend,
                            backend_options=options, precision="float16")
    with pytest.raises(ValueError, match="precision must be one of"):
        _make("joblib", n_jobs=2, precision="fp8")
