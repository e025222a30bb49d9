"""Plot a run: best and current score against evaluations, phases as bands, switches marked."""

from __future__ import annotations

from pathlib import Path

PHASE_COLOURS = {"gradient": "#4C72B0", "genetic": "#DD8452"}


def plot_history(history: list[dict], switches: list[dict], path: str | Path) -> Path:
    """Write the run's plot to ``path`` (PNG, SVG or PDF by suffix) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if history:
        evals = [r["evaluations"] for r in history]
        # Phases as coloured bands
        start = 0
        for i in range(1, len(history) + 1):
            if i == len(history) or history[i]["phase"] != history[start]["phase"]:
                lo = history[start - 1]["evaluations"] if start else 0
                hi = history[i - 1]["evaluations"]
                phase = history[start]["phase"]
                ax.axvspan(lo, hi, color=PHASE_COLOURS.get(phase, "grey"), alpha=0.12, lw=0)
                start = i
        ax.plot(evals, [r["score"] for r in history], lw=0.8, color="grey", label="score (train)")
        if any(r.get("val_score") is not None for r in history):
            ax.plot(evals, [r.get("val_score") for r in history], lw=0.8, color="green",
                    label="score (validation)")
        ax.plot(evals, [r["best_score"] for r in history], lw=1.8, color="black", label="best")
    for s in switches:
        ax.axvline(s["evaluations"], color="red", ls="--", lw=0.8)
    for phase, colour in PHASE_COLOURS.items():
        ax.axvspan(0, 0, color=colour, alpha=0.12, label=f"{phase} phase")
    ax.set_xlabel("evaluations (score_fn calls)")
    ax.set_ylabel("score")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
