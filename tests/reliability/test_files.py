"""Only regular files are read: FIFOs, sockets, devices and links to them become error rows, never opened;
folder links are followed once; oversized files are refused before hashing; AVIF/HEIC never vanish."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from finegrain.data import images
from finegrain.data.images import iter_image_files
from finegrain.data.sources import collect_inputs, load_data


def test_fifo_in_a_folder_is_an_error_row_and_never_opened(tiny_model, predict_rows, make_good, tmp_path, no_hang):
    make_good(tmp_path / "photos" / "good.png")
    os.mkfifo(tmp_path / "photos" / "pipe.jpg")  # opening it for reading would block forever
    code, rows, err = predict_rows(tiny_model, tmp_path / "photos")
    assert code == 0 and rows["good.png"]["status"] == "ok"
    assert rows["pipe.jpg"]["error"] == "not a regular file (a FIFO (named pipe))"
    assert "1 of 2 file(s) could not be read" in err


def test_fifo_named_on_the_command_line(tiny_model, predict_rows, make_good, tmp_path, no_hang):
    good = make_good(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe")
    code, rows, _ = predict_rows(tiny_model, good, tmp_path / "pipe")
    assert code == 0 and rows["good.png"]["status"] == "ok"
    assert rows["pipe"]["error"].startswith("not a regular file")


def test_socket_device_and_links_to_them(tiny_model, predict_rows, make_good, tmp_path, no_hang):
    folder = tmp_path / "in"
    make_good(folder / "good.png")
    make_good(tmp_path / "elsewhere.png")
    (folder / "link_to_good.png").symlink_to(tmp_path / "elsewhere.png")
    (folder / "zero.png").symlink_to("/dev/zero")  # reading it would never end
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(folder / "sock.png"))
        code, rows, _ = predict_rows(tiny_model, folder)
    finally:
        sock.close()
    assert code == 0
    assert rows["good.png"]["status"] == "ok" and rows["link_to_good.png"]["status"] == "ok"
    assert rows["zero.png"]["error"] == "not a regular file (a character device)"
    assert rows["sock.png"]["error"] == "not a regular file (a socket)"


def test_file_over_the_size_cap_is_refused_before_hashing(tiny_model, predict_rows, make_good, tmp_path):
    make_good(tmp_path / "in" / "good.png")
    with open(tmp_path / "in" / "huge.png", "wb") as fh:  # sparse: costs no disk and no time
        fh.truncate(images.MAX_FILE_BYTES + 1)
    code, rows, _ = predict_rows(tiny_model, tmp_path / "in")
    assert code == 0 and rows["good.png"]["status"] == "ok"
    assert "over the limit of 1,073,741,824 for one image" in rows["huge.png"]["error"]


def test_folder_links_are_followed_once(make_good, tmp_path, no_hang):
    root = tmp_path / "photos"
    make_good(root / "a" / "1.png")
    make_good(tmp_path / "outside" / "2.png")
    (root / "a" / "loop").symlink_to(root)  # a cycle: must end
    (root / "again").symlink_to(root / "a")  # the same folder twice: listed once
    (root / "ext").symlink_to(tmp_path / "outside")  # a link out of the tree: read
    found = sorted(p.name for p in iter_image_files(root))
    assert found == ["1.png", "2.png"]
    assert [s.path.name for s in collect_inputs([root])] == [p.name for p in iter_image_files(root)]


def test_folder_link_back_into_the_tree_never_becomes_a_class(make_classes, tmp_path, no_hang):
    root = make_classes(tmp_path / "birds", 2)
    (root / "everything").symlink_to(root)
    (root / "red_finch" / "jays").symlink_to(root / "blue_jay")
    ds = load_data(root)
    assert ds.classes == ["blue_jay", "green_warbler", "red_finch"]
    assert len(ds.samples) == 6  # nothing counted twice
    assert {s.label for s in ds.samples if s.path.parent.name == "blue_jay"} == {"blue_jay"}


def test_fit_with_a_fifo_and_a_loop_ends_and_fits(cli, make_classes, tmp_path, no_hang):
    root = make_classes(tmp_path / "birds", 8)
    os.mkfifo(root / "red_finch" / "stuck.jpg")
    (root / "blue_jay" / "loop").symlink_to(root)
    code, _, err = cli("fit", root, "-o", tmp_path / "m", "--backbone", "tiny", "--head", "prototype",
                       "--max-error-rate", "0.1")
    assert code == 0 and "of 3 classes" in err and "1 unreadable" in err


def test_unlistable_subfolder_is_reported_not_skipped(tiny_model, predict_rows, make_good, tmp_path, monkeypatch):
    root = tmp_path / "in"
    make_good(root / "good.png")
    make_good(root / "locked" / "x.png")
    real_scandir = os.scandir

    def refuse_locked(path=".", *args):  # chmod 000 does not stop root, so simulate it
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path, *args)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    monkeypatch.setattr(images.os, "open", _refusing_open(os.open, "locked"))
    code, rows, _ = predict_rows(tiny_model, root)
    assert code == 0 and rows["good.png"]["status"] == "ok"
    assert rows["locked"]["error"] == "permission denied"


def _refusing_open(real_open, name):
    def fake(path, *args, **kwargs):
        if Path(path).name == name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)
    return fake


def test_avif_is_read_and_unsupported_heic_is_an_error_row(tiny_model, predict_rows, make_good, tmp_path):
    from PIL import Image, features
    folder = tmp_path / "in"
    make_good(folder / "good.png")
    if features.check("avif"):
        Image.open(folder / "good.png").save(folder / "photo.avif")
    (folder / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    code, rows, _ = predict_rows(tiny_model, folder)
    assert code == 0 and rows["good.png"]["status"] == "ok"
    assert rows["phone.HEIC"]["error"].startswith("unsupported format: the installed Pillow cannot decode .heic")
    if features.check("avif"):
        assert rows["photo.avif"]["status"] == "ok"


def test_data_path_that_is_a_fifo_is_a_data_error(cli, tmp_path, no_hang):
    os.mkfifo(tmp_path / "data.csv")
    code, _, err = cli("check", tmp_path / "data.csv")
    assert code == 1 and "is not a regular file" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["check", "embed"])
def test_commands_listing_folders_skip_loops(cli, command, make_classes, tmp_path, no_hang):
    root = make_classes(tmp_path / "birds", 2)
    (root / "red_finch" / "loop").symlink_to(root)
    extra = ["-o", tmp_path / "emb", "--backbone", "tiny", "-q"] if command == "embed" else []
    code, out, err = cli(command, root, *extra)
    assert code == 0, err
    if command == "check":
        assert "6 images, 3 classes" in out
