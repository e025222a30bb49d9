"""Tests of the classification, items and deceptive tasks (hybridopt.tasks.*)."""

from __future__ import annotations

import math

import pytest
import torch

from hybridopt import HybridOptimizer
from hybridopt.losses import masked_cross_entropy
from hybridopt.scoring import Scorer
from hybridopt.tasks.classification import (
    ClassifierMLP,
    macro_f1,
    majority_baseline,
    make_classification_data,
)
from hybridopt.tasks.deceptive import (
    BONUS,
    JUMP_ACTION,
    TRAP_SHARE,
    DeceptiveMLP,
    deceptive_score,
    make_deceptive_data,
)
from hybridopt.tasks.items import (
    ACT,
    ITEMS,
    SKIP,
    ItemsModel,
    item_prior_baseline,
    items_rewards,
    items_score,
    make_items_data,
    observed_targets,
)

FACTORIES = (make_classification_data, make_items_data, make_deceptive_data)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These tensors are tiny: intra-op threads only contend on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clf():
    return make_classification_data()


@pytest.fixture(scope="module")
def items():
    return make_items_data()


@pytest.fixture(scope="module")
def dec():
    return make_deceptive_data()


def _equal(a: dict, b: dict) -> bool:
    """Same splits, same keys, bit-identical tensors (NaN equal to NaN)."""
    return all(
        torch.equal(a[s][k], b[s][k]) or torch.equal(a[s][k].isnan(), b[s][k].isnan())
        and torch.equal(a[s][k].nan_to_num(), b[s][k].nan_to_num())
        for s in a
        for k in a[s]
    )


# --- all factories ----------------------------------------------------------------------


@pytest.mark.parametrize("factory", FACTORIES)
def test_factories_deterministic_and_seed_dependent(factory):
    state = torch.get_rng_state()
    a = factory(seed=3)
    assert torch.equal(state, torch.get_rng_state())  # global RNG left alone
    assert _equal(a, factory(seed=3))
    b = factory(seed=4)
    assert not torch.equal(a["train"]["x"], b["train"]["x"])


@pytest.mark.parametrize("factory", FACTORIES)
def test_factories_split_lengths(factory):
    d = factory(n=1000, splits=(0.5, 0.3, 0.2))
    assert [len(d[s]["x"]) for s in ("train", "valid", "test")] == [500, 300, 200]
    for split in d.values():
        assert {len(t) for t in split.values()} == {len(split["x"])}
        assert split["x"].dtype == torch.float32 and torch.isfinite(split["x"]).all()


@pytest.mark.parametrize("factory", FACTORIES)
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": True}, "n"),
        ({"features": 0}, "features"),
        ({"seed": "0"}, "seed"),
        ({"splits": (0.5, 0.5)}, "splits"),
        ({"splits": (0.5, 0.6, -0.1)}, "splits"),
        ({"splits": (0.5, 0.3, 0.3)}, "splits"),
        ({"splits": "abc"}, "splits"),
        ({"n": 3, "splits": (0.8, 0.1, 0.1)}, "split"),
    ],
)
def test_factories_validate_arguments(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


# --- classification -----------------------------------------------------------------


def test_classification_shapes_and_imbalance(clf):
    shares = torch.tensor((0.6, 0.25, 0.1, 0.05))
    for name, n in (("train", 2400), ("valid", 800), ("test", 800)):
        d = clf[name]
        assert set(d) == {"x", "y"}
        assert d["x"].shape == (n, 12) and d["y"].shape == (n,) and d["y"].dtype == torch.long
        observed = torch.bincount(d["y"], minlength=4).float() / n
        assert torch.allclose(observed, shares, atol=0.03)
    total = sum(torch.bincount(d["y"], minlength=4) for d in clf.values())
    assert total.tolist() == [2400, 1000, 400, 200]  # exact class counts


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"classes": 1}, "classes"),
        ({"classes": 3}, "imbalance"),  # 4 default shares for 3 classes
        ({"imbalance": (0.5, 0.5, 0.0, 0.0)}, "imbalance"),
        ({"imbalance": (0.6, 0.3, 0.2, 0.1)}, "imbalance"),
        ({"imbalance": None}, "imbalance"),
    ],
)
def test_classification_validates_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_classification_data(**kwargs)


