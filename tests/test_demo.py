"""The README's main job, end to end, with the real offline backbone on the bundled sample."""
from __future__ import annotations

import json

from finegrain.demo import run_demo, sample_dir


def test_bundled_sample_is_small_split_and_credited():
    files = sorted(p for p in sample_dir().rglob("*.jpg"))
    assert len(files) == 160
    assert {p.parent.parent.name for p in files} == {"train", "test"}
    assert "CUB-200-2011" in (sample_dir() / "SOURCE.md").read_text()


def test_demo_fits_evaluates_predicts_and_writes_summary(tmp_path):
    summary = run_demo(tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert (out / "model" / "config.json").is_file() and (out / "eval.json").is_file()
    assert (out / "model" / "reliability.png").is_file()  # the README promises it (#14)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["metrics"]["n"] == 80
    assert saved["metrics"]["top1"] >= 0.7  # 10 similar species, 8 photos each: measured 0.85
    assert saved["provenance"]["backbone"] == "efficientnet_lite0"
    html = (out / "summary.html").read_text()
    assert html.count("data:image/jpeg;base64,") == len(saved["predictions"]) == 6
    assert "per-class" in summary["text"]
    report = (out / "report.html").read_text()
    assert "Worst mistakes" in report or "worst mistakes" in report.lower()
