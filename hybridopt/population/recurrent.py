"""Vectorisable drop-in replacements for ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``.

``torch.func.vmap`` has no batching rule for the fused ``aten::lstm``/``gru``/``rnn_*``
kernels. These modules recompute the recurrences with plain ops (matmul, sigmoid, cat,
chunk, stack, addcmul, lerp), so a population of weight sets can be evaluated with
``vmap`` + ``functional_call``. Parameter names and shapes are those of the torch module;
``make_vectorizable`` swaps the modules into a deep copy of a user's model.

Speed choices, measured on CPU under ``vmap``: one product per step, ``W @ [h; x_t; 1]``,
covers input, bias and recurrence (an all-steps input projection is a T*N*4H tensor per
individual and was slower); states are gate-major (H, N) so gate chunks are contiguous;
tanh is evaluated as ``2*sigmoid(2a) - 1`` (torch's CPU tanh costs ~4x a sigmoid), its
factors folded into the stacked weights and into affinely shifted carried states.

The dtype follows the weights and the input: cast both to bfloat16 (as the evaluator does for
``precision="bfloat16"``) and every product, gate and carried state runs in bfloat16; argmax
actions of the seed LSTM then agree with float32 on ~99.7% of rows. Under ``torch.autocast``
only the products drop precision.

Dropout between layers is applied in training mode, as torch does (under ``vmap`` this
needs ``randomness="different"``); call ``.eval()`` for population evaluation.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["PopGRU", "PopLSTM", "PopRNN", "make_vectorizable"]


def _lstm_weight(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None):
    """Rows (i, f, 2g, o) over [h; x; 1]: tanh(g) is read off a sigmoid as 2*s - 1."""
    cols = [w_hh, w_ih] + ([(b_ih + b_hh)[:, None]] if b_ih is not None else [])
    i, f, g, o = torch.cat(cols, 1).chunk(4, 0)
    return torch.cat([i, f, 2 * g, o], 0)


def _gru_weight(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None):
    """Rows (r, 1 - z, 2 x_n, 2 h_n) over [q; x; 1] where q = (h + 1) / 2."""
    (hr, hz, hn), (ir, iz, in_) = w_hh.chunk(3, 0), w_ih.chunk(3, 0)
    b_ih = torch.zeros_like(w_ih[:, 0]) if b_ih is None else b_ih
    b_hh = torch.zeros_like(w_hh[:, 0]) if b_hh is None else b_hh
    (bir, biz, bin_), (bhr, bhz, bhn) = b_ih[:, None].chunk(3, 0), b_hh[:, None].chunk(3, 0)
    sr, sz, sn = (w.sum(1, keepdim=True) for w in (hr, hz, hn))  # from h = 2q - 1
    rows = [
        [2 * hr, ir, bir + bhr - sr],
        [-2 * hz, -iz, sz - biz - bhz],
        [torch.zeros_like(hn), 2 * in_, 2 * bin_],
        [4 * hn, torch.zeros_like(in_), 2 * (bhn - sn)],
    ]
    return torch.cat([torch.cat(r, 1) for r in rows], 0)


def _rnn_weight(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, tanh: bool):
    """relu: rows over [h; x; 1]. tanh: 2a over [q; x; 1] where q = sigmoid(2a) = (h + 1) / 2."""
    b = (b_ih + b_hh)[:, None] if b_ih is not None else torch.zeros_like(w_hh[:, :1])
    if not tanh:
        return torch.cat([w_hh, w_ih] + ([b] if b_ih is not None else []), 1)
    return torch.cat([4 * w_hh, 2 * w_ih, 2 * (b - w_hh.sum(1, keepdim=True))], 1)


def _lstm_step(z: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    # Carries m = -2c: m' = f*m + 2i - 4*i*s_g and h = o*tanh(c) = o - 2*o*sigmoid(m')
    i, f, g, o = torch.sigmoid(z).chunk(4, 0)
    m = torch.addcmul(torch.add(f * state[1], i, alpha=2), i, g, value=-4)
    return torch.addcmul(o, o, torch.sigmoid(m), value=-2), m


def _gru_step(z: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    # Carries q = (h + 1) / 2: sigmoid(2a) = (n + 1) / 2 and q' = lerp(q, (n + 1) / 2, 1 - z)
    rz, xn, hn = z.split([z.shape[0] // 2, z.shape[0] // 4, z.shape[0] // 4], 0)
    r, zc = torch.sigmoid(rz).chunk(2, 0)
    return (torch.lerp(state[0], torch.sigmoid(torch.addcmul(xn, r, hn)), zc),)


def _tanh_step(z: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (torch.sigmoid(z),)  # q = (tanh(a) + 1) / 2


def _relu_step(z: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (torch.relu(z),)


def _scan(x1: Tensor, state: tuple[Tensor, ...], w: Tensor, step, reverse: bool):
    """Runs ``step`` over gate-major ``x1`` (T, F, B); returns (states (T, B, H), last)."""
    steps = x1.unbind(0)
    outs = []
    for xt in reversed(steps) if reverse else steps:
        # One product per step: [W_hh | W_ih | b] @ [h; x_t; 1] gives every gate
        state = step(w @ torch.cat([state[0], xt], 0), state)
        outs.append(state[0].t())
    if reverse:
        outs.reverse()
    return torch.stack(outs), state


def _affine(t: Tensor, a: float, b: float) -> Tensor:
    """``a * t + b``, skipping no-op factors."""
    t = t * a if a != 1 else t
    return t + b if b else t


class _PopRNNBase(nn.Module):
    """Shared plumbing: attributes, parameter registration, layer/direction loop."""

    _torch_cls: type[nn.RNNBase]
    _carry: tuple[tuple[float, float], ...]  # carried state = a * true state + b

    def __init__(self, src: nn.RNNBase) -> None:
        super().__init__()
        for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first"):
            setattr(self, attr, getattr(src, attr))
        self.bidirectional, self.dropout = src.bidirectional, float(src.dropout)
        self.training, self.layer_name = src.training, type(src).__name__
        # Same names, same Parameter objects, same registration order as the source
        names = src._flat_weights_names
        for name in names:
            self.register_parameter(name, getattr(src, name))
        n = 4 if self.bias else 2
        self._weight_names = [names[i : i + n] for i in range(0, len(names), n)]

    @classmethod
    def from_module(cls, m: nn.RNNBase):
        """Builds the vectorisable twin of ``m``, sharing its Parameter objects.

        Args:
            m: An ``nn.LSTM``/``nn.GRU``/``nn.RNN`` matching this class.

        Returns:
            The Pop* module; ``functional_call`` with ``m``'s parameter names works on it.

        Raises:
            TypeError: If ``m`` is of another type or uses an unsupported option.
        """
        reason = _unsupported_reason(m)
        if not isinstance(m, cls._torch_cls):
            reason = f"expected nn.{cls._torch_cls.__name__}"
        if reason:
            raise TypeError(f"{_describe(m)} cannot be vectorised: {reason}")
        return cls(m)

    def flatten_parameters(self) -> None:
        """No-op kept for models that call ``rnn.flatten_parameters()``."""

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias="
            f"{self.bias}, batch_first={self.batch_first}, bidirectional={self.bidirectional}"
        )

    def _run(self, input: Tensor, hx: Tensor | tuple[Tensor, ...] | None):
        """Runs all layers; returns (output, tuple of stacked final states)."""
        if isinstance(input, PackedSequence):
            raise TypeError(
                f"{self.layer_name} cannot be vectorised with a PackedSequence input: packed "
                "sequences have data-dependent per-step batch sizes; pass a padded tensor"
            )
        if input.dim() not in (2, 3):
            raise ValueError(f"{self.layer_name}: expected 2-D or 3-D input, got {input.dim()}-D")
        batched = input.dim() == 3
        # Time-major (T, B, F) layout
        x = input if batched else input.unsqueeze(1)
        x = x.transpose(0, 1) if batched and self.batch_first else x
        n_dir, carry = (2 if self.bidirectional else 1), self._carry
        if hx is None:
            shape = (self.num_layers * n_dir, x.shape[1], self.hidden_size)
            states = [x.new_zeros(shape) for _ in carry]
        else:
            states = list(hx) if isinstance(hx, (tuple, list)) else [hx]
            if any(s.dim() != input.dim() for s in states):
                raise ValueError(f"{self.layer_name}: hx must be {input.dim()}-D like the input")
            states = [s if batched else s.unsqueeze(1) for s in states]
        finals: list[list[Tensor]] = [[] for _ in carry]
        for layer in range(self.num_layers):
            # Gate-major (T, F, B) input; a ones row carries biases and state shifts
            x1 = x.transpose(1, 2)
            if self.bias or carry[0][1]:
                x1 = torch.cat([x1, x1.new_ones(x1.shape[0], 1, x1.shape[2])], 1)
            outs = []
            for d in range(n_dir):
                idx = layer * n_dir + d
                w = self._weight(*self._weights(idx))
                init = tuple(_affine(s[idx].t(), a, b) for s, (a, b) in zip(states, carry))
                out, last = _scan(x1, init, w, self._step, d == 1)
                outs.append(_affine(out, 1 / carry[0][0], -carry[0][1] / carry[0][0]))
                for f, v, (a, b) in zip(finals, last, carry):
                    f.append(_affine(v.t(), 1 / a, -b / a))
            x = outs[0] if n_dir == 1 else torch.cat(outs, -1)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        x = x.transpose(0, 1) if batched and self.batch_first else x
        h_n = tuple(torch.stack(f) for f in finals)
        if not batched:
            return x.squeeze(1), tuple(h.squeeze(1) for h in h_n)
        return x, h_n

    def _weights(self, idx: int) -> list[Tensor | None]:
        """(w_ih, w_hh, b_ih, b_hh) of one layer/direction; biases ``None`` if bias=False."""
        ws = [getattr(self, n) for n in self._weight_names[idx]]
        return ws + [None] * (4 - len(ws))


class PopLSTM(_PopRNNBase):
    """Vectorisable ``nn.LSTM`` (no ``proj_size``); ``forward(input, hx) -> (out, (h, c))``."""

    _torch_cls, _carry = nn.LSTM, ((1.0, 0.0), (-2.0, 0.0))  # carries (h, -2c)
    proj_size = 0
    _step, _weight = staticmethod(_lstm_step), staticmethod(_lstm_weight)

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Same contract as ``nn.LSTM.forward`` for padded tensors."""
        out, (h, c) = self._run(input, hx)
        return out, (h, c)


