"""The population evaluator: vmap agrees with the loop reference, flat vectors round-trip."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import hybridopt as ho
from hybridopt.population.evaluate import PopulationEvaluator
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import Scorer


class LastStep(nn.Module):
    """Recurrent encoder -> last time step -> linear head."""

    def __init__(self, cell: type[nn.RNNBase], batch_first: bool, layers: int = 1):
        super().__init__()
        self.batch_first = batch_first
        self.rnn = cell(3, 8, num_layers=layers, batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.rnn(x if self.batch_first else x.transpose(0, 1))
        last = out[:, -1] if self.batch_first else out[-1]
        return self.head(last)


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 6, kernel_size=3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, x):  # x [N, T, 3]
        return self.head(torch.relu(self.conv(x.transpose(1, 2))).mean(-1))


class ThreeItems(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(15, 16), nn.ReLU(), nn.Linear(16, 6))

    def forward(self, x):
        return self.body(x).reshape(-1, 3, 2)


MODELS = {
    "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(15, 16), nn.ReLU(), nn.Linear(16, 3)),
    "lstm": lambda: LastStep(nn.LSTM, batch_first=True),
    "lstm_seq_first_2_layers": lambda: LastStep(nn.LSTM, batch_first=False, layers=2),
    "gru": lambda: LastStep(nn.GRU, batch_first=True),
    "conv1d": Conv,
    "three_items": ThreeItems,
}


@ho.batched
def agreement(actions, data):
    """A score sensitive to every action: weighted agreement with a fixed target."""
    target = data["target"]
    weights = torch.arange(1, target[..., 0:1].numel() + 1, dtype=torch.float32)
    hits = (actions == target).float()
    if hits.dim() == 3:
        hits = hits.mean(-1)
    return (hits * weights).sum(-1) / weights.sum()


def population_for(model, p=7, seed=0):
    flat = FlatParams.from_module(model)
    g = torch.Generator().manual_seed(seed)
    w = flat.vector(model)
    return flat, w + 0.3 * torch.randn(p, flat.dim, generator=g)


@pytest.mark.parametrize("name", list(MODELS))
def test_vmap_and_loop_agree(name):
    torch.manual_seed(0)
    model = MODELS[name]()
    x = torch.randn(40, 5, 3)
    out_shape = model(x).shape[:-1]
    data = {"x": x, "target": torch.randint(0, 2, out_shape)}
    flat, population = population_for(model)
    scorer = Scorer(agreement)
    vm = PopulationEvaluator(model, scorer, flat, method="vmap")
    lp = PopulationEvaluator(model, scorer, flat, method="loop")
    logits_v = vm.logits_vmap(population, x)
    logits_l = lp.logits_loop(population, x)
    assert logits_v.shape == (7, *model(x).shape)
    assert torch.allclose(logits_v, logits_l, atol=1e-5)
    assert torch.equal(vm.actions(population, data), lp.actions(population, data))
    assert torch.equal(vm.evaluate(population, data).scores, lp.evaluate(population, data).scores)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", ["mlp", "lstm", "three_items"])
def test_loop_actions_are_the_argmax_of_the_loop_logits(name, precision):
    # The loop takes each individual's argmax without stacking its logits: the same actions
    torch.manual_seed(1)
    model = MODELS[name]()
    x = torch.randn(64, 5, 3)
    flat, population = population_for(model, p=70, seed=2)  # two loop chunks
    lp = PopulationEvaluator(model, Scorer(agreement), flat, method="loop", precision=precision)
    expected = lp.logits_loop(population, x).argmax(-1)
    assert torch.equal(lp.actions(population, {"x": x}), expected)


def test_vmap_chunks_agree_with_one_chunk():
    torch.manual_seed(0)
    model = MODELS["lstm"]()
    x = torch.randn(16, 5, 3)
    flat, population = population_for(model, p=11)
    scorer = Scorer(agreement)
    whole = PopulationEvaluator(model, scorer, flat, method="vmap", chunk_size=11)
    chunked = PopulationEvaluator(model, scorer, flat, method="vmap", chunk_size=3)
    assert torch.allclose(
        whole.logits_vmap(population, x), chunked.logits_vmap(population, x), atol=1e-6
    )


def test_evaluator_leaves_the_user_model_alone():
    model = MODELS["mlp"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flat, population = population_for(model)
    x = torch.randn(10, 5, 3)
    PopulationEvaluator(model, Scorer(agreement), flat, method="loop").logits_loop(population, x)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_auto_times_both_and_records_the_choice():
    torch.manual_seed(0)
    model = MODELS["mlp"]()
    x = torch.randn(32, 5, 3)
    data = {"x": x, "target": torch.randint(0, 3, (32,))}
    flat, population = population_for(model, p=16)
    auto = PopulationEvaluator(model, Scorer(agreement), flat, method="auto")
    scores = auto.evaluate(population, data).scores
    assert auto.choice["method"] in ("vmap", "loop")
    assert auto.choice["timings"]["vmap/float32"] > 0
    assert auto.choice["timings"]["loop/float32"] > 0
    assert auto.choice["precision"] == "float32"  # the default precision is not timed
    assert auto.choice["agree"]
    loop = PopulationEvaluator(model, Scorer(agreement), flat, method="loop")
    assert torch.equal(scores, loop.evaluate(population, data).scores)


def test_auto_choice_is_in_the_history():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, 3, generator=g)
    data = {"x": x, "target": torch.randint(0, 3, (64,), generator=g)}
    opt = ho.HybridOptimizer(
        MODELS["lstm"](), agreement, data=data, phases=("genetic",), population_size=16, seed=0
    )
    result = opt.fit(max_evaluations=40, progress=False)
    assert result.history[0]["backend"] in ("vmap", "loop")
    assert sum("backend" in r for r in result.history) == 1


class NotVectorisable(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(15, 3)

    def forward(self, x):
        y = self.linear(x.flatten(1))
        if y.sum() > 0:  # data-dependent control flow cannot run under vmap
            return y
        return -y


def test_unvectorisable_model_falls_back_to_loop_with_a_warning():
    model = NotVectorisable()
    x = torch.randn(8, 5, 3)
    data = {"x": x, "target": torch.randint(0, 3, (8,))}
    flat, population = population_for(model, p=4)
    ev = PopulationEvaluator(model, Scorer(agreement), flat, method="vmap")
    with pytest.warns(RuntimeWarning, match="cannot run under torch.func.vmap"):
        scores = ev.evaluate(population, data).scores
    ref = PopulationEvaluator(model, Scorer(agreement), flat, method="loop")
    assert torch.equal(scores, ref.evaluate(population, data).scores)
    auto = PopulationEvaluator(model, Scorer(agreement), flat, method="auto")
    auto.evaluate(population, data)
    assert auto.choice["method"] == "loop" and "RuntimeError" in auto.choice["reason"]


shapes = st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(shapes=shapes, p=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_flat_round_trip_is_exact(shapes, p, seed):
    model = nn.Module()
    for i, shape in enumerate(shapes):
        model.register_parameter(f"p{i}", nn.Parameter(torch.randn(tuple(shape))))
    flat = FlatParams.from_module(model)
    assert flat.dim == sum(int(torch.tensor(s).prod()) for s in shapes)
    g = torch.Generator().manual_seed(seed)
    vec = torch.randn(flat.dim, generator=g)
    flat.load(model, vec)
    assert torch.equal(flat.vector(model), vec)
    population = torch.randn(p, flat.dim, generator=g)
    pieces = flat.unflatten(population)
    for name, shape in zip(flat.names, flat.shapes):
        assert pieces[name].shape == (p, *shape)
    rebuilt = torch.cat([pieces[n].reshape(p, -1) for n in flat.names], dim=1)
    assert torch.equal(rebuilt, population)
    assert flat.segment_ids().shape == (flat.dim,)


def test_frozen_parameters_stay_out_of_the_vector():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    flat = FlatParams.from_module(model)
    assert "0.weight" not in flat.names and flat.dim == 4 + 8 + 2
