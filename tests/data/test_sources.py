from __future__ import annotations

from pathlib import Path

import pytest

from finegrain.data.sources import collect_inputs, load_data
from finegrain.errors import ConfigError, DataError

from conftest import make_image


def test_split_folders_are_splits_not_classes(split_folder):
    ds = load_data(split_folder)
    assert ds.kind == "folder-with-splits"
    assert ds.splits == ["test", "train"]
    assert ds.classes == ["blue_jay", "green_warbler", "red_finch"]
    assert len(ds.select(["train"])) == 24 and len(ds.select(["test"])) == 12


def test_hidden_files_and_empty_classes(tmp_path):
    make_image(tmp_path / "a" / "1.JPG", (1, 2, 3), 0)
    make_image(tmp_path / "a" / ".hidden.jpg", (1, 2, 3), 1)
    make_image(tmp_path / ".ipynb_checkpoints" / "x.jpg", (1, 2, 3), 2)
    (tmp_path / "a" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "empty_class").mkdir()
    ds = load_data(tmp_path)
    assert [s.path.name for s in ds.samples] == ["1.JPG"]
    assert ds.classes == ["a"] and ds.empty_classes == ["empty_class"]


def test_split_aliases(tmp_path):
    make_image(tmp_path / "Training" / "a" / "1.png", (1, 2, 3), 0)
    make_image(tmp_path / "validation" / "a" / "2.png", (1, 2, 3), 1)
    assert load_data(tmp_path).splits == ["train", "val"]


def test_csv_manifest_relative_paths(tmp_path):
    make_image(tmp_path / "imgs" / "x.png", (1, 2, 3), 0)
    (tmp_path / "m.csv").write_text("path,label,split,group\nimgs/x.png,Blue Jay,Test,g1\n")
    ds = load_data(tmp_path / "m.csv")
    s = ds.samples[0]
    assert s.path == tmp_path / "imgs" / "x.png" and s.label == "Blue Jay" and s.split == "test" and s.group == "g1"


def test_parquet_manifest(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"path": ["a.png", "b.png"], "label": ["x", "y"]}), tmp_path / "m.parquet")
    ds = load_data(tmp_path / "m.parquet")
    assert [s.label for s in ds.samples] == ["x", "y"] and not ds.has_splits


def test_manifest_errors_say_how_to_fix(tmp_path):
    (tmp_path / "m.csv").write_text("file,label\na.png,x\n")
    with pytest.raises(DataError, match="no 'path' column") as e:
        load_data(tmp_path / "m.csv")
    assert "fix:" in str(e.value)
    (tmp_path / "n.csv").write_text("path,label,split\na.png,x,holdout\n")
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        load_data(tmp_path / "n.csv")


@pytest.mark.parametrize("sep", [" ", ", "])
def test_cub_layout(tmp_path, sep):
    make_image(tmp_path / "images" / "001.Albatross" / "a.jpg", (1, 2, 3), 0)
    make_image(tmp_path / "images" / "002.Ani" / "b.jpg", (1, 2, 3), 1)
    (tmp_path / "images.txt").write_text(f"1{sep}001.Albatross/a.jpg\n2{sep}002.Ani/b.jpg\n")
    (tmp_path / "image_class_labels.txt").write_text(f"1{sep}1\n2{sep}2\n")
    (tmp_path / "classes.txt").write_text(f"1{sep}001.Albatross\n2{sep}002.Ani\n")
    (tmp_path / "train_test_split.txt").write_text(f"1{sep}1\n2{sep}0\n")
    ds = load_data(tmp_path)
    assert ds.kind == "cub"
    assert [(s.label, s.split) for s in ds.samples] == [("Albatross", "train"), ("Ani", "test")]
    assert all(s.path.is_file() for s in ds.samples)


def test_missing_path_and_plain_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(DataError, match="not a manifest"):
        load_data(tmp_path / "a.txt")


def test_collect_inputs_keeps_named_files_and_searches_folders(tmp_path):
    make_image(tmp_path / "d" / "1.png", (1, 2, 3), 0)
    (tmp_path / "notes.txt").write_text("hello")
    samples = collect_inputs([tmp_path / "d", tmp_path / "notes.txt"])
    assert [s.path.name for s in samples] == ["1.png", "notes.txt"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        collect_inputs([tmp_path / "empty"])
