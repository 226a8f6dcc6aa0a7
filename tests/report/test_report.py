"""The HTML report: pure helpers, a self-contained page with every section, the CLI, and a headless-browser render."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import COLOURS, make_image, make_split_folder
from finegrain.cli.main import main
from finegrain.pipeline import Classifier
from finegrain.report import build_report
from finegrain.report.build import map_subset, worst_mistakes
from finegrain.report.projection import embedding_map
from finegrain.training import fit


def test_worst_mistakes_are_the_most_confident_wrong_answers():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    y = rng.integers(0, 4, 50)
    got = worst_mistakes(y, probs, 5)
    wrong = [i for i in range(50) if probs[i].argmax() != y[i]]
    naive = sorted(wrong, key=lambda i: (-probs[i].max(), i))[:5]
    assert got.tolist() == naive


def test_map_subset_is_seeded_sorted_and_complete_when_small():
    assert map_subset(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    a, b = map_subset(100, 10, 3), map_subset(100, 10, 3)
    assert a.tolist() == b.tolist() == sorted(set(a.tolist())) and len(a) == 10


@pytest.mark.parametrize("n", [1, 3, 12])
def test_embedding_map_gives_finite_reproducible_coordinates(n):
    X = np.random.default_rng(1).normal(size=(n, 16)).astype(np.float32)
    xy = embedding_map(X, seed=0)
    assert xy.shape == (n, 2) and np.isfinite(xy).all()
    assert np.allclose(xy, embedding_map(X, seed=0))


@pytest.fixture(scope="module")
def report_case(tmp_path_factory):
    """3 classes; one test image is mislabelled (a mistake to explain) and one is a copy of a training image (a leak)."""
    root = make_split_folder(tmp_path_factory.mktemp("data") / "birds")
    make_image(root / "test" / "blue_jay" / "odd.png", COLOURS["red_finch"], 999)
    shutil.copy(root / "train" / "green_warbler" / "00.png", root / "test" / "green_warbler" / "copy.png")
    (root / "test" / "red_finch" / "broken.png").write_bytes(b"\x89PNG broken")
    cache = tmp_path_factory.mktemp("cache")
    model = tmp_path_factory.mktemp("model") / "m"
    fit(root, backbone="tiny", head="logistic", cache_dir=cache).save(model)
    page, summary = build_report(Classifier.load(model), root, cache_dir=cache, n_mistakes=5, n_neighbours=2)
    return root, model, cache, page, summary


def test_report_page_is_self_contained_and_has_every_section(report_case):
    _, _, _, page, summary = report_case
    for anchor in ("metrics", "per-class", "confusion", "calibration", "map", "mistakes", "health"):
        assert f'<section id="{anchor}">' in page
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), "the page must not load anything from outside"
    assert "<script" not in page and page.count("data:image/png;base64,") >= 5
    assert summary["n"] == 14 and summary["n_unreadable"] == 1 and summary["n_mistakes_shown"] >= 1
    assert "odd.png" in page and "duplicate-across-splits" in page
    assert re.search(r"test images identical to training images</td><td class=\"num\">1<", page)


def test_report_cli_writes_the_file_and_checks_its_options(report_case, tmp_path, capsys):
    root, model, cache, _, _ = report_case
    out = tmp_path / "r" / "report.html"
    assert main(["report", str(model), str(root), "-o", str(out), "--cache-dir", str(cache), "--mistakes", "1",
                 "--neighbours", "0"]) == 0
    assert out.read_text().startswith("<!doctype html>") and "written to" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # rejected by argparse (cli/options.py) before the command runs
        main(["report", str(model), str(root), "-o", str(out), "--mistakes", "-1", "-q"])
    assert usage.value.code == 2


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _render(browser: str, html_file: Path, screenshot: Path, tmp_path: Path) -> list[str]:
    """Screenshot the page in headless Chromium; return the console messages it logged (errors, warnings, logs)."""
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--window-size=1280,2400", f"--screenshot={screenshot}",
         html_file.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(report_case, tmp_path, record_property):
    from PIL import Image

    browser = _chromium()
    broken = tmp_path / "broken.html"
    broken.write_text("<!doctype html><p>x</p><script>console.error('boom')</script>")
    assert any("boom" in m for m in _render(browser, broken, tmp_path / "broken.png", tmp_path)), \
        "the console check must see a page's errors"

    page = tmp_path / "report.html"
    page.write_text(report_case[3], encoding="utf-8")
    shot = tmp_path / "report.png"
    assert _render(browser, page, shot, tmp_path) == []
    record_property("screenshot", str(shot))
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2400, 1280) and pixels.std() > 20, "the screenshot shows a rendered page, not a blank"
    print(f"report screenshot: {shot}")
