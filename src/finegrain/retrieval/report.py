"""The report's "Nearest images in the index" section: for the images the report singles out (its worst
mistakes), the closest images of a `finegrain index`, as thumbnails with label and distance."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from ..data.samples import Sample

THUMB = 96


def _thumbnail(path: str) -> bytes | None:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            small = ImageOps.exif_transpose(img).convert("RGB")
            small.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            small.save(buf, format="PNG")
            return buf.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def index_neighbours_html(index: str | Path, samples: Sequence[Sample], predicted: Sequence[str], k: int,
                          cache_dir: str | Path | None = None, **embed_kw: Any) -> str:
    """HTML for the section: one row per sample (true and predicted label), its k nearest indexed images (the
    sample's own file left out). The samples are embedded with the index's backbone, through the cache."""
    from ..report import html as H
    from .api import query_embeddings
    from .index import SimilarityIndex

    if not samples:
        return "<p>No images to look up.</p>"
    idx = SimilarityIndex.load(index)
    emb = query_embeddings(idx, [s.path for s in samples], cache_dir=cache_dir, **embed_kw)
    hits = idx.search(emb, k, exclude_duplicates=True, duplicate_threshold=0.0)
    pred_of = {str(s.path): p for s, p in zip(samples, predicted)}
    true_of = {str(s.path): s.label for s in samples}
    rows = []
    for s, row in zip(emb.samples, hits):
        cells = []
        for h in row:
            png = _thumbnail(h.path)
            pic = H.png_img(png, f"indexed image {h.path}", "thumb") if png else "(image unavailable)"
            cells.append(f"<td>{pic}<br>{H.esc(h.label or '—')}<br><small>{h.distance:.3f}</small></td>")
        rows.append(f"<tr><td><code>{H.esc(s.path)}</code><br>true <b>{H.esc(true_of.get(str(s.path)))}</b>, "
                    f"predicted <b>{H.esc(pred_of.get(str(s.path)))}</b></td>{''.join(cells)}</tr>")
    m = idx.meta
    note = (f'<p class="note">From the index {H.esc(index)} ({idx.n_live} images, {H.esc(m["backbone"])}, '
            f'transform {H.esc(m["transform"])}, {H.esc(m["factory"])}); distance is 1 − cosine in its space; '
            "the image's own file is left out.</p>")
    return note + f"<table>{''.join(rows)}</table>"


__all__ = ["index_neighbours_html"]
