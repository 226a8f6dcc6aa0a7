"""Tests for finegrain.data.images: every image is made at test time, so they run offline and fast."""
from __future__ import annotations

import hashlib
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from finegrain.data import images
from finegrain.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    file_sha256,
    is_hidden,
    is_image_file,
    iter_image_files,
    load_rgb,
)
from finegrain.errors import DataError, ImageError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def half_red_half_blue(width: int = 40, height: int = 20) -> Image.Image:
    img = Image.new("RGB", (width, height), RED)
    img.paste(BLUE, (width // 2, 0, width, height))
    return img


def save_with_orientation(path: Path, img: Image.Image, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, "JPEG", quality=95, exif=exif)


def noisy_jpeg(path: Path, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)
    return path.read_bytes()


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares a huge canvas but holds no pixel data: safe to make, huge if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def make_files(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


# --- orientation and modes -----------------------------------------------------------------------------

def test_exif_orientation_6_rotates_clockwise(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    save_with_orientation(path, half_red_half_blue(40, 20), 6)
    img = load_rgb(path)
    assert img.size == (20, 40)
    assert close_to(img.getpixel((10, 5)), RED)     # stored left half is now on top
    assert close_to(img.getpixel((10, 35)), BLUE)


def test_exif_orientation_8_rotates_counter_clockwise(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    save_with_orientation(path, half_red_half_blue(40, 20), 8)
    img = load_rgb(path)
    assert img.size == (20, 40)
    assert close_to(img.getpixel((10, 5)), BLUE)
    assert close_to(img.getpixel((10, 35)), RED)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
    img = load_rgb(path)
    assert img.mode == "RGB"
    assert close_to(img.getpixel((8, 8)), RED)


def test_grayscale_l(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (4, 4), 77).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (77, 77, 77)


def test_16bit_grayscale_png_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "depth.png"
    ramp = (np.arange(256, dtype=np.uint16) * 257).reshape(1, 256)  # 0, 257, ..., 65535
    Image.fromarray(ramp).save(path)
    with Image.open(path) as stored:
        assert stored.mode.startswith("I;16")  # the case under test really is 16-bit
    out = np.asarray(load_rgb(path))
    assert out.dtype == np.uint8 and out.shape == (1, 256, 3)
    np.testing.assert_array_equal(out[0, :, 0], np.arange(256))  # full 0..255 range, exactly k*257 -> k
    assert (out[0, :, 0] == out[0, :, 2]).all()


def test_dark_16bit_png_keeps_its_brightness(tmp_path: Path) -> None:
    # Fixed /257, not a per-image stretch: a dark 16-bit image must stay dark.
    path = tmp_path / "dark.png"
    Image.fromarray(np.array([[0, 12850, 25700]], dtype=np.uint16)).save(path)
    assert np.asarray(load_rgb(path))[0, :, 0].tolist() == [0, 50, 100]


def test_16bit_pgm_mode_i_scaled(tmp_path: Path) -> None:
    path = tmp_path / "depth.pgm"
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16)).save(path)
    out = np.asarray(load_rgb(path))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_float_image_range_stretched(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)).save(path)
    with Image.open(path) as stored:
        assert stored.mode == "F"
    out = np.asarray(load_rgb(path))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_palette_png_with_transparency_becomes_white(tmp_path: Path) -> None:
    path = tmp_path / "icon.png"
    img = Image.new("P", (4, 2), 0)
    img.putpalette([255, 0, 0, 0, 255, 0])
    img.paste(1, (2, 0, 4, 2))
    img.save(path, transparency=1)
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == RED
    assert out.getpixel((3, 1)) == WHITE  # the transparent green index shows as white, not green or black


def test_rgba_composited_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "cutout.png"
    img = Image.new("RGBA", (3, 1))
    img.putpixel((0, 0), (0, 0, 0, 0))         # fully transparent black
    img.putpixel((1, 0), (255, 0, 0, 255))     # opaque red
    img.putpixel((2, 0), (0, 0, 255, 128))     # half-transparent blue
    img.save(path)
    out = load_rgb(path)
    assert out.getpixel((0, 0)) == WHITE
    assert out.getpixel((1, 0)) == RED
    assert close_to(out.getpixel((2, 0)), (127, 127, 255), tol=2)


def test_la_composited_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    img = Image.new("LA", (2, 1), (0, 255))
    img.putpixel((1, 0), (0, 0))
    img.save(path)
    out = load_rgb(path)
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((1, 0)) == WHITE


def test_bilevel_image(tmp_path: Path) -> None:
    path = tmp_path / "bw.bmp"
    img = Image.new("1", (2, 1), 0)
    img.putpixel((1, 0), 1)
    img.save(path)
    out = load_rgb(path)
    assert [out.getpixel((0, 0)), out.getpixel((1, 0))] == [(0, 0, 0), WHITE]


def test_multiframe_gif_gives_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as stored:
        assert stored.n_frames == 2
    assert close_to(load_rgb(path).getpixel((1, 1)), RED, tol=4)


def test_result_is_loaded_and_detached_from_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (5, 3), BLUE).save(path)
    img = load_rgb(path)
    path.unlink()
    assert img.mode == "RGB" and img.size == (5, 3)
    assert img.getpixel((4, 2)) == BLUE


def test_png_named_jpg_loads(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    Image.new("RGB", (6, 6), BLUE).save(path, "PNG")
    assert load_rgb(path).getpixel((3, 3)) == BLUE  # lossless, so exact: PNG decoder was used


# --- errors --------------------------------------------------------------------------------------------

def reason_for(path: Path, **kwargs: object) -> str:
    with pytest.raises(ImageError) as caught:
        load_rgb(path, **kwargs)
    assert caught.value.path == str(path)
    return caught.value.reason


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    data = noisy_jpeg(path, (256, 256))
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in reason_for(path)


def test_truncated_jpeg_does_not_enable_global_truncated_loading(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    data = noisy_jpeg(path, (64, 64))
    path.write_bytes(data[: len(data) // 2])
    reason_for(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    assert reason_for(path) == "empty file (0 bytes)"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    assert reason_for(path).startswith("not a recognised image format")


def test_missing_file(tmp_path: Path) -> None:
    assert reason_for(tmp_path / "nope.jpg") == "file not found"


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert "directory" in reason_for(folder)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: chmod does not stop root, and tests may run as root in containers.
    path = tmp_path / "locked.png"
    Image.new("RGB", (2, 2)).save(path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images.os, "open", refuse)  # files are opened with os.open (non-blocking, see open_regular_file)
    assert reason_for(path) == "permission denied"


def test_bomb_refused_with_small_limit_and_allowed_with_none(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (20, 20), RED).save(path)
    reason = reason_for(path, max_pixels=100)
    assert reason.startswith("image is 20×20 = 400 pixels, over the limit of 100 (decompression-bomb guard)")
    assert "--max-image-pixels" in reason
    assert load_rgb(path, max_pixels=400).size == (20, 20)  # the limit is inclusive
    assert load_rgb(path, max_pixels=None).getpixel((0, 0)) == RED


def test_huge_header_refused_before_decoding(tmp_path: Path) -> None:
    # Over Pillow's own hard limit too: the reason must still give the real size, from the header alone
    # (the file has no pixel data, so any decoding attempt would report corruption instead).
    path = tmp_path / "bomb.png"
    png_header_only(path, 20000, 20000)
    assert reason_for(path).startswith(
        "image is 20000×20000 = 400,000,000 pixels, over the limit of 89,478,485 (decompression-bomb guard)")
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS


def test_gif_frame_over_pillow_limit_is_an_image_error(tmp_path: Path) -> None:
    # The GIF plugin checks Pillow's global limit itself when a frame outgrows the canvas; even with our
    # check disabled that must surface as ImageError, never as Pillow's DecompressionBombError.
    path = tmp_path / "bomb.gif"
    path.write_bytes(b"GIF89a" + struct.pack("<HHBBB", 4, 4, 0x80, 0, 0) + bytes(6)
                     + b"," + struct.pack("<HHHHB", 0, 0, 20000, 20000, 0) + b"\x02\x02\x44\x01\x00;")
    assert "decompression-bomb" in reason_for(path, max_pixels=None)


def test_between_pillow_warning_and_our_limit_no_warning_escapes(tmp_path: Path) -> None:
    # 100 M pixels: above Pillow's warning threshold, below its hard limit; we refuse with our own message.
    path = tmp_path / "big.png"
    png_header_only(path, 10000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning leaking out would fail the test
        reason = reason_for(path)
    assert reason.startswith("image is 10000×10000 = 100,000,000 pixels")


# --- draft ---------------------------------------------------------------------------------------------

def test_draft_size_decodes_smaller_but_at_least_requested(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    noisy_jpeg(path, (2000, 1600))
    assert load_rgb(path).size == (2000, 1600)
    small = load_rgb(path, draft_size=(300, 300))
    assert small.size == (500, 400)  # 1/4 scale; 1/8 would be 250x200, under the requested size
    assert small.mode == "RGB"


def test_draft_size_is_upright_for_rotated_photos(tmp_path: Path) -> None:
    path = tmp_path / "phone.jpg"
    save_with_orientation(path, half_red_half_blue(2000, 1000), 6)
    img = load_rgb(path, draft_size=(200, 400))
    assert img.size == (250, 500)  # stored 2000x1000 drafted at 1/4, then rotated upright
    assert close_to(img.getpixel((125, 20)), RED)


def test_draft_size_ignored_for_png(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (800, 600)).save(path)
    assert load_rgb(path, draft_size=(100, 100)).size == (800, 600)


# --- finding files -------------------------------------------------------------------------------------

def test_extensions() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


def test_is_hidden() -> None:
    assert is_hidden(Path(".DS_Store"))
    assert is_hidden(Path("data/.ipynb_checkpoints/x.jpg"))
    assert is_hidden(Path("data/__MACOSX/x.jpg"))
    assert not is_hidden(Path("data/birds/x.jpg"))
    assert not is_hidden(Path("../data/x.jpg"))
    assert is_hidden(Path("/home/u/.cache/ds/a.jpg"))
    assert not is_hidden(Path("/home/u/.cache/ds/a.jpg"), root=Path("/home/u/.cache/ds"))
    assert is_hidden(Path("/home/u/.cache/ds/.tmp/a.jpg"), root=Path("/home/u/.cache/ds"))


def test_is_image_file() -> None:
    assert is_image_file(Path("a.JPG")) and is_image_file(Path("b.Jpeg")) and is_image_file(Path("c.PnG"))
    assert not is_image_file(Path("notes.txt"))
    assert not is_image_file(Path("._a.jpg"))  # macOS AppleDouble litter
    assert not is_image_file(Path("jpg"))


def test_iter_image_files_skips_hidden_and_sorts(tmp_path: Path) -> None:
    make_files(tmp_path, [
        "b/2.JPG", "b/1.PnG", "a/z.jpeg", "a/y.webp", "top.tif",
        ".DS_Store", "a/.DS_Store", ".hidden/x.jpg", "a/.ipynb_checkpoints/x-checkpoint.jpg",
        "__MACOSX/b/._2.jpg", "b/._1.png", "b/readme.txt", "b/sub/.git/objects/x.png",
    ])
    found = iter_image_files(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/y.webp", "a/z.jpeg", "b/1.PnG", "b/2.JPG", "top.tif",
    ]
    assert iter_image_files(tmp_path) == found


def test_iter_image_files_does_not_descend_into_hidden_folders(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    make_files(tmp_path, [".hidden/deep/x.jpg", "ok/x.jpg"])
    walked: list[str] = []
    real_walk = os.walk

    def spy(top, *args, **kwargs):
        for folder, dirnames, filenames in real_walk(top, *args, **kwargs):
            walked.append(Path(folder).name)
            yield folder, dirnames, filenames

    monkeypatch.setattr(os, "walk", spy)
    assert [p.name for p in iter_image_files(tmp_path)] == ["x.jpg"]
    assert ".hidden" not in walked and "deep" not in walked and "ok" in walked


def test_iter_image_files_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        iter_image_files(tmp_path / "nope")


# --- hashing -------------------------------------------------------------------------------------------

def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(1).integers(0, 256, 3 * (1 << 20) + 17, dtype=np.uint8).tobytes()
    path.write_bytes(data)  # spans several 1 MiB chunks plus a partial one
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()
