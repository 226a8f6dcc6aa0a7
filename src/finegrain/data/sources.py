"""Data sources: a folder-per-class tree (optionally under train/ val/ test/), a CSV or Parquet manifest,
a CUB-style folder, or plain files and folders of unlabelled images — all turned into `Sample`s."""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError
from .boxes import BOX_COLUMNS, Box, parse_box
from .images import first_visit, folder_identity, is_hidden, is_image_file, iter_image_files
from .samples import Sample

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
CUB_FILES = ("images.txt", "image_class_labels.txt")


@dataclass
class DataSet:
    """Samples from one source. `kind` names the layout that was recognised, so users can check it."""

    samples: list[Sample]
    root: Path
    kind: str
    empty_classes: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)  # a manifest's column names, to name them in errors

    @property
    def has_splits(self) -> bool:
        return any(s.split is not None for s in self.samples)

    @property
    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples if s.split is not None})

    @property
    def classes(self) -> list[str]:
        return sorted({s.label for s in self.samples if s.label is not None})

    def select(self, splits: Sequence[str]) -> list[Sample]:
        wanted = set(splits)
        return [s for s in self.samples if s.split in wanted]

    def require_labels(self) -> None:
        """Commands that learn or score need labels; a manifest without them is named with its columns."""
        if self.kind != "manifest" or any(s.label is not None for s in self.samples):
            return
        what = "has no 'label' column" if "label" not in self.columns else "has an empty 'label' column"
        raise DataError(f"manifest in {self.root} {what}", expected="columns path,label[,split][,group]",
                        found=f"columns {', '.join(self.columns)}",
                        fix="add a 'label' column with each image's class (or rename the column that holds it)")


def expand_user(path: str | Path) -> Path:
    """`~` and `~user` expanded where they can be; a path naming an unknown user stays as written (it then
    fails as a missing file with its own message, instead of Path.expanduser's RuntimeError)."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def normalise_split(name: str) -> str | None:
    return SPLIT_ALIASES.get(name.strip().lower())


def load_data(path: str | Path) -> DataSet:
    """Recognise the layout at `path` and return its samples (labels and splits where the layout has them)."""
    root = expand_user(path)
    if not root.exists():
        raise DataError(f"data path {root} does not exist", expected="a folder or a .csv/.parquet manifest",
                        found="nothing at that path", fix="check the path (relative paths start from the current folder)")
    if not root.is_dir():
        if root.is_file() and root.suffix.lower() in MANIFEST_SUFFIXES:
            return load_manifest(root)
        what, found = (("a file but not a manifest", f"a '{root.suffix}' file") if root.is_file() else
                       ("not a regular file", "a FIFO, socket or device (not opened)"))
        raise DataError(f"{root} is {what}", expected="a folder, or a .csv/.parquet manifest", found=found,
                        fix="pass the folder that holds the images, or a manifest with columns path,label[,split][,group]")
    if all((root / f).is_file() for f in CUB_FILES):
        return load_cub(root)
    return load_folder(root)


def _listing(folder: Path) -> list[Path]:
    """The entries of a folder the dataset needs to see; a folder that cannot be listed stops the run."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list folder {folder}", expected="a readable folder",
                        found=exc.strerror or str(exc), fix="fix its permissions, or point at another folder") from exc


def _subdirs(folder: Path, seen: set[tuple[int, int]]) -> list[Path]:
    """Visible sub-folders met for the first time: a link back into the tree (or to a folder already taken)
    is not a new class or split."""
    return [p for p in _listing(folder) if not is_hidden(p, folder) and p.is_dir() and first_visit(p, seen)]


def _loose_images(folder: Path) -> list[Path]:
    """Image-named entries that are not folders: special files stay in, to be reported, not skipped."""
    return [p for p in _listing(folder) if is_image_file(p) and not p.is_dir()]


