"""Crop boxes (#14): read from a manifest's x,y,w,h or CUB's bounding_boxes.txt, cropped before preprocessing,
part of the cache key only when present, and a bad box is one error row, never the end of a run."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from finegrain.backbones.base import Backbone, Preprocess
from finegrain.data.boxes import Box, parse_box, sample_key
from finegrain.data.images import file_sha256
from finegrain.data.samples import Sample
from finegrain.data.sources import load_data
from finegrain.embed import embed_samples, load_embeddings, save_embeddings
from finegrain.errors import DataError
from finegrain.store import EmbeddingCache

from conftest import make_image, run_cli


class RecordingBackbone(Backbone):
    """Remembers every image it was fed: what the model sees, pixel for pixel."""

    id = "recording"
    embed_dim = 3
    preprocess = Preprocess(size=8, crop_pct=1.0, interpolation="nearest")

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        self.seen += list(batch)
        return batch.reshape(len(batch), -1, 3).mean(axis=1) + 1.0

    def weights_fingerprint(self) -> str:
        return "recording"


def _quadrants(path) -> Image.Image:
    """16×16: red, green, blue and white quadrants, so every crop has its own pixels."""
    arr = np.zeros((16, 16, 3), dtype=np.uint8)
    arr[:8, :8], arr[:8, 8:], arr[8:, :8], arr[8:, 8:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    img = Image.fromarray(arr)
    img.save(path)
    return img


def test_crop_boxes_change_the_pixels_fed_to_the_model_and_only_those(tmp_path):
    img = _quadrants(tmp_path / "q.png")
    boxed = Sample(tmp_path / "q.png", box=Box(8, 0, 8, 8))      # the green quadrant
    whole = Sample(tmp_path / "q.png")
    bb = RecordingBackbone()
    emb = embed_samples([boxed, whole], bb, progress=False, runtime="torch")
    pre = bb.preprocess
    assert np.array_equal(bb.seen[0], pre.apply(img.crop((8, 0, 16, 8))))
    assert (bb.seen[0] == (0, 255, 0)).all()
    assert np.array_equal(bb.seen[1], pre.apply(img))               # no box: the image as it always was
    assert not np.allclose(emb.X[0], emb.X[1])


def test_the_cache_key_includes_the_box_and_is_unchanged_without_one(tmp_path):
    _quadrants(tmp_path / "q.png")
    sha = file_sha256(tmp_path / "q.png")
    plain = Sample(tmp_path / "q.png")
    a, b = Sample(plain.path, box=Box(0, 0, 8, 8)), Sample(plain.path, box=Box(8, 8, 8, 8))
    assert sample_key(sha, plain) == sha
    assert len({sample_key(sha, s) for s in (plain, a, b)}) == 3
    assert sample_key(sha, a) == sample_key(sha, Sample(tmp_path / "copy.png", "x", box=Box(0.0, 0, 8, 8, source="other")))
    bb = RecordingBackbone()
    with EmbeddingCache(tmp_path / "cache") as cache:
        emb = embed_samples([plain, a, b], bb, cache=cache, progress=False, runtime="torch")
        assert cache.count(bb.cache_key) == 3 and emb.shas[0] == sha
        again = embed_samples([a, plain], bb, cache=cache, progress=False, runtime="torch")
    assert again.n_computed == 0 and np.allclose(again.X, emb.X[[1, 0]])


def test_bad_boxes_are_error_rows_and_the_run_goes_on(tmp_path):
    _quadrants(tmp_path / "q.png")
    make_image(tmp_path / "ok.png", (10, 20, 30), 0, size=16)
    (tmp_path / "m.csv").write_text("path,label,x,y,w,h\n"
                                    "ok.png,a,,,,\n"
                                    "q.png,a,4,4,8,8\n"
                                    "q.png,b,10,10,8,8\n"      # outside the 16×16 image
                                    "q.png,b,0,0,0,5\n"        # zero width
                                    "q.png,b,0,zero,4,4\n")    # not a number
    ds = load_data(tmp_path / "m.csv")
    emb = embed_samples(ds.samples, RecordingBackbone(), progress=False, runtime="torch")
    assert [s.path.name for s in emb.samples] == ["ok.png", "q.png"] and emb.samples[1].box == Box(4, 4, 8, 8)
    reasons = [e.reason for e in emb.errors]
    assert len(reasons) == 3
    assert "reaches outside the 16×16 image" in reasons[0] and "m.csv row 4" in reasons[0] and "fix:" in reasons[0]
    assert "zero or negative size" in reasons[1] and "found w=0 h=5" in reasons[1]
    assert "y that is not a number" in reasons[2] and "'zero'" in reasons[2]


def test_manifest_boxes_are_read_and_empty_cells_mean_the_whole_image(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,split,x,y,w,h\na.jpg,A,train,10,20.5,30,40\nb.jpg,B,test,,,,\n")
    a, b = load_data(tmp_path / "m.csv").samples
    assert (a.box.x, a.box.y, a.box.w, a.box.h, a.box.problem) == (10, 20.5, 30, 40, None)
    assert a.box.key == "10,20.5,30,40" and b.box is None


def test_a_manifest_with_some_box_columns_is_refused_with_the_missing_ones_named(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,x,y\na.jpg,A,1,2\n")
    with pytest.raises(DataError, match="has crop-box column\\(s\\) x, y but not w, h"):
        load_data(tmp_path / "m.csv")


def test_cub_bounding_boxes_are_read(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images.txt").write_text("1 001.A/a.jpg\n2 002.B/b.jpg\n3 002.B/c.jpg\n")
    (tmp_path / "image_class_labels.txt").write_text("1 1\n2 2\n3 2\n")
    (tmp_path / "bounding_boxes.txt").write_text("1 60.0 27.0 325.0 304.0\n2 1 2 -3 4\n")
    a, b, c = load_data(tmp_path).samples
    assert a.box == Box(60, 27, 325, 304) and c.box is None
    assert "bounding_boxes.txt, image id 2" in b.box.problem and "zero or negative size" in b.box.problem


def test_parse_box_never_raises():
    assert parse_box(["", " ", "", ""], "row 2") is None
    assert "h that is not a number" in parse_box(["1", "2", "3", "nan"], "row 2").problem
    assert "has 3 value(s)" in parse_box(["1", "2", "3"], "line 1").problem


def test_embeddings_folders_keep_their_boxes(tmp_path):
    _quadrants(tmp_path / "q.png")
    emb = embed_samples([Sample(tmp_path / "q.png", "a", box=Box(0, 0, 8, 8)), Sample(tmp_path / "q.png", "a")],
                        RecordingBackbone(), progress=False, runtime="torch")
    back = load_embeddings(save_embeddings(emb, tmp_path / "e", {}))
    assert [s.box for s in back.samples] == [Box(0, 0, 8, 8), None] and back.shas == emb.shas


def test_fit_eval_predict_read_boxes_from_a_manifest_and_skip_a_bad_row(capsys, split_folder, tmp_path):
    rows = ["path,label,split,x,y,w,h"]
    for p in sorted(split_folder.rglob("*.png")):
        rows.append(f"{p},{p.parent.name},{p.parent.parent.name},4,4,30,30")
    rows.append(f"{p},{p.parent.name},train,30,30,30,30")  # outside the 40×40 image: one error row
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    code, _, err = run_cli(capsys, "fit", tmp_path / "m.csv", "-o", tmp_path / "model", "--backbone", "tiny",
                           "--max-error-rate", "0.1")
    assert code == 0 and "skipped 1 unreadable training image(s)" in err and "reaches outside the 40×40 image" in err
    code, out, _ = run_cli(capsys, "eval", tmp_path / "model", tmp_path / "m.csv", "--format", "json", "-q")
    assert code == 0 and json.loads(out)["n"] == 12
    code, out, _ = run_cli(capsys, "predict", tmp_path / "model", tmp_path / "m.csv", "--format", "csv", "-q")
    assert code == 0 and "reaches outside" in out


def test_the_ray_engine_refuses_boxes_rather_than_embed_whole_images(tmp_path):
    from finegrain.errors import ConfigError
    from finegrain.scale.inputs import input_rows

    _quadrants(tmp_path / "q.png")
    (tmp_path / "m.csv").write_text("path,label,x,y,w,h\nq.png,a,,,,\n")
    assert len(input_rows([str(tmp_path / "m.csv")])) == 1
    (tmp_path / "m.csv").write_text("path,label,x,y,w,h\nq.png,a,0,0,8,8\n")
    with pytest.raises(ConfigError, match="--engine ray does not apply yet"):
        input_rows([str(tmp_path / "m.csv")])


def test_check_reports_unusable_boxes(tmp_path):
    import finegrain

    _quadrants(tmp_path / "q.png")
    (tmp_path / "m.csv").write_text("path,label,x,y,w,h\nq.png,a,0,0,8,8\nq.png,a,0,0,-1,8\nq.png,b,,,,\n")
    _, findings = finegrain.check(tmp_path / "m.csv")
    bad = [f for f in findings if f.code == "bad-box"]
    assert len(bad) == 1 and bad[0].level == "warning" and "m.csv row 3" in bad[0].message
    assert "1 unusable crop box " in bad[0].message


def test_explain_sees_the_same_crop_as_the_embedding(tmp_path):
    from finegrain.explain.api import _decode

    img = _quadrants(tmp_path / "q.png")
    pre = Preprocess(size=8, crop_pct=1.0, interpolation="nearest")
    boxed, whole = _decode([Sample(tmp_path / "q.png", box=Box(0, 8, 8, 8)), Sample(tmp_path / "q.png")], pre, None)
    assert (boxed == (0, 0, 255)).all() and np.array_equal(whole, pre.apply(img))


def test_finetune_trains_on_the_boxed_crops(monkeypatch, split_folder, tmp_path):
    from finegrain.finetune import store
    from finegrain.finetune.api import finetune
    from finegrain.finetune.settings import TrainSettings

    rows = ["path,label,split,x,y,w,h"] + [f"{p},{p.parent.name},{p.parent.parent.name},4,4,30,30"
                                           for p in sorted(split_folder.rglob("*.png"))]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    sizes = []
    real = store.load_sample_rgb
    monkeypatch.setattr(store, "load_sample_rgb", lambda s, **kw: sizes.append(real(s, **kw).size) or real(s, **kw))
    clf = finetune(tmp_path / "m.csv", backbone="tiny", train_blocks=1, views=2, seed=0, val_split=0.25,
                   settings=TrainSettings(epochs=1))
    assert sizes and set(sizes) == {(30, 30)} and len(clf.classes) == 3
