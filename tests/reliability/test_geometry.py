"""Images whose resize would need more memory than a bound (extreme aspect ratios, not only pixel count)
become error rows, never a MemoryError."""
from __future__ import annotations

import pytest
from PIL import Image

from finegrain.backbones.base import MAX_RESIZED_PIXELS, Preprocess
from finegrain.errors import ImageError


@pytest.mark.parametrize("size", [(100_000, 2), (2, 100_000), (60_000, 1)])
def test_extreme_aspect_ratio_is_an_error_row(tiny_model, predict_rows, make_good, tmp_path, size):
    make_good(tmp_path / "in" / "good.png")
    Image.new("RGB", size, (10, 200, 10)).save(tmp_path / "in" / "strip.png")  # a few KB on disk
    code, rows, _ = predict_rows(tiny_model, tmp_path / "in")
    assert code == 0 and rows["good.png"]["status"] == "ok"
    assert rows["strip.png"]["error"].startswith(f"extreme shape {size[0]}×{size[1]}: resizing it")
    assert f"over the limit of {MAX_RESIZED_PIXELS:,} pixels" in rows["strip.png"]["error"]


def test_bound_is_checked_before_any_resize():
    strip = Image.new("RGB", (100_000, 2))
    with pytest.raises(ImageError, match="extreme shape"):
        Preprocess(size=224).apply(strip)  # would allocate ~10 GB if it resized first


def test_ordinary_and_mildly_elongated_images_still_work():
    pre = Preprocess(size=32)
    assert pre.apply(Image.new("RGB", (640, 480))).shape == (32, 32, 3)
    assert pre.apply(Image.new("RGB", (3000, 20))).shape == (32, 32, 3)