def _macro_f1_reference(pred: list[int], y: list[int], classes: int) -> float:
    """Slow per-class loop, scikit-learn's macro F1 with zero_division=0."""
    f1 = []
    for c in range(classes):
        tp = sum(p == c and t == c for p, t in zip(pred, y))
        fp = sum(p == c and t != c for p, t in zip(pred, y))
        fn = sum(p != c and t == c for p, t in zip(pred, y))
        f1.append(0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return 100 * sum(f1) / classes


def test_macro_f1_matches_reference():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(1, 40, (1,), generator=g))
        y = torch.randint(0, 4, (n,), generator=g)
        pred = torch.randint(0, 5, (n,), generator=g)
        classes = max(int(y.max()), int(pred.max())) + 1
        expected = _macro_f1_reference(pred.tolist(), y.tolist(), classes)
        assert macro_f1(pred, {"y": y}).item() == pytest.approx(expected, abs=1e-4)
        assert macro_f1(pred, {"y": y}, classes=6).item() == pytest.approx(
            _macro_f1_reference(pred.tolist(), y.tolist(), 6), abs=1e-4
        )


def test_macro_f1_zero_division_convention():
    y = torch.tensor([0, 0, 2, 2])
    # class 1: no predicted and no true row -> F1 = 0, still averaged over
    assert macro_f1(y.clone(), {"y": y}).item() == pytest.approx(100 * 2 / 3)
    assert macro_f1(y.clone(), {"y": y}, classes=3).item() == pytest.approx(100 * 2 / 3)


def test_macro_f1_scores(clf):
    d = clf["train"]
    y = d["y"]
    assert macro_f1(y, d).item() == pytest.approx(100.0)
    # Majority: F1 = 2p / (1 + p) for class 0, 0 for the others
    p = (y == 0).float().mean().item()
    assert majority_baseline(d).eq(0).all()
    assert macro_f1(majority_baseline(d), d).item() == pytest.approx(100 * 2 * p / (1 + p) / 4)
    # Uniformly random: about 100 * mean_c 2 p_c / (1 + C p_c) = 20.7
    g = torch.Generator().manual_seed(0)
    random = macro_f1(torch.randint(0, 4, (64, len(y)), generator=g), d)
    assert random.shape == (64,)
    assert random.mean().item() == pytest.approx(20.7, abs=0.5)


def test_macro_f1_batched_equals_stacked(clf):
    d = clf["valid"]
    g = torch.Generator().manual_seed(1)
    actions = torch.randint(0, 4, (5, len(d["y"])), generator=g)
    actions[0] = 0  # one sequence predicts a single class
    actions[1, :] = d["y"]
    batch = macro_f1(actions, d)
    assert batch.shape == (5,) and batch.dtype == torch.float32
    assert torch.equal(batch, torch.stack([macro_f1(a, d) for a in actions]))
    assert macro_f1(actions[0], d).dim() == 0


def test_macro_f1_errors(clf):
    d = clf["valid"]
    y = d["y"]
    with pytest.raises(TypeError, match="integer"):
        macro_f1(y.float(), d)
    with pytest.raises(ValueError, match="N="):
        macro_f1(y[:-1], d)
    with pytest.raises(ValueError, match="shape"):
        macro_f1(y.view(1, 1, -1), d)
    with pytest.raises(ValueError, match=">= 0"):
        macro_f1(torch.full_like(y, -1), d)
    with pytest.raises(ValueError, match="classes=3"):
        macro_f1(y, d, classes=3)


def test_classifier_mlp_learns_above_majority_but_not_perfectly(clf):
    g = torch.Generator().manual_seed(0)
    model = ClassifierMLP()
    with torch.no_grad():  # a seeded init that leaves the global RNG alone
        for p in model.parameters():
            fan_in = p.shape[-1] if p.dim() == 2 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5 if p.dim() == 2 else 0.0)
    x, y = clf["train"]["x"][:800], clf["train"]["y"][:800]  # a small batch keeps it fast
    assert model(x).shape == (800, 4)
    # Plain full-batch gradient descent on cross-entropy, a surrogate of macro-F1
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= 0.5 * g
    with torch.no_grad():
        score = macro_f1(model(clf["valid"]["x"]).argmax(-1), clf["valid"]).item()
    assert 35 < score < 90, score


# --- items --------------------------------------------------------------------------


def test_items_shapes_and_nan_placement(items):
    for name, n in (("train", 1800), ("valid", 600), ("test", 600)):
        d = items[name]
        assert set(d) == {"x", "reward", "mask"}
        assert d["x"].shape == (n, 10)
        assert d["reward"].shape == (n, ITEMS) and d["reward"].dtype == torch.float32
        assert d["mask"].shape == (n, ITEMS) and d["mask"].dtype == torch.bool
        # Exactly one unobserved item per row, and it is the NaN
        assert (d["mask"].sum(1) == ITEMS - 1).all()
        assert torch.equal(torch.isnan(d["reward"]), ~d["mask"])
        assert set(d["reward"][d["mask"]].unique().tolist()) == {-1.0, 1.0}
    # The unobserved item is spread over the three items
    hidden = (~items["train"]["mask"]).float().mean(0)
    assert torch.allclose(hidden, torch.full((ITEMS,), 1 / 3), atol=0.05)


