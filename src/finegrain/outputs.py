"""Rendering results for people (aligned tables) and machines (CSV, JSON lines). Pure: data in, text out."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Sequence

from .pipeline import Prediction


def printable(text: str) -> str:
    """A file name as valid UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogate escapes) are
    written as \\xNN, so CSV/JSON output stays valid instead of crashing the writer."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align_right: Sequence[int] = ()) -> str:
    cells = [[str(h) for h in header]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i in align_right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _asked_unknown(preds: Sequence[Prediction]) -> bool:
    """Unknown detection was asked for: add the answer and score columns (absent otherwise, as before)."""
    return any(p.unknown is not None for p in preds)


def _unknown_cells(p: Prediction, fmt: str = "{:.4f}") -> list[str]:
    if p.unknown is None:
        return ["", ""]
    return [p.label or "", fmt.format(p.known_score)]


def shorten_left(text: str, width: int) -> str:
    """'…' + the last characters of `text` when it is longer than `width` (a path's end names the file)."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def predictions_table(preds: Sequence[Prediction], top_k: int, width: int | None = None) -> str:
    """One row per input; with `width`, paths are shortened from the left so rows fit in that many columns."""
    extra = _asked_unknown(preds)
    header = ["path"] + (["answer", "known_score"] if extra else []) + \
        [h for i in range(1, top_k + 1) for h in (f"top{i}", "prob")]
    rows = []
    for p in preds:
        if p.error:
            rows.append([printable(p.path), f"ERROR: {printable(p.error)}"] + [""] * (2 * top_k - 1 + 2 * extra))
        else:
            cells = [x for lab, pr in zip(p.labels, p.probs) for x in (lab, f"{pr:.3f}")]
            rows.append([printable(p.path)] + (_unknown_cells(p) if extra else []) + cells + [""] * (2 * top_k - len(cells)))
    if width is not None and rows:
        rest = [max([len(str(h))] + [len(str(r[i])) for r in rows if not str(r[1]).startswith("ERROR")])
                for i, h in enumerate(header) if i > 0]
        room = max(12, width - sum(rest) - 2 * len(rest))
        rows = [[shorten_left(r[0], room)] + r[1:] for r in rows]
    return text_table(header, rows)


def predictions_csv(preds: Sequence[Prediction], top_k: int, provenance: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    extra = _asked_unknown(preds)
    w.writerow(["path", "status", "error"] + (["answer", "known_score"] if extra else [])
               + [h for i in range(1, top_k + 1) for h in (f"label_{i}", f"prob_{i}")]
               + ["model_backbone", "class_list_hash", "finegrain_version"])
    tail = [provenance["backbone"], provenance["class_list_hash"], provenance["finegrain_version"]]
    for p in preds:
        cells = [x for lab, pr in zip(p.labels, p.probs) for x in (lab, pr)]
        w.writerow([printable(p.path), "error" if p.error else "ok", printable(p.error or "")]
                   + (_unknown_cells(p, "{}") if extra else []) + cells + [""] * (2 * top_k - len(cells)) + tail)
    return buf.getvalue()


def predictions_jsonl(preds: Sequence[Prediction], provenance: dict[str, Any]) -> str:
    model = {k: provenance[k] for k in ("backbone", "class_list_hash", "finegrain_version", "head", "head_mode")
             if k in provenance}
    return "".join(json.dumps({**p.to_dict(), "path": printable(p.path), "error": p.error and printable(p.error),
                               "model": model}, ensure_ascii=False) + "\n" for p in preds)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def eval_table(report: dict[str, Any], max_classes: int = 30) -> str:
    """Headline metrics, the weakest classes first, and the most confused pairs."""
    top_k_key = next(k for k in report if k.startswith("top") and k != "top1" and report[k] is not None)
    head = text_table(["metric", "value"], [
        ["images scored", report["n"]], ["top-1 accuracy %", _pct(report["top1"])],
        [f"{top_k_key.replace('top', 'top-')} accuracy %", _pct(report[top_k_key])],
        ["mean per-class accuracy %", _pct(report["mean_per_class_accuracy"])],
        ["macro-F1 %", _pct(report["macro_f1"])], ["ECE (15 bins)", f"{report['ece']:.4f}"],
        ["unreadable images", report["n_unreadable"]], ["leaked from training", report["n_leaked_from_training"]],
        *([["flip rate (transductive) %", _pct(report["flip_rate"])]] if "flip_rate" in report else []),
    ], align_right=[1])
    per = sorted((r for r in report["per_class"] if r["support"]), key=lambda r: (r["accuracy"], r["class"]))
    shown = per[:max_classes]
    classes = text_table(["class", "n", "acc %", "prec %", "F1 %"],
                         [[r["class"], r["support"], _pct(r["accuracy"]), _pct(r["precision"]), _pct(r["f1"])]
                          for r in shown], align_right=[1, 2, 3, 4])
    title = f"per-class (weakest {len(shown)} of {len(per)})" if len(per) > len(shown) else "per-class"
    parts = [head, "", title, classes]
    if report["most_confused"]:
        parts += ["", "most confused (true → predicted)",
                  text_table(["true", "predicted", "count"],
                             [[m["true"], m["predicted"], m["count"]] for m in report["most_confused"]], align_right=[2])]
    return "\n".join(parts)
