"""`finegrain check` as a function: recognise the data, hash every file, run the health checks on them."""
from __future__ import annotations

from pathlib import Path

from ..errors import ImageError
from .health import Finding, check_samples
from .images import file_sha256
from .sources import DataSet, load_data


def check_data(data: str | Path | DataSet) -> tuple[DataSet, list[Finding]]:
    """The recognised data set and its findings (duplicates compared by file content, never by name).

    >>> import finegrain
    >>> ds, findings = finegrain.check(finegrain.SAMPLE_DATA)
    >>> ds.kind, len(ds.classes), [f.code for f in findings if f.level == "error"]
    ('folder-with-splits', 10, [])
    """
    ds = data if isinstance(data, DataSet) else load_data(data)
    hashes = {}
    for s in ds.samples:
        try:
            hashes[s.path] = file_sha256(s.path)
        except ImageError:  # unreadable files are the image loader's to report; check only compares contents
            continue
    return ds, check_samples(ds.samples, content_hashes=hashes, empty_classes=ds.empty_classes)
