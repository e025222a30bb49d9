"""A whole fit with several objectives: the front it returns, and its archive across a resume."""

from __future__ import annotations

import torch
from conftest import make_bandit, mlp

import hybridopt as ho
from hybridopt.objectives import nondominated_mask

NAMES = ["hits", "calm"]


def hits_and_calm(actions, data):
    """Two objectives that pull apart: the hit rate, and how often the model plays action 0."""
    return {"hits": (actions == data[1]).float().mean(-1),
            "calm": (actions == 0).float().mean(-1)}


def _optimizer(folder=None, **options):
    x, best = make_bandit()
    return ho.HybridOptimizer(
        mlp(), hits_and_calm, (x[:192], best[:192]), validation_data=(x[192:], best[192:]),
        objectives=NAMES, population_size=16, seed=3, backend="vmap", checkpoint_dir=folder,
        checkpoint_every=2, **options,
    )


def _scores(model, data) -> dict[str, float]:
    with torch.no_grad():
        actions = model(data[0]).argmax(-1)
    return {k: float(v) for k, v in hits_and_calm(actions, data).items()}


def test_the_front_is_nondominated_and_every_model_rescores_to_its_objectives():
    opt = _optimizer()
    assert opt.phases == ("es", "genetic")  # phases="auto" with several objectives
    result = opt.fit(max_evaluations=600, progress=False)
    front = result.pareto_front
    assert len(front) >= 2
    train = torch.tensor([[e["train"][n] for n in NAMES] for e in front])
    assert bool(nondominated_mask(train).all())  # no member is beaten on both objectives
    x, best = make_bandit()
    splits = {"train": (x[:192], best[:192]), "valid": (x[192:], best[192:])}
    for i, entry in enumerate(front):
        opt.load_front(i)
        for split, data in splits.items():
            assert _scores(opt.model, data) == entry[split], (i, split)
        # the entry's state_dict is the same model
        scratch = mlp()
        scratch.load_state_dict(entry["state_dict"])
        assert _scores(scratch, splits["train"]) == entry["train"]


def test_resume_holds_the_archive(tmp_path):
    full = _optimizer(tmp_path / "a").fit(max_evaluations=600, progress=False)

    class StopAt(ho.Callback):
        def on_generation(self, opt, row):
            if row["step"] == 9:
                opt.request_stop()

    stopped = _optimizer(tmp_path / "b").fit(max_evaluations=600, callbacks=[StopAt()],
                                             progress=False)
    assert stopped.evaluations < full.evaluations
    resumed = _optimizer(tmp_path / "b").fit(max_evaluations=600, progress=False, resume=True)
    assert resumed.evaluations == full.evaluations
    assert [e["train"] for e in resumed.pareto_front] == [e["train"] for e in full.pareto_front]
    assert [e["valid"] for e in resumed.pareto_front] == [e["valid"] for e in full.pareto_front]
    for got, want in zip(resumed.pareto_front, full.pareto_front):
        for key, value in want["state_dict"].items():
            assert torch.equal(got["state_dict"][key], value), key
