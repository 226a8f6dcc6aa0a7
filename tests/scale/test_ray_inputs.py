"""Listing and reading object-store inputs through pyarrow filesystems, exercised offline with file:// URIs
(s3://, gs://, ... take the same code path with the credentials a worker finds)."""
from __future__ import annotations

import pytest

from conftest import make_image
from finegrain.errors import ImageError
from finegrain.scale.inputs import input_rows, read_file_bytes


def test_a_uri_folder_lists_its_images_and_skips_hidden_ones(tmp_path):
    for rel in ("a/1.png", "b/2.jpg", ".hidden/3.png", "a/.4.png"):
        make_image(tmp_path / rel, (10, 20, 30), 0)
    (tmp_path / "notes.txt").write_text("not an image")
    rows = input_rows([f"file://{tmp_path}"])
    assert [r["path"] for r in rows] == [f"file://{tmp_path}/a/1.png", f"file://{tmp_path}/b/2.jpg"]
    assert read_file_bytes(rows[0]["path"]) == (tmp_path / "a/1.png").read_bytes()


def test_a_uri_manifest_resolves_paths_next_to_it(tmp_path):
    make_image(tmp_path / "img" / "1.png", (10, 20, 30), 0)
    (tmp_path / "m.csv").write_text("path,label,split\nimg/1.png,finch,Training\n")
    assert input_rows([f"file://{tmp_path}/m.csv"]) == [
        {"path": f"file://{tmp_path}/img/1.png", "label": "finch", "split": "train"}]


def test_unreadable_uris_are_error_reasons_not_crashes(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_file_bytes(f"file://{tmp_path}/empty.png")
    with pytest.raises(ImageError, match="cannot read"):
        read_file_bytes(f"file://{tmp_path}/missing.png")
