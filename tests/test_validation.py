"""Bad input fails fast, with an error that names the argument and what was expected."""

from __future__ import annotations

import pytest
import torch
from conftest import hit_rate, mlp
from torch import nn

import hybridopt as ho
from hybridopt.validation import check_options


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
        ({"phases": ("gradient", "evolution")}, ValueError,
         r"phases: unknown phase 'evolution'; built-in phases are \('gradient', 'genetic', 'es'\)"),
        ({"phases": ()}, ValueError, "phases must be a non-empty sequence of phases with distinct"),
        ({"phases": ("gradient", "gradient")}, ValueError, "with distinct names"),
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
        (lambda: ho.GradientConfig(lr=0), "lr must be a number > 0"),
        (lambda: ho.GeneticConfig(crossover="sbx"), "crossover must be"),
        (lambda: ho.GeneticConfig(mutation_prob=2), r"mutation_prob must be a number in \[0, 1\]"),
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
    # checked against the training data's structure before the model ever sees it
    with pytest.raises(ValueError, match=r"validation_data\[0\] must be shaped \[N, 6\] with a "
                                         r"torch.float32 like the training data; got \(10, 4\)"):
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


# -- options checked at the door: nothing runs before they are ----------------------------------


class Counting:
    """A score_fn that counts its calls (a vmapped call counts once)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, actions, data):
        self.calls += 1
        return (actions == data[1]).float().mean()


def door_calls(**kw) -> int:
    """score_fn calls a good optimiser makes when it is built: the door's own."""
    score = Counting()
    make(score=score, **kw)
    return score.calls


def _reduce_on_plateau(optimizer):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)


def _raise(*args):
    raise ZeroDivisionError("broken factory")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"gradient": {"optimizer": "adamm"}}, ValueError,
         r"GradientConfig.optimizer must be a torch.optim optimiser name \(adadelta, .*sgd"),
        ({"gradient": {"optimizer": "lr_scheduler"}}, ValueError, "optimizer must be a torch"),
        ({"gradient": {"optimizer": "optimizer"}}, ValueError, "optimizer must be a torch.optim"),
        ({"gradient": {"optimizer_kwargs": {"betas": [0.9]}}}, ValueError,
         r"GradientConfig.optimizer = 'adam' \(torch.optim.Adam\) with optimizer_kwargs = "
         r"\{'betas': \[0.9\]\}: .*refused them: IndexError"),
        ({"gradient": {"optimizer_kwargs": {"betas": (1.5, 0.9)}}}, ValueError,
         "Invalid beta parameter"),
        ({"gradient": {"optimizer_kwargs": {"eps": "small"}}}, TypeError, "optimizer_kwargs = "),
        ({"gradient": {"optimizer_kwargs": {"beta": 0.9}}}, TypeError,
         r"GradientConfig.optimizer_kwargs has unknown keyword\(s\) \['beta'\] for "
         r"torch.optim.Adam; allowed: betas, eps"),
        ({"gradient": {"optimizer": "sgd", "optimizer_kwargs": {"momentum": -1}}}, ValueError,
         "Invalid momentum value"),
        ({"gradient": {"optimizer": "lbfgs"}}, ValueError,
         r"optimizer.step\(\) failed .* closure"),
        ({"gradient": {"optimizer": lambda params: 3}}, TypeError,
         "GradientConfig.optimizer = .* must return a torch.optim.Optimizer; it returned int"),
        ({"gradient": {"optimizer": _raise}}, ValueError,
         "GradientConfig.optimizer = .* raised ZeroDivisionError: broken factory"),
        ({"gradient": {"scheduler": lambda optimizer: 3}}, TypeError,
         r"GradientConfig.scheduler = .* must return a learning-rate scheduler with step\(\) "
         r"and state_dict\(\).* it returned int 3, without step and state_dict"),
        ({"gradient": {"scheduler": _reduce_on_plateau}}, ValueError,
         r"GradientConfig.scheduler = .*failed on step\(\).*missing 1 required positional"),
        ({"gradient": {"scheduler": _raise}}, ValueError,
         "GradientConfig.scheduler = .* raised ZeroDivisionError"),
        ({"population_size": 4, "genetic": {"elite": 4}}, ValueError,
         r"GeneticConfig.elite must be an int with 1 <= elite < population_size = 4 .*; "
         r"got elite = 4 \(int\)."),
        ({"population_size": 4, "genetic": {"elite": 9}}, ValueError, "elite < population_size"),
        ({"population_size": 300, "genetic": {"elite": 0}}, ValueError,
         "1 <= elite < population_size = 300"),
        # population_size="auto" (the default) is at least 16 once resolved: elite >= 1 and
        # elite < 16 can be checked at the door all the same
        ({"genetic": {"elite": 0}}, ValueError, "1 <= elite"),
    ],
)
def test_bad_options_fail_before_any_work(kwargs, error, match):
    for name, cls in (("gradient", ho.GradientConfig), ("genetic", ho.GeneticConfig)):
        if name in kwargs:
            kwargs = {**kwargs, name: cls(**kwargs[name])}
    score = Counting()
    with pytest.raises(error, match=match) as info:
        make(score=score, **kwargs)
    assert score.calls == 0  # raised before score_fn (or the model) ever ran
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda():
    score = Counting()
    with pytest.raises(ValueError, match=r"device = 'cuda' asks for CUDA, but "
                                         r"torch.cuda.is_available\(\) is False"):
        make(score=score, device="cuda")
    with pytest.raises(ValueError, match="device = 'cuda:1' asks for CUDA"):
        make(score=score, device=torch.device("cuda:1"))
    assert score.calls == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_out_of_range():
    with pytest.raises(ValueError, match="CUDA device"):
        make(device=f"cuda:{torch.cuda.device_count()}")


