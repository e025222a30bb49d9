"""The Pareto front as a result: entries with named objectives, a CSV, a table, a plot and its
hypervolume.

An entry is a dict ``{"train": {name: value}, "valid": {name: value} | None, "weights": [D]}``
(plus ``"state_dict"`` when built with one), one per non-dominated model, ordered by the first
objective, best first.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from hybridopt.objectives import ParetoArchive, nondominated_mask
from hybridopt.population.flat import FlatParams

__all__ = [
    "format_front",
    "front_entries",
    "hypervolume",
    "plot_front",
    "state_dict_for",
    "write_front_csv",
]


def state_dict_for(model: nn.Module, flat: FlatParams, weights: Tensor) -> dict[str, Tensor]:
    """``model``'s ``state_dict`` with its trainable parameters taken from ``weights`` ``[D]``.

    The model is not changed; buffers and frozen parameters are copied as they are.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, piece in zip(flat.names, flat.split(weights.detach())):
        state[name] = piece.to(device=state[name].device, dtype=state[name].dtype).clone()
    return state


def front_entries(
    archive: ParetoArchive,
    names: Sequence[str],
    state_dict: Callable[[Tensor], dict[str, Tensor]] | None = None,
) -> list[dict]:
    """The archive's members as result entries, ordered by the first objective, best first.

    Args:
        archive: the Pareto archive.
        names: the M objective names (``Scorer.names``).
        state_dict: if given, ``state_dict(weights [D])`` is stored under ``"state_dict"``
            (e.g. ``lambda w: state_dict_for(model, flat, w)``).

    Returns:
        One dict per member: ``train`` and ``valid`` (``{name: float}``; ``valid`` None when
        the member has no validation objectives), ``weights`` (``[D]``, on the CPU) and
        optionally ``state_dict``.
    """
    names = list(names)
    entries = []
    for entry in archive.entries():  # a loop over the front's members, to build the list
        row = {
            "train": dict(zip(names, entry["train"].tolist())),
            "valid": None if entry["valid"] is None else dict(zip(names, entry["valid"].tolist())),
            "weights": entry["weights"].detach().cpu(),
        }
        if state_dict is not None:
            row["state_dict"] = state_dict(entry["weights"])
        entries.append(row)
    # Best first objective first; ties by the next objectives
    entries.sort(key=lambda e: [-e["train"][n] for n in names])
    return entries


def _columns(entries: Sequence[dict], names: Sequence[str]) -> list[str]:
    columns = ["index"] + [f"train_{n}" for n in names]
    if any(e["valid"] is not None for e in entries):
        columns += [f"valid_{n}" for n in names]
    return columns


def _row(i: int, entry: dict, names: Sequence[str], columns: list[str]) -> dict:
    row = {"index": i, **{f"train_{n}": entry["train"][n] for n in names}}
    if f"valid_{names[0]}" in columns:
        row.update({f"valid_{n}": None if entry["valid"] is None else entry["valid"][n]
                    for n in names})
    return row


def write_front_csv(entries: Sequence[dict], names: Sequence[str], path: str | Path) -> Path:
    """Write one row per front entry: ``index``, ``train_<name>``..., ``valid_<name>``...

    The validation columns appear when any entry has validation objectives (empty cells for
    the others).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = _columns(entries, names)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(_row(i, e, names, columns) for i, e in enumerate(entries))
    return path


def format_front(entries: Sequence[dict], names: Sequence[str], digits: int = 4) -> str:
    """The front as a small fixed-width text table, one line per entry."""
    columns = _columns(entries, names)
    rows = [_row(i, e, names, columns) for i, e in enumerate(entries)]

    def cell(value) -> str:
        if value is None:
            return "-"
        return str(value) if isinstance(value, int) else f"{value:.{digits}f}"

    table = [columns] + [[cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(line[j]) for line in table) for j in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in table)


def plot_front(
    entries: Sequence[dict],
    names: Sequence[str],
    path: str | Path,
    reference: Sequence[float] | None = None,
) -> Path:
    """Draw the front to ``path`` (PNG, SVG or PDF by suffix) and return the path.

    Two objectives: one panel, training points joined as a staircase, validation points
    (when present) beside them; more: one panel per pair of objectives (at most six).
    ``reference``, if given, is marked (the hypervolume's reference point).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(names)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))][:6]
    if not pairs:  # one objective: plot it against the entry index
        pairs = [(None, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs):
        for split, style in (("train", dict(color="black", marker="o")),
                             ("valid", dict(color="green", marker="s", alpha=0.7))):
            points = [e[split] for e in entries if e[split] is not None]
            if not points:
                continue
            y = torch.tensor([p[names[j]] for p in points])
            x = (torch.arange(len(points)) if i is None
                 else torch.tensor([p[names[i]] for p in points]))
            order = x.argsort()
            label = "train" if split == "train" else "validation"
            ax.scatter(x[order], y[order], s=22, label=label, **style)
            if split == "train" and i is not None and len(points) > 1:
                ax.step(x[order], y[order], where="pre", color="black", lw=0.8, alpha=0.6)
        if reference is not None and i is not None:
            ax.scatter([reference[i]], [reference[j]], marker="x", color="red", label="reference")
        ax.set_xlabel("entry" if i is None else names[i])
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Pareto front ({len(entries)} models)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def hypervolume(points: Tensor, reference: Tensor | Sequence[float]) -> float:
    """Exact hypervolume dominated by ``points`` ``[K, M]`` above ``reference`` ``[M]`` (maximised).

    Points not strictly above the reference in every objective add nothing. M = 2 is a sweep
    over the points sorted by the first objective; M >= 3 slices along the last objective
    (HSO), recursing on the rest: exact, ``O(K^(M-1))``, meant for fronts of a few hundred.
    """
    ref = torch.as_tensor(reference, dtype=torch.float64)
    p = torch.as_tensor(points, dtype=torch.float64).reshape(-1, len(ref))
    p = p[(p > ref).all(dim=1)]
    if not len(p):
        return 0.0
    p = p[nondominated_mask(p)]
    return _hv([tuple(row) for row in p.tolist()], tuple(ref.tolist()))


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Hypervolume of points all strictly above ``ref``, by slicing on the last objective."""
    if len(ref) == 1:
        return max(q[0] for q in points) - ref[0]
    if len(ref) == 2:
        volume, top = 0.0, ref[1]
        for x, y in sorted(points, reverse=True):  # x descending: each adds the strip above
            if y > top:
                volume += (x - ref[0]) * (y - top)
                top = y
        return volume
    ordered = sorted(points, key=lambda q: q[-1], reverse=True)
    volume = 0.0
    for i, q in enumerate(ordered):
        below = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if q[-1] > below:  # the slab (below, q[-1]] is covered by the points above it
            volume += (q[-1] - below) * _hv([r[:-1] for r in ordered[: i + 1]], ref[:-1])
    return volume
