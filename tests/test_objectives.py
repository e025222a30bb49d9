"""Several objectives: scoring, scalarisation, dominance, the Pareto archive, NSGA-II, the front."""

from __future__ import annotations

import csv
import itertools
import math
import random

import numpy as np
import pytest
import torch
from deap import base, creator, tools
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import hybridopt as ho
from hybridopt.front import (
    format_front,
    front_entries,
    hypervolume,
    plot_front,
    state_dict_for,
    write_front_csv,
)
from hybridopt.objectives import (
    ParetoArchive,
    crowded_tournament,
    crowding_distance,
    nondominated_mask,
    parse_objectives,
    scalarise,
    visit_weights,
)
from hybridopt.phases._deap import nondominated_fronts, nsga2_select, rank_and_crowding
from hybridopt.population.flat import FlatParams
from hybridopt.scoring import Scorer
from hybridopt.tasks.trading import trading_objectives, trading_score

G = torch.Generator().manual_seed(0)
DATA = {"label": torch.randint(0, 3, (20,), generator=G)}
ACTIONS = torch.randint(0, 3, (7, 20), generator=G)
HIT = (ACTIONS == DATA["label"]).double().mean(-1)
BUSY = (ACTIONS != 2).double().mean(-1)
EXPECTED = torch.stack([HIT, BUSY], dim=1)


# --- Scorer with several objectives --------------------------------------------------------


def tuple_of_tensors(a, d):
    return (a == d["label"]).float().mean(), (a != 2).float().mean()


def tuple_of_floats(a, d):
    return float(np.mean(a.numpy() == d["label"].numpy())), float(np.mean(a.numpy() != 2))


def dict_of_tensors(a, d):
    return {"hit": (a == d["label"]).float().mean(), "busy": (a != 2).float().mean()}


def vector(a, d):
    return torch.stack([(a == d["label"]).float().mean(), (a != 2).float().mean()])


@ho.batched
def batched_matrix(a, d):
    return torch.stack([(a == d["label"]).float().mean(-1), (a != 2).float().mean(-1)], dim=-1)


@ho.batched
def batched_dict(a, d):
    return {"hit": (a == d["label"]).float().mean(-1), "busy": (a != 2).float().mean(-1)}


@pytest.mark.parametrize(
    "fn, mode, names",
    [
        (tuple_of_tensors, "vmap", ("objective_0", "objective_1")),
        (tuple_of_floats, "per_sequence", ("objective_0", "objective_1")),
        (dict_of_tensors, "vmap", ("hit", "busy")),
        (vector, "vmap", ("objective_0", "objective_1")),
        (batched_matrix, "batched", ("objective_0", "objective_1")),
        (batched_dict, "batched", ("hit", "busy")),
    ],
)
def test_every_multi_objective_form_agrees(fn, mode, names):
    scorer = Scorer(fn, objectives=2)
    checked = scorer.check(ACTIONS[:3], DATA)
    assert scorer.mode == mode and scorer.names == names
    assert torch.allclose(checked.objectives, EXPECTED[:3], atol=1e-6)
    batch = scorer(ACTIONS, DATA)
    assert batch.objectives.shape == (7, 2) and batch.objectives.dtype == torch.float64
    assert torch.allclose(batch.objectives, EXPECTED, atol=1e-6)
    # Default scalarisation: the mean of the objectives
    assert torch.allclose(batch.scores, EXPECTED.mean(1), atol=1e-6)
    assert batch.finite.all() and batch.observed is None


def test_declared_names_order_the_columns():
    scorer = Scorer(dict_of_tensors, objectives=["busy", "hit"])
    batch = scorer.check(ACTIONS, DATA)
    assert scorer.names == ("busy", "hit")
    assert torch.allclose(batch.objectives, EXPECTED.flip(1), atol=1e-6)