def load_folder(root: Path) -> DataSet:
    """Folder-per-class; top-level folders named train/val/test (and aliases) are splits, not classes.

    Every class folder is marked before any is walked, so a link from one class into another (or back to
    the root) adds no images twice and creates no class."""
    seen = {folder_identity(root)}
    subdirs = _subdirs(root, seen)
    split_dirs = {d: normalise_split(d.name) for d in subdirs}
    if subdirs and all(split_dirs.values()):
        class_dirs = {d: _subdirs(d, seen) for d in subdirs}
        samples: list[Sample] = []
        empty: list[str] = []
        for d in subdirs:
            part, part_empty = _class_folders(d, class_dirs[d], split_dirs[d], seen)
            samples += part
            empty += part_empty
        loose = _loose_images(root)
        if loose:
            raise DataError(f"{root} mixes split folders with {len(loose)} loose images such as {loose[0].name}",
                            expected="only train/ val/ test/ folders at the top", found="image files beside them",
                            fix="move the loose images into a split's class folder, or remove them")
        return DataSet(samples, root, "folder-with-splits", sorted(set(empty)))
    samples, empty = _class_folders(root, subdirs, None, seen)
    return DataSet(samples, root, "folder", empty)


def _class_folders(folder: Path, class_dirs: list[Path], split: str | None,
                   seen: set[tuple[int, int]]) -> tuple[list[Sample], list[str]]:
    """Images in each class folder (recursively) get that folder's name; loose images are unlabelled."""
    samples = [Sample(p, None, split) for p in _loose_images(folder)]
    empty = []
    for d in class_dirs:
        files = iter_image_files(d, seen)
        if not files:
            empty.append(d.name)
        samples += [Sample(p, d.name, split) for p in files]
    return samples, empty


def _read_table(path: Path) -> list[dict[str, str]]:
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        from ..errors import MissingExtraError
        raise MissingExtraError("pyarrow", "reading Parquet manifests", "parquet") from exc
    table = pq.read_table(path).to_pylist()
    return [{str(k).strip().lower(): ("" if v is None else str(v).strip()) for k, v in row.items()} for row in table]


def _read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV manifest's rows; text that is not UTF-8 or not CSV is a DataError naming the file (found by fuzzing)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return [{k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                    for row in csv.DictReader(fh)]
    except UnicodeDecodeError as exc:
        raise DataError(f"manifest {path} is not UTF-8 text", expected="a UTF-8 CSV file: path,label[,split][,group]",
                        found=f"byte {exc.object[exc.start]:#04x} at offset {exc.start}",
                        fix="save the manifest as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)") from None
    except csv.Error as exc:
        raise DataError(f"manifest {path} is not a readable CSV file", expected="comma-separated rows",
                        found=str(exc), fix="fix the file (a NUL byte or a broken quote?) or re-export it") from None


def _box_columns(path: Path, columns: Sequence[str]) -> bool:
    """Whether the manifest has crop boxes: all four of x,y,w,h, or none of them."""
    present = [c for c in BOX_COLUMNS if c in columns]
    if present and len(present) < len(BOX_COLUMNS):
        missing_cols = [c for c in BOX_COLUMNS if c not in columns]
        raise DataError(f"manifest {path} has crop-box column(s) {', '.join(present)} but not {', '.join(missing_cols)}",
                        expected="all four of x,y,w,h (pixels: top-left corner, width, height) or none",
                        found=f"columns {', '.join(columns)}", fix=f"add the column(s) {', '.join(missing_cols)}, "
                        f"or remove {', '.join(present)}")
    return bool(present)


def _row_box(row: dict[str, str], has_boxes: bool, source: str) -> Box | None:
    return parse_box([row.get(c, "") for c in BOX_COLUMNS], source) if has_boxes else None


