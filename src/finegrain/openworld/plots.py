"""Reliability diagrams (PNG/SVG) drawn from the bins that `calibration_summary` stores."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def save_reliability_diagram(summary: dict[str, Any], paths: Sequence[str | Path], title: str = "") -> list[Path]:
    """One figure, before vs after temperature scaling, written to every path (format from the suffix)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    n = summary["n_bins"]
    centres = [(i + 0.5) / n for i in range(n)]
    for ax, name in zip(axes, ("before", "after")):
        part = summary[name]
        acc = [a if a is not None else 0.0 for a in part["bins"]["accuracy"]]
        ax.bar(centres, acc, width=1.0 / n, edgecolor="black", color="#4c72b0", label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        T = summary["temperature"] if name == "after" else 1.0
        ax.set_title(f"{name} (T={T:.2f}) ECE={part['ece']:.3f}")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    written = []
    for p in paths:
        p = Path(p)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p)
        written.append(p)
    plt.close(fig)
    return written
