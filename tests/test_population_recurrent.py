"""Pop* recurrent modules match torch's nn.LSTM/GRU/RNN, also under vmap over weights."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.utils.rnn import pack_padded_sequence

from hybridopt.population.recurrent import (
    PopGRU,
    PopLSTM,
    PopRNN,
    make_vectorizable,
)

CASES = [
    (nn.LSTM, PopLSTM, {}),
    (nn.GRU, PopGRU, {}),
    (nn.RNN, PopRNN, {"nonlinearity": "tanh"}),
    (nn.RNN, PopRNN, {"nonlinearity": "relu"}),
]
CONFIGS = list(itertools.product([True, False], [1, 2], [False, True], [True, False]))


def _flat(out) -> torch.Tensor:
    """Concatenates every tensor of a (nested) RNN output."""
    leaves = torch.utils._pytree.tree_leaves(out)
    return torch.cat([t.reshape(-1) for t in leaves])


def _hx(cls, shape, dtype):
    if cls is nn.LSTM:
        return (torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype))
    return torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize("cls,pop_cls,kw", CASES, ids=["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_matches_torch_module(cls, pop_cls, kw, dtype, atol):
    torch.manual_seed(0)
    for batch_first, layers, bidir, bias in CONFIGS:
        ref = (
            cls(
                3,
                6,
                num_layers=layers,
                batch_first=batch_first,
                bidirectional=bidir,
                bias=bias,
                **kw,
            )
            .to(dtype)
            .eval()
        )
        pop = pop_cls.from_module(ref)
        n_states = layers * (2 if bidir else 1)
        x = torch.randn(4, 7, 3, dtype=dtype)
        batch = 4 if batch_first else 7
        for inp, hx in [
            (x, None),
            (x, _hx(cls, (n_states, batch, 6), dtype)),
            (x[0], None),  # unbatched (T, F)
            (x[0], _hx(cls, (n_states, 6), dtype)),
        ]:
            want, got = ref(inp, hx), pop(inp, hx)
            assert type(got[1]) is type(want[1])
            assert [t.shape for t in torch.utils._pytree.tree_leaves(got)] == [
                t.shape for t in torch.utils._pytree.tree_leaves(want)
            ]
            torch.testing.assert_close(_flat(got), _flat(want), atol=atol, rtol=0)


def test_same_parameter_names_shapes_and_attributes():
    ref = nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    pop = PopLSTM.from_module(ref)
    want = [(n, p.shape) for n, p in ref.named_parameters()]
    assert [(n, p.shape) for n, p in pop.named_parameters()] == want
    assert "weight_hh_l1_reverse" in dict(pop.named_parameters())
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first"):
        assert getattr(pop, attr) == getattr(ref, attr)
    assert pop.bidirectional is True and pop.proj_size == 0
    rnn = PopRNN.from_module(nn.RNN(2, 3, nonlinearity="relu"))
    assert rnn.nonlinearity == "relu"


class _Net(nn.Module):
    """Recurrent layer -> last time step -> Linear -> 3 logits."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("rnn_cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("bidir,bias", [(False, True), (True, False)])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_vmap_over_population_matches_loop(rnn_cls, bidir, bias, dtype, atol):
    torch.manual_seed(1)
    rnn = rnn_cls(2, 8, num_layers=2, batch_first=True, bidirectional=bidir, bias=bias)
    orig = _Net(rnn).to(dtype).eval()
    vec = make_vectorizable(orig).eval()
    base = dict(orig.named_parameters())
    pop = {n: p.detach() + 0.3 * torch.randn(5, *p.shape, dtype=dtype) for n, p in base.items()}
    x = torch.randn(6, 9, 2, dtype=dtype)
    with torch.no_grad():
        got = vmap(lambda p, xx: functional_call(vec, p, (xx,)), in_dims=(0, None))(pop, x)
        want = torch.stack(
            [functional_call(orig, {n: v[i] for n, v in pop.items()}, (x,)) for i in range(5)]
        )
    assert got.shape == (5, 6, 3)
    assert (want[0] - want[1]).abs().max() > 1e-3  # individuals really differ
    torch.testing.assert_close(got, want, atol=atol, rtol=0)