class PopGRU(_PopRNNBase):
    """Vectorisable ``nn.GRU``; ``forward(input, hx) -> (out, h_n)``."""

    _torch_cls, _carry = nn.GRU, ((0.5, 0.5),)  # carries (h + 1) / 2
    _step, _weight = staticmethod(_gru_step), staticmethod(_gru_weight)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Same contract as ``nn.GRU.forward`` for padded tensors."""
        out, (h,) = self._run(input, hx)
        return out, h


class PopRNN(_PopRNNBase):
    """Vectorisable ``nn.RNN`` (tanh or relu); ``forward(input, hx) -> (out, h_n)``."""

    _torch_cls = nn.RNN

    def __init__(self, src: nn.RNN) -> None:
        super().__init__(src)
        self.nonlinearity = src.nonlinearity
        tanh = self.nonlinearity == "tanh"
        self._carry = ((0.5, 0.5),) if tanh else ((1.0, 0.0),)  # tanh carries (h + 1) / 2
        self._step = _tanh_step if tanh else _relu_step
        self._weight = functools.partial(_rnn_weight, tanh=tanh)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Same contract as ``nn.RNN.forward`` for padded tensors."""
        out, (h,) = self._run(input, hx)
        return out, h


_POP = {nn.LSTM: PopLSTM, nn.GRU: PopGRU, nn.RNN: PopRNN}


