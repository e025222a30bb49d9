"""backend="ray" on a real local Ray: same scores and same fit as in process, lost actors."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
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

# Tests use loopback addresses only; Ray rewrites 127.0.0.1, not 127.0.0.2. A local Ray picks
# free ports itself; its files go to a temp dir of its own, not the shared /tmp/ray.
LOCAL_RAY = {"_node_ip_address": "127.0.0.2", "include_dashboard": False, "num_cpus": 4}


def _backend(model, data, score_fn=hit_rate, mode="batched", **options):
    return make_backend(
        "ray", model=model, score_fn=score_fn, score_mode=mode,
        flat=FlatParams.from_module(model), data=data, **options,
    )


def _population(model, p, seed=0, scale=0.3):
    flat = FlatParams.from_module(model)
    noise = torch.randn(p, flat.dim, generator=torch.Generator().manual_seed(seed))
    return flat.vector(model) + scale * noise


@pytest.fixture(scope="module")
def own_ray():
    """A backend that starts its own local Ray; the other tests reuse that Ray.

    Closing it at the end must stop the Ray it started. The workers get nothing of the tests
    on their ``sys.path``: the score functions of these modules travel by value.
    """
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 turns token auth on by default
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    temp_dir = tempfile.mkdtemp(prefix="hxlocal-")
    model = mlp().eval()
    backend = _backend(model, make_bandit(), num_actors=2,
                       init_options={**LOCAL_RAY, "_temp_dir": temp_dir})
    try:
        yield backend, model
    finally:
        backend.close()
        stopped = not ray.is_initialized()
        deadline = time.monotonic() + 15
        while _naming(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _naming(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
    assert stopped, "the backend did not stop the Ray it started"
    assert not left, f"processes of the local Ray left running: {left}"


def _naming(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                stat = Path(f"/proc/{entry}/stat").read_text()
                found += [int(entry)] if stat.rsplit(")", 1)[1].split()[0] != "Z" else []
        except (OSError, IndexError):  # gone meanwhile
            continue
    return found


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
    info = backend.worker_info()
    assert [w["device"] for w in info] == ["cpu", "cpu"]
    assert [w["threads"] for w in info] == [1, 1]  # one torch thread per CPU of the actor
    assert [w["precision"] for w in info] == ["float32", "float32"]
    assert set(backend.shipped) == {"conftest"}  # hit_rate's module, which workers lack


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
def test_replaced_actor_then_no_worker_left(own_ray):
    model = mlp().eval()
    data = make_bandit()
    population = _population(model, 30)
    reference = PopulationEvaluator(model, Scorer(hit_rate), FlatParams.from_module(model),
                                    method="vmap").evaluate(population, data)
    with _backend(model, data, num_actors=1, max_retries=1, timeout=60) as backend:
        # The killed actor is replaced (once: max_retries=1) and its shard is re-run
        pid = backend.worker_info()[0]["pid"]
        _kill(pid)
        assert torch.equal(backend.evaluate(population, None).scores, reference.scores)
        assert backend.worker_info()[0]["pid"] != pid
        # Out of replacements: the next loss leaves no worker at all
        _kill(backend.worker_info()[0]["pid"])
        with pytest.raises(RuntimeError, match="no Ray worker left"):
            backend.evaluate(population, None)


def test_no_actor_can_start_is_a_clear_error(own_ray):
    # 64 CPUs per actor on a 4-CPU Ray: Ray would queue the actor for ever
    with pytest.raises(RuntimeError, match="no Ray actor started within start_timeout") as info:
        _backend(mlp().eval(), make_bandit(), cpus_per_actor=64, start_timeout=2)
    assert "64 CPU" in str(info.value) and "'CPU': 4.0" in str(info.value)


def test_unpicklable_shipped_code_is_a_clear_error(own_ray, tmp_path, monkeypatch):
    # A score function of a local module that holds a lock: pickled by value, it cannot travel
    (tmp_path / "hxlocked.py").write_text(
        "import threading\nLOCK = threading.Lock()\n\n"
        "def score(actions, data):\n    with LOCK:\n        return 0.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import hxlocked

    try:
        with pytest.raises(TypeError, match="cannot send the model.*hxlocked.*ship_code=False"):
            _backend(mlp().eval(), make_bandit(), score_fn=hxlocked.score, mode="per_sequence")
        assert not ray.cloudpickle.list_registry_pickle_by_value()
    finally:
        sys.modules.pop("hxlocked", None)


def test_actor_threads_follow_cpus_per_actor(own_ray):
    with _backend(mlp().eval(), make_bandit(), num_actors=1, cpus_per_actor=2) as backend:
        assert backend.worker_info()[0]["threads"] == 2


def test_actors_evaluate_in_the_precision_asked_for(own_ray):
    model, data = mlp().eval(), make_bandit()
    flat = FlatParams.from_module(model)
    population = _population(model, 40, seed=4, scale=3.0)
    want = {p: PopulationEvaluator(model, Scorer(hit_rate), flat, method="vmap", precision=p)
            .evaluate(population, data).scores for p in ("float32", "bfloat16")}
    assert not torch.equal(want["bfloat16"], want["float32"])  # the two can be told apart
    with _backend(model, data, num_actors=1, method="vmap", precision="bfloat16") as backend:
        assert backend.worker_info()[0]["precision"] == "bfloat16"
        assert torch.equal(backend.evaluate(population, None).scores, want["bfloat16"])


def _failing_score(actions, data):
    raise ValueError("score_fn exploded on purpose")


def test_worker_error_is_raised_not_retried(own_ray):
    model = mlp().eval()
    with _backend(model, make_bandit(), score_fn=_failing_score, mode="per_sequence",
                  num_actors=1) as backend:
        with pytest.raises(ValueError, match="exploded on purpose"):
            backend.evaluate(_population(model, 4), None)
        assert backend.failures == 0