def test_weights_set_the_scalarisation():
    scorer = Scorer(batched_matrix, objectives=2)
    scorer.check(ACTIONS[:2], DATA)
    scorer.set_weights([0.25, 0.75])
    batch = scorer(ACTIONS, DATA)
    assert torch.allclose(batch.scores, EXPECTED @ torch.tensor([0.25, 0.75], dtype=torch.float64))
    again = batch.scalarised(torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.equal(again.scores, batch.objectives[:, 0])
    with pytest.raises(ValueError, match="weights must be 2 finite numbers >= 0"):
        scorer.set_weights([1.0, -1.0])
    with pytest.raises(ValueError, match="weights need several objectives"):
        Scorer(lambda a, d: 1.0).set_weights([1.0])


def test_one_named_objective_from_a_scalar():
    scorer = Scorer(lambda a, d: (a == d["label"]).float().mean(), objectives=["hit"])
    batch = scorer.check(ACTIONS, DATA)
    assert batch.objectives.shape == (7, 1) and torch.equal(batch.scores, batch.objectives[:, 0])


def test_nonfinite_objective_marks_the_row():
    scorer = Scorer(lambda a, d: (math.nan if int(a[0]) == 0 else 1.0, 2.0), objectives=2)
    batch = scorer.check(ACTIONS, DATA)
    assert torch.equal(~batch.finite, ACTIONS[:, 0] == 0)


@pytest.mark.parametrize(
    "fn, objectives, error, match",
    [
        (tuple_of_floats, 3, ValueError, r"returned 2 values; objectives = 3 expects 3"),
        (dict_of_tensors, ["hit", "rate"], ValueError, r"keys \['hit', 'busy'\]; objectives"),
        (dict_of_tensors, 3, ValueError, r"objectives = 3 expects 3 objectives"),
        (lambda a, d: 0.5, 2, ValueError, r"objectives = 2 expects 2 numbers"),
        (batched_matrix, 3, ValueError, r"objectives = 3 expects \[B, M\] = \[3, 3\]"),
        (lambda a, d: torch.zeros(a.shape), 2, ValueError, "single-objective only"),
        (tuple_of_floats, None, TypeError, r"2 values: if these are several objectives, pass "
                                           r"objectives=2"),
        (dict_of_tensors, None, TypeError, r"pass objectives=2"),
        (vector, None, ValueError, r"if these are 2 objectives, pass objectives=2"),
        (batched_matrix, None, ValueError, r"if these are 2 objectives, pass objectives=2"),
    ],
)
def test_check_at_the_door_names_objectives(fn, objectives, error, match):
    with pytest.raises(error, match=match):
        Scorer(fn, objectives=objectives).check(ACTIONS[:3], DATA)


@pytest.mark.parametrize(
    "value, error, match",
    [(0, ValueError, "objectives must be an int >= 1"), ("hit", TypeError, r"\['hit'\]"),
     (["a", "a"], ValueError, "distinct"), (True, TypeError, "objectives must be"),
     (2.0, TypeError, "objectives must be")],
)
def test_parse_objectives_rejects(value, error, match):
    with pytest.raises(error, match=match):
        parse_objectives(value)


def test_trading_objectives():
    data = {"next_return": torch.tensor([0.1, -0.2, 0.3, -0.1, 0.0])}
    actions = torch.tensor([[0, 0, 1, 1, 2], [2, 2, 2, 2, 2], [0, 1, 0, 1, 0]])
    out = trading_objectives(actions, data)
    # hits: row 0 buy+, sell- -> 2 of 4; row 1 never trades; row 2 all 5 right but the 0 return
    assert out["success_rate"].tolist() == pytest.approx([0.5, 0.0, 0.8])
    assert out["operation_rate"].tolist() == pytest.approx([0.8, 0.0, 1.0])
    sr, rate = out["success_rate"], out["operation_rate"]
    traded = rate > 0
    assert torch.allclose((100 * (2 * sr - 1) * rate.sqrt())[traded],
                          trading_score(actions, data)[traded], atol=1e-5)
    scorer = Scorer(trading_objectives, objectives=["success_rate", "operation_rate"])
    assert torch.allclose(scorer.check(actions, data).objectives[:, 0], sr.double())


# --- scalarisation and weights per visit -------------------------------------------------------


def test_scalarise():
    o = torch.tensor([[1.0, 3.0], [2.0, 0.0]], dtype=torch.float64)
    assert scalarise(o).tolist() == [2.0, 1.0]
    assert scalarise(o, torch.tensor([1.0, 0.5])).tolist() == [2.5, 2.0]
    low, high = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 3.0])
    assert scalarise(o, torch.tensor([0.5, 0.5]), low, high).tolist() == [0.5, 0.5]


