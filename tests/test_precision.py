"""Reduced-precision population evaluation and the ``auto`` choice of method and precision."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hybridopt as ho
from hybridopt.population import auto as auto_mod
from hybridopt.population import evaluate as evaluate_mod
from hybridopt.population.auto import AutoSettings, measure, pick, size_key
from hybridopt.population.device import clock_name
from hybridopt.population.evaluate import PopulationEvaluator
from hybridopt.population.flat import FlatParams
from hybridopt.population.precision import bf16_matmul_units
from hybridopt.scoring import Scorer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class LastStep(nn.Module):
    """Recurrent encoder -> last step -> Linear(3)."""

    def __init__(self, cell: type[nn.RNNBase]):
        super().__init__()
        self.rnn = cell(3, 16, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


MODELS = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(15, 32), nn.ReLU(), nn.Linear(32, 3)),
    "lstm": lambda: LastStep(nn.LSTM),
    "gru": lambda: LastStep(nn.GRU),
    "rnn": lambda: LastStep(nn.RNN),
}


@ho.batched
def agreement(actions, data):
    return (actions == data["target"]).float().mean(-1)


def setup(name="mlp", p=6, n=256, seed=0):
    torch.manual_seed(seed)
    model = MODELS[name]().eval()
    flat = FlatParams.from_module(model)
    g = torch.Generator().manual_seed(seed)
    population = flat.vector(model) + 0.3 * torch.randn(p, flat.dim, generator=g)
    x = torch.randn(n, 5, 3, generator=g)
    data = {"x": x, "target": torch.randint(0, 3, (n,), generator=g)}
    return model, flat, population, data


def clear_rows(logits: torch.Tensor, margin: float = 0.03) -> torch.Tensor:
    """Rows where every individual's best logit leads its second by ``margin`` of its scale
    (bfloat16 rounds each product to about 0.4%)."""
    top2 = logits.topk(2, dim=-1).values
    lead = top2[..., 0] - top2[..., 1]
    scale = logits.abs().flatten(1).amax(1).reshape(-1, *[1] * (lead.dim() - 1))
    return (lead > margin * scale).all(0)


def plain(value) -> bool:
    """Only ints, floats, strings, bools, None, lists and dicts (what a checkpoint keeps)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (int, float, str, bool))


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["float64", "bf16", "", None, torch.bfloat16, 16])
def test_bad_precision_is_rejected_in_the_constructor(bad):
    model, flat, _, _ = setup()
    with pytest.raises(ValueError, match=r"precision must be one of .*got "):
        PopulationEvaluator(model, Scorer(agreement), flat, precision=bad)


class CountingMLP(nn.Module):
    """A small MLP that counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.net, self.calls = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_the_optimizer_rejects_a_bad_precision_before_any_forward_pass():
    model, x = CountingMLP(), torch.randn(64, 4)
    with pytest.raises(ValueError, match=r"precision must be one of .*got 'bf17'"):
        ho.HybridOptimizer(model, agreement, x, precision="bf17")
    assert model.calls == 0


def test_float16_needs_cuda():
    model, flat, _, _ = setup()
    with pytest.raises(ValueError, match=r'precision = "float16" needs CUDA.*cpu'):
        PopulationEvaluator(model, Scorer(agreement), flat, precision="float16", device="cpu")


# -- same actions -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_bfloat16_and_float32_choose_the_same_actions(name, method):
    model, flat, population, data = setup(name)
    f32 = PopulationEvaluator(model, Scorer(agreement), flat, method=method)
    bf16 = PopulationEvaluator(model, Scorer(agreement), flat, method=method, precision="bfloat16")
    assert bf16.precision == "bfloat16"
    logits = f32.logits_loop(population, data["x"])
    clear = clear_rows(logits)
    assert clear.float().mean() > 0.5  # the test has power: most rows have clear margins
    reduced = getattr(bf16, f"logits_{method}")(population, data["x"])
    assert reduced.dtype == torch.float32  # logits come back in float32 either way
    torch.testing.assert_close(reduced, logits, atol=0.05 * logits.abs().amax().item(), rtol=0)
    want = f32.actions(population, data)
    got = bf16.actions(population, data)
    assert torch.equal(got[:, clear], want[:, clear])
    assert (got == want).float().mean() > 0.95


class ForeignTensor(nn.Module):
    """A forward that multiplies by a float32 tensor of its own (not a parameter or buffer)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(15, 8)
        self.projection = torch.randn(3, 8)

    def forward(self, x):
        return F.linear(torch.relu(self.linear(x.flatten(1))), self.projection)