def test_vmap_bidirectional_gru_with_hx_and_grad():
    torch.manual_seed(2)
    ref = nn.GRU(3, 4, bidirectional=True)
    vec = make_vectorizable(ref)
    pop = {n: p.detach() + 0.2 * torch.randn(3, *p.shape) for n, p in ref.named_parameters()}
    x, h0 = torch.randn(5, 2, 3), torch.randn(2, 2, 4)
    got_out, got_h = vmap(lambda p: functional_call(vec, p, (x, h0)))(pop)
    for i in range(3):
        want_out, want_h = functional_call(ref, {n: v[i] for n, v in pop.items()}, (x, h0))
        torch.testing.assert_close(got_out[i], want_out, atol=1e-5, rtol=0)
        torch.testing.assert_close(got_h[i], want_h, atol=1e-5, rtol=0)
    # Gradients flow through the plain-op implementation too
    p0 = {n: v[0].clone().requires_grad_() for n, v in pop.items()}
    functional_call(vec, p0, (x, h0))[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in p0.values())


def test_make_vectorizable_keeps_names_and_leaves_original_untouched():
    orig = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.GRU(2, 3), nn.RNN(3, 3)))
    orig.add_module("lstm", nn.LSTM(3, 4, num_layers=2))
    before = {n: p.detach().clone() for n, p in orig.state_dict().items()}
    vec = make_vectorizable(orig)
    assert [n for n, _ in vec.named_parameters()] == [n for n, _ in orig.named_parameters()]
    assert isinstance(vec[1][0], PopGRU) and isinstance(vec[1][1], PopRNN)
    assert isinstance(vec.lstm, PopLSTM)
    assert isinstance(orig[1][0], nn.GRU) and isinstance(orig.lstm, nn.LSTM)
    # The copy owns its own tensors: editing it leaves the original as it was
    with torch.no_grad():
        for p in vec.parameters():
            p.add_(1.0)
    for n, t in orig.state_dict().items():
        assert torch.equal(t, before[n])
    # Root module itself
    root = make_vectorizable(nn.LSTM(2, 3))
    assert isinstance(root, PopLSTM)
    assert [n for n, _ in root.named_parameters()] == [
        "weight_ih_l0",
        "weight_hh_l0",
        "bias_ih_l0",
        "bias_hh_l0",
    ]


def test_shared_submodule_replaced_everywhere():
    gru = nn.GRU(2, 2)
    orig = nn.ModuleDict({"a": gru, "b": nn.Sequential(gru)})
    vec = make_vectorizable(orig)
    assert vec["a"] is vec["b"][0] and isinstance(vec["a"], PopGRU)


def test_unsupported_configurations_raise_clear_errors():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.LSTM(3, 8, proj_size=4)

    with pytest.raises(TypeError, match=r"model\.encoder \(LSTM with proj_size=4\) cannot be"):
        make_vectorizable(Model())
    with pytest.raises(TypeError, match="proj_size"):
        PopLSTM.from_module(nn.LSTM(3, 8, proj_size=4))
    with pytest.raises(TypeError, match="expected nn.GRU"):
        PopGRU.from_module(nn.LSTM(3, 8))
    pop = PopLSTM.from_module(nn.LSTM(3, 8))
    packed = pack_padded_sequence(torch.randn(5, 2, 3), torch.tensor([5, 3]))
    with pytest.raises(TypeError, match="LSTM.*PackedSequence"):
        pop(packed)


def test_training_mode_dropout_is_applied_between_layers():
    torch.manual_seed(3)
    ref = nn.GRU(3, 16, num_layers=2, dropout=0.5)
    pop = PopGRU.from_module(ref).train()
    x = torch.randn(4, 2, 3)
    a, b = pop(x)[0], pop(x)[0]
    assert not torch.allclose(a, b)
    pop.eval()
    torch.testing.assert_close(pop(x)[0], ref.eval()(x)[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls,pop_cls,kw", CASES, ids=["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_bfloat16_stays_close_to_float32(cls, pop_cls, kw):
    """Cast to bfloat16 (weights, input, carried states), the Pop* modules track float32 torch
    to bfloat16's resolution, also under vmap over a population."""
    torch.manual_seed(4)
    ref = cls(3, 16, num_layers=2, batch_first=True, **kw).eval()
    vec = make_vectorizable(ref).to(torch.bfloat16)
    pop = {n: p.detach() + 0.1 * torch.randn(4, *p.shape) for n, p in ref.named_parameters()}
    x = torch.randn(8, 12, 3)
    with torch.no_grad():
        got = vmap(lambda p, xx: functional_call(vec, p, (xx,)), in_dims=(0, None))(
            {n: v.bfloat16() for n, v in pop.items()}, x.bfloat16())
        want = [functional_call(ref, {n: v[i] for n, v in pop.items()}, (x,)) for i in range(4)]
    assert got[0].dtype == torch.bfloat16
    for i in range(4):
        out = got[0][i].float()
        torch.testing.assert_close(out, want[i][0], atol=0.05 * want[i][0].abs().max().item(),
                                   rtol=0)
