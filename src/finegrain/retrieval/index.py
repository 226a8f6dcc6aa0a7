"""A similar-image index over cached embeddings, backed by faiss, saved as a folder with no pickle in it.

Chosen by measurement (`benchmarks/retrieval.py`): faiss and usearch both build and search HNSW graphs in well
under a millisecond per query; faiss alone also has product quantisation (PQ, IVF-PQ), which the ≤ 64 bytes per
image target needs, and scalar (float16) and binary codes, so one library covers every `--codes` choice.

Layout of an index folder (written to a staging folder, then swapped in atomically):

    index.json            what embedded it (backbone id + weights/preprocessing key), transform, codes, sizes
    rows.csv              path,label,split,sha256,live — one row per vector, in faiss order
    index.faiss           faiss's own serialisation (no pickle)
    transform.safetensors the transform's arrays (gallery mean, whitening projection), when it has any
    vectors.npy           with `rerank` (PQ codes only): every row's vector as float16, memory-mapped at search
                          time to re-score faiss's shortlist exactly (retrieval/rerank.py)

Removed files are marked `live=0` and filtered out of every answer; once a tenth of the rows are dead the
index is compacted: faiss removes them, every live row keeping its code as it was (PQ and IVF codes are not
re-quantised), and `vectors.npy` loses the same rows at the next save.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..embed import PATH_BYTES, Embeddings
from ..errors import ConfigError, DataError, FinegrainError
from .rerank import VECTORS_FILE, HalfVectors, open_vectors, rescore
from .settings import APPROXIMATE_ABOVE, CODES, DUPLICATE_THRESHOLDS, TTA
from .transform import Transform, fit_transform

INDEX_FORMAT = "finegrain-index/1"
HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 80, 64  # for graphs asked for with `factory`, e.g. 'HNSW32,Flat'
PQ_MAX_BYTES = 64
IVF_NPROBE = 16
COMPACT_DEAD_FRACTION = 0.1


def _faiss():
    import logging
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its "Loading faiss with AVX2 support" lines
    try:
        import faiss
    except ImportError as exc:
        raise FinegrainError("similar-image search needs faiss, which is not installed", expected="faiss importable",
                             found=f"ImportError: {exc}", fix="pip install faiss-cpu (finegrain depends on it: "
                                                            "`pip install -e .` installs it)") from exc
    from ..threads import thread_budget
    faiss.omp_set_num_threads(thread_budget())
    return faiss


@dataclass(frozen=True)
class Row:
    path: str
    label: str | None
    split: str | None
    sha256: str


@dataclass(frozen=True)
class Neighbour:
    """One answer: `distance` is 1 − cosine in the index's space (fraction of differing bits for binary codes)."""

    path: str
    label: str | None
    distance: float
    sha256: str


def pq_shape(dim: int, n_train: int) -> tuple[int, int]:
    """(sub-quantisers, bits each): as many one-byte codes as fit in PQ_MAX_BYTES and divide `dim`; fewer bits
    when the gallery is too small to train 256 centroids per sub-space (at least 4 images per centroid)."""
    m = max(d for d in range(1, PQ_MAX_BYTES + 1) if dim % d == 0)
    bits = int(min(8, max(1, math.floor(math.log2(max(n_train / 4, 2))))))
    return m, bits


def factory_string(codes: str, approximate: bool, dim: int, n: int) -> str:
    """The faiss index_factory description of the index these options give. Approximate search is an inverted
    file (IVF, √n lists, 16 probed): at a million vectors it kept Recall@10 ≥ 0.999 of exact at 2 ms per query,
    where an HNSW graph (M=32) levelled off at 0.90 whatever its search depth (benchmarks/retrieval.py)."""
    if codes == "binary":
        return "BFlat"
    nlist = min(n, int(2 ** round(math.log2(max(math.sqrt(n), 16)))))
    if codes == "pq":
        m, bits = pq_shape(dim, n)
        return f"IVF{nlist},PQ{m}x{bits}" if approximate else f"PQ{m}x{bits}"
    base = "SQfp16" if codes == "float16" else "Flat"
    return f"IVF{nlist},{base}" if approximate else base


