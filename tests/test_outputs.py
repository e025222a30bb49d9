"""outputs=: probabilities and log-probabilities are detected, checked, and turned into logits."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from hybridopt.outputs import OUTPUTS, resolve_outputs, to_logits


def net(last: nn.Module | None = None, heads: int = 0) -> nn.Module:
    """Linear 5 -> 3 (or -> [heads, 3]) followed by ``last`` along the last dimension."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(5, 3 * max(heads, 1))]
    if heads:
        layers.append(nn.Unflatten(-1, (heads, 3)))
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


X = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("heads", [0, 2])
@pytest.mark.parametrize(
    ("last", "expected"),
    [(nn.Softmax(dim=-1), "probs"), (nn.LogSoftmax(dim=-1), "log_probs"), (None, "logits")],
)
def test_auto_detects_what_the_model_returns_and_logs_why(caplog, last, expected, heads):
    with caplog.at_level(logging.INFO, logger="hybridopt.outputs"):
        assert resolve_outputs("auto", net(last, heads), X) == expected
    (record,) = [r for r in caplog.records if r.name == "hybridopt.outputs"]
    assert record.levelno == logging.INFO
    assert f"decided {expected!r}" in record.getMessage() and "row sums in" in record.getMessage()


def test_auto_sees_the_seed_models_softmax_over_dim_1():
    class Seed(nn.Module):  # ends in F.softmax(out, dim=1), like the seed question's model
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(5, 8, batch_first=True), nn.Linear(8, 3)

        def forward(self, x):
            out, _ = self.lstm(x)
            return torch.softmax(self.head(out[:, -1]), dim=1)

    torch.manual_seed(0)
    assert resolve_outputs("auto", Seed(), torch.randn(16, 7, 5)) == "probs"


def test_the_look_leaves_the_models_modes_and_statistics_alone():
    model = nn.Sequential(nn.Linear(5, 3), nn.BatchNorm1d(3), nn.Dropout(0.5), nn.Softmax(-1))
    model.train()
    model[2].eval()
    stats = model[1].running_mean.clone()
    assert resolve_outputs("auto", model, X) == "probs"
    assert [m.training for m in model] == [True, True, False, True]
    assert torch.equal(model[1].running_mean, stats)


@pytest.mark.parametrize(
    ("outputs", "last"),
    [("probs", nn.Softmax(-1)), ("log_probs", nn.LogSoftmax(-1)), ("logits", None)],
)
def test_explicit_modes_that_match_the_model_are_kept(outputs, last):
    assert resolve_outputs(outputs, net(last), X) == outputs


@pytest.mark.parametrize(
    ("outputs", "last"),
    [("probs", None), ("probs", nn.LogSoftmax(-1)), ("log_probs", None),
     ("log_probs", nn.Softmax(-1))],
)
def test_explicit_modes_the_model_contradicts_are_refused(outputs, last):
    with pytest.raises(ValueError, match=rf"outputs='{outputs}' but the model's rows are not"):
        resolve_outputs(outputs, net(last), X)


def test_explicit_logits_on_probabilities_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="hybridopt.outputs"):
        assert resolve_outputs("logits", net(nn.Softmax(-1)), X) == "logits"
    assert "outputs='logits' but the model's rows are non-negative" in caplog.text


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (3, TypeError, r"outputs must be one of 'auto', 'logits', 'probs', 'log_probs'; got int 3"),
        (None, TypeError, r"got NoneType None"),
        ("prob", ValueError, r"got 'prob' \(did you mean 'probs'\?\)"),
        ("softmax", ValueError, r"outputs must be one of .*; got 'softmax'"),
    ],
)
def test_bad_outputs_values_are_refused_naming_the_option(bad, error, message):
    with pytest.raises(error, match=message):
        resolve_outputs(bad, net(), X)


def test_a_model_that_returns_no_float_tensor_is_refused():
    class Pair(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(TypeError, match="model must return a float tensor"):
        resolve_outputs("auto", Pair(), X)
    with pytest.raises(TypeError, match="torch.int64"):
        resolve_outputs("auto", nn.Identity(), X.long())


def test_options_list():
    assert OUTPUTS == ("auto", "logits", "probs", "log_probs")


def test_to_logits_of_probabilities_round_trips_keeps_argmax_and_passes_gradients():
    logits = torch.randn(32, 4, 3, generator=torch.Generator().manual_seed(2))
    probs = torch.softmax(logits, -1)
    probs[0, 0] = torch.tensor([1.0, 0.0, 0.0])  # a zero probability stays finite
    back = to_logits(probs, "probs")
    assert torch.isfinite(back).all()
    torch.testing.assert_close(torch.softmax(back, -1), probs)
    assert torch.equal(back.argmax(-1), probs.argmax(-1))

    # the policy gradient through log_softmax(to_logits(softmax(z))) equals the one through z
    z = logits.clone().requires_grad_()
    actions = torch.randint(3, (32, 4), generator=torch.Generator().manual_seed(3))
    chosen = torch.log_softmax(to_logits(torch.softmax(z, -1), "probs"), -1)
    chosen.gather(-1, actions[..., None]).sum().backward()
    reference = logits.clone().requires_grad_()
    torch.log_softmax(reference, -1).gather(-1, actions[..., None]).sum().backward()
    torch.testing.assert_close(z.grad, reference.grad)


def test_to_logits_keeps_logits_and_log_probs_and_refuses_unresolved_modes():
    out = torch.randn(6, 3)
    assert to_logits(out, "logits") is out
    assert to_logits(out.log_softmax(-1), "log_probs").equal(out.log_softmax(-1))
    with pytest.raises(ValueError, match="resolve outputs='auto' with resolve_outputs first"):
        to_logits(out, "auto")