def _describe(m: nn.Module) -> str:
    extra = f" with proj_size={m.proj_size}" if getattr(m, "proj_size", 0) else ""
    return f"{type(m).__name__}{extra}"


def _unsupported_reason(m: nn.Module) -> str | None:
    """Why ``m`` cannot be swapped for a Pop* module (``None`` when it can)."""
    base = next((c for c in _POP if isinstance(m, c)), None)
    if base is None:
        return "only nn.LSTM, nn.GRU and nn.RNN have vectorisable twins"
    if type(m).forward is not base.forward:
        return f"subclass of nn.{base.__name__} overrides forward(), which cannot be kept"
    if getattr(m, "proj_size", 0):
        return "LSTM projections (proj_size > 0) are not implemented by PopLSTM"
    return None


def make_vectorizable(model: nn.Module) -> nn.Module:
    """Returns a deep copy of ``model`` with every LSTM/GRU/RNN replaced by its Pop* twin.

    Parameter names and ``named_parameters()`` order are unchanged, so parameter dicts
    built for ``model`` work with ``torch.func.functional_call`` on the copy.

    Args:
        model: Any module; may itself be an ``nn.LSTM``/``nn.GRU``/``nn.RNN``.

    Returns:
        The vectorisable copy; ``model`` is left untouched.

    Raises:
        TypeError: If a recurrent submodule cannot be replaced; the message names its
            path, e.g. ``model.encoder (LSTM with proj_size=4) cannot be vectorised: ...``.
    """
    model = copy.deepcopy(model)
    paths = {id(m): ("model." + n if n else "model") for n, m in model.named_modules()}
    swapped: dict[int, nn.Module] = {}
    for m in model.modules():
        if isinstance(m, nn.RNNBase) and id(m) not in swapped:
            where = f"{paths[id(m)]} ({_describe(m)})"
            reason = _unsupported_reason(m)
            if reason:
                raise TypeError(f"{where} cannot be vectorised: {reason}")
            swapped[id(m)] = _POP[next(c for c in _POP if isinstance(m, c))](m)
            swapped[id(m)].layer_name = where
    if id(model) in swapped:
        return swapped[id(model)]
    # Re-point every parent (shared submodules included) at the replacement
    for parent in list(model.modules()):
        for name, child in parent._modules.items():
            if child is not None and id(child) in swapped:
                parent._modules[name] = swapped[id(child)]
    return model
