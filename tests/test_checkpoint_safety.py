"""Checkpoints hold tensors and plain data only, and reading one never runs code."""

from __future__ import annotations

import collections
import random
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hybridopt.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    to_plain,
)


class Point(typing.NamedTuple):
    x: int
    y: int


class Box:
    """An ordinary class, harmless but not plain data."""

    def __init__(self, value: int):
        self.value = value


class Marker:
    """Unpickling this runs code that creates a file: the side effect an attack would have."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').close()",))


def test_random_states_numpy_and_torch_state_dicts_round_trip(tmp_path):
    py_random = random.Random(5)
    generator = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    adam = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(8, 3)).sum().backward()
    adam.step()
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(adam, lambda step: 0.5**step),
        torch.optim.lr_scheduler.OneCycleLR(adam, max_lr=0.1, total_steps=10),
        torch.optim.lr_scheduler.ReduceLROnPlateau(adam),
    ]
    payload = {
        "py_random": py_random.getstate(),
        "generator": generator.get_state(),
        "model": model.state_dict(),
        "optimizer": adam.state_dict(),
        "schedulers": [s.state_dict() for s in schedulers],
        "history": [{"score": np.float64(1.5), "flat": np.bool_(True), "n": np.int64(3)}],
        "array": np.arange(6.0).reshape(2, 3)[:, ::2],
        "parameter": nn.Parameter(torch.ones(2)),
        "misc": {1: None, "set": {1, 2}, "shape": torch.Size([2]), "dtype": torch.float16,
                 "inf": float("inf"), "bytes": b"\x00"},
    }
    saved = load_checkpoint(save_checkpoint(tmp_path, 1, payload), {})

    assert saved["format_version"] == FORMAT_VERSION
    restored = random.Random()
    restored.setstate(saved["py_random"])
    assert restored.random() == py_random.random()
    twin_generator = torch.Generator().set_state(saved["generator"])
    assert torch.equal(torch.rand(3, generator=twin_generator), torch.rand(3, generator=generator))
    twin = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    twin.load_state_dict(saved["model"])
    assert saved["model"]._metadata == model.state_dict()._metadata
    torch.optim.Adam(twin.parameters()).load_state_dict(saved["optimizer"])
    for scheduler, state in zip(schedulers, saved["schedulers"]):
        scheduler.load_state_dict(state)
    row = saved["history"][0]
    assert row == {"score": 1.5, "flat": True, "n": 3}
    assert [type(v) for v in row.values()] == [float, bool, int]
    assert torch.equal(saved["array"], torch.tensor([[0.0, 2.0], [3.0, 5.0]], dtype=torch.float64))
    assert type(saved["parameter"]) is torch.Tensor
    assert saved["misc"]["set"] == {1, 2} and saved["misc"]["dtype"] is torch.float16


@pytest.mark.parametrize(
    ("value", "path", "kind"),
    [
        ({"phase_state": {"hof": [1, object()]}}, r"payload\['phase_state'\]\['hof'\]\[1\]",
         "builtins.object"),
        ({"state": Point(1, 2)}, r"payload\['state'\]", "Point"),
        ({"counts": collections.defaultdict(int)}, r"payload\['counts'\]", "defaultdict"),
        ({"fn": len}, r"payload\['fn'\]", "builtin_function_or_method"),
        ({"array": np.array(["a"], dtype=object)}, r"payload\['array'\]", "dtype object"),
        ({"rng": random.Random(0)}, r"payload\['rng'\]", "random.Random"),
        ({"gen": torch.Generator()}, r"payload\['gen'\]", "Generator"),
    ],
)
def test_an_object_in_the_payload_is_refused_at_save_naming_its_key_path(
    tmp_path, value, path, kind
):
    with pytest.raises(TypeError, match=rf"checkpoint {path} is .*{kind}.*tensors and plain data"):
        save_checkpoint(tmp_path / "run", 1, value)
    assert not (tmp_path / "run").exists()  # nothing was written


def test_to_plain_keeps_plain_data_as_it_is():
    state = random.Random(0).getstate()
    assert to_plain(state) == state and type(to_plain(state)) is tuple
    tensor = torch.arange(3)
    assert to_plain(tensor).data_ptr() == tensor.data_ptr()  # not copied


@pytest.mark.parametrize("carried", ["marker", "function", "class"])
def test_a_checkpoint_carrying_a_pickled_object_is_refused_and_its_code_never_runs(
    tmp_path, carried
):
    marker = tmp_path / "code-ran"
    obj = {"marker": Marker(marker), "function": random.random, "class": Point}[carried]
    save_checkpoint(tmp_path, 1, {"value": 1})
    path = latest_checkpoint(tmp_path)
    torch.save({"format_version": FORMAT_VERSION, "value": 1, "phase_state": obj}, path)

    with pytest.raises(CheckpointError, match="holds something other than tensors and plain "
                                              "data .* and was not loaded"):
        load_checkpoint(path, {})
    assert not marker.exists()
    if carried == "marker":  # the file does carry code: an unsafe load runs it
        torch.load(path, weights_only=False)
        assert marker.exists()


def test_a_type_allowlisted_by_the_caller_is_still_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format_version": FORMAT_VERSION, "box": Box(1)}, path)
    with torch.serialization.safe_globals([Box]), pytest.raises(
        CheckpointError, match=r"payload\['box'\] is a .*Box.* was not loaded"
    ):
        load_checkpoint(path, {})


def test_older_format_checkpoints_are_refused_with_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"format_version": 1, "value": 1})
    with pytest.raises(CheckpointError, match=rf"format version 1; this hybridopt reads version "
                                              rf"{FORMAT_VERSION} only \(older checkpoints were"):
        load_checkpoint(path, {})
    not_a_dict = tmp_path / "list.pt"
    torch.save([1, 2], not_a_dict)
    with pytest.raises(CheckpointError, match="format version None"):
        load_checkpoint(not_a_dict, {})
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(garbage, {})


def test_the_identity_check_still_names_the_mismatch(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"seed": 0, "layout": [["w", [2, 3]]]})
    assert load_checkpoint(path, {"seed": 0, "layout": [["w", [2, 3]]]})["seed"] == 0
    with pytest.raises(CheckpointError, match="seed is 0 in the checkpoint but 1 here"):
        load_checkpoint(path, {"seed": 1})
