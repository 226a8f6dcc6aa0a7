"""The report's plots, drawn with matplotlib's Agg canvas and returned as PNG bytes (nothing touches pyplot)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..explain.render import figure_png

MAX_TICK_LABELS = 40


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained")


def _short(name: str, n: int = 30) -> str:
    name = name.replace("_", " ")
    return name if len(name) <= n else name[:n - 1] + "…"


def per_class_accuracy_png(names: Sequence[str], accuracy: Sequence[float | None], support: Sequence[int]) -> bytes:
    """Horizontal bars, worst class at the top, so the classes that need more data are seen first."""
    rows = sorted((a, n, s) for n, a, s in zip(names, accuracy, support) if a is not None)
    fig = _figure(7.5, max(2.0, 0.16 * len(rows) + 0.8))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    acc = np.array([r[0] for r in rows])
    ax.barh(y, acc, color=[(0.75, 0.2, 0.2) if a < 0.5 else (0.25, 0.55, 0.35) for a in acc], height=0.8)
    ax.set_yticks(y, [f"{_short(n)} ({s})" for _, n, s in rows], fontsize=6 if len(rows) > 30 else 8)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (recall); test images in brackets")
    ax.axvline(float(acc.mean()) if len(acc) else 0.0, color="black", lw=0.8, ls="--", label="mean per class")
    ax.legend(loc="lower right", fontsize=7)
    return figure_png(fig)


def confusion_png(cm: np.ndarray, names: Sequence[str]) -> bytes:
    """Row-normalised confusion matrix (each true class sums to 1), so rare classes are as visible as common ones."""
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    side = min(9.0, 3.0 + 0.07 * len(names))
    fig = _figure(side + 1.2, side)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    if len(names) <= MAX_TICK_LABELS:
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, [_short(n, 18) for n in names], rotation=90, fontsize=6)
        ax.set_yticks(ticks, [_short(n, 18) for n in names], fontsize=6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    return figure_png(fig)


def reliability_png(bins: dict[str, np.ndarray], ece: float) -> bytes:
    """Accuracy against confidence per bin; bars below the diagonal mean over-confidence."""
    n = len(bins["count"])
    edges = np.linspace(0, 1, n + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    filled = bins["count"] > 0
    fig = _figure(5.0, 5.4)
    ax, ax_count = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    ax.bar(centres[filled], bins["accuracy"][filled], width=1 / n, edgecolor="black", color="#4c78a8", label="accuracy")
    ax.plot([0, 1], [0, 1], color="#b42318", ls="--", label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability diagram (ECE {ece:.3f})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax_count.bar(centres, bins["count"], width=1 / n, color="#999999")
    ax_count.set_xlim(0, 1)
    ax_count.set_xlabel("confidence of the top class")
    ax_count.set_ylabel("images")
    return figure_png(fig)


def embedding_map_png(xy: np.ndarray, class_ids: np.ndarray, correct: np.ndarray, names: Sequence[str]) -> bytes:
    """2-D map coloured by true class; misclassified images drawn as black-edged crosses."""
    from matplotlib import colormaps

    few = len(names) <= 20
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20" if few else "hsv"]
    colours = cmap(class_ids if few else class_ids / len(names))
    size = 30 if len(xy) < 300 else 9
    fig = _figure(7.5, 6.5)
    ax = fig.add_subplot()
    ax.scatter(xy[correct, 0], xy[correct, 1], c=colours[correct], s=size, linewidths=0, alpha=0.85)
    ax.scatter(xy[~correct, 0], xy[~correct, 1], c=colours[~correct], s=3 * size, marker="X", edgecolors="black",
               linewidths=0.5)
    if few:
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], ls="", marker="o", color=cmap(i), label=_short(n, 22)) for i, n in enumerate(names)]
        ax.legend(handles=handles, fontsize=7, loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("t-SNE of the scored images, coloured by true class; crosses are mistakes", fontsize=10)
    return figure_png(fig)
