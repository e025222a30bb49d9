"""backend="ray" on a real local Ray: same scores and same fit as in process, lost actors."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import hit_rate, make_bandit, mlp

from hybridopt import GeneticConfig, HybridOptimizer
from hybridopt.backends import make_backend
from hybridopt.data import slice_data
from hybridopt.population.evaluate import PopulationEvaluator
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import Scorer

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

TESTS = str(Path(__file__).parent)
# Tests use loopback addresses only; Ray rewrites 127.0.0.1, not 127.0.0.2.
LOCAL_RAY = {"_node_ip_address": "127.0.0.2", "include_dashboard": False, "num_cpus": 4}


def _backend(model, data, score_fn=hit_rate, mode="batched", **options):
    return make_backend(
        "ray", model=model, score_fn=score_fn, score_mode=mode,
        flat=FlatParams.from_module(model), data=data, **options,
    )


def _population(model, p, seed=0):
    flat = FlatParams.from_module(model)
    noise = torch.randn(p, flat.dim, generator=torch.Generator().manual_seed(seed))
    return flat.vector(model) + 0.3 * noise


@pytest.fixture(scope="module")
def own_ray():
    """A backend that starts its own local Ray; the other tests reuse that Ray.

    Closing it at the end must stop the Ray it started.
    """
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "PYTHONPATH")}
    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 turns token auth on by default
    # Workers unpickle the score function from the tests' conftest module
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, saved["PYTHONPATH"]]))
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    model = mlp().eval()
    backend = _backend(model, make_bandit(), num_actors=2, init_options=LOCAL_RAY)
    try:
        yield backend, model
    finally:
        backend.close()
        stopped = not ray.is_initialized()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert stopped, "the backend did not stop the Ray it started"


def test_scores_equal_in_process_vmap(own_ray):
    backend, model = own_ray
    data = make_bandit()
    reference = PopulationEvaluator(model, Scorer(hit_rate), FlatParams.from_module(model),
                                    method="vmap")
    for p, bounds in ((24, None), (7, (10, 90)), (1, (0, 256))):
        population = _population(model, p, seed=p)
        expected = reference.evaluate(
            population, data if bounds is None else slice_data(data, *bounds)
        )
        got = backend.evaluate(population, bounds)
        assert torch.equal(got.scores, expected.scores)
        assert torch.equal(got.finite, expected.finite)
    assert [w["device"] for w in backend.worker_info()] == ["cpu", "cpu"]


def _fit(backend: str, episode_length=None, **options):
    x, best = make_bandit()
    with HybridOptimizer(
        mlp(), hit_rate, (x, best), backend=backend, backend_options=options,
        phases=("genetic",), population_size=24, episode_length=episode_length, seed=3,
        genetic=GeneticConfig(elite=2),
    ) as opt:
        return opt.fit(max_evaluations=24 * 5, progress=False)


@pytest.mark.slow
def test_fit_equals_vmap_fit(own_ray):
    # Episodes: every generation is scored on a different row slice held by the actors
    expected = _fit("vmap", episode_length=64)
    got = _fit("ray", episode_length=64, num_actors=2, timeout=60)
    assert got.best_score == expected.best_score
    assert [r["score"] for r in got.history] == [r["score"] for r in expected.history]
    for key, value in expected.best_state_dict.items():
        assert torch.equal(got.best_state_dict[key], value), key
    assert ray.is_initialized()  # a backend that reused Ray leaves it running


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_restarted_actor_then_no_worker_left(own_ray):
    model = mlp().eval()
    data = make_bandit()
    population = _population(model, 30)
    reference = PopulationEvaluator(model, Scorer(hit_rate), FlatParams.from_module(model),
                                    method="vmap").evaluate(population, data)
    with _backend(model, data, num_actors=1, max_retries=1, timeout=60) as backend:
        # Ray restarts the killed actor (max_restarts = max_retries) and its shard is re-run
        pid = backend.worker_info()[0]["pid"]
        _kill(pid)
        assert torch.equal(backend.evaluate(population, None).scores, reference.scores)
        assert backend.worker_info()[0]["pid"] != pid
        # Out of restarts: the next loss leaves no worker at all
        _kill(backend.worker_info()[0]["pid"])
        with pytest.raises(RuntimeError, match="no Ray worker left"):
            backend.evaluate(population, None)


def _failing_score(actions, data):
    raise ValueError("score_fn exploded on purpose")


def test_worker_error_is_raised_not_retried(own_ray):
    model = mlp().eval()
    with _backend(model, make_bandit(), score_fn=_failing_score, mode="per_sequence",
                  num_actors=1) as backend:
        with pytest.raises(ValueError, match="exploded on purpose"):
            backend.evaluate(_population(model, 4), None)
        assert backend.failures == 0
