"""Every field of every config is checked when the config is built: types first, then ranges."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

import pytest

import hybridopt as ho
from hybridopt.checks import UNIT, Range, above, at_least, between, check_fields
from hybridopt.config import to_dict

CONFIGS = (ho.GradientConfig, ho.GeneticConfig, ho.ESConfig, ho.StallConfig)


@pytest.mark.parametrize(
    "cls, kwargs, error, message",
    [
        # wrong types: a string, a bool or a float where they do not belong
        (ho.GradientConfig, {"lr": "fast"}, TypeError,
         "GradientConfig.lr must be a number > 0; got lr = 'fast' (str)."),
        (ho.GradientConfig, {"lr": "1e-3"}, TypeError, "lr = '1e-3' (str)"),
        (ho.GradientConfig, {"normalize_advantages": "false"}, TypeError,
         "GradientConfig.normalize_advantages must be a bool (True or False); "
         "got normalize_advantages = 'false' (str)."),
        (ho.GradientConfig, {"normalize_advantages": 0}, TypeError, "must be a bool"),
        (ho.GradientConfig, {"warmup_steps": 1.5}, TypeError,
         "GradientConfig.warmup_steps must be an int >= 0; got warmup_steps = 1.5 (float)."),
        (ho.GradientConfig, {"max_grad_norm": "1"}, TypeError,
         "GradientConfig.max_grad_norm must be a number > 0 or None; got max_grad_norm = '1'"),
        (ho.GradientConfig, {"samples": True}, TypeError, "samples must be an int >= 2"),
        (ho.GradientConfig, {"samples": 16.0}, TypeError, "samples must be an int >= 2"),
        (ho.GradientConfig, {"entropy_coef": True}, TypeError, "entropy_coef must be a number"),
        (ho.GradientConfig, {"baseline": 1}, TypeError, 'baseline must be "loo", "running"'),
        (ho.GradientConfig, {"optimizer": 3}, TypeError,
         "GradientConfig.optimizer must be a string or a callable; got optimizer = 3 (int)."),
        (ho.GradientConfig, {"scheduler": "step"}, TypeError,
         "GradientConfig.scheduler must be a callable or None"),
        (ho.GradientConfig, {"aux_loss": "ce"}, TypeError,
         "GradientConfig.aux_loss must be a callable or None; got aux_loss = 'ce' (str)."),
        (ho.GradientConfig, {"optimizer_kwargs": [("betas", (0.9, 0.99))]}, TypeError,
         "GradientConfig.optimizer_kwargs must be a dict"),
        (ho.GradientConfig, {"optimizer_kwargs": {1: 2}}, TypeError, "with string keys"),
        (ho.GeneticConfig, {"elite": 2.0}, TypeError, "GeneticConfig.elite must be an int"),
        (ho.GeneticConfig, {"crossover": None}, TypeError, "crossover must be"),
        (ho.GeneticConfig, {"select": "tournament"}, TypeError,
         "GeneticConfig.select must be a callable or None"),
        (ho.GeneticConfig, {"max_generations": "10"}, TypeError,
         "max_generations must be an int >= 1 or None"),
        (ho.StallConfig, {"relative": 1}, TypeError, "StallConfig.relative must be a bool"),
        (ho.StallConfig, {"min_delta": "0"}, TypeError, "StallConfig.min_delta must be a number"),
        # phase patience lives with the phase now (StallConfig.patience is the fallback)
        (ho.GradientConfig, {"patience": 6.5}, TypeError,
         "GradientConfig.patience must be an int >= 1; got patience = 6.5 (float)."),
        (ho.GradientConfig, {"patience": None}, TypeError, "GradientConfig.patience must be an"),
        (ho.GeneticConfig, {"patience": "5"}, TypeError,
         "GeneticConfig.patience must be an int >= 1 or None"),
        (ho.StallConfig, {"start_from": 1}, TypeError, 'StallConfig.start_from must be "best" or'),
        # bad values of the right type
        (ho.GradientConfig, {"samples": 1}, ValueError,
         "GradientConfig.samples must be an int >= 2; got samples = 1 (int)."),
        (ho.GradientConfig, {"lr": 0}, ValueError, "GradientConfig.lr must be a number > 0"),
        (ho.GradientConfig, {"lr": float("nan")}, ValueError, "lr must be a finite number > 0"),
        (ho.GradientConfig, {"lr": float("inf")}, ValueError, "lr must be a finite number > 0"),
        (ho.GradientConfig, {"aux_weight": float("nan")}, ValueError, "aux_weight must be a fin"),
        (ho.GradientConfig, {"baseline": "mean"}, ValueError,
         'GradientConfig.baseline must be "loo", "running" or "none"; got baseline = \'mean\''),
        (ho.GradientConfig, {"baseline_momentum": 1.5}, ValueError, r"in [0, 1]"),
        (ho.GradientConfig, {"entropy_coef": -0.1}, ValueError, "entropy_coef must be a number >="),
        (ho.GradientConfig, {"warmup_steps": -1}, ValueError, "warmup_steps must be an int >= 0"),
        (ho.GradientConfig, {"max_grad_norm": 0}, ValueError, "max_grad_norm must be a number > 0"),
        (ho.GradientConfig, {"max_steps": 0}, ValueError, "max_steps must be an int >= 1 or None"),
        (ho.GradientConfig, {"optimizer_kwargs": {"lr": 0.1}}, ValueError,
         "GradientConfig.optimizer_kwargs must be a dict without 'lr'"),
        (ho.GradientConfig, {"optimizer": lambda p: None, "optimizer_kwargs": {"momentum": 0.9}},
         ValueError, "optimizer_kwargs must be empty when optimizer is a factory"),
        (ho.GeneticConfig, {"hall_of_fame": 0}, ValueError,
         "GeneticConfig.hall_of_fame must be an int >= 1; got hall_of_fame = 0 (int)."),
        (ho.GeneticConfig, {"tournament_size": 0}, ValueError, "tournament_size must be an int >="),
        (ho.GeneticConfig, {"elite": -1}, ValueError, "elite must be an int >= 0"),
        (ho.GeneticConfig, {"crossover": "sbx"}, ValueError, 'must be "blend" or "uniform"'),
        (ho.GeneticConfig, {"crossover_prob": -0.1}, ValueError, "crossover_prob must be a number"),
        (ho.GeneticConfig, {"mutation_prob": 2}, ValueError, "mutation_prob must be a number in"),
        (ho.GeneticConfig, {"gene_mutation_prob": 1.01}, ValueError, "gene_mutation_prob must be"),
        (ho.GeneticConfig, {"blend_alpha": -0.5}, ValueError, "blend_alpha must be a number >= 0"),
        (ho.GeneticConfig, {"mutation_scale": 0}, ValueError, "mutation_scale must be a number >"),
        (ho.GeneticConfig, {"init_scale": 0}, ValueError, "init_scale must be a number > 0"),
        (ho.GeneticConfig, {"init_scale_max": 0.01}, ValueError,
         "GeneticConfig.init_scale_max must be a number >= init_scale = 0.05; "
         "got init_scale_max = 0.01 (float)."),
        (ho.GeneticConfig, {"max_generations": 0}, ValueError, "max_generations must be an int >="),
        (ho.StallConfig, {"patience": 0}, ValueError, "StallConfig.patience must be an int >= 1"),
        (ho.GradientConfig, {"patience": 0}, ValueError,
         "GradientConfig.patience must be an int >= 1; got patience = 0 (int)."),
        (ho.GeneticConfig, {"patience": 0}, ValueError, "GeneticConfig.patience must be an int >="),
        (ho.ESConfig, {"patience": 0}, ValueError, "ESConfig.patience must be an int >= 1"),
        (ho.GradientConfig, {"collapse_patience": 0}, ValueError,
         "GradientConfig.collapse_patience must be an int >= 1 or None"),
        (ho.GradientConfig, {"collapse_drop": 0}, ValueError, "collapse_drop must be a number > 0"),
        (ho.GradientConfig, {"collapse_entropy": -1}, ValueError,
         "collapse_entropy must be a number >= 0"),
        (ho.GradientConfig, {"revert_lr_factor": 1.5}, ValueError,
         "GradientConfig.revert_lr_factor must be a number in (0, 1]"),
        (ho.GradientConfig, {"revert_lr_factor": 0.0}, ValueError,
         "GradientConfig.revert_lr_factor must be a number in (0, 1]"),
        (ho.StallConfig, {"max_share": 1.5}, ValueError,
         "StallConfig.max_share must be a number in (0, 1] or None; got max_share = 1.5 (float)."),
        (ho.StallConfig, {"max_share": 0}, ValueError,
         "StallConfig.max_share must be a number in (0, 1] or None"),
        (ho.StallConfig, {"start_from": "end"}, ValueError,
         'StallConfig.start_from must be "best" or "handoff"; got start_from = \'end\' (str).'),
        (ho.StallConfig, {"min_delta": -1e-3}, ValueError, "min_delta must be a number >= 0"),
        (ho.StallConfig, {"monitor": "valid"}, ValueError, 'monitor must be "selection" or'),
        (ho.StallConfig, {"min_steps": -1}, ValueError, "min_steps must be an int >= 0"),
        (ho.StallConfig, {"flat_patience": 0}, ValueError, "flat_patience must be an int >= 1"),
    ],
)
def test_bad_field(cls, kwargs, error, message):
    with pytest.raises(error) as info:
        cls(**kwargs)
    assert type(info.value) is error  # TypeError for a wrong type, ValueError for a bad value
    assert message in str(info.value)


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_is_checked(cls):
    """An object of no accepted type is refused by every field, naming Config.field."""
    for f in dataclasses.fields(cls):
        with pytest.raises(TypeError, match=rf"^{cls.__name__}\.{f.name} must be "):
            cls(**{f.name: object()})


@pytest.mark.parametrize("cls", CONFIGS)
def test_no_bool_for_a_number(cls):
    hints = typing.get_type_hints(cls)
    numbers = [name for name, hint in hints.items()
               if {int, float} & {hint, *typing.get_args(hint)}]
    assert numbers
    for name in numbers:
        with pytest.raises(TypeError, match=rf"{cls.__name__}\.{name} must be an? (int|number)"):
            cls(**{name: True})


def test_good_values_pass_and_defaults_are_unchanged():
    assert to_dict(ho.GradientConfig())["optimizer"] == "adam"
    ho.GradientConfig(lr=1, max_grad_norm=None, max_steps=3, optimizer="SGD",
                      optimizer_kwargs={"momentum": 0.9}, warmup_steps=0, baseline="none",
                      scheduler=lambda o: None, aux_loss=lambda lg, d: 0.0, aux_weight=-1.0)
    ho.GeneticConfig(elite=0, crossover_prob=0, mutation_prob=1, init_scale=1.0,
                     init_scale_max=1.0, max_generations=None, select=lambda m, k: m[:k])
    ho.StallConfig(min_delta=0, relative=True, monitor="train", min_steps=0, max_share=None,
                   start_from="handoff")
    ho.GradientConfig(patience=1, collapse_patience=None, revert_lr_factor=1.0)
    ho.GeneticConfig(patience=None)
    # the documented defaults of the phase patience, the budget share and the start
    assert ho.GradientConfig().patience == 60 and ho.GeneticConfig().patience is None
    assert ho.StallConfig().max_share == 0.5 and ho.StallConfig().start_from == "best"
    assert not hasattr(ho.StallConfig(), "gradient_patience")


def test_range_descriptions():
    assert str(at_least(2)) == ">= 2" and str(above(0)) == "> 0"
    assert str(UNIT) == "in [0, 1]" and str(between(0.5, 2)) == "in [0.5, 2]"
    assert str(Range(high=1, high_open=True)) == "< 1" and 1 not in Range(high=1, high_open=True)
    assert 0 not in above(0) and 0 in at_least(0) and 1 in UNIT and 1.01 not in UNIT


@dataclass(frozen=True, kw_only=True)
class ESConfig:
    """A future config: one call in __post_init__ checks it like the others."""

    sigma: float = 0.1
    """Noise std."""
    population: int | None = None
    """Offspring per step."""
    ranking: Literal["centered", "raw"] = "centered"
    """Fitness shaping."""
    antithetic: bool = True
    """Mirrored samples."""

    def __post_init__(self) -> None:
        check_fields(self, {"sigma": above(0), "population": at_least(2)})


def test_check_fields_is_reusable():
    ESConfig()
    ESConfig(population=8, ranking="raw", antithetic=False)
    with pytest.raises(ValueError, match=r"ESConfig.sigma must be a number > 0; got sigma = 0 "):
        ESConfig(sigma=0)
    with pytest.raises(TypeError, match="ESConfig.population must be an int >= 2 or None"):
        ESConfig(population="8")
    with pytest.raises(ValueError, match='ESConfig.ranking must be "centered" or "raw"'):
        ESConfig(ranking="rank")
    with pytest.raises(TypeError, match=r"ESConfig.antithetic must be a bool"):
        ESConfig(antithetic="yes")
