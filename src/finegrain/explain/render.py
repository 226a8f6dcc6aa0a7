"""Drawing explanations: heatmap overlays (numpy) and one PNG panel per image (matplotlib, Agg, no pyplot state)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..data.images import load_rgb
from ..errors import FinegrainError
from .api import Explanation

COLORMAP = "jet"
METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}


def overlay_heatmap(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: str = COLORMAP) -> np.ndarray:
    """(H, W, 3) uint8 image + (H, W) map in [0, 1] → uint8 blend; the heat fades out where the map is 0."""
    from matplotlib import colormaps

    heat = colormaps[colormap](np.clip(cam, 0.0, 1.0))[..., :3]
    weight = alpha * np.clip(cam, 0.0, 1.0)[..., None] ** 0.5
    blend = (1 - weight) * (image.astype(np.float32) / 255.0) + weight * heat
    return np.clip(blend * 255.0 + 0.5, 0, 255).astype(np.uint8)


def thumbnail(path: str | Path, size: int = 128) -> np.ndarray | None:
    """A centre-cropped square thumbnail, or None when the file cannot be read (it is then drawn as a gap)."""
    from PIL import Image, ImageOps

    try:
        img = load_rgb(path, draft_size=(size * 2, size * 2))
    except FinegrainError:
        return None
    return np.asarray(ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR))


def _short(name: str | None, n: int = 28) -> str:
    name = (name or "?").replace("_", " ")
    return name if len(name) <= n else name[:n - 1] + "…"


def _panel(ax, image: np.ndarray | None, title: str, colour: str = "black") -> None:
    if image is not None:
        ax.imshow(image)
    else:
        ax.text(0.5, 0.5, "unreadable", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=8, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])


def figure_png(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib Figure to PNG bytes with the Agg canvas (no display, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def explanation_png(expl: Explanation, true_label: str | None = None, thumb_size: int = 128) -> bytes:
    """One PNG: the crop, each heatmap, the contrastive map, and the nearest training images underneath."""
    from matplotlib.figure import Figure

    top = [(expl.image, "input" + (f"\ntrue: {_short(true_label, 22)}" if true_label else ""), "black")]
    for method, cam in expl.maps.items():
        empty = " (no positive evidence)" if float(cam.max()) == 0.0 else ""
        top.append((overlay_heatmap(expl.image, cam), f"{METHOD_TITLES.get(method, method)}{empty}\n"
                    f"{_short(expl.target, 20)} {expl.target_prob:.0%}", "black"))
    if expl.contrast is not None:
        top.append((overlay_heatmap(expl.image, expl.contrast),
                    f"why {_short(expl.target, 20)}\nnot {_short(expl.versus, 20)} {expl.versus_prob:.0%}", "black"))
    n_cols = max(len(top), len(expl.neighbours), 1)
    n_rows = 2 if expl.neighbours else 1
    fig = Figure(figsize=(2.1 * n_cols, 2.4 * n_rows))
    grid = fig.add_gridspec(n_rows, n_cols)
    for j, (img, title, colour) in enumerate(top):
        _panel(fig.add_subplot(grid[0, j]), img, title, colour)
    for j, nb in enumerate(expl.neighbours):
        same = nb.label == expl.target
        _panel(fig.add_subplot(grid[1, j]), thumbnail(nb.path, thumb_size),
               f"{_short(nb.label, 20)}\nneighbour {j + 1}, cos {nb.similarity:.2f}", "#1a7f37" if same else "#b42318")
    return figure_png(fig)
