"""Property tests (hypothesis): the manifest reader, the image loader and the metrics hold their contracts
on arbitrary input — a clean error or a correct answer, never an unexpected exception."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from finegrain.data.images import load_rgb
from finegrain.data.sources import expand_user, load_manifest
from finegrain.errors import DataError, FinegrainError, ImageError
from finegrain.metrics import (confusion_matrix, expected_calibration_error, macro_f1, mean_per_class_accuracy,
                               top_k_accuracy)

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
cell = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
split = st.sampled_from(["", "train", "VAL", " test ", "dev", "holdout"])


@FAST
@given(rows=st.lists(st.tuples(cell, cell, split), min_size=1, max_size=8))
def test_manifest_reader_reads_every_row_or_says_why(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("m") / "m.csv"
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["path", "label", "split"])
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    try:
        ds = load_manifest(path)
    except DataError as exc:
        assert "row" in str(exc) and ("empty path" in str(exc) or "unknown split" in str(exc))
        return
    assert len(ds.samples) == len(rows)
    for sample, (file, label, _) in zip(ds.samples, rows):
        assert sample.label == (label.strip() or None)
        assert sample.path.name == expand_user(file.strip()).name


@FAST
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0",
                                                             b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 "]))
def test_image_loader_returns_rgb_or_image_error(tmp_path_factory, data, prefix):
    path = tmp_path_factory.mktemp("img") / "x.png"
    path.write_bytes(prefix + data)
    try:
        img = load_rgb(path, max_pixels=1_000_000)
    except ImageError as exc:
        assert exc.path == str(path) and exc.reason
        return
    assert img.mode == "RGB" and img.width * img.height <= 1_000_000


@FAST
@given(width=st.integers(1, 64), height=st.integers(1, 64),
       mode=st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"]),
       fmt=st.sampled_from(["PNG", "TIFF", "BMP", "WEBP"]))
def test_image_loader_keeps_size_for_any_mode(tmp_path_factory, width, height, mode, fmt):
    img = Image.new(mode, (width, height))
    path = tmp_path_factory.mktemp("img") / f"x.{fmt.lower()}"
    try:
        img.save(path, fmt)
    except (OSError, ValueError):  # this format cannot store this mode: nothing to test
        return
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (width, height)


labels_and_scores = st.integers(2, 6).flatmap(lambda c: st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, c - 1), min_size=n, max_size=n),
    st.lists(st.lists(st.floats(-50, 50), min_size=c, max_size=c), min_size=n, max_size=n))))


@FAST
@given(labels_and_scores)
def test_top_k_accuracy_is_a_rate_that_grows_with_k(pair):
    y, scores = np.asarray(pair[0]), np.asarray(pair[1])
    accs = [top_k_accuracy(y, scores, k) for k in range(1, scores.shape[1] + 1)]
    assert all(0.0 <= a <= 1.0 for a in accs) and accs == sorted(accs) and accs[-1] == 1.0


@FAST
@given(labels_and_scores)
def test_metrics_bounds_and_perfect_predictions(pair):
    y, scores = np.asarray(pair[0]), np.asarray(pair[1])
    c = scores.shape[1]
    pred = scores.argmax(1)
    for value in (mean_per_class_accuracy(y, pred), macro_f1(y, pred, c)):
        assert 0.0 <= value <= 1.0
    assert mean_per_class_accuracy(y, y) == 1.0 and macro_f1(y, y, c) == 1.0
    assert confusion_matrix(y, pred, c).sum() == len(y)
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert 0.0 <= expected_calibration_error(y, probs) <= 1.0


@pytest.mark.parametrize("k", [0, -1])
def test_top_k_rejects_k_below_1(k):
    with pytest.raises(FinegrainError, match="k"):
        top_k_accuracy(np.array([0]), np.array([[1.0, 0.0]]), k)


def test_manifest_path_naming_an_unknown_user_is_kept(tmp_path):
    """Found by hypothesis: Path('~0').expanduser() raises RuntimeError when user '0' does not exist."""
    (tmp_path / "m.csv").write_text("path,label\n~no_such_user_xyz/a.png,finch\n")
    assert str(load_manifest(tmp_path / "m.csv").samples[0].path).endswith("~no_such_user_xyz/a.png")
