"""Bad input fails fast, with an error that names the argument and what was expected."""

from __future__ import annotations

import pytest
import torch
from conftest import hit_rate, mlp
from torch import nn

import hybridopt as ho


def good_score(actions, data):
    return float((actions == data[1]).float().mean())


def make(model=None, score=good_score, data=None, **kw):
    if data is None:
        data = (torch.randn(32, 6), torch.randint(0, 3, (32,)))
    return ho.HybridOptimizer(model or mlp(), score, data=data, **kw)


@pytest.mark.parametrize(
    "score, error, match",
    [
        (lambda a, d: "high", TypeError, "score_fn must return a number"),
        (lambda a, d: None, TypeError, "score_fn must return a number"),
        (lambda a, d: torch.zeros(5), ValueError, r"score_fn returned shape \(5,\)"),
        (lambda a, d: [1.0, 2.0], TypeError, "score_fn must return"),
        (lambda a, d: 1 / 0, RuntimeError, "score_fn raised ZeroDivisionError"),
    ],
)
def test_bad_score_fn(score, error, match):
    with pytest.raises(error, match=match):
        make(score=score)


def test_score_fn_not_callable():
    with pytest.raises(TypeError, match="score_fn must be callable"):
        make(score=3)


def test_batched_score_fn_wrong_shape():
    @ho.batched
    def bad(actions, data):
        return actions.float().mean()  # one number for the whole batch

    with pytest.raises(ValueError, match=r"expected \[B\] scores"):
        make(score=bad)


class Flat(nn.Module):
    def forward(self, x):
        return x.sum(-1) + self.w

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))


class OneAction(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 1)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize(
    "model, match",
    [
        (Flat(), r"model must return logits \[N, A\] or \[N, H, A\]; got \(32,\)"),
        (OneAction(), r"A >= 2 actions; got \(32, 1\)"),
        (nn.Linear(5, 3), "model failed on the model input"),
    ],
)
def test_bad_model_output(model, match):
    with pytest.raises(ValueError, match=match):
        make(model=model)


def test_model_not_a_module():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        make(model=lambda x: x)


def test_model_without_trainable_parameters():
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="model has no trainable parameters"):
        make(model=model)


@pytest.mark.parametrize(
    "data, error, match",
    [
        ((torch.randn(32, 6), torch.zeros(31)), ValueError, "share their leading length N"),
        ((torch.randn(0, 6), torch.zeros(0)), ValueError, "is empty"),
        ((), ValueError, "is empty"),
        ({"y": torch.zeros(3)}, TypeError, 'under the key "x"'),
        ("abc", TypeError, "data must be a tensor"),
        ((torch.randn(32, 6), [1, 2]), TypeError, r"data\[1\] must be a torch.Tensor"),
        ((torch.full((32, 6), float("nan")), torch.zeros(32)), ValueError, "NaN or infinite"),
    ],
)
def test_bad_data(data, error, match):
    with pytest.raises(error, match=match):
        make(data=data)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"phases": ("gradient", "evolution")}, ValueError, "phases must be distinct names"),
        ({"phases": ()}, ValueError, "phases must be distinct names"),
        ({"population_size": 1}, ValueError, "population_size must be >= 2"),
        ({"population_size": 2.5}, TypeError, "population_size must be an int"),
        ({"episode_length": 0}, ValueError, "episode_length must be >= 1"),
        ({"episode_length": 33}, ValueError, "episode_length must be <= the data's length"),
        ({"backend": "spark"}, ValueError, "backend must be one of"),
        ({"gradient": {"lr": 1}}, TypeError, "gradient must be a GradientConfig"),
        ({"device": "tpu9"}, ValueError, "device must be"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


@pytest.mark.parametrize(
    "cfg, match",
    [
        (lambda: ho.GradientConfig(samples=1), "samples must be an int >= 2"),
        (lambda: ho.GradientConfig(baseline="mean"), "baseline must be"),
        (lambda: ho.GradientConfig(lr=0), "lr must be > 0"),
        (lambda: ho.GeneticConfig(crossover="sbx"), "crossover must be"),
        (lambda: ho.GeneticConfig(mutation_prob=2), r"mutation_prob must be in \[0, 1\]"),
        (lambda: ho.StallConfig(patience=0), "patience must be an int >= 1"),
    ],
)
def test_bad_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        cfg()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_evaluations": 0}, ValueError, "max_evaluations must be >= 1"),
        ({"max_evaluations": -5}, ValueError, "max_evaluations must be >= 1"),
        ({"max_time": -1.0}, ValueError, "max_time must be a number of seconds > 0"),
        ({}, ValueError, "fit needs a budget"),
        ({"max_evaluations": 10, "callbacks": [object()]}, TypeError, "callbacks must be"),
    ],
)
def test_bad_budgets(kwargs, error, match):
    opt = make()
    with pytest.raises(error, match=match):
        opt.fit(progress=False, **kwargs)


def test_evaluate_checks_its_data():
    opt = make(score=hit_rate)
    with pytest.raises(ValueError, match="share their leading length N"):
        opt.evaluate((torch.randn(4, 6), torch.zeros(5)))


def test_score_fn_never_finite_fails_fast():
    with pytest.raises(ValueError, match="expected a finite score"):
        make(score=lambda a, d: float("nan"))


def test_score_fn_sometimes_nan_is_counted_not_fatal():
    calls = {"n": 0}

    def sometimes(actions, data):
        calls["n"] += 1
        return float("nan") if calls["n"] % 3 == 0 else float((actions == data[1]).float().mean())

    opt = make(score=sometimes, phases=("gradient",))
    result = opt.fit(max_evaluations=100, progress=False)
    assert result.nonfinite > 0


def test_nondeterministic_score_fn_warns():
    gen = torch.Generator().manual_seed(0)
    with pytest.warns(UserWarning, match="score_fn is not deterministic"):
        make(score=lambda a, d: float(torch.rand(1, generator=gen)))


def test_validation_data_shaped_unlike_data():
    with pytest.raises(ValueError, match="model failed on the model input of validation_data"):
        make(validation_data=(torch.randn(10, 4), torch.randint(0, 3, (10,))))
    with pytest.raises(ValueError, match="validation_data"):
        make(validation_data=(torch.randn(10, 6), torch.randint(0, 3, (9,))))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"checkpoint_every": 0}, ValueError, "checkpoint_every must be >= 1"),
        ({"checkpoint_dir": 5}, TypeError, "checkpoint_dir must be a path"),
        ({"stall": ho.GradientConfig()}, TypeError, "stall must be a StallConfig"),
    ],
)
def test_more_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_target_score_must_be_a_number():
    with pytest.raises(TypeError, match="target_score must be a number"):
        make().fit(target_score="high", progress=False)
