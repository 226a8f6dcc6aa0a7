"""Finding and decoding image files the way real-world folders need it.

Real folders hold hidden junk (.DS_Store, __MACOSX, notebook checkpoints), odd extensions, phone photos
that rely on EXIF rotation, CMYK/16-bit/transparent files, truncated downloads and the odd decompression
bomb. `load_rgb` turns every such file into either an upright 8-bit RGB image or an `ImageError`, so a
training or inference run can record the bad file and go on instead of crashing.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import ExifTags, Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError

from finegrain.errors import DataError, ImageError, PixelLimitError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".pgm", ".ppm",
    ".avif", ".heic", ".heif",
})
# Listed so they are never skipped in silence: read when the installed Pillow decodes them (AVIF since
# Pillow 11.2; HEIC/HEIF only with a plugin), else an "unsupported format" error record.
_PLUGIN_EXTENSIONS: frozenset[str] = frozenset({".avif", ".heic", ".heif"})

# No image file a run should read is this big; the cap is checked before a byte is read or hashed.
MAX_FILE_BYTES: int = 1 << 30

# Pillow's own warning threshold (Image.MAX_IMAGE_PIXELS), repeated so callers can pass their own limit
# without touching Pillow's global, which other code relies on.
DEFAULT_MAX_PIXELS: int = 89_478_485

_HIDDEN_NAMES = frozenset({"__MACOSX"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_CHUNK_BYTES = 1 << 20
_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def is_hidden(path: Path, root: Path | None = None) -> bool:
    """True if any component of `path` (taken relative to `root` when given; it must lie under it)
    starts with '.' or is '__MACOSX': OS and tool litter that is never part of a dataset.

    `root` keeps a dataset stored under e.g. ~/.cache from counting as hidden; '.' and '..' are not hidden.
    """
    parts = Path(path).relative_to(root).parts if root is not None else Path(path).parts
    return any(_is_hidden_name(part) for part in parts)


def _is_hidden_name(name: str) -> bool:
    return name in _HIDDEN_NAMES or (name.startswith(".") and name not in (".", ".."))


def is_image_file(path: Path) -> bool:
    """True if the file name has an image extension (any case: .JPG, .Jpeg) and is not itself hidden.

    Looks at the name only (no disk access, folders are not judged): the content decides at load time,
    and `iter_image_files` is what skips hidden folders.
    """
    path = Path(path)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden_name(path.name)


def iter_image_files(root: Path, seen: set[tuple[int, int]] | None = None) -> list[Path]:
    """All image files under `root`, recursively, sorted so every run sees the same order.

    Hidden folders are pruned rather than filtered afterwards, so a huge .git or .ipynb_checkpoints is
    never walked. Symlinked folders are followed, but no real folder (st_dev, st_ino) is visited twice, so
    a link cycle ends and a folder linked twice is listed once; `seen` shares that memory between calls
    (a dataset marks its class folders so a link into another class adds nothing). Symlinked files are
    listed. Folders that cannot be listed are returned too, so they become error records rather than
    vanishing; so are FIFOs and other special files with an image name (reading refuses them).
    """
    root = Path(root)
    if not root.is_dir():
        found = "nothing at that path" if not root.exists() else "a file, not a folder"
        raise DataError(f"image folder {root} cannot be scanned", expected="an existing folder", found=found,
                        fix="check the path")
    seen = set() if seen is None else seen
    seen.add(folder_identity(root))
    unlistable: list[OSError] = []
    files: list[Path] = []
    for folder, dirnames, filenames in os.walk(root, onerror=unlistable.append, followlinks=True):
        dirnames[:] = [name for name in dirnames
                       if not _is_hidden_name(name) and first_visit(Path(folder, name), seen)]
        files.extend(Path(folder, name) for name in filenames if is_image_file(Path(name)))
    return sorted(files + [Path(err.filename) for err in unlistable])


def folder_identity(path: Path) -> tuple[int, int]:
    """(st_dev, st_ino) of what `path` points to: the same folder reached through any link has one identity."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def first_visit(folder: Path, seen: set[tuple[int, int]]) -> bool:
    """True the first time a real folder is met (and remember it); a folder that cannot be stat'ed counts as
    new, so the walk reaches it and reports why it cannot be listed."""
    try:
        key = folder_identity(folder)
    except OSError:
        return True
    if key in seen:
        return False
    seen.add(key)
    return True