def test_items_rewards_values(items):
    d = items["valid"]
    n = len(d["x"])
    act = torch.full((n, ITEMS), ACT)
    skip = torch.full((n, ITEMS), SKIP)
    r_act, r_skip = items_rewards(act, d), items_rewards(skip, d)
    assert r_act.shape == (n, ITEMS)
    assert torch.equal(torch.isnan(r_act), ~d["mask"])
    assert torch.equal(r_act[d["mask"]], d["reward"][d["mask"]])
    assert (r_skip[d["mask"]] == 0).all() and torch.isnan(r_skip[~d["mask"]]).all()
    batch = items_rewards(torch.stack([act, skip]), d)
    assert batch.shape == (2, n, ITEMS)
    assert torch.equal(batch[0].nan_to_num(7.0), r_act.nan_to_num(7.0))


def test_items_rewards_under_vmap(items):
    d = items["valid"]
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(0, 2, (6, len(d["x"]), ITEMS), generator=g)
    vmapped = torch.func.vmap(items_rewards, in_dims=(0, None))(actions, d)
    looped = torch.stack([items_rewards(a, d) for a in actions])
    assert vmapped.shape == actions.shape
    assert torch.allclose(vmapped, looped, equal_nan=True)
    assert torch.allclose(vmapped, items_rewards(actions, d), equal_nan=True)


def test_items_score_agrees_with_hybridopt_reduction(items):
    d = items["valid"]
    g = torch.Generator().manual_seed(1)
    actions = torch.randint(0, 2, (4, len(d["x"]), ITEMS), generator=g)
    expected = items_score(actions, d).double()
    # Marked batched: per-item rewards for the whole batch
    scores = Scorer(items_rewards)(actions, d).scores
    assert torch.allclose(100 * scores, expected, atol=1e-4)
    # Unmarked: hybridopt must pick vmap and agree
    scorer = Scorer(lambda a, data: items_rewards(a, data))
    checked = scorer.check(actions, d)
    assert scorer.mode == "vmap"
    assert torch.allclose(100 * checked.scores, expected, atol=1e-4)
    assert torch.equal(checked.observed[0], d["mask"])


def test_items_score_properties(items):
    d = items["train"]
    n = len(d["x"])
    targets, mask = observed_targets(d)
    perfect = torch.where(targets == ACT, ACT, SKIP)
    share_positive = (d["reward"][d["mask"]] > 0).float().mean().item()
    assert items_score(perfect, d).item() == pytest.approx(100 * share_positive, abs=1e-4)
    assert items_score(perfect, d).item() == pytest.approx(50.6, abs=0.1)
    assert items_score(torch.full((n, ITEMS), SKIP), d).item() == 0.0
    act_all = items_score(torch.full((n, ITEMS), ACT), d).item()
    g = torch.Generator().manual_seed(0)
    random = items_score(torch.randint(0, 2, (100, n, ITEMS), generator=g), d)
    assert random.shape == (100,)
    assert random.mean().item() == pytest.approx(act_all / 2, abs=0.5)
    # Feature-blind baseline beats acting everywhere but not the perfect policy
    prior = items_score(item_prior_baseline(d), d).item()
    assert act_all < prior < 50.0
    valid = items["valid"]
    assert item_prior_baseline(valid, d).shape == (len(valid["x"]), ITEMS)


def test_items_score_batched_equals_stacked(items):
    d = items["test"]
    g = torch.Generator().manual_seed(2)
    actions = torch.randint(0, 2, (5, len(d["x"]), ITEMS), generator=g)
    batch = items_score(actions, d)
    assert batch.shape == (5,)
    assert torch.equal(batch, torch.stack([items_score(a, d) for a in actions]))
    assert items_score(actions[0], d).dim() == 0


def test_items_errors(items):
    d = items["test"]
    n = len(d["x"])
    with pytest.raises(ValueError, match="SKIP"):
        items_score(torch.full((n, ITEMS), 2), d)
    with pytest.raises(ValueError, match="shape"):
        items_rewards(torch.zeros(n, 2, dtype=torch.long), d)
    with pytest.raises(ValueError, match="shape"):
        items_rewards(torch.zeros(n, dtype=torch.long), d)
    with pytest.raises(TypeError, match="integer"):
        items_rewards(torch.zeros(n, ITEMS), d)


