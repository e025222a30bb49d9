"""Checkpoints are atomic, and a run killed at any moment resumes to the same result."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import hit_rate, mlp

import hybridopt as ho
from hybridopt.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

WORKER = Path(__file__).with_name("resume_worker.py")


def run_phases(folder, out, backend, *extra):
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(folder), str(out), backend, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def assert_same(a, b):
    assert a["history"] == b["history"]
    assert a["switches"] == b["switches"]
    assert a["best_score"] == b["best_score"] and a["evaluations"] == b["evaluations"]
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "phases"), [
    ("vmap", "gradient,genetic"), ("loop", "gradient,genetic"), ("vmap", "gradient,es,genetic"),
])
def test_sigkill_at_random_moments_then_resume_gives_the_same_run(tmp_path, backend, phases):
    def run_worker(folder, out, backend, *extra):  # every run of this test with these phases
        return run_phases(folder, out, backend, *extra, "--phases", phases)

    reference = tmp_path / "reference.pt"
    proc = run_worker(tmp_path / "ref_ckpt", reference, backend, "--no-resume")
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    expected = torch.load(reference, weights_only=False)
    assert expected["switches"], "the task should switch phases"
    assert {s["to_phase"] for s in expected["switches"]} >= set(phases.split(",")) - {"gradient"}

    rng = random.Random(backend + phases)
    folder, out = tmp_path / "ckpt", tmp_path / "resumed.pt"
    kills = 0
    for _ in range(3):
        proc = run_worker(folder, out, backend)
        # wait until it has started checkpointing, then kill it at a random moment
        deadline = time.time() + 120
        while not (folder / "latest.json").exists() and proc.poll() is None:
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    proc = run_worker(folder, out, backend)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    assert kills >= 1
    assert_same(torch.load(out, weights_only=False), expected)


def test_resume_in_process_matches_uninterrupted(tmp_path, bandit):
    def make(folder):
        return ho.HybridOptimizer(
            mlp(),
            hit_rate,
            data=bandit,
            seed=0,
            population_size=12,
            backend="vmap",
            checkpoint_dir=folder,
            checkpoint_every=3,
            gradient=ho.GradientConfig(max_steps=5),
            genetic=ho.GeneticConfig(max_generations=4),
        )

    full = make(tmp_path / "a").fit(max_evaluations=700, progress=False)

    class StopAt(ho.Callback):
        def on_generation(self, opt, row):
            if row["step"] == 7:
                opt.request_stop()

    make(tmp_path / "b").fit(max_evaluations=700, callbacks=[StopAt()], progress=False)
    resumed = make(tmp_path / "b").fit(max_evaluations=700, progress=False, resume=True)
    strip = [{k: v for k, v in r.items() if k != "wall_time"} for r in full.history]
    assert [{k: v for k, v in r.items() if k != "wall_time"} for r in resumed.history] == strip
    assert resumed.best_score == full.best_score
    for key in full.best_state_dict:
        assert torch.equal(full.best_state_dict[key], resumed.best_state_dict[key])


def test_crash_during_write_leaves_previous_checkpoint_usable(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"value": 1})

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, {"value": 2})
    monkeypatch.undo()
    path = latest_checkpoint(tmp_path)
    assert path.name == "checkpoint-00000001.pt"
    assert load_checkpoint(path, {})["value"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_old_checkpoints_are_pruned(tmp_path):
    for step in range(5):
        save_checkpoint(tmp_path, step, {"value": step}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == [
        "checkpoint-00000003.pt",
        "checkpoint-00000004.pt",
    ]


def test_unreadable_and_mismatched_checkpoints_give_clear_errors(tmp_path, bandit):
    opt = ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, seed=0, checkpoint_dir=tmp_path, phases=("gradient",)
    )
    opt.fit(max_evaluations=40, progress=False)
    # another model layout
    other = ho.HybridOptimizer(
        mlp(hidden=7), hit_rate, data=bandit, seed=0, checkpoint_dir=tmp_path, phases=("gradient",)
    )
    with pytest.raises(CheckpointError, match="layout"):
        other.fit(max_evaluations=40, progress=False, resume=True)
    # another seed
    other = ho.HybridOptimizer(
        mlp(), hit_rate, data=bandit, seed=1, checkpoint_dir=tmp_path, phases=("gradient",)
    )
    with pytest.raises(CheckpointError, match="seed"):
        other.fit(max_evaluations=40, progress=False, resume=True)
    # a truncated file
    latest_checkpoint(tmp_path).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        opt.fit(max_evaluations=80, progress=False, resume=True)
    # an unknown format version
    save_checkpoint(tmp_path, 99, {"format_version": 0})
    with pytest.raises(CheckpointError, match="format version"):
        opt.fit(max_evaluations=80, progress=False, resume=True)


def test_resume_needs_a_folder_and_starts_fresh_when_empty(tmp_path, bandit):
    opt = ho.HybridOptimizer(mlp(), hit_rate, data=bandit, seed=0, phases=("gradient",))
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        opt.fit(max_evaluations=40, progress=False, resume=True)
    opt = ho.HybridOptimizer(
        mlp(),
        hit_rate,
        data=bandit,
        seed=0,
        phases=("gradient",),
        checkpoint_dir=tmp_path / "empty",
    )
    result = opt.fit(max_evaluations=40, progress=False, resume=True)
    assert result.evaluations > 0 and latest_checkpoint(tmp_path / "empty") is not None