def test_visit_weights_spread():
    assert visit_weights(2, 0).tolist() == [0.5, 0.5]
    firsts = [visit_weights(2, v)[0].item() for v in range(1, 7)]
    assert firsts == [0.25, 0.75, 0.125, 0.625, 0.375, 0.875]
    assert visit_weights(3, 0).tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="needs a generator"):
        visit_weights(3, 1)
    w = visit_weights(4, 2, torch.Generator().manual_seed(3))
    assert w.sum().item() == pytest.approx(1.0) and bool((w > 0).all())
    assert torch.equal(w, visit_weights(4, 2, torch.Generator().manual_seed(3)))


# --- dominance, crowding, hypervolume ----------------------------------------------------------


def reference_nondominated(rows: list[tuple]) -> list[bool]:
    """The slow reference: pairwise, in Python; first of identical rows kept."""
    keep = []
    for i, a in enumerate(rows):
        dominated = any(all(b_ >= a_ for a_, b_ in zip(a, b)) and b != a for b in rows)
        keep.append(not dominated and a not in rows[:i])
    return keep


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 4), st.integers(0, 10**6))
def test_nondominated_mask_matches_reference(q, m, seed):
    o = torch.randint(0, 4, (q, m), generator=torch.Generator().manual_seed(seed)).double()
    rows = [tuple(r) for r in o.tolist()]
    assert nondominated_mask(o).tolist() == reference_nondominated(rows)


def test_crowding_distance_matches_deap():
    o = torch.rand(12, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    o[3] = o[5]  # a tie
    if not hasattr(creator, "TestFitness3"):
        creator.create("TestFitness3", base.Fitness, weights=(1.0, 1.0, 1.0))

    class Member:
        def __init__(self, values):
            self.fitness = creator.TestFitness3(values)

    members = [Member(tuple(r)) for r in o.tolist()]
    tools.emo.assignCrowdingDist(members)
    deap_distance = torch.tensor([mm.fitness.crowding_dist for mm in members], dtype=torch.float64)
    ours = crowding_distance(o)
    assert torch.equal(torch.isinf(ours), torch.isinf(deap_distance))
    finite = torch.isfinite(ours)
    assert torch.allclose(ours[finite], deap_distance[finite])


def test_crowded_tournament_prefers_rank_then_crowding():
    rank = torch.tensor([0, 1, 1, 2])
    crowding = torch.tensor([0.1, math.inf, 0.5, math.inf], dtype=torch.float64)
    chosen = crowded_tournament(rank, crowding, 2000, torch.Generator().manual_seed(0), size=2)
    counts = torch.bincount(chosen, minlength=4)
    # index 0 wins every tournament it enters, index 3 only against itself
    assert counts[0] > counts[1] > counts[2] > counts[3]
    again = crowded_tournament(rank, crowding, 2000, torch.Generator().manual_seed(0), size=2)
    assert torch.equal(chosen, again)


def inclusion_exclusion(points: list[tuple], ref: tuple) -> float:
    """The slow reference: the union of boxes by inclusion-exclusion over all subsets."""
    total = 0.0
    for r in range(1, len(points) + 1):
        for subset in itertools.combinations(points, r):
            corner = [min(p[j] for p in subset) for j in range(len(ref))]
            total += (-1) ** (r + 1) * math.prod(max(c - q, 0.0) for c, q in zip(corner, ref))
    return total


def test_hypervolume_hand_computed():
    assert hypervolume(torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), [0.0, 0.0]) == 6.0
    assert hypervolume(torch.tensor([[2.0, 3.0, 4.0]]), [0.0, 0.0, 0.0]) == 24.0
    # 2*2*1 + 1*1*2 - overlap 1*1*1
    assert hypervolume(torch.tensor([[2.0, 2.0, 1.0], [1.0, 1.0, 2.0]]), [0, 0, 0]) == 5.0
    # points not above the reference add nothing; dominated points add nothing
    assert hypervolume(torch.tensor([[1.0, -1.0], [0.5, 0.5], [0.25, 0.25]]), [0.0, 0.0]) == 0.25
    assert hypervolume(torch.zeros(0, 2), [0.0, 0.0]) == 0.0


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(m):
    g = torch.Generator().manual_seed(m)
    for _ in range(5):
        points = torch.rand(7, m, generator=g, dtype=torch.float64)
        ref = tuple([0.1] * m)
        expected = inclusion_exclusion([tuple(p) for p in points.tolist()], ref)
        assert hypervolume(points, ref) == pytest.approx(expected, rel=1e-12, abs=1e-15)