def load_manifest(path: Path) -> DataSet:
    """Columns path,label[,split][,group][,x,y,w,h]; relative paths are relative to the manifest's folder.
    x,y,w,h (pixels) crop each image before preprocessing; a row with them empty uses the whole image."""
    rows = _read_table(path)
    if not rows:
        raise DataError(f"manifest {path} has no rows", expected="a header and one row per image",
                        found="no rows", fix="add rows: path,label[,split][,group]")
    if "path" not in rows[0]:
        raise DataError(f"manifest {path} has no 'path' column", expected="columns path,label[,split][,group]",
                        found=f"columns {', '.join(rows[0])}", fix="rename the column that holds image paths to 'path'")
    has_boxes = _box_columns(path, list(rows[0]))
    samples = []
    for i, row in enumerate(rows, start=2):
        if not row["path"]:
            raise DataError(f"manifest {path} row {i} has an empty path", expected="a file path",
                            found="an empty cell", fix="fill in or delete that row")
        if "\0" in row["path"]:
            raise DataError(f"manifest {path} row {i} has a path with a NUL character", expected="a file path",
                            found=repr(row["path"][:80]), fix="fix or delete that row")
        split_raw = row.get("split", "")
        split = normalise_split(split_raw) if split_raw else None
        if split_raw and split is None:
            raise DataError(f"manifest {path} row {i} has an unknown split '{split_raw}'",
                            expected="train, val or test", found=repr(split_raw), fix="use train, val or test")
        file = expand_user(row["path"])
        samples.append(Sample(file if file.is_absolute() else path.parent / file, row.get("label") or None,
                              split, row.get("group") or None, _row_box(row, has_boxes, f"{path.name} row {i}")))
    return DataSet(samples, path.parent, "manifest", columns=list(rows[0]))


def _read_id_table(path: Path) -> dict[str, str]:
    """CUB list files: 'id value' per line, separated by whitespace or a comma."""
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = re.split(r"\s*,\s*|\s+", line, maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{path} line {n} cannot be parsed", expected="'<id> <value>'", found=repr(line),
                            fix="fix or remove that line")
        out[parts[0]] = parts[1]
    return out


def _cub_boxes(root: Path) -> dict[str, Box | None]:
    """bounding_boxes.txt ('id x y w h', pixels of the original image), when the folder has one."""
    path = root / "bounding_boxes.txt"
    if not path.is_file():
        return {}
    return {image_id: parse_box(re.split(r"\s*,\s*|\s+", value.strip()), f"{path.name}, image id {image_id}")
            for image_id, value in _read_id_table(path).items()}


def load_cub(root: Path) -> DataSet:
    """CUB-200-2011 layout: images.txt, image_class_labels.txt, optional classes.txt, train_test_split.txt and
    bounding_boxes.txt (each image is then cropped to its box; images without a line stay whole)."""
    images = _read_id_table(root / "images.txt")
    labels = _read_id_table(root / "image_class_labels.txt")
    names = _read_id_table(root / "classes.txt") if (root / "classes.txt").is_file() else {}
    names = {k: re.sub(r"^\d+\.", "", v) for k, v in names.items()}
    is_train = _read_id_table(root / "train_test_split.txt") if (root / "train_test_split.txt").is_file() else {}
    boxes = _cub_boxes(root)
    image_dir = root / "images" if (root / "images").is_dir() else root
    samples = []
    for image_id, rel in images.items():
        if image_id not in labels:
            raise DataError(f"image id {image_id} ({rel}) has no label in image_class_labels.txt",
                            expected="one label line per image", found="none", fix="add the missing line")
        split = None if image_id not in is_train else ("train" if is_train[image_id] == "1" else "test")
        samples.append(Sample(image_dir / rel, names.get(labels[image_id], labels[image_id]), split,
                              box=boxes.get(image_id)))
    return DataSet(samples, root, "cub")


def collect_inputs(inputs: Sequence[str | Path]) -> list[Sample]:
    """Files given by name are taken as they are (a bad one becomes an error row later); folders are searched
    recursively for image files, hidden ones skipped."""
    samples = []
    for item in inputs:
        p = expand_user(item)
        if p.is_dir():
            samples += [Sample(f) for f in iter_image_files(p)]
        elif p.suffix.lower() in MANIFEST_SUFFIXES and p.is_file():
            samples += load_manifest(p).samples
        else:
            samples.append(Sample(p))
    if not samples:
        raise ConfigError("no images to work on", expected="image files or folders that contain images",
                          found=", ".join(map(str, inputs)) or "nothing", fix="check the paths you passed")
    return samples
