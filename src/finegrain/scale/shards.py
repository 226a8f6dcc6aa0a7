"""The output folder of a Ray job: Parquet shards plus one job file, on a local path or an object-store URI.

A rerun resumes: inputs already in a shard (same path, same content hash) are skipped, so a killed job loses at most
the shards it was writing. A shard that cannot be read (cut off mid-write) is removed before the rerun, and a
rerun with another model or backbone into the same folder is refused rather than mixing answers.
"""
from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .inputs import filesystem_of, is_uri

log = logging.getLogger("finegrain")

JOB_FILE = "_finegrain_job.json"
SHARD_SUFFIX = ".parquet"


def output_location(out: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of the output folder, created when missing."""
    from pyarrow import fs

    if is_uri(out):
        filesystem, path = filesystem_of(out)
    else:
        filesystem, path = fs.LocalFileSystem(), str(Path(out).expanduser().resolve())
    if filesystem.get_file_info(path).type == fs.FileType.File:
        raise ConfigError(f"output {out} is a file", expected="a folder for Parquet shards (new or from an "
                          "earlier run of the same job)", found="a file", fix="pass a folder path with -o/--output")
    filesystem.create_dir(path, recursive=True)
    return filesystem, path


def claim_output(out: str, job: dict[str, Any]) -> None:
    """Write the job description into `out`, or check that the one already there describes the same job."""
    filesystem, path = output_location(out)
    job_path = posixpath.join(path, JOB_FILE)
    if filesystem.get_file_info(job_path).type.name == "File":
        with filesystem.open_input_stream(job_path) as fh:
            previous = json.loads(fh.read().decode("utf-8"))
        changed = sorted(k for k in job if previous.get(k) != job[k])
        if changed:
            raise ConfigError(f"output folder {out} holds shards of another job",
                              expected=", ".join(f"{k}={job[k]!r}" for k in changed),
                              found=", ".join(f"{k}={previous.get(k)!r}" for k in changed),
                              fix="write to a new folder, or rerun with the options of the first run to resume it")
        return
    with filesystem.open_output_stream(job_path) as fh:
        fh.write((json.dumps(job, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def shard_paths(out: str) -> list[str]:
    """The Parquet shards in `out`, sorted (hidden and underscore files are not shards)."""
    from pyarrow import fs

    filesystem, path = output_location(out)
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=False))
    return sorted(i.path for i in infos if i.type == fs.FileType.File and i.base_name.endswith(SHARD_SUFFIX)
                  and not i.base_name.startswith(("_", ".")))


def drop_incomplete_shards(out: str) -> list[str]:
    """Remove shards that cannot be read (a job killed while writing them): their inputs are redone."""
    import pyarrow.parquet as pq

    filesystem, _ = output_location(out)
    dropped = []
    for shard in shard_paths(out):
        try:
            pq.read_metadata(shard, filesystem=filesystem)
        except Exception as exc:  # noqa: BLE001 - any unreadable footer means the shard was never finished
            log.warning("removing incomplete shard %s (%s); its inputs will be redone", shard, exc)
            filesystem.delete_file(shard)
            dropped.append(shard)
    return dropped


def read_shards(out: str, columns: list[str] | None = None):
    """All rows written so far as one pyarrow Table (None when there is no shard yet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    filesystem, _ = output_location(out)
    tables = [pq.read_table(s, columns=columns, filesystem=filesystem) for s in shard_paths(out)]
    return pa.concat_tables(tables, promote_options="default") if tables else None


def done_inputs(out: str) -> frozenset[tuple[str, str]]:
    """(path, content hash) of every input already answered in `out` (hash "" when it could not be read): a
    rerun skips these. Keyed by content so a file changed since is redone, and by path so a copy of an image
    under another name still gets its own row."""
    table = read_shards(out, ["path", "sha256"])
    if table is None:
        return frozenset()
    return frozenset(zip(table.column("path").to_pylist(), (h or "" for h in table.column("sha256").to_pylist())))
