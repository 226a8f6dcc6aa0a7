"""Library calls behind `finegrain index`, `search`, `duplicates` and `eval-retrieval`: each embeds through the
content-addressed cache (a rerun after an interruption only computes what is missing) and works on a
`SimilarityIndex` folder."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..backbones import DEFAULT_BACKBONE
from ..data.images import DEFAULT_MAX_PIXELS
from ..embed import Embeddings
from ..errors import ConfigError, DataError
from ..progress import phase
from .index import Neighbour, SimilarityIndex, check_rerank
from .metrics import retrieval_metrics
from .settings import TTA


def resolve_backbone(backbone: str | None = None, model: str | Path | None = None) -> tuple[Any, str | None]:
    """(backbone, where it comes from): `model` (a `finegrain fit`/`finetune` folder: its backbone, tuned
    weights included), else `backbone` (an id or a fine-tuned model folder); the source is what an index
    records so later queries can load the same network."""
    from ..backbones import get_backbone

    if backbone is not None and model is not None:
        raise ConfigError("both --backbone and --model given", expected="one of them", found=f"--backbone "
                          f"{backbone} --model {model}", fix="keep --model (its backbone) or --backbone")
    if model is not None:
        from ..pipeline import Classifier
        return Classifier.load(model).backbone(), str(Path(model).expanduser().resolve())
    if backbone is None:
        return None, None
    source = str(Path(backbone).expanduser().resolve()) if Path(backbone).expanduser().is_dir() else backbone
    return get_backbone(backbone), source


def is_ray_embeddings(data: str | Path) -> bool:
    """A folder of Parquet shards written by `finegrain embed --engine ray` (Ray Data)."""
    import json

    from ..scale.shards import JOB_FILE
    job = Path(data) / JOB_FILE
    try:
        return job.is_file() and json.loads(job.read_text(encoding="utf-8")).get("task") == "embed"
    except (ValueError, OSError):
        return False


def load_ray_embeddings(data: str | Path) -> Embeddings:
    """The readable rows of `embed --engine ray` shards as Embeddings (rows with an error become error records),
    so an index over millions of images is built from a cluster's output without re-embedding."""
    import json

    from ..data.samples import Sample
    from ..embed import ErrorRecord
    from ..scale.shards import JOB_FILE, read_shards

    job = json.loads((Path(data) / JOB_FILE).read_text(encoding="utf-8"))
    table = read_shards(str(data), ["path", "sha256", "label", "split", "embedding", "error"])
    if table is None:
        raise DataError(f"no Parquet shards in {data}", expected="the shards of a finished `finegrain embed "
                        "--engine ray` job", found="only its job file", fix="rerun that job to resume it")
    cols = {name: table.column(name).to_pylist() for name in ("path", "sha256", "label", "split", "error")}
    ok = [i for i, e in enumerate(cols["error"]) if not e]
    vectors = table.column("embedding").take(ok).to_pylist() if ok else []
    X = np.asarray(vectors, dtype=np.float32).reshape(len(ok), -1)
    samples = [Sample(Path(cols["path"][i]), cols["label"][i] or None, cols["split"][i] or None) for i in ok]
    errors = [ErrorRecord(cols["path"][i], cols["error"][i]) for i, e in enumerate(cols["error"]) if e]
    return Embeddings(X=X, samples=samples, shas=[cols["sha256"][i] for i in ok], backbone_id=job["backbone"],
                      cache_key=job["cache_key"], preprocess={}, errors=errors)