def test_a_forward_with_float32_tensors_of_its_own_runs_under_autocast():
    torch.manual_seed(0)
    model = ForeignTensor()
    flat = FlatParams.from_module(model)
    population = flat.vector(model) + 0.3 * torch.randn(4, flat.dim)
    data = {"x": torch.randn(128, 5, 3), "target": torch.randint(0, 3, (128,))}
    ref = PopulationEvaluator(model, Scorer(agreement), flat, method="loop")
    for method in ("vmap", "loop"):
        ev = PopulationEvaluator(model, Scorer(agreement), flat, method=method,
                                 precision="bfloat16")
        got = ev.actions(population, data)  # explicit casts fail; autocast is used, no warning
        clear = clear_rows(ref.logits_loop(population, data["x"]))
        assert torch.equal(got[:, clear], ref.actions(population, data)[:, clear])


class Float32Only(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(15, 3)

    def forward(self, x):
        y = self.linear(x.flatten(1))
        if y.dtype != torch.float32:
            raise TypeError("this model only runs in float32")
        return y


def test_a_model_that_only_runs_in_float32_falls_back_with_a_warning():
    model = Float32Only()
    flat = FlatParams.from_module(model)
    population = flat.vector(model) + 0.3 * torch.randn(4, flat.dim)
    data = {"x": torch.randn(16, 5, 3), "target": torch.randint(0, 3, (16,))}
    ev = PopulationEvaluator(model, Scorer(agreement), flat, method="loop", precision="bfloat16")
    with pytest.warns(RuntimeWarning, match="cannot run in precision = 'bfloat16'"):
        scores = ev.evaluate(population, data).scores
    ref = PopulationEvaluator(model, Scorer(agreement), flat, method="loop")
    assert torch.equal(scores, ref.evaluate(population, data).scores)


# -- auto ---------------------------------------------------------------------------------------


def test_auto_records_its_precision_and_method_choice():
    model, flat, population, data = setup("mlp", p=16, n=64)
    ev = PopulationEvaluator(model, Scorer(agreement), flat, method="auto", precision="auto",
                             auto=AutoSettings(repeats=2, min_seconds=0.0))
    assert ev.precision == "auto" and ev.choice is None
    scores = ev.evaluate(population, data).scores
    choice = ev.choice
    assert choice["method"] in ("vmap", "loop")
    assert choice["precision"] in ("float32", "bfloat16")
    assert choice["hardware"] == bf16_matmul_units(torch.device("cpu"))
    assert choice["clock"] == clock_name(torch.device("cpu"))
    wanted = {"vmap/float32", "loop/float32"}
    if choice["hardware"]:
        wanted |= {"vmap/bfloat16", "loop/bfloat16"}
        assert 0.0 <= choice["precision_agreement"] <= 1.0
    assert set(choice["timings"]) == wanted and all(t > 0 for t in choice["timings"].values())
    assert choice["agree"] is True
    assert choice["sizes"] == [{"rows": 64, "population": 16, "method": choice["method"],
                                "precision": choice["precision"]}]
    assert plain(choice) and json.loads(json.dumps(choice)) == choice
    want = PopulationEvaluator(model, Scorer(agreement), flat, method=choice["method"],
                               precision=choice["precision"]).evaluate(population, data).scores
    assert torch.equal(scores, want)


def test_auto_without_bf16_units_stays_in_float32(monkeypatch):
    monkeypatch.setattr(evaluate_mod, "bf16_matmul_units", lambda device: None)
    model, flat, population, data = setup("mlp", p=8, n=32)
    ev = PopulationEvaluator(model, Scorer(agreement), flat, precision="auto",
                             auto=AutoSettings(repeats=1, min_seconds=0.0))
    ev.evaluate(population, data)
    assert ev.choice["precision"] == "float32" and ev.choice["hardware"] is None
    assert set(ev.choice["timings"]) == {"vmap/float32", "loop/float32"}


def test_auto_times_again_when_rows_or_population_size_change(monkeypatch):
    calls = []
    real = auto_mod.measure

    def counting(candidates, settings, clock):
        calls.append(len(candidates))
        return real(candidates, settings, clock)

    monkeypatch.setattr(evaluate_mod, "measure", counting)
    model, flat, population, data = setup("mlp", p=64, n=256)
    ev = PopulationEvaluator(model, Scorer(agreement), flat,
                             auto=AutoSettings(repeats=1, min_seconds=0.0))
    short = {k: v[:32] for k, v in data.items()}
    ev.evaluate(population[:16], short)
    ev.evaluate(population[:15], short)  # same size, to the nearest power of two
    assert len(calls) == 1
    ev.evaluate(population[:16], data)  # longer episodes
    ev.evaluate(population, data)  # a larger population
    assert len(calls) == 3
    sizes = [(s["rows"], s["population"]) for s in ev.choice["sizes"]]
    assert sizes == [(32, 16), (256, 16), (256, 64)]
    ev.evaluate(population[:16], short)  # a size timed before: no new timing
    assert len(calls) == 3


def test_a_saved_choice_is_restored_without_timing(monkeypatch):
    model, flat, population, data = setup("mlp", p=16, n=64)
    first = PopulationEvaluator(model, Scorer(agreement), flat, precision="auto",
                                auto=AutoSettings(repeats=1, min_seconds=0.0))
    scores = first.evaluate(population, data).scores
    saved = json.loads(json.dumps(first.choice))

    def no_timing(*args):
        raise AssertionError("a restored choice must not be timed again")

    monkeypatch.setattr(evaluate_mod, "measure", no_timing)
    resumed = PopulationEvaluator(model, Scorer(agreement), flat, precision="auto")
    resumed.choice = saved
    assert torch.equal(resumed.evaluate(population, data).scores, scores)
    old_format = PopulationEvaluator(model, Scorer(agreement), flat)
    old_format.choice = {"method": "loop"}  # saved before precision and sizes were recorded
    old_format.evaluate(population, data)
    assert old_format.choice == {"method": "loop"}


def test_pick_wants_a_clear_gain_and_agreement_for_bfloat16():
    s = AutoSettings(margin=1.2, min_agreement=0.9)
    f32 = {"vmap/float32": 1.0, "loop/float32": 2.0}
    assert pick(f32, None, s) == ("vmap", "float32")
    assert pick({**f32, "vmap/bfloat16": 0.9, "loop/bfloat16": 0.95}, 1.0, s) == (
        "vmap", "float32")  # 1.1x: not worth reduced precision
    assert pick({**f32, "vmap/bfloat16": 0.9, "loop/bfloat16": 0.5}, 1.0, s) == (
        "loop", "bfloat16")
    assert pick({**f32, "loop/bfloat16": 0.5}, 0.8, s) == ("vmap", "float32")  # disagrees
    assert pick({"vmap/bfloat16": 2.0, "loop/bfloat16": 1.0}, None, s) == ("loop", "bfloat16")


def test_measure_keeps_the_median_so_one_slow_run_does_not_decide():
    durations = {"a": iter([1.0, 1.0, 9.0, 1.0]), "b": iter([2.0, 2.0, 2.0, 2.0])}
    clock_now = [0.0]

    def candidate(name):
        def run():
            clock_now[0] += next(durations[name])
            return torch.zeros(1)
        return run

    times, outputs = measure({"a": candidate("a"), "b": candidate("b")},
                             AutoSettings(repeats=3, min_seconds=0.0), lambda: clock_now[0])
    assert times == {"a": 1.0, "b": 2.0} and set(outputs) == {"a", "b"}


def test_size_key_rounds_to_powers_of_two():
    assert size_key(64, 300) == size_key(64, 240) == (6, 8)
    assert size_key(2048, 300) != size_key(64, 300)
    assert size_key(64, 1024) != size_key(64, 300)


# -- CUDA ---------------------------------------------------------------------------------------


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_reduced_precision_on_cuda_agrees_with_the_cpu(precision, name):
    model, flat, population, data = setup(name)
    ref = PopulationEvaluator(model, Scorer(agreement), flat, method="loop")
    clear = clear_rows(ref.logits_loop(population, data["x"]))
    want = ref.actions(population, data)
    cuda_data = {k: v.cuda() for k, v in data.items()}
    for method in ("vmap", "loop"):
        ev = PopulationEvaluator(model, Scorer(agreement), flat, method=method, device="cuda",
                                 precision=precision)
        got = ev.actions(population.cuda(), cuda_data).cpu()
        assert torch.equal(got[:, clear], want[:, clear])


@pytest.mark.cuda
@cuda
def test_auto_on_cuda_records_its_choice():
    model, flat, population, data = setup("mlp", p=64)
    ev = PopulationEvaluator(model, Scorer(agreement), flat, device="cuda", precision="auto",
                             auto=AutoSettings(repeats=2))
    ev.evaluate(population.cuda(), {k: v.cuda() for k, v in data.items()})
    assert ev.choice["device"].startswith("cuda") and plain(ev.choice)
    major = torch.cuda.get_device_capability()[0]
    assert (ev.choice["hardware"] is not None) == (major >= 8)


def test_a_kept_best_is_a_float32_score():
    # Population evaluation in bfloat16, but the kept best is re-scored in float32 through the
    # model itself: result.best_score equals the float32 score of the weights it holds
    from conftest import hit_rate, make_bandit, mlp

    import hybridopt as ho

    data = make_bandit(n=128)
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=data, phases=("genetic",), precision="bfloat16",
                             population_size=16, seed=0)
    result = opt.fit(max_evaluations=200, progress=False)
    assert next(opt.model.parameters()).dtype == torch.float32
    assert result.best_score == opt.evaluate(data)
    assert result.best_score == float(hit_rate(opt.model(data[0]).argmax(-1)[None], data)[0])
