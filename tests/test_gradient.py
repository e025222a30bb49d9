"""The policy-gradient phase: REINFORCE with a baseline."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import hit_rate, make_bandit, mlp
from torch import nn

import hybridopt as ho
from hybridopt.config import GradientConfig
from hybridopt.losses import masked_cross_entropy
from hybridopt.phases.gradient import baseline_values, reinforce_loss, sample_actions


def test_reinforce_climbs_bandit_to_near_optimal(bandit):
    model = mlp()
    opt = ho.HybridOptimizer(
        model, hit_rate, data=bandit, phases=("gradient",), seed=0,
        gradient=GradientConfig(lr=0.02),
    )
    start = opt.evaluate()
    result = opt.fit(max_evaluations=4000, progress=False)
    assert start < 0.6
    assert result.best_score > 0.9
    assert opt.evaluate() == pytest.approx(result.best_score)
    assert result.evaluations <= 4000


def _gradient_samples(baseline: str, draws: int = 300, k: int = 8) -> torch.Tensor:
    """Many independent REINFORCE gradient estimates for one fixed policy."""
    x, best = make_bandit(n=64)
    model = mlp(hidden=8)
    cfg = GradientConfig(samples=k, baseline=baseline, normalize_advantages=False)
    gen = torch.Generator().manual_seed(0)
    grads = []
    for _ in range(draws):
        logits = model(x)
        actions = sample_actions(logits, k, gen)
        # An offset in the score is what a baseline removes
        scores = 10.0 + (actions == best).double().mean(-1)
        model.zero_grad()
        reinforce_loss(torch.log_softmax(logits, -1), actions, scores, None, cfg).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    return torch.stack(grads)


@pytest.mark.slow
def test_leave_one_out_baseline_lowers_gradient_variance():
    plain, loo = _gradient_samples("none"), _gradient_samples("loo")
    # Both estimate the same gradient; the baseline only removes variance
    assert loo.var(0).sum() < 0.05 * plain.var(0).sum()
    assert torch.allclose(loo.mean(0), plain.mean(0), atol=3 * plain.std(0).max() / 17)


def test_baselines():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    assert baseline_values(scores, "loo", None).tolist() == [11 / 3, 10 / 3, 3.0, 2.0]
    assert baseline_values(scores, "running", 1.5).tolist() == [1.5] * 4
    assert baseline_values(scores, "none", None).tolist() == [0.0] * 4


def test_running_baseline_and_scheduler(bandit):
    cfg = GradientConfig(
        baseline="running", lr=0.05,
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    )
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), gradient=cfg)
    result = opt.fit(max_evaluations=17 * 12, progress=False)
    lrs = [r["lr"] for r in result.history]
    assert lrs[0] == 0.05 and lrs[5] == 0.025 and lrs[-1] < 0.025
    assert result.best_score > opt.history[0]["score"] - 1e-9


def test_unobserved_items_get_no_gradient():
    # [N, H, A] logits; item 2 is never observed
    logits = torch.randn(5, 3, 4, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    actions = sample_actions(logits, 6, gen)
    observed = torch.ones_like(actions, dtype=torch.bool)
    observed[..., 2] = False
    scores = torch.randn(6, dtype=torch.float64)
    cfg = GradientConfig(samples=6)
    reinforce_loss(torch.log_softmax(logits, -1), actions, scores, observed, cfg).backward()
    assert torch.all(logits.grad[:, 2] == 0)
    assert logits.grad[:, :2].abs().sum() > 0


def test_per_item_rewards_with_nan_train_observed_items():
    # Three items per row; the third item's outcome is never observed (NaN reward)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(128, 4, generator=g)
    target = (x[:, :3] > 0).long()  # item h should be 1 when x[:, h] > 0

    def per_item(actions, data):
        reward = (actions == data[1]).float()
        reward[..., 2] = float("nan")
        return reward

    class ThreeItems(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 6)

        def forward(self, x):
            return self.linear(x).reshape(-1, 3, 2)

    torch.manual_seed(0)
    model = ThreeItems()
    opt = ho.HybridOptimizer(
        model, per_item, data=(x, target), phases=("gradient",), seed=0,
        gradient=GradientConfig(lr=0.05),
    )
    result = opt.fit(max_evaluations=1500, progress=False)
    # The score is the mean over the two observed items only
    assert result.best_score > 0.9
    acts = model(x).argmax(-1)
    assert result.best_score == pytest.approx((acts[:, :2] == target[:, :2]).float().mean().item())


def test_aux_loss_on_partial_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    labels = (x[:, 0] > 0).long()
    mask = torch.rand(64, generator=g) < 0.5

    def aux(logits, data):
        return masked_cross_entropy(logits, data[1], data[2])

    model = mlp(actions=2)
    opt = ho.HybridOptimizer(
        model, lambda a, d: (a == d[1]).float().mean(), data=(x, labels, mask),
        phases=("gradient",), gradient=GradientConfig(aux_loss=aux, aux_weight=1.0, lr=0.03),
    )
    result = opt.fit(max_evaluations=17 * 40, progress=False)
    assert all(r["losses/aux_loss"] is not None for r in result.history)
    assert result.history[-1]["losses/aux_loss"] < result.history[0]["losses/aux_loss"]


def test_episodes_are_contiguous_slices(bandit):
    seen = []

    def score(actions, data):
        seen.append(len(data[0]))
        return (actions == data[1]).float().mean()

    opt = ho.HybridOptimizer(
        mlp(), score, data=bandit, phases=("gradient",), episode_length=32, seed=0
    )
    seen.clear()
    opt.fit(max_evaluations=3 * 17, progress=False)
    # K samples per step on a 32-row episode; the tracked score on the full 256 rows
    assert sorted(set(seen)) == [32, 256]


def test_same_seed_same_result(bandit):
    def run(seed):
        opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, phases=("gradient",), seed=seed)
        return opt.fit(max_evaluations=500, progress=False)

    a, b, c = run(0), run(0), run(1)
    assert [r["score"] for r in a.history] == [r["score"] for r in b.history]
    for key in a.best_state_dict:
        assert torch.equal(a.best_state_dict[key], b.best_state_dict[key])
    assert [r["sample_score_mean"] for r in a.history] != [
        r["sample_score_mean"] for r in c.history
    ]


def test_nonfinite_scores_count_as_worst_and_are_reported(bandit):
    calls = {"n": 0}

    def flaky(actions, data):
        calls["n"] += 1
        return math.nan if calls["n"] % 5 == 0 else float((actions == data[1]).float().mean())

    opt = ho.HybridOptimizer(mlp(), flaky, data=bandit, phases=("gradient",), seed=0)
    result = opt.fit(max_evaluations=400, progress=False)
    assert result.nonfinite > 0
    assert result.history[-1]["nonfinite_total"] == result.nonfinite
    assert math.isfinite(result.best_score)