def embed_data(data: str | Path, backbone: Any, *, splits: Sequence[str] | None = None,
               cache_dir: str | Path | None = None, batch_size: int = 32, workers: int = 2,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = False, tta: str = "none") -> Embeddings:
    """Embeddings of DATA (images, a manifest, a CUB-style folder, a `finegrain embed` folder, or the Parquet
    shards of `finegrain embed --engine ray`), only the given splits when it has splits; `tta` adds test-time
    views (`settings.TTA`), which only images allow: stored embeddings hold the plain crop alone."""
    from ..data.sources import load_data
    from ..embed import embed_with_views, is_embeddings_dir, load_embeddings
    from ..store import EmbeddingCache

    views = tta_views(tta)
    if is_embeddings_dir(data) or is_ray_embeddings(data):
        if views:
            raise ConfigError(f"{data} holds stored embeddings of the plain crop only", expected=f"images to "
                              f"embed with --tta {tta}", found="a `finegrain embed` output", fix="point at the "
                              "images themselves, or index with --tta none")
        emb = load_embeddings(data) if is_embeddings_dir(data) else load_ray_embeddings(data)
        if splits:
            emb = emb.subset([s.split in splits for s in emb.samples])
        return emb
    ds = load_data(data)
    samples = ds.samples
    if splits:
        unknown = [s for s in splits if s not in ds.splits]
        if unknown:
            raise ConfigError(f"{data} has no split {', '.join(unknown)}", expected=f"one of: "
                              f"{', '.join(ds.splits) or '(no splits)'}", found=", ".join(splits),
                              fix="leave out --split, or name a split the data has")
        samples = ds.select(splits)
    with EmbeddingCache(cache_dir) as cache:
        return embed_with_views(samples, backbone, views, cache=cache, batch_size=batch_size, workers=workers,
                                max_pixels=max_pixels, progress=progress)


def tta_views(tta: str) -> tuple[str, ...]:
    """The views a `--tta` value embeds besides the plain crop (`settings.TTA`)."""
    if tta not in TTA:
        raise ConfigError(f"unknown test-time augmentation '{tta}'", expected=", ".join(TTA), found=tta,
                          fix="e.g. --tta flip (each image averaged with its mirror image)")
    return TTA[tta]


def _index_backbone(index: SimilarityIndex) -> Any:
    from ..backbones import get_backbone
    source = index.meta.get("backbone_source") or index.meta["backbone"]
    if source != index.meta["backbone"] and not Path(source).is_dir():
        raise DataError(f"the model folder this index was embedded with is gone: {source}",
                        expected=f"the folder holding '{index.meta['backbone']}'", found="no such folder",
                        fix="pass it with --model or --backbone (if it moved), or rebuild the index")
    return get_backbone(source)


def build_index(data: str | Path, output: str | Path, *, backbone: str | None = None, model: str | Path | None = None,
                splits: Sequence[str] | None = None, codes: str = "float32", approximate: bool | None = None,
                transform: str = "auto", dim: int | None = None, tta: str = "none", rerank: int | None = None,
                cache_dir: str | Path | None = None, **embed_kw: Any) -> SimilarityIndex:
    """Embed DATA and write a new index to OUTPUT (replacing any index there, atomically). `tta` (a key of
    `settings.TTA`) averages each image's embedding with those of its test-time views (e.g. 'flip': its mirror
    image); the index records it, and every query and addition is embedded alike. `rerank` N (with PQ codes)
    keeps the vectors as float16 on disk and re-scores faiss's N × k best exactly."""
    check_rerank(rerank, codes)  # before embedding: a wrong combination should not cost an embedding run
    bb, source = resolve_backbone(backbone, model)
    emb = embed_data(data, bb if bb is not None else DEFAULT_BACKBONE, splits=splits, cache_dir=cache_dir, tta=tta,
                     **embed_kw)
    if bb is not None and emb.cache_key != bb.cache_key:  # DATA was embedded beforehand, with another network
        raise DataError(f"{data} holds embeddings of '{emb.backbone_id}', not of the backbone asked for",
                        expected=f"embeddings of '{bb.id}'", found=f"'{emb.backbone_id}' (key {emb.cache_key})",
                        fix="leave out --backbone/--model to index them as they are, or point at the images")
    source = source or emb.backbone_id
    with phase(f"indexing {len(emb.samples)} images ({codes} codes)"):
        idx = SimilarityIndex.build(emb, codes=codes, approximate=approximate, transform=transform, dim=dim,
                                    backbone_source=source, rerank=rerank,
                                    extra_meta={"sources": [str(data)], "n_unreadable": len(emb.errors)})
    idx.save(output)
    return idx


