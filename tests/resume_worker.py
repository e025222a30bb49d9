"""Run a small deterministic hybrid fit with checkpoints; used by test_checkpoint.py.

Usage: python resume_worker.py CHECKPOINT_DIR OUT_FILE BACKEND [--no-resume] [--phases a,b,c]
"""

from __future__ import annotations

import sys

import torch
from torch import nn

import hybridopt as ho


def task():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(192, 5, generator=g)
    best = (x @ torch.randn(5, 3, generator=g)).argmax(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))
    return model, (x, best)


@ho.batched
def score(actions, data):
    return (actions == data[1]).float().mean(-1)


def run(checkpoint_dir, backend, resume=True, phases=("gradient", "genetic")):
    model, data = task()
    opt = ho.HybridOptimizer(
        model,
        score,
        data=data,
        seed=3,
        population_size=24,
        backend=backend,
        episode_length=96,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=2,
        gradient=ho.GradientConfig(max_steps=12, samples=8),
        genetic=ho.GeneticConfig(max_generations=6),
        es=ho.ESConfig(max_generations=8),
        phases=phases,
    )
    return opt.fit(max_evaluations=2500, progress=False, resume=resume)


if __name__ == "__main__":
    folder, out, backend = sys.argv[1:4]
    phases = ("gradient", "genetic")
    if "--phases" in sys.argv:
        phases = tuple(sys.argv[sys.argv.index("--phases") + 1].split(","))
    result = run(folder, backend, resume="--no-resume" not in sys.argv, phases=phases)
    history = [{k: v for k, v in r.items() if k != "wall_time"} for r in result.history]
    torch.save(
        {
            "history": history,
            "switches": result.switches,
            "best_score": result.best_score,
            "state": result.best_state_dict,
            "evaluations": result.evaluations,
        },
        out,
    )
