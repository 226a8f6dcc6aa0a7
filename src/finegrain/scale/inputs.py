"""What a Ray job reads: input listing on the driver (local paths through finegrain's own sources; object-store
URIs such as s3://bucket/photos/ through pyarrow filesystems) and each file's bytes, read inside Ray tasks.

Local paths must be visible to every worker (one machine, or a shared filesystem); URIs are read by each worker
with the credentials it finds (environment, instance role), as pyarrow does.
"""
from __future__ import annotations

import io
import posixpath
import re
from functools import lru_cache
from typing import Any, Sequence

from ..data.boxes import require_no_box
from ..data.images import MAX_FILE_BYTES, is_image_file, open_regular_file
from ..data.sources import MANIFEST_SUFFIXES, collect_inputs, load_data, normalise_split
from ..errors import ConfigError, DataError, ImageError

Row = dict[str, Any]  # path, label, split ("" when unknown): one input of a job
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HIDDEN = re.compile(r"(^|/)(\.[^/]|__MACOSX(/|$))")


def is_uri(text: str) -> bool:
    return bool(_URI.match(str(text)))


def input_rows(inputs: Sequence[str]) -> list[Row]:
    """`predict` inputs: files, folders and manifests, local (as the in-process engine collects them) or URIs."""
    local = [i for i in inputs if not is_uri(i)]
    rows = [_row(s) for s in collect_inputs(local)] if local else []
    for uri in (i for i in inputs if is_uri(i)):
        rows += uri_rows(uri)
    if not rows:
        raise ConfigError("no images to work on", expected="image files or folders that contain images",
                          found=", ".join(inputs), fix="check the paths you passed")
    return rows


def data_rows(data: str, splits: Sequence[str] | None) -> list[Row]:
    """`embed` DATA: a local dataset in any layout `load_data` knows, or a URI folder/manifest; `splits`
    keeps only those splits."""
    rows = uri_rows(data) if is_uri(data) else [_row(s) for s in load_data(data).samples]
    return [r for r in rows if r["split"] in set(splits)] if splits else rows


def _row(sample: Any) -> Row:
    require_no_box(sample, "--engine ray")
    return {"path": str(sample.path), "label": sample.label or "", "split": sample.split or ""}


@lru_cache(maxsize=16)
def filesystem_of(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a URI; one filesystem object per bucket and worker process."""
    from pyarrow import fs
    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for unknown schemes
        raise ConfigError(f"cannot open {uri}", expected="a URI that pyarrow reads: s3://, gs://, hdfs://, abfs://, file://",
                          found=str(exc).splitlines()[0],
                          fix="check the scheme and credentials (finegrain never fetches http(s) URLs)") from exc


def _join(base_uri: str, rel: str) -> str:
    """`rel` under the folder URI `base_uri` (URIs and absolute paths pass unchanged)."""
    if is_uri(rel) or rel.startswith("/"):
        return rel
    return posixpath.join(base_uri.rstrip("/"), rel)


def uri_rows(uri: str) -> list[Row]:
    """A URI folder (every image file under it, hidden ones skipped, sorted), a URI manifest, or one file."""
    from pyarrow import fs

    filesystem, path = filesystem_of(uri)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise DataError(f"{uri} does not exist", expected="a folder, manifest or image file",
                        found="nothing at that URI", fix="check the URI and the credentials this machine uses")
    if info.type == fs.FileType.Directory:
        files = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
        keys = sorted(f.path[len(path):].lstrip("/") for f in files if f.type == fs.FileType.File)
        return [{"path": _join(uri, k), "label": "", "split": ""}
                for k in keys if is_image_file(k) and not _HIDDEN.search(k)]
    if posixpath.splitext(path)[1].lower() in MANIFEST_SUFFIXES:
        return _manifest_rows(uri, filesystem, path)
    return [{"path": uri, "label": "", "split": ""}]


def _manifest_rows(uri: str, filesystem: Any, path: str) -> list[Row]:
    """Columns path,label[,split] of a CSV or Parquet manifest in an object store; relative paths are relative
    to the manifest's folder, as for local manifests."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    with filesystem.open_input_file(path) as fh:
        data = fh.read()
    table = pq.read_table(io.BytesIO(data)) if not path.lower().endswith(".csv") else \
        pcsv.read_csv(io.BytesIO(data), convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
    columns = {c.strip().lower(): c for c in table.column_names}
    if "path" not in columns:
        raise DataError(f"manifest {uri} has no 'path' column", expected="columns path,label[,split]",
                        found=f"columns {', '.join(table.column_names)}", fix="name the column of image paths 'path'")
    base = posixpath.dirname(uri)

    def column(name: str) -> list[Any]:
        return table.column(columns[name]).to_pylist() if name in columns else [None] * table.num_rows

    return [{"path": _join(base, str(p).strip()), "label": str(lab or "").strip(),
             "split": normalise_split(str(sp)) or "" if sp else ""}
            for p, lab, sp in zip(column("path"), column("label"), column("split")) if p]


def read_file_bytes(path: str) -> bytes:
    """The bytes of one input, with the checks of the in-process engine (regular file, not empty, at most
    MAX_FILE_BYTES); every failure is an ImageError whose reason becomes the row's error."""
    if is_uri(path):
        return _read_uri(path)
    with open_regular_file(path) as fp:
        try:
            return fp.read()
        except OSError as exc:
            raise ImageError(path, f"read error: {exc.strerror or exc}") from exc


def _read_uri(uri: str) -> bytes:
    try:
        filesystem, path = filesystem_of(uri)
        with filesystem.open_input_file(path) as fh:
            if fh.size() > MAX_FILE_BYTES:
                raise ImageError(uri, f"file is {fh.size():,} bytes, over the limit of {MAX_FILE_BYTES:,} for one image")
            data = fh.read()
    except (OSError, ConfigError) as exc:
        raise ImageError(uri, f"cannot read: {str(exc).splitlines()[0]}") from exc
    if not data:
        raise ImageError(uri, "empty file (0 bytes)")
    return data