def update_index(output: str | Path, data: str | Path | None = None, *, drop_missing: bool = False,
                 backbone: str | None = None, model: str | Path | None = None, splits: Sequence[str] | None = None,
                 cache_dir: str | Path | None = None, **embed_kw: Any) -> tuple[SimilarityIndex, int, int]:
    """Append DATA's new images to the index at OUTPUT (embedded with the index's own backbone) and/or drop
    rows whose file is gone; returns (index, added, dropped). A file whose content changed is re-indexed."""
    idx = SimilarityIndex.load(output)
    added = dropped = 0
    if data is not None:
        bb, _ = resolve_backbone(backbone, model)
        emb = embed_data(data, bb if bb is not None else _index_backbone(idx), splits=splits, cache_dir=cache_dir,
                         tta=idx.tta, **embed_kw)
        idx.check_embeddings(emb, "the new images")
        changed = {str(s.path): sha for s, sha in zip(emb.samples, emb.shas)}
        dropped += idx.drop(lambda r: changed.get(r.path, r.sha256) == r.sha256)
        added = idx.add(emb)
        idx.meta["sources"] = [*idx.meta.get("sources", []), str(data)]
    if drop_missing:
        dropped += idx.drop(lambda r: Path(r.path).exists())
    idx.save(output)
    return idx, added, dropped


def query_embeddings(index: SimilarityIndex, inputs: Sequence[str | Path], *, backbone: str | None = None,
                     model: str | Path | None = None, cache_dir: str | Path | None = None,
                     **embed_kw: Any) -> Embeddings:
    """Embed query images with the index's backbone (or the one given, which the index then checks) and its
    test-time views."""
    from ..data.sources import collect_inputs
    from ..embed import embed_with_views
    from ..store import EmbeddingCache

    bb, _ = resolve_backbone(backbone, model)
    samples = collect_inputs(list(inputs))
    with EmbeddingCache(cache_dir) as cache:
        return embed_with_views(samples, bb if bb is not None else _index_backbone(index), tta_views(index.tta),
                                cache=cache, **embed_kw)


def search(index: str | Path | SimilarityIndex, inputs: Sequence[str | Path], *, k: int = 10,
           same_class_only: bool = False, exclude_duplicates: bool = False,
           duplicate_threshold: float | None = None, backbone: str | None = None,
           model: str | Path | None = None, cache_dir: str | Path | None = None,
           **embed_kw: Any) -> tuple[Embeddings, list[list[Neighbour]]]:
    """The k nearest indexed images of each readable input (`finegrain search`); unreadable inputs are in
    the returned embeddings' `errors`."""
    idx = index if isinstance(index, SimilarityIndex) else SimilarityIndex.load(index)
    emb = query_embeddings(idx, inputs, backbone=backbone, model=model, cache_dir=cache_dir, **embed_kw)
    idx.check_embeddings(emb)
    return emb, idx.search(emb, k, same_class_only=same_class_only, exclude_duplicates=exclude_duplicates,
                           duplicate_threshold=duplicate_threshold)


def duplicates(index: str | Path | SimilarityIndex, *, threshold: float | None = None,
               k: int = 10, mislabels_only: bool = False) -> list[dict[str, Any]]:
    """Near-duplicate pairs across the collection, closest first; `labels_disagree` flags pairs whose labels
    differ (a likely mislabel, or a duplicate filed under two classes)."""
    idx = index if isinstance(index, SimilarityIndex) else SimilarityIndex.load(index)
    with phase(f"looking for near-duplicates among {idx.n_live} images"):
        pairs = idx.duplicates(threshold, k)
    out: list[dict[str, Any]] = []
    for i, j, d in pairs:
        a, b = idx.rows[i], idx.rows[j]
        disagree = a.label is not None and b.label is not None and a.label != b.label
        if mislabels_only and not disagree:
            continue
        out.append({"path_a": a.path, "label_a": a.label, "path_b": b.path, "label_b": b.label,
                    "distance": round(d, 6), "identical_content": a.sha256 == b.sha256,
                    "labels_disagree": disagree})
    return out


