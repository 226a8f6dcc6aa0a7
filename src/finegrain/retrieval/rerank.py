"""Exact re-scoring of a compressed index's shortlist from float16 copies of the vectors kept on disk.

PQ codes keep 64 bytes per image in memory but lose the order of close neighbours (Recall@10 0.40 of exact at a
million clustered vectors, benchmarks/retrieval.py); re-scoring faiss's `rerank × k` best from the vectors
themselves restores it. The copies live in `vectors.npy` (float16, one row per faiss row, numpy's own format:
no pickle), memory-mapped read-only, so RAM per image stays the code size and only the shortlisted rows' pages
are read.
"""
from __future__ import annotations

import hashlib
import mmap
from pathlib import Path

import numpy as np

from ..errors import DataError

VECTORS_FILE = "vectors.npy"
FINGERPRINT_ROWS = 1024  # rows hashed at save and checked at load: cheap on a million rows, catches a swapped,
# truncated or rewritten file (not a flipped byte in rows it does not sample)
COPY_ROWS = 65_536  # rows copied at a time when writing, so a save never holds the whole file in memory


class HalfVectors:
    """The float16 vectors of an index's rows, in faiss order: rows of a memory-mapped file (`base`, selected by
    `base_rows` after a compaction) followed by rows added since it was loaded (`extra`, in memory until saved)."""

    def __init__(self, dim: int, base: np.ndarray | None = None) -> None:
        self.dim = dim
        self.base = base
        self.base_rows: np.ndarray | None = None  # None: every base row, in order (no index array in RAM)
        self.extra = np.zeros((0, dim), dtype=np.float16)

    def __len__(self) -> int:
        return self._n_base + len(self.extra)

    @property
    def _n_base(self) -> int:
        if self.base is None:
            return 0
        return len(self.base) if self.base_rows is None else len(self.base_rows)

    def append(self, V: np.ndarray) -> None:
        """Add rows (float32 vectors in the index's space) after the existing ones."""
        self.extra = np.concatenate([self.extra, np.asarray(V, dtype=np.float16)])

    def select(self, keep: np.ndarray) -> None:
        """Keep only these rows (ascending positions), renumbered in order, as a compaction does to faiss's rows."""
        nb = self._n_base
        in_base, in_extra = keep[keep < nb], keep[keep >= nb] - nb
        if self.base is not None:
            self.base_rows = in_base if self.base_rows is None else self.base_rows[in_base]
        self.extra = self.extra[in_extra]

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The float32 vectors of these rows (any order); from the file only the rows asked for are read."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        nb = self._n_base
        from_base = ids < nb
        if from_base.any():
            wanted = ids[from_base] if self.base_rows is None else self.base_rows[ids[from_base]]
            out[from_base] = self.base[wanted]
        out[~from_base] = self.extra[ids[~from_base] - nb]
        return out

    def write(self, path: Path) -> str:
        """Write every row to PATH (numpy format, float16) in chunks; returns the file's fingerprint."""
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(self), self.dim))
        for start in range(0, len(self), COPY_ROWS):
            out[start:start + COPY_ROWS] = self.rows(np.arange(start, min(start + COPY_ROWS, len(self))))
        out.flush()
        fp = fingerprint(out)
        del out
        return fp


def fingerprint(vectors: np.ndarray) -> str:
    """sha256 of the shape and of up to FINGERPRINT_ROWS evenly spaced rows (first and last included): reading
    the whole file at every load would page a million-row file into memory."""
    h = hashlib.sha256(f"{vectors.shape}".encode())
    if len(vectors):
        picks = np.unique(np.linspace(0, len(vectors) - 1, min(len(vectors), FINGERPRINT_ROWS)).astype(np.int64))
        h.update(np.ascontiguousarray(vectors[picks], dtype=np.float16).tobytes())
    return h.hexdigest()


def open_vectors(path: Path, n_rows: int, dim: int, expected_fingerprint: str) -> HalfVectors:
    """Memory-map an index's float16 vectors read-only, refusing a missing, truncated, foreign or altered file
    (re-scoring from wrong vectors would return wrong neighbours without any sign of it)."""
    fix = ("restore the index folder from a backup, or rebuild it with `finegrain index DATA -o INDEX --codes pq "
           "--rerank N`")
    if not path.is_file():
        raise DataError(f"index file {path} is missing", expected="the float16 vectors this index re-scores its "
                        "shortlist with (it was built with --rerank)", found="no such file", fix=fix)
    try:
        base = map_npy(path)
    except (ValueError, OSError, EOFError, TypeError) as exc:
        raise DataError(f"index file {path} cannot be read", expected=f"a numpy float16 array of {n_rows}×{dim}",
                        found=f"{type(exc).__name__}: {str(exc)[:160]}", fix=fix) from None
    if base.dtype != np.float16 or base.shape != (n_rows, dim):
        raise DataError(f"index file {path} does not match the index", expected=f"float16 {n_rows}×{dim} (one row "
                        f"per row of rows.csv)", found=f"{base.dtype} {'×'.join(map(str, base.shape))}", fix=fix)
    if fingerprint(base) != expected_fingerprint:
        raise DataError(f"index file {path} was changed after the index was saved", expected="the vectors whose "
                        "fingerprint index.json records", found="other contents", fix=fix)
    return HalfVectors(dim, base)


def map_npy(path: Path) -> np.ndarray:
    """A read-only array over a .npy file's bytes, the mapping told that access is random: without it, each page
    fault reads ahead ~128 KB, and a few thousand queries pull the whole file into memory where each needed a
    few hundred rows."""
    with path.open("rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f"npy format version {version}")
        shape, fortran_order, dtype = read_header[version](fh)
        if fortran_order:
            raise ValueError("a Fortran-ordered array")
        offset = fh.tell()
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_RANDOM)
    return np.ndarray(shape, dtype, buffer=mapped, offset=offset)  # TypeError when the file is truncated


def rescore(vectors: HalfVectors, V: np.ndarray, I: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(1 − cosine, rows) of the k best of each query's shortlist I (−1 pads) by the exact inner product with
    the stored vectors, the distance an exact index gives (up to float16 rounding); ties go to the lower row."""
    D_out = np.full((len(V), k), np.inf, dtype=np.float32)
    I_out = np.full((len(V), k), -1, dtype=np.int64)
    for q, (v, shortlist) in enumerate(zip(V, I)):
        ids = np.sort(shortlist[shortlist >= 0])  # ascending offsets: one forward pass over the file
        S = vectors.rows(ids) @ np.asarray(v, dtype=np.float32)
        best = np.lexsort((ids, -S))[:k]
        D_out[q, :len(best)], I_out[q, :len(best)] = 1.0 - S[best], ids[best]
    return D_out, I_out


__all__ = ["HalfVectors", "VECTORS_FILE", "fingerprint", "open_vectors", "rescore"]