def test_observed_targets_with_masked_cross_entropy(items):
    d = items["train"]
    targets, mask = observed_targets(d)
    assert targets.shape == (len(d["x"]), ITEMS) and targets.dtype == torch.long
    assert torch.equal(mask, d["mask"]) and mask is not d["mask"]
    assert (targets[~mask] == -1).all()
    assert torch.equal(targets[mask] == ACT, d["reward"][mask] > 0)
    model = ItemsModel()
    logits = model(d["x"])
    assert logits.shape == (len(d["x"]), ITEMS, 2)
    loss = masked_cross_entropy(logits, targets, mask)
    loss.backward()
    assert math.isfinite(loss.item())


def test_items_model_trains_with_hybridopt(items):
    model = ItemsModel(hidden=8)
    opt = HybridOptimizer(
        model, items_rewards, data=items["train"], phases=("gradient",), backend="loop", seed=0
    )
    result = opt.fit(max_evaluations=60, progress=False)
    assert math.isfinite(result.best_score) and -1 <= result.best_score <= 1
    assert opt.evaluate(items["valid"]) == pytest.approx(
        items_score(opt.model(items["valid"]["x"]).argmax(-1), items["valid"]).item() / 100,
        abs=1e-5,
    )


# --- deceptive ----------------------------------------------------------------------


def test_deceptive_shapes_and_traps(dec):
    for name, n in (("train", 1200), ("valid", 400), ("test", 400)):
        d = dec[name]
        assert set(d) == {"x", "y", "trap"}
        assert d["x"].shape == (n, 8) and d["y"].shape == (n,) and d["trap"].dtype == torch.bool
        assert torch.equal(d["trap"], d["x"][:, 0] > 1)
        assert set(d["y"].unique().tolist()) == {0, 1, 2}
    trap = torch.cat([d["trap"] for d in dec.values()])
    y = torch.cat([d["y"] for d in dec.values()])
    assert 0.12 < trap.float().mean().item() < 0.20
    # Calibrated: action 2 is right on ~75% of all trap rows, short of the 90% bonus
    assert (y[trap] == JUMP_ACTION).float().mean().item() == pytest.approx(0.75, abs=0.01)


def test_deceptive_score_properties(dec):
    d = dec["train"]
    y, trap = d["y"], d["trap"]
    assert deceptive_score(y, d).item() == pytest.approx(100.0)  # accurate, no bonus
    best = torch.where(trap, JUMP_ACTION, y)
    expected = 100 * (best == y).float().mean().item() + BONUS
    assert deceptive_score(best, d).item() == pytest.approx(expected)
    assert 140 < expected < 150
    g = torch.Generator().manual_seed(0)
    random = deceptive_score(torch.randint(0, 3, (64, len(y)), generator=g), d)
    assert random.mean().item() == pytest.approx(100 / 3, abs=1.0)


def test_deceptive_bonus_threshold_is_exact(dec):
    d = dec["train"]
    y, trap = d["y"], d["trap"]
    rows = trap.nonzero().squeeze(1)
    needed = math.ceil(TRAP_SHARE * len(rows))
    actions = torch.where(trap, (JUMP_ACTION + 1) % 3, y)  # no trap row on action 2
    actions[rows[:needed]] = JUMP_ACTION
    with_bonus = deceptive_score(actions, d).item()
    actions[rows[needed - 1]] = (JUMP_ACTION + 1) % 3
    without = deceptive_score(actions, d).item()
    assert with_bonus - without == pytest.approx(BONUS, abs=0.1)
    # No trap row, no bonus
    calm = {"y": y[~trap], "trap": trap[~trap]}
    assert deceptive_score(torch.full_like(calm["y"], JUMP_ACTION), calm).item() < 100


def test_deceptive_score_batched_equals_stacked(dec):
    d = dec["valid"]
    g = torch.Generator().manual_seed(3)
    actions = torch.randint(0, 3, (5, len(d["y"])), generator=g)
    actions[0] = torch.where(d["trap"], JUMP_ACTION, d["y"])
    batch = deceptive_score(actions, d)
    assert batch.shape == (5,)
    assert torch.equal(batch, torch.stack([deceptive_score(a, d) for a in actions]))
    assert deceptive_score(actions[0], d).dim() == 0 and batch[0] > 140


def test_deceptive_errors_and_model(dec):
    d = dec["test"]
    y = d["y"]
    with pytest.raises(TypeError, match="integer"):
        deceptive_score(y.float(), d)
    with pytest.raises(ValueError, match="N="):
        deceptive_score(y[:-1], d)
    with pytest.raises(ValueError, match=r"\{0, 1, 2\}"):
        deceptive_score(torch.full_like(y, 3), d)
    assert DeceptiveMLP()(d["x"]).shape == (len(y), 3)