def neighbour_labels(index: SimilarityIndex, emb: Embeddings, k: int) -> tuple[np.ndarray, int]:
    """(Q, k) labels of each query's k nearest gallery rows, leaving out rows with the query's own file content
    (an image in both the queries and the gallery would otherwise find itself); and how many queries had one."""
    V = index.transform.apply(emb.X)
    shas = list(emb.shas)
    gallery_shas = {r.sha256 for r, ok in zip(index.rows, index.live) if ok}
    leaked = sum(sha in gallery_shas for sha in shas)
    _, I = index.search_vectors(V, k, (lambda q, i, d: index.rows[i].sha256 != shas[q]) if leaked else None)
    labels = np.array([[index.rows[i].label if i >= 0 else None for i in row] for row in I], dtype=object)
    return labels, leaked


def eval_retrieval(index: str | Path | SimilarityIndex, data: str | Path, *, split: str | None = "test",
                   ks: Sequence[int] = (1, 5, 10), cache_dir: str | Path | None = None,
                   **embed_kw: Any) -> dict[str, Any]:
    """Recall@K, precision@K and mAP@R of DATA's `split` images as queries against the index as gallery
    (`finegrain eval-retrieval`; build the index from the train split)."""
    idx = index if isinstance(index, SimilarityIndex) else SimilarityIndex.load(index)
    from ..data.sources import load_data
    from ..embed import is_embeddings_dir
    if split is not None and not is_embeddings_dir(data) and not is_ray_embeddings(data) \
            and not load_data(data).has_splits:
        split = None  # data without splits: every image is a query
    emb = embed_data(data, _index_backbone(idx), splits=[split] if split else None, cache_dir=cache_dir,
                     tta=idx.tta, **embed_kw)
    idx.check_embeddings(emb)
    emb = emb.subset([s.label is not None for s in emb.samples])
    gallery = [r.label for r, ok in zip(idx.rows, idx.live) if ok and r.label is not None]
    if not len(emb.samples) or not gallery:
        raise DataError("retrieval metrics need labels on both sides",
                        expected="labelled query images and a labelled index",
                        found=f"{len(emb.samples)} labelled queries, {len(gallery)} labelled indexed images",
                        fix="index labelled data (a folder per class or a manifest with a label column)")
    per_class = np.unique(gallery, return_counts=True)[1]
    k = int(min(idx.n_live, max(max(ks), per_class.max())))
    t0 = time.perf_counter()
    with phase(f"searching {len(emb.samples)} queries (k={k})"):
        labels, leaked = neighbour_labels(idx, emb, k)
    seconds = time.perf_counter() - t0
    metrics = retrieval_metrics(labels, emb.labels, gallery, ks)
    return {"index": str(index) if not isinstance(index, SimilarityIndex) else None, "data": str(data),
            "split": split, "n_queries": len(emb.samples), "n_gallery": idx.n_live, "n_unreadable": len(emb.errors),
            "queries_also_in_gallery": leaked, "metrics": metrics,
            "ms_per_query": round(1000 * seconds / len(emb.samples), 3),
            "index_settings": {"tta": idx.tta, **{key: idx.meta.get(key) for key in (
                "backbone", "transform", "codes", "factory", "rerank", "dim", "bytes_per_image")}}}


__all__ = ["build_index", "update_index", "search", "duplicates", "eval_retrieval", "embed_data", "tta_views",
           "query_embeddings", "resolve_backbone", "neighbour_labels"]