def load_rgb(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
             draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode the first frame of `path` into a fully loaded, upright (EXIF-rotated), 8-bit RGB image.

    Any problem with the file raises `ImageError` naming it; no other exception escapes for a bad file.
    The content decides the format, not the extension. Images over `max_pixels` (width * height, read
    from the header before any pixel is decoded) are refused; `None` disables the check.

    `draft_size` (width, height), for JPEG only, lets the decoder scale down by 1/2, 1/4 or 1/8 while
    decoding (much faster for big photos). Following Pillow's `draft`, the result is the smallest such
    scale that is still at least `draft_size` in each dimension, so callers still resize afterwards;
    `draft_size` is meant upright (it is swapped for EXIF-rotated photos). Other formats ignore it.
    """
    with open_regular_file(path) as fp:
        return _load_open(fp, str(path), max_pixels, draft_size)


def load_rgb_bytes(data: bytes, name: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """`load_rgb` for bytes already in memory (an HTTP upload), with the same checks and the same errors;
    `name` (the upload's file name) only labels the errors and hints at plugin formats."""
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return _load_open(io.BytesIO(data), name, max_pixels, None)


def _load_open(fp: BinaryIO, name: str, max_pixels: int | None, draft_size: tuple[int, int] | None) -> Image.Image:
    with warnings.catch_warnings():
        # Our max_pixels check below replaces Pillow's warning, which would otherwise fire on every big file.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _identify(fp, name, Path(name).suffix.lower()) as img:
            _check_pixels(img.size, max_pixels, name)
            return _decode(img, name, draft_size)


def file_sha256(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB chunks so big files do not fill memory.

    Raises `ImageError` for anything but a readable regular file of at most `max_bytes` (see
    `open_regular_file`), so hashing a FIFO never hangs and a huge file is not read for nothing."""
    digest = hashlib.sha256()
    with open_regular_file(path, max_bytes) as fp:
        try:
            for chunk in iter(lambda: fp.read(_CHUNK_BYTES), b""):
                digest.update(chunk)
        except OSError as exc:
            raise ImageError(str(path), f"read error: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def open_regular_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> BinaryIO:
    """Open a regular file (or a link to one) for reading, or raise `ImageError` with the reason.

    Opened non-blocking and checked on the open descriptor: opening a FIFO for reading would otherwise wait
    for a writer forever, and checking before opening would leave a race. Devices, sockets and folders are
    refused the same way; so are empty files and files over `max_bytes`."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ImageError(name, "file not found") from exc
    except PermissionError as exc:
        raise ImageError(name, "permission denied") from exc
    except OSError as exc:
        st = _stat_or_none(path)
        if st is not None and not stat.S_ISREG(st.st_mode):  # a socket cannot even be opened (ENXIO)
            _check_regular(st, name, max_bytes)
        raise ImageError(name, f"cannot open file: {exc.strerror or exc}") from exc
    try:
        _check_regular(os.fstat(fd), name, max_bytes)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _stat_or_none(path: str | Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _check_regular(st: os.stat_result, name: str, max_bytes: int) -> None:
    for is_kind, kind in _FILE_KINDS:
        if is_kind(st.st_mode):
            raise ImageError(name, f"not a regular file ({kind})")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(name, "not a regular file")
    if st.st_size == 0:
        raise ImageError(name, "empty file (0 bytes)")
    if st.st_size > max_bytes:
        raise ImageError(name, f"file is {st.st_size:,} bytes, over the limit of {max_bytes:,} for one image")


def _identify(fp: BinaryIO, name: str, suffix: str) -> ImageFile.ImageFile:
    """Read the header only, turning every way that can fail into an ImageError."""
    try:
        return _open_header(fp, name)
    except UnidentifiedImageError as exc:
        if suffix in _PLUGIN_EXTENSIONS:
            raise ImageError(name, f"unsupported format: the installed Pillow cannot decode {suffix} files "
                                   "(convert them to JPEG or PNG)") from exc
        raise ImageError(name, "not a recognised image format (the content is not an image Pillow can read)") \
            from exc
    except Image.DecompressionBombError as exc:  # a plugin checked Pillow's global limit itself (GIF frames)
        raise PixelLimitError(name, f"over Pillow's own decompression-bomb limit: {exc}") from exc
    except Exception as exc:  # Pillow plugins raise many types (SyntaxError, struct.error, ...) on bad headers
        raise ImageError(name, f"truncated or corrupt image header: {exc}") from exc


def _open_header(fp: BinaryIO, name: str) -> ImageFile.ImageFile:
    """Image.open, except that Pillow's global bomb limit does not decide: the caller's `max_pixels` does
    (it may be higher, or None), and it reports the real size."""
    try:
        return Image.open(fp)
    except Image.DecompressionBombError:
        fp.seek(0)
        return _open_without_pillow_limit(fp, name)


def _open_without_pillow_limit(fp: BinaryIO, name: str) -> ImageFile.ImageFile:
    """Image.open's format detection minus its `Image.MAX_IMAGE_PIXELS` check, which is a process-wide
    global we must not change. Only reached for files Image.open already identified."""
    Image.init()
    prefix = fp.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        accepted = accept is None or accept(prefix)
        if accepted and not isinstance(accepted, str):  # a str means "recognised but unsupported"
            fp.seek(0)
            try:
                return factory(fp, name)
            except (SyntaxError, IndexError, TypeError, struct.error):  # what Image.open skips, too
                continue
    raise UnidentifiedImageError(f"cannot identify image file {name!r}")


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    """Refuse before decoding: a tiny file can declare a huge canvas and exhaust memory."""
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise PixelLimitError(name, f"image is {width}×{height} = {width * height:,} pixels, over the limit of "
                                    f"{max_pixels:,} (decompression-bomb guard); raise it with "
                                    "--max-image-pixels if the file is trusted")


def _decode(img: ImageFile.ImageFile, name: str, draft_size: tuple[int, int] | None) -> Image.Image:
    """Decode all pixel data now, so truncation surfaces here as an ImageError and not later in a worker."""
    try:
        if draft_size is not None and isinstance(img, JpegImagePlugin.JpegImageFile):  # includes MPO
            img.draft("RGB", _stored_orientation_size(img, draft_size))
        img.load()
        return _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError as exc:  # some plugins (GIF frames) check Pillow's limit on load
        raise PixelLimitError(name, f"over Pillow's own decompression-bomb limit: {exc}") from exc
    except Exception as exc:  # Pillow decoders raise OSError, ValueError, EOFError, ... on bad data
        raise ImageError(name, f"truncated or corrupt image data: {exc}") from exc


def _stored_orientation_size(img: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """Draft works on the stored pixels, so an upright size must be swapped for 90°-rotated photos."""
    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    return (size[1], size[0]) if orientation in _TRANSPOSING_ORIENTATIONS else size


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB whatever the stored mode; transparency is flattened onto white, as viewers show it."""
    if img.mode in _WIDE_GREY_MODES:
        img = _wide_grey_to_l(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _wide_grey_to_l(img: Image.Image) -> Image.Image:
    """Scale high-bit-depth grey to 0..255 instead of letting Pillow clip it (which turns most of a 16-bit
    image white). 16-bit data (I;16*, and mode I within 0..65535, as 16-bit PGM opens) uses the fixed
    /257 so brightness means the same in every image; wider int and float data has no nominal full
    scale, so its own min..max range is stretched.
    """
    wide = img.convert("I") if img.mode.startswith("I;16") else img
    low, high = wide.getextrema()
    if wide.mode == "I" and low >= 0 and high <= 65535:
        low, high = 0, 65535
    scale = 255 / (high - low) if high > low else 0.0
    offset = 0.5 - low * scale  # +0.5: the conversion to L truncates, this makes it round
    grey = wide.point(lambda v: v * scale + offset).convert("L")
    grey.info.pop("transparency", None)  # a 16-bit transparent value would match the wrong 8-bit pixels
    return grey