def test_relations_with_other_options_are_skipped_when_they_do_not_apply():
    # population_size "auto" is at least 16: elites up to 15 pass, more are refused at the door
    assert check_options(gradient=None, genetic=ho.GeneticConfig(elite=15), stall=None,
                         population_size="auto", device="cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="at least 16"):
        check_options(gradient=None, genetic=ho.GeneticConfig(elite=500), stall=None,
                      population_size="auto", device="cpu")
    # no genetic phase: its elites do not matter
    make(phases=("gradient",), population_size=2)
    # a factory sees the model's own parameter list, so grouping by position works
    make(gradient=ho.GradientConfig(optimizer=lambda ps: torch.optim.SGD(
        [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.001}], lr=0.1)))
    make(gradient=ho.GradientConfig(
        optimizer="AdamW", optimizer_kwargs={"betas": (0.8, 0.9), "weight_decay": 0.1},
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2)))


def _aux_float(logits, data):
    return 0.5


def _aux_vector(logits, data):
    return logits.sum(-1)


def _aux_long(logits, data):
    return logits.argmax(-1).sum()


def _aux_nan(logits, data):
    return logits.sum() * float("nan")


@pytest.mark.parametrize(
    "aux, error, match",
    [
        (_aux_float, TypeError,
         r"GradientConfig.aux_loss = .* must return a 0-d floating-point tensor .*returned "
         r"float 0.5"),
        (_aux_vector, TypeError, r"returned a tensor of shape \(32,\)"),
        (_aux_long, TypeError, "and dtype torch.int64"),
        (_aux_nan, ValueError, "GradientConfig.aux_loss = .* returned nan .*expected a finite"),
        (_raise, ValueError,
         r"GradientConfig.aux_loss = .* raised ZeroDivisionError: broken factory on the "
         r"model's logits \(32, 3\)"),
    ],
)
def test_bad_aux_loss_fails_at_the_door(aux, error, match):
    score = Counting()
    with pytest.raises(error, match=match) as info:
        make(score=score, gradient=ho.GradientConfig(aux_loss=aux))
    assert score.calls <= door_calls()
    if aux is _raise:
        assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_good_aux_loss_passes_the_door():
    make(gradient=ho.GradientConfig(
        aux_loss=lambda logits, d: nn.functional.cross_entropy(logits, d[1])))


def test_per_item_rewards_never_observed_fail_fast():
    calls = {"n": 0}

    def never_observed(actions, data):
        calls["n"] += 1
        return torch.full(actions.shape, float("nan"))

    with pytest.raises(ValueError, match=r"per-item rewards .* NaN \(unobserved\) for every "
                                         r"item of a sample of actions"):
        make(score=never_observed)
    assert calls["n"] <= door_calls()

    def half_observed(actions, data):
        rewards = (actions == data[1]).float()
        rewards[::2] = float("nan")
        return rewards

    make(score=half_observed)  # some items observed: fine