# --- the Pareto archive -------------------------------------------------------------------------


def test_archive_keeps_only_nondominated_and_members_win_ties():
    archive = ParetoArchive(max_size=10)
    w = torch.arange(8, dtype=torch.float32).reshape(4, 2)
    o = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.2]])
    new = archive.update(w, o)
    assert len(archive) == 3 and new.tolist() == [0, 1, 2]
    # an identical copy, a dominated row, a NaN row and one new non-dominated row
    o2 = torch.tensor([[1.0, 0.0], [0.1, 0.1], [math.nan, 9.0], [0.6, 0.6]], dtype=torch.float64)
    new = archive.update(w + 100, o2)
    assert archive.objectives.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]]
    assert archive.weights[0].tolist() == [0.0, 1.0]  # the member, not the copy
    assert new.tolist() == [2] and archive.weights[2].tolist() == [106.0, 107.0]


def test_archive_truncation_keeps_the_extremes():
    t = torch.linspace(0, 1, 50, dtype=torch.float64)
    o = torch.stack([t, 1 - t**2], dim=1)  # all non-dominated
    archive = ParetoArchive(max_size=8)
    archive.update(torch.randn(50, 3), o)
    assert len(archive) == 8
    firsts = archive.objectives[:, 0]
    assert firsts.min() == 0.0 and firsts.max() == 1.0
    assert bool(nondominated_mask(archive.objectives).all())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.integers(1, 4))
def test_archive_equals_the_front_of_everything_offered(seed, rounds):
    g = torch.Generator().manual_seed(seed)
    archive = ParetoArchive(max_size=1000)
    offered = []
    for _ in range(rounds):
        o = torch.randint(0, 6, (15, 2), generator=g).double()
        archive.update(torch.randn(15, 4, generator=g), o)
        offered.append(o)
    everything = torch.cat(offered)
    front = everything[nondominated_mask(everything)]
    assert sorted(map(tuple, archive.objectives.tolist())) == sorted(map(tuple, front.tolist()))


def test_archive_validation_and_state_dict_round_trip(tmp_path):
    archive = ParetoArchive(max_size=5)
    archive.update(torch.randn(3, 4), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]]))
    assert archive.missing_valid().tolist() == [0, 1, 2]
    valid = torch.tensor([[0.9, 0.1], [0.5, 0.4]], dtype=torch.float64)
    archive.set_valid(torch.tensor([0, 2]), valid)
    assert archive.missing_valid().tolist() == [1]
    entries = archive.entries()
    assert entries[1]["valid"] is None and entries[2]["valid"].tolist() == [0.5, 0.4]
    torch.save(archive.state_dict(), tmp_path / "archive.pt")
    restored = ParetoArchive()
    restored.load_state_dict(torch.load(tmp_path / "archive.pt", weights_only=True))
    for key in ("weights", "objectives", "valid", "valid_known", "ids"):
        assert torch.equal(getattr(restored, key).nan_to_num(), getattr(archive, key).nan_to_num())
    assert restored.max_size == 5 and restored.next_id == archive.next_id
    # the restored archive carries on as the original would
    more = (torch.randn(2, 4), torch.tensor([[0.7, 0.7], [0.0, 0.5]]))
    assert torch.equal(restored.update(*more), archive.update(*more))
    empty = ParetoArchive()
    torch.save(empty.state_dict(), tmp_path / "empty.pt")
    empty.load_state_dict(torch.load(tmp_path / "empty.pt", weights_only=True))
    assert len(empty) == 0


# --- NSGA-II through DEAP -----------------------------------------------------------------------


def front_and_dominated(n_front: int = 20, n_dominated: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n_front, generator=g, dtype=torch.float64)
    t[0], t[1] = 0.0, 1.0  # the extremes
    front = torch.stack([t, 1 - t], dim=1)
    dominated = torch.rand(n_dominated, 2, generator=g, dtype=torch.float64) * 0.45
    order = torch.randperm(n_front + n_dominated, generator=g)
    return torch.cat([front, dominated])[order], order


