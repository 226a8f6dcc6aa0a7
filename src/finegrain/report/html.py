"""The report page: one self-contained HTML string (CSS inline, images as base64 data URIs, no scripts)."""
from __future__ import annotations

import base64
import html
from typing import Any, Sequence

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#fff}
header{background:#24292f;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#d0d7de;font-size:13px}nav{padding:8px 32px;background:#f6f8fa;border-bottom:1px solid #d0d7de}
nav a{margin-right:14px;color:#0969da;text-decoration:none;font-size:14px}main{padding:8px 32px 40px;max-width:1200px}
h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:34px}table{border-collapse:collapse;font-size:14px}
td,th{padding:3px 12px;border-bottom:1px solid #eaeef2;text-align:left}th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}img.plot{max-width:100%;height:auto;border:1px solid #eaeef2}
.grid{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.note{color:#57606a;font-size:13px}
.level-error{color:#b42318;font-weight:600}.level-warning{color:#9a6700;font-weight:600}.level-info{color:#57606a}
figure.mistake{margin:18px 0;padding:10px;border:1px solid #d0d7de;border-radius:6px}
figure.mistake img{max-width:100%;height:auto}figcaption{font-size:14px;margin-bottom:6px}
code{font-size:12px;background:#f6f8fa;padding:1px 4px;border-radius:3px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def png_img(data: bytes, alt: str, css_class: str = "plot") -> str:
    """An <img> whose PNG travels inside the page, so the report opens offline and can be mailed as one file."""
    return (f'<img class="{css_class}" alt="{esc(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{esc(v)}</td>' if numeric[i] else f"<td>{esc(v)}</td>"
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(f'<section id="{esc(a)}"><h2>{esc(t)}</h2>{b}</section>' for a, t, b in sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>"
            f'<main>{body}<p class="note">{footer}</p></main></body></html>\n')
