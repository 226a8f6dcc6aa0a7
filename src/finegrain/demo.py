"""The main job on the bundled sample: fit → evaluate → predict → an HTML/JSON summary, offline, in a minute."""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Any

from .io import write_json, write_text_atomic
from .outputs import eval_table, predictions_table

SAMPLE_DIR = Path(__file__).parent / "sample_data" / "cub10"
N_PREDICT = 6


def sample_dir() -> Path:
    return SAMPLE_DIR


def _thumbnail(path: str, size: int = 96) -> str:
    from PIL import Image
    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def run_demo(output: str | Path, *, backbone: str = "efficientnet_lite0", cache_dir: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    from .evaluation import evaluate
    from .pipeline import Classifier
    from .report import build_report
    from .training import fit

    out = Path(output)
    t0 = time.perf_counter()
    clf = fit(SAMPLE_DIR, backbone=backbone, cache_dir=cache_dir, progress=progress)
    clf.save(out / "model")
    clf = Classifier.load(out / "model")
    t_fit = time.perf_counter() - t0
    report = evaluate(clf, SAMPLE_DIR, split="test", cache_dir=cache_dir, progress=progress)
    write_json(out / "eval.json", report)
    species = sorted(d for d in (SAMPLE_DIR / "test").iterdir() if d.is_dir())
    examples = [sorted(d.glob("*.jpg"))[0] for d in species][:N_PREDICT]  # one test photo per species
    preds = clf.predict(examples, top_k=3)
    summary = {
        "sample": str(SAMPLE_DIR), "model_dir": str(out / "model"), "fit_seconds": round(t_fit, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "metrics": {k: report[k] for k in ("n", "top1", "top5", "mean_per_class_accuracy", "macro_f1", "ece")},
        "predictions": [{**p.to_dict(), "true": Path(p.path).parent.name} for p in preds],
        "provenance": clf.provenance(),
    }
    write_json(out / "summary.json", summary)
    write_text_atomic(out / "summary.html", _html(summary, report))
    page, _ = build_report(clf, SAMPLE_DIR, split="test", n_mistakes=4, cache_dir=cache_dir, progress=progress)
    write_text_atomic(out / "report.html", page)
    summary["text"] = "\n".join([eval_table(report, max_classes=10), "", "example predictions",
                                 predictions_table(preds, 3)])
    return summary


def _html(summary: dict[str, Any], report: dict[str, Any]) -> str:
    e = html.escape
    m = summary["metrics"]
    metric_rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.3f}</td></tr>" if isinstance(v, float) else
                          f"<tr><td>{e(k)}</td><td>{v}</td></tr>" for k, v in m.items())
    class_rows = "".join(
        f"<tr><td>{e(r['class'])}</td><td>{r['support']}</td><td>{100 * (r['accuracy'] or 0):.0f}%</td>"
        f"<td><div class=bar style='width:{100 * (r['accuracy'] or 0):.0f}px'></div></td></tr>"
        for r in report["per_class"])
    cards = "".join(
        f"<figure><img src='{_thumbnail(p['path'])}' alt='{e(p['true'])}'><figcaption>"
        f"<b>{e(p['label'] or 'error')}</b> {100 * (p['confidence'] or 0):.0f}%<br>"
        f"<span class={'ok' if p['label'] == p['true'] else 'bad'}>true: {e(p['true'])}</span></figcaption></figure>"
        for p in summary["predictions"])
    prov = summary["provenance"]
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>finegrain demo summary</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}}.bar{{height:10px;background:#4a7}}
figure{{display:inline-block;margin:6px;width:150px;vertical-align:top;overflow-wrap:anywhere}}img{{width:96px;height:96px;object-fit:cover}}
.ok{{color:#2a6}}.bad{{color:#c33}}code{{font-size:90%}}</style></head><body>
<h1>finegrain demo</h1><p>Fitted a <b>{e(prov['head'])}</b> head on <b>{e(prov['backbone'])}</b> embeddings of the bundled
CUB sample (10 species, 8 training photos each) in {summary['fit_seconds']:.1f}s; scored on 8 test photos per species.</p>
<h2>Test metrics</h2><table>{metric_rows}</table>
<h2>Per-class accuracy</h2><table><tr><th>class</th><th>n</th><th>accuracy</th><th></th></tr>{class_rows}</table>
<h2>Example predictions</h2>{cards}
<p>The full report — confusion matrix, reliability diagram, embedding map, the worst mistakes explained with
Grad-CAM — is in <a href="report.html">report.html</a>.</p>
<h2>Provenance</h2><p><code>finegrain {e(prov['finegrain_version'])} · {e(prov['backbone'])} · classes {e(prov['class_list_hash'])}
· {e(prov['created'])} · {e(prov['command_line'])}</code></p></body></html>
"""