def test_nsga2_select_keeps_the_extreme_points():
    objectives, order = front_and_dominated()
    extremes = {int((order == 0).nonzero()), int((order == 1).nonzero())}
    chosen = nsga2_select(objectives, 6, random.Random(0))
    assert len(chosen) == 6 and len(set(chosen.tolist())) == 6
    assert extremes <= set(chosen.tolist())
    # only first-front members fit in k = 6 < 20
    assert bool((order[chosen] < 20).all())


def test_nsga2_select_takes_whole_fronts_first_and_leaves_global_random_alone():
    objectives, order = front_and_dominated()
    state = random.getstate()
    chosen = nsga2_select(objectives, 25)
    assert random.getstate() == state
    assert set(range(20)) <= set(order[chosen].tolist())
    assert torch.equal(chosen, nsga2_select(objectives, 25, random.Random(1)))
    with pytest.raises(ValueError, match="0 <= k <= P"):
        nsga2_select(objectives, 41)


def test_nondominated_fronts_partition_by_rank():
    o = torch.randint(0, 5, (30, 2), generator=torch.Generator().manual_seed(2)).double()
    o[4] = math.nan
    fronts = nondominated_fronts(o)
    assert sorted(torch.cat(fronts).tolist()) == list(range(30))
    finite = torch.isfinite(o).all(1)
    expected_first = torch.arange(30)[finite][nondominated_mask(o[finite])]
    assert set(fronts[0].tolist()) == set(expected_first.tolist())
    assert 4 in fronts[-1].tolist()  # a non-finite row is worse than any finite one
    rank, crowding = rank_and_crowding(o)
    for r, front in enumerate(fronts):
        assert bool((rank[front] == r).all())
        if bool(finite[front].all()):
            assert torch.allclose(crowding[front], crowding_distance(o[front]))


@pytest.mark.parametrize("m", [2, 3])
def test_log_and_standard_sorting_give_the_same_fronts(m):
    o = torch.randint(0, 6, (80, m), generator=torch.Generator().manual_seed(m)).double()
    o[7] = math.inf
    fast, slow = nondominated_fronts(o, nd="log"), nondominated_fronts(o, nd="standard")
    assert [sorted(f.tolist()) for f in fast] == [sorted(f.tolist()) for f in slow]
    k = sum(len(f) for f in fast[:3])  # a cut at a front boundary: no crowding ties decide
    assert sorted(nsga2_select(o, k).tolist()) == sorted(nsga2_select(o, k, nd="standard").tolist())
    with pytest.raises(ValueError, match="nd must be"):
        nsga2_select(o, 3, nd="fast")


# --- the front as a result ----------------------------------------------------------------------


def test_front_entries_csv_table_and_plot(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    flat = FlatParams.from_module(model)
    archive = ParetoArchive()
    weights = torch.randn(3, flat.dim, generator=torch.Generator().manual_seed(0))
    archive.update(weights, torch.tensor([[0.2, 0.9], [0.8, 0.3], [0.5, 0.6]]))
    archive.set_valid(torch.tensor([1]), torch.tensor([[0.7, 0.25]]))
    names = ["success_rate", "operation_rate"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    entries = front_entries(archive, names, lambda w: state_dict_for(model, flat, w))
    assert [e["train"]["success_rate"] for e in entries] == pytest.approx([0.8, 0.5, 0.2])
    assert entries[0]["valid"] == pytest.approx({"success_rate": 0.7, "operation_rate": 0.25})
    assert entries[1]["valid"] is None
    # state_dict_for leaves the model alone and matches loading the weights into it
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    flat.load(model, entries[0]["weights"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, entries[0]["state_dict"][k])

    path = write_front_csv(entries, names, tmp_path / "front.csv")
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["index", "train_success_rate", "train_operation_rate",
                             "valid_success_rate", "valid_operation_rate"]
    assert float(rows[2]["train_operation_rate"]) == pytest.approx(0.9)
    assert rows[1]["valid_success_rate"] == ""
    table = format_front(entries, names)
    assert len(table.splitlines()) == 4 and "train_success_rate" in table
    pytest.importorskip("matplotlib")
    png = plot_front(entries, names, tmp_path / "front.png", reference=[0.0, 0.0])
    assert png.stat().st_size > 1000
    train_only = [{**e, "valid": None} for e in entries]
    assert plot_front(train_only, names, tmp_path / "train_only.svg").stat().st_size > 1000
