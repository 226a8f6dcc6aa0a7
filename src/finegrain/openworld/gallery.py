"""A self-contained HTML page of the discovered new clusters: a row of thumbnails per cluster, images inlined."""
from __future__ import annotations

import base64
import html
import io
from typing import Sequence

from ..data.images import load_rgb
from ..errors import FinegrainError


def thumbnail_data_uri(path: str, size: int = 128) -> str | None:
    """JPEG thumbnail as a data: URI; None when the image cannot be read (the page shows a placeholder)."""
    try:
        img = load_rgb(path, draft_size=(size, size))
    except FinegrainError:
        return None
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def gallery_html(clusters: Sequence[tuple[str, Sequence[str]]], title: str, per_cluster: int = 12,
                 size: int = 128) -> str:
    """One section per (cluster name, image paths); at most `per_cluster` thumbnails each."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;margin:1.5em} section{margin-bottom:1.5em}"
             "img,.missing{width:" + str(size) + "px;height:" + str(size) + "px;object-fit:cover;margin:2px;"
             "border:1px solid #ccc} .missing{display:inline-block;background:#eee}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if not clusters:
        parts.append("<p>No new clusters: every unlabelled image was matched to a known class.</p>")
    for name, paths in clusters:
        parts.append(f"<section><h2>{html.escape(name)} <small>({len(paths)} images)</small></h2>")
        for p in list(paths)[:per_cluster]:
            uri = thumbnail_data_uri(p, size)
            tip = html.escape(str(p), quote=True)
            parts.append(f"<img src='{uri}' title='{tip}' alt='{tip}'>" if uri
                         else f"<span class='missing' title='{tip}'></span>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