class SimilarityIndex:
    """Vectors of a collection in a faiss index, with the rows (path, label, sha) and what embedded them."""

    def __init__(self, meta: dict[str, Any], rows: list[Row], live: np.ndarray, transform: Transform,
                 index: Any, binary_mean: np.ndarray | None = None, vectors: HalfVectors | None = None) -> None:
        self.meta, self.rows, self.live, self.transform, self.index = meta, rows, live, transform, index
        self.binary_mean = binary_mean
        self.vectors = vectors  # float16 copies re-scoring the shortlist (`rerank`), else None

    # --- building ----------------------------------------------------------------------------------------
    @classmethod
    def build(cls, emb: Embeddings, *, codes: str = "float32", approximate: bool | None = None,
              transform: str = "auto", dim: int | None = None, backbone_source: str | None = None,
              extra_meta: dict[str, Any] | None = None, factory: str | None = None,
              rerank: int | None = None) -> "SimilarityIndex":
        """Index every embedded sample. `approximate` None: exact up to APPROXIMATE_ABOVE images, then an
        inverted file (IVF; binary codes are always scanned exactly). The transform is fitted here, on this gallery, and frozen for later additions.
        `factory` (a faiss index_factory string, e.g. 'IVF1024,Flat') overrides the index these options give.
        `rerank` N (PQ codes only): keep float16 copies of the vectors and re-score faiss's N × k best exactly."""
        if codes not in CODES:
            raise ConfigError(f"unknown codes '{codes}'", expected=", ".join(CODES), found=codes,
                              fix="e.g. --codes pq (64 bytes per image)")
        check_rerank(rerank, codes)
        if not len(emb.samples):
            raise DataError("nothing to index", expected="at least one readable image", found="none",
                            fix="check the data path (and --split)")
        faiss = _faiss()
        t0 = time.perf_counter()
        tf = fit_transform(transform, emb.X, emb.labels, dim)
        V = tf.apply(emb.X)
        n, d = V.shape
        approx = n > APPROXIMATE_ABOVE if approximate is None else approximate
        factory = factory or factory_string(codes, approx, d, n)
        binary_mean = V.mean(axis=0).astype(np.float32) if codes == "binary" else None
        index = _new_index(faiss, factory, d, V)
        meta = {"format": INDEX_FORMAT, "backbone": emb.backbone_id, "cache_key": emb.cache_key,
                "preprocess": emb.preprocess, "backbone_source": backbone_source, "transform": tf.kind,
                "dim": d, "embed_dim": int(emb.X.shape[1]), "codes": codes, "factory": factory,
                "approximate": approx, "ef_search": HNSW_EF_SEARCH, "nprobe": IVF_NPROBE, "tta": _tta_of(emb),
                "rerank": rerank, **(extra_meta or {})}
        out = cls(meta, [], np.zeros(0, dtype=bool), tf, index, binary_mean, HalfVectors(d) if rerank else None)
        out._append(V, emb)
        out.meta["build_seconds"] = round(time.perf_counter() - t0, 3)
        return out

    def _encode(self, V: np.ndarray) -> np.ndarray:
        return np.packbits(V > self.binary_mean, axis=1) if self.meta["codes"] == "binary" else np.ascontiguousarray(V)

    def _append(self, V: np.ndarray, emb: Embeddings) -> None:
        self.index.add(self._encode(V))
        if self.vectors is not None:
            self.vectors.append(V)
        self.rows += [Row(str(s.path), s.label, s.split, sha) for s, sha in zip(emb.samples, emb.shas)]
        self.live = np.concatenate([self.live, np.ones(len(V), dtype=bool)])

    @property
    def tta(self) -> str:
        """The test-time augmentation its images were embedded with (`settings.TTA`); queries get the same."""
        return self.meta.get("tta", "none")

    def check_embeddings(self, emb: Embeddings, what: str = "queries") -> None:
        """Refuse embeddings from any other network, preprocessing or test-time views than the index's."""
        if tuple(emb.views) != TTA[self.tta]:
            raise DataError(f"{what} were embedded with other test-time views than this index",
                            expected=f"views {list(TTA[self.tta])} (the index's --tta {self.tta})",
                            found=f"views {list(emb.views)}",
                            fix="embed them through finegrain.retrieval (search, query_embeddings), which uses the "
                                "index's views, or rebuild the index with the --tta they were embedded with")
        if emb.cache_key != self.meta["cache_key"]:
            raise DataError(f"{what} were embedded with another backbone than this index",
                            expected=f"embeddings of '{self.meta['backbone']}' (key {self.meta['cache_key']})",
                            found=f"embeddings of '{emb.backbone_id}' (key {emb.cache_key})",
                            fix=f"embed them with the index's backbone (leave out --backbone/--model, or pass "
                                f"--backbone {self.meta['backbone_source'] or self.meta['backbone']}), or build "
                                f"another index with that backbone")

    def add(self, emb: Embeddings) -> int:
        """Append the samples not already indexed (same path and content); returns how many were added."""
        self.check_embeddings(emb, "the new images")
        have = {(r.path, r.sha256) for r, ok in zip(self.rows, self.live) if ok}
        new = emb.subset([(str(s.path), sha) not in have for s, sha in zip(emb.samples, emb.shas)])
        if new.samples:
            self._append(self.transform.apply(new.X), new)
        return len(new.samples)

    def drop(self, keep: Callable[[Row], bool]) -> int:
        """Mark rows for which `keep` is false as removed; returns how many were removed."""
        gone = np.array([ok and not keep(r) for r, ok in zip(self.rows, self.live)], dtype=bool)
        self.live &= ~gone
        if (~self.live).sum() > COMPACT_DEAD_FRACTION * len(self.live):
            self.compact()
        return int(gone.sum())

    def compact(self) -> None:
        """Take the dead rows out of the faiss index and renumber the rest in order. faiss removes them itself,
        leaving each live row's code untouched (decoding and re-adding would re-quantise PQ codes, and move IVF
        rows between lists); a graph (HNSW), which cannot remove, is rebuilt from its stored vectors."""
        faiss = _faiss()
        keep = np.flatnonzero(self.live)
        if hasattr(self.index, "hnsw"):
            stored = self.index.reconstruct_n(0, self.index.ntotal)[keep]
            self.index = _new_index(faiss, self.meta["factory"], self.meta["dim"], stored)
            if len(stored):
                self.index.add(np.ascontiguousarray(stored))
        else:
            ivf = None if self.meta["codes"] == "binary" else faiss.try_extract_index_ivf(self.index)
            if ivf is not None:
                ivf.set_direct_map_type(faiss.DirectMap.NoMap)  # removal needs it off; `duplicates` remakes it
            self.index.remove_ids(np.flatnonzero(~self.live).astype(np.int64))
            if ivf is not None:
                _renumber_ivf(faiss, ivf, keep)
        if self.vectors is not None:
            self.vectors.select(keep)
        self.rows, self.live = [self.rows[i] for i in keep], np.ones(len(keep), dtype=bool)

    # --- searching ---------------------------------------------------------------------------------------
    @property
    def n_live(self) -> int:
        return int(self.live.sum())

    def _raw_search(self, V: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, row indices) of the k nearest stored rows, dead ones included; -1 pads. With float16
        vectors (`rerank` N), faiss's N × k best are re-scored exactly from them and the k best kept."""
        k = min(k, self.index.ntotal)
        if self.vectors is not None:
            _, I = self._faiss_search(V, min(self.index.ntotal, k * self.meta["rerank"]))
            return rescore(self.vectors, V, I, k)
        return self._faiss_search(V, k)

    def _faiss_search(self, V: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's own (distances, rows) from the stored codes."""
        if self.meta["codes"] == "binary":
            D, I = self.index.search(self._encode(V), k)
            return D.astype(np.float32) / self.index.d, I
        if hasattr(self.index, "hnsw"):
            self.index.hnsw.efSearch = max(self.meta["ef_search"], k)
        elif hasattr(self.index, "nprobe"):
            self.index.nprobe = self.meta["nprobe"]
        S, I = self.index.search(np.ascontiguousarray(V, dtype=np.float32), k)
        return (1.0 - S).astype(np.float32), I

    def search_vectors(self, V: np.ndarray, k: int,
                       accept: Callable[[int, int, float], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live rows to each transformed query vector V (N, d) that `accept(query, row, distance)`
        allows,
        asking faiss for more candidates until each query has k or the index is exhausted. (distances, rows),
        each (N, k'), k' = min(k, live rows); -1 / inf where fewer were found."""
        n_total = self.index.ntotal
        k = min(k, self.n_live)
        Dout = np.full((len(V), k), np.inf, dtype=np.float32)
        Iout = np.full((len(V), k), -1, dtype=np.int64)
        if k == 0 or not len(V):
            return Dout, Iout
        todo = np.arange(len(V))
        want = k + int((~self.live).sum())
        while len(todo):
            want = min(want, n_total)
            D, I = self._raw_search(V[todo], want)
            unfinished = []
            for row, (q, d_row, i_row) in enumerate(zip(todo, D, I)):
                got = [(d, i) for d, i in zip(d_row, i_row)
                       if i >= 0 and self.live[i] and (accept is None or accept(int(q), int(i), float(d)))][:k]
                if len(got) < k and want < n_total:
                    unfinished.append(q)
                    continue
                for j, (d, i) in enumerate(got):
                    Dout[q, j], Iout[q, j] = d, i
            todo, want = np.array(unfinished, dtype=np.int64), want * 4
        return Dout, Iout

    @property
    def duplicate_threshold(self) -> float:
        """The default near-duplicate distance for this index's space (settings.DUPLICATE_THRESHOLDS)."""
        return DUPLICATE_THRESHOLDS[self.meta["transform"]]

    def search(self, emb: Embeddings, k: int = 10, *, same_class_only: bool = False,
               exclude_duplicates: bool = False, duplicate_threshold: float | None = None) -> list[list[Neighbour]]:
        """Neighbours of each embedded query, nearest first.

        `exclude_duplicates` leaves out the query itself and its near-copies (same file content, or closer than
        `duplicate_threshold`, default the index's). `same_class_only` keeps neighbours of the query's class: its
        own label when it has one (labelled data), else the majority label of its k nearest neighbours."""
        self.check_embeddings(emb)
        V = self.transform.apply(emb.X)
        shas = list(emb.shas)
        classes: list[str | None] = [s.label for s in emb.samples]
        if same_class_only and any(c is None for c in classes):
            _, I0 = self.search_vectors(V, k)
            for q, row in enumerate(I0):
                if classes[q] is None:
                    votes = [self.rows[i].label for i in row if i >= 0 and self.rows[i].label is not None]
                    classes[q] = max(set(votes), key=lambda lab: (votes.count(lab), -votes.index(lab))) if votes else None

        def accept(q: int, i: int, d: float) -> bool:
            if exclude_duplicates and (self.rows[i].sha256 == shas[q] or d <= limit):
                return False
            return not same_class_only or self.rows[i].label == classes[q]

        limit = self.duplicate_threshold if duplicate_threshold is None else duplicate_threshold
        D, I = self.search_vectors(V, k, accept if (same_class_only or exclude_duplicates) else None)
        out = []
        for d_row, i_row in zip(D, I):
            hits = [Neighbour(self.rows[i].path, self.rows[i].label, float(d), self.rows[i].sha256)
                    for d, i in zip(d_row, i_row) if i >= 0]
            out.append(hits)
        return out

    @property
    def code_bytes(self) -> int:
        """Bytes of one stored vector's code (graph links, ids and codebooks come on top: `bytes_per_image`)."""
        if hasattr(self.index, "hnsw"):
            return int(_faiss().downcast_index(self.index.storage).code_size)
        return int(self.index.code_size)

    # --- saving and loading ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the folder atomically: a staging folder swapped into place (an interrupted save leaves the
        previous index whole)."""
        from safetensors.numpy import save_file

        from ..io import replace_dir_atomic, staging_dir, write_json
        faiss = _faiss()
        target = Path(directory)
        tmp = staging_dir(target)
        if self.meta["codes"] == "binary":
            faiss.write_index_binary(self.index, str(tmp / "index.faiss"))
        else:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
        arrays = self.transform.arrays()
        if self.binary_mean is not None:
            arrays["binary_mean"] = self.binary_mean
        if arrays:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()},
                      str(tmp / "transform.safetensors"))
        with (tmp / "rows.csv").open("w", newline="", encoding="utf-8", errors=PATH_BYTES) as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "split", "sha256", "live"])
            w.writerows([r.path, r.label or "", r.split or "", r.sha256, int(ok)] for r, ok in zip(self.rows, self.live))
        size = (tmp / "index.faiss").stat().st_size
        self.meta.update(n_rows=len(self.rows), n_live=self.n_live, code_bytes=self.code_bytes, index_bytes=size,
                         bytes_per_image=round(size / max(1, len(self.rows)), 1))
        if self.vectors is not None:
            self.meta["vectors_fingerprint"] = self.vectors.write(tmp / VECTORS_FILE)
            self.meta["vectors_bytes"] = (tmp / VECTORS_FILE).stat().st_size
        write_json(tmp / "index.json", self.meta)
        replace_dir_atomic(tmp, target)
        return target

    @classmethod
    def load(cls, directory: str | Path) -> "SimilarityIndex":
        """Read an index folder, checking every file; a damaged one is a DataError naming the file."""
        from ..data.sources import expand_user
        from ..io import existing_or_backup

        d = existing_or_backup(expand_user(directory))
        meta = _read_meta(d)
        faiss = _faiss()
        rows, live = _read_rows(d / "rows.csv")
        try:
            reader = faiss.read_index_binary if meta["codes"] == "binary" else faiss.read_index
            index = reader(str(d / "index.faiss"))
        except RuntimeError as exc:
            raise _bad(d / "index.faiss", "cannot be read", "a faiss index written by `finegrain index`",
                       str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "a read error") from None
        arrays = _read_arrays(d / "transform.safetensors") if (d / "transform.safetensors").exists() else {}
        if index.ntotal != len(rows):
            raise _bad(d / "rows.csv", "does not match index.faiss", f"{index.ntotal} rows", f"{len(rows)} rows")
        if meta["transform"] == "whiten" and ("mean" not in arrays or "projection" not in arrays):
            raise _bad(d / "transform.safetensors", "lacks the whitening arrays", "mean and projection",
                       ", ".join(arrays) or "no file")
        if meta["codes"] == "binary" and "binary_mean" not in arrays:
            raise _bad(d / "transform.safetensors", "lacks the binary codes' mean", "binary_mean",
                       ", ".join(arrays) or "no file")
        tf = Transform(meta["transform"], arrays.get("mean"), arrays.get("projection"))
        if tf.projection is not None and (tf.projection.shape != (meta["embed_dim"], meta["dim"])
                                          or tf.mean is None or tf.mean.shape != (meta["embed_dim"],)):
            raise _bad(d / "transform.safetensors", "has arrays of the wrong shape",
                       f"projection {meta['embed_dim']}×{meta['dim']}", f"{tf.projection.shape}")
        vectors = open_vectors(d / VECTORS_FILE, len(rows), meta["dim"], meta["vectors_fingerprint"]) \
            if meta.get("rerank") else None
        return cls(meta, rows, live, tf, index, arrays.get("binary_mean"), vectors)

    # --- near-duplicates ---------------------------------------------------------------------------------
    def duplicates(self, threshold: float | None = None, k: int = 10,
                   batch: int = 4096) -> list[tuple[int, int, float]]:
        """Pairs (i, j, distance), i < j, of live rows closer than `threshold` (default: the index's; each row's k
        nearest neighbours
        are examined, so a cluster of more than k copies reports only its closest pairs), closest first."""
        threshold = self.duplicate_threshold if threshold is None else threshold
        if self.vectors is None and hasattr(self.index, "nprobe"):  # IVF reconstructs rows only via a direct map
            self.index.make_direct_map()
        stored = self._stored_vectors
        pairs: dict[tuple[int, int], float] = {}
        live = np.flatnonzero(self.live)
        for start in range(0, len(live), batch):
            rows = live[start:start + batch]
            D, I = self.search_vectors(stored(rows), k + 1)
            for i, d_row, i_row in zip(rows, D, I):
                for d, j in zip(d_row, i_row):
                    if j >= 0 and j != i and d <= threshold:
                        key = (int(min(i, j)), int(max(i, j)))
                        pairs[key] = min(float(d), pairs.get(key, np.inf))
        return sorted(((i, j, d) for (i, j), d in pairs.items()), key=lambda t: (t[2], t[0], t[1]))

    def _stored_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The index's own (possibly compressed) vectors of these rows, as float queries; the float16 copies when
        it keeps them (closer to the images than decoded PQ codes)."""
        if self.vectors is not None:
            return self.vectors.rows(rows)
        if self.meta["codes"] == "binary":
            codes = np.stack([self.index.reconstruct(int(i)) for i in rows])
            bits = np.unpackbits(codes, axis=1)[:, :self.meta["dim"]].astype(np.float32)
            return np.where(bits > 0, 1.0, -1.0).astype(np.float32) + self.binary_mean  # re-encodes to the same bits
        return np.stack([self.index.reconstruct(int(i)) for i in rows]).astype(np.float32)


def _renumber_ivf(faiss: Any, ivf: Any, keep: np.ndarray) -> None:
    """After faiss removed rows from an inverted file, its lists still hold the old row numbers: map each to
    its position among the kept rows (`keep`, ascending), so row numbers stay positions in rows.csv."""
    lists = ivf.invlists
    for list_no in range(ivf.nlist):
        n = lists.list_size(list_no)
        if n:
            ids = np.searchsorted(keep, faiss.rev_swig_ptr(lists.get_ids(list_no), n)).astype(np.int64)
            codes = faiss.rev_swig_ptr(lists.get_codes(list_no), n * lists.code_size).copy()
            lists.update_entries(list_no, 0, n, faiss.swig_ptr(ids), faiss.swig_ptr(codes))


def check_rerank(rerank: int | None, codes: str) -> None:
    """Re-scoring pays only where the codes lose the order of neighbours: PQ (float codes are exact already)."""
    if rerank is None:
        return
    if isinstance(rerank, bool) or not isinstance(rerank, int) or rerank < 1:
        raise ConfigError(f"--rerank {rerank} is not a positive whole number", expected="N ≥ 1 (candidates per "
                          "neighbour wanted; 10 re-scores 100 for k=10)", found=str(rerank), fix="e.g. --rerank 10")
    if codes != "pq":
        raise ConfigError("--rerank re-scores PQ codes only", expected="--codes pq with --rerank",
                          found=f"--codes {codes}", fix="add --codes pq, or drop --rerank (these codes are exact)")


def _tta_of(emb: Embeddings) -> str:
    """The `--tta` name of the views embeddings were averaged over (an index stores the name)."""
    for name, views in TTA.items():
        if views == tuple(emb.views):
            return name
    raise ConfigError("these embeddings average test-time views no --tta choice names", expected="views of one of: "
                      + ", ".join(f"{k} {list(v)}" for k, v in TTA.items()), found=str(list(emb.views)),
                      fix="embed with finegrain.embed.embed_with_views and the views of a --tta choice")


def _bad(path: Path, what: str, expected: str, found: str) -> DataError:
    return DataError(f"index file {path} {what}", expected=expected, found=found,
                     fix="rebuild the index with `finegrain index DATA -o INDEX`")


def _read_meta(d: Path) -> dict[str, Any]:
    path = d / "index.json"
    if not path.is_file():
        raise DataError(f"{d} is not a finegrain index", expected="index.json, rows.csv and index.faiss inside",
                        found="no index.json" if d.is_dir() else "no such folder",
                        fix="pass the folder written by `finegrain index DATA -o INDEX`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise _bad(path, "is not valid JSON", "a JSON object", type(exc).__name__) from None
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        raise _bad(path, "is in an unknown format", INDEX_FORMAT,
                   str(meta.get("format") if isinstance(meta, dict) else type(meta).__name__))
    needed = {"backbone": str, "cache_key": str, "transform": str, "codes": str, "factory": str, "dim": int,
              "embed_dim": int, "approximate": bool, "ef_search": int, "nprobe": int}
    wrong = [k for k, t in needed.items() if not isinstance(meta.get(k), t)]
    rerank = meta.get("rerank")  # absent in indexes written before re-scoring existed
    if rerank is not None and (isinstance(rerank, bool) or not isinstance(rerank, int) or rerank < 1
                               or meta.get("codes") != "pq" or not isinstance(meta.get("vectors_fingerprint"), str)):
        wrong.append("rerank/vectors_fingerprint")
    if wrong or meta["codes"] not in CODES or meta["transform"] not in ("l2", "sqrt", "whiten") \
            or meta.get("tta", "none") not in TTA:
        raise _bad(path, "lacks required keys or has wrong values",
                   f"{', '.join(needed)} with their types; codes in {', '.join(CODES)}; tta in {', '.join(TTA)}",
                   f"bad or missing: {', '.join(wrong) or 'codes/transform/tta'}")
    return meta


def _read_rows(path: Path) -> tuple[list[Row], np.ndarray]:
    try:
        with path.open(newline="", encoding="utf-8", errors=PATH_BYTES) as fh:
            table = list(csv.DictReader(fh))
    except OSError as exc:
        raise _bad(path, "cannot be read", "rows.csv written by `finegrain index`", type(exc).__name__) from None
    if table and not {"path", "label", "split", "sha256", "live"} <= set(table[0]):
        raise _bad(path, "lacks columns", "path,label,split,sha256,live", ",".join(table[0]))
    rows = [Row(r["path"], r["label"] or None, r["split"] or None, r["sha256"]) for r in table]
    return rows, np.array([r["live"] == "1" for r in table], dtype=bool)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _bad(path, "cannot be read", "a safetensors file", type(exc).__name__) from None


def _new_index(faiss: Any, factory: str, dim: int, V: np.ndarray) -> Any:
    """An empty faiss index from its factory string, with finegrain's build settings, trained (IVF lists, PQ
    codebooks) on V (at most 100,000 of its rows, drawn with seed 0) when it needs training."""
    if factory.startswith("B"):
        return faiss.index_binary_factory(8 * math.ceil(dim / 8), factory)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if hasattr(index, "hnsw"):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if hasattr(index, "do_polysemous_training"):  # IndexPQ's default: minutes of annealing we never use
        index.do_polysemous_training = False
    # k-means on small galleries without faiss's "please provide at least N points" warnings on stderr (the
    # codes are then coarser, which the benchmark's recall column shows)
    for part in (index, getattr(index, "pq", None)):
        if getattr(part, "cp", None) is not None:
            part.cp.min_points_per_centroid = 1
    if not index.is_trained:
        n = len(V)
        index.train(np.ascontiguousarray(V[np.random.default_rng(0).choice(n, 100_000, replace=False)]
                                         if n > 100_000 else V))
    return index


__all__ = ["SimilarityIndex", "Neighbour", "Row", "CODES", "APPROXIMATE_ABOVE",
           "factory_string", "pq_shape", "check_rerank", "INDEX_FORMAT"]
