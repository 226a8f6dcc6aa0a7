"""The embedding engine: files → (cached) L2-normalised embeddings, with decoding overlapped with the model.

Files are identified by content (SHA-256), so renamed or copied images hit the cache, and an image that cannot
be read becomes an error record (path, reason) rather than ending the run or being replaced by another. A sample
with a crop box is identified by its file's hash and its box (`data.boxes.sample_key`).
"""
from __future__ import annotations

import csv
import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from .backbones import Backbone, CompositeBackbone, Preprocess, get_backbone
from .backbones.onnx_runtime import default_runtime, resolve_runtime
from .data.boxes import BOX_COLUMNS, load_sample_rgb, parse_box, sample_key
from .data.images import DEFAULT_MAX_PIXELS, file_sha256
from .data.samples import Sample
from .errors import DataError, FinegrainError, ImageError
from .store import EmbeddingCache, default_cache_dir
from .views import average_views, view_crops, view_key


@dataclass(frozen=True)
class ErrorRecord:
    """An input that produced no embedding, and why."""

    path: str
    reason: str


@dataclass
class Embeddings:
    """Embeddings of the readable samples, in input order, with what is needed to trust and reuse them."""

    X: np.ndarray
    samples: list[Sample]
    shas: list[str]  # per sample: its file's SHA-256, with ':box=x,y,w,h' appended when it has a crop box
    backbone_id: str
    cache_key: str
    preprocess: dict
    errors: list[ErrorRecord] = field(default_factory=list)
    n_computed: int = 0
    n_cached: int = 0
    views: tuple[str, ...] = ()  # test-time views averaged into X besides the plain crop (`embed_with_views`)

    @property
    def labels(self) -> list[str | None]:
        return [s.label for s in self.samples]

    @property
    def paths(self) -> list[str]:
        return [str(s.path) for s in self.samples]

    def subset(self, mask: Sequence[bool] | np.ndarray) -> "Embeddings":
        idx = np.flatnonzero(np.asarray(mask, dtype=bool))
        return Embeddings(self.X[idx], [self.samples[i] for i in idx], [self.shas[i] for i in idx],
                          self.backbone_id, self.cache_key, self.preprocess, list(self.errors), views=self.views)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled or total == 0,
                dynamic_ncols=True, leave=False)


def _hash_all(samples: Sequence[Sample], pool: ThreadPoolExecutor) -> list[str | ErrorRecord]:
    """Each sample's cache identity (`sample_key`), or why it has none: an unreadable file or an unusable box."""
    def one(s: Sample) -> str | ErrorRecord:
        if s.box is not None and s.box.problem:
            return ErrorRecord(str(s.path), s.box.problem)
        try:
            return sample_key(file_sha256(s.path), s)
        except ImageError as exc:
            return ErrorRecord(str(s.path), exc.reason)
    return list(pool.map(one, samples))


def _decode(sample: Sample, backbone: Backbone, max_pixels: int | None,
            views: Sequence[str | None]) -> list[np.ndarray] | ErrorRecord:
    """The crops of `views` of one sample, from one decoding."""
    try:
        return view_crops(backbone.preprocess, load_sample_rgb(sample, max_pixels=max_pixels), views)
    except FinegrainError as exc:
        return ErrorRecord(str(sample.path), getattr(exc, "reason", str(exc)))


Todo = tuple[str, Sample, tuple[str | None, ...]]  # a sample's content key, the sample, the views it still lacks


def _decoded_batches(todo: list[Todo], backbone: Backbone, pool: ThreadPoolExecutor, batch_size: int,
                     max_pixels: int | None) -> Iterator[list[tuple[Todo, list[np.ndarray] | ErrorRecord]]]:
    """Yield decoded batches while the next batch is already being decoded in the pool (bounded: 2 in flight)."""
    def submit(chunk: list[Todo]) -> list[tuple[Todo, Future]]:
        return [(item, pool.submit(_decode, item[1], backbone, max_pixels, item[2])) for item in chunk]

    chunks = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    in_flight = [submit(c) for c in chunks[:2]]
    for i in range(len(chunks)):
        current = in_flight.pop(0)
        if i + 2 < len(chunks):
            in_flight.append(submit(chunks[i + 2]))
        yield [(item, fut.result()) for item, fut in current]


def _onnx_dir(cache: EmbeddingCache | None) -> Path:
    """Exported models live beside the embedding cache they feed."""
    return (cache.directory if cache is not None else default_cache_dir()) / "onnx"


def embed_samples(samples: Sequence[Sample], backbone: str | Backbone | CompositeBackbone = "efficientnet_lite0", *,
                  cache: EmbeddingCache | None = None, batch_size: int = 32, workers: int = 2,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = True,
                  desc: str = "embedding", runtime: str | None = None, view: str | None = None) -> Embeddings:
    """Embed every readable sample; unreadable ones are returned in `errors`, never silently dropped.

    `runtime` picks what runs the network: 'onnx' (ONNX Runtime, exported once and cached next to the
    embedding cache), 'torch' (eager PyTorch, the reference) or 'auto' (onnx when available); None means the
    process default (`--runtime`, FINEGRAIN_RUNTIME, else auto). Both give the same embeddings (cosine ≥ 0.999,
    checked at export) and share one cache key. A combined backbone ('a+b') embeds with each member (and its
    cache entries) and joins the rows. `view` (see `finegrain.views`) embeds that view of each sample instead of
    its plain crop, cached under `SHA:view=VIEW`; the returned `shas` stay the samples' own keys.
    """
    return _embed_views(samples, backbone, (view,), cache=cache, batch_size=batch_size, workers=workers,
                        max_pixels=max_pixels, progress=progress, desc=desc, runtime=runtime)[0]


def embed_with_views(samples: Sequence[Sample], backbone: str | Backbone | CompositeBackbone,
                     views: Sequence[str] = (), **kw: Any) -> Embeddings:
    """`embed_samples` of the plain crop and each view of `views` (each through its own cache entries), averaged
    per image (`views.average_views`); no views is `embed_samples` itself. Each image is decoded and resized
    once for all the views it still lacks."""
    per_view = _embed_views(samples, backbone, (None, *views), **kw)
    out = per_view[0]
    if len(per_view) > 1:
        out.X = average_views([e.X for e in per_view]) if out.shas else out.X
        out.n_computed = sum(e.n_computed for e in per_view)
        out.n_cached = sum(e.n_cached for e in per_view)
        out.views = tuple(views)
    return out


def _embed_views(samples: Sequence[Sample], backbone: str | Backbone | CompositeBackbone,
                 views: tuple[str | None, ...], **kw: Any) -> list[Embeddings]:
    """One `Embeddings` per view of `views`, all of the same samples in input order."""
    bb = get_backbone(backbone) if isinstance(backbone, str) else backbone
    if isinstance(bb, CompositeBackbone):
        return _embed_composite(samples, bb, views, **kw)
    return _embed_member(samples, bb, views, **kw)


def _embed_member(samples: Sequence[Sample], bb: Backbone, views: tuple[str | None, ...], *,
                  cache: EmbeddingCache | None = None, batch_size: int = 32, workers: int = 2,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: bool = True,
                  desc: str = "embedding", runtime: str | None = None) -> list[Embeddings]:
    """`_embed_views` through one network: cached views are read, and each sample lacking any view is decoded
    once and its missing views embedded in batches of `batch_size` crops."""
    key = bb.cache_key
    vectors: dict[str, np.ndarray] = {}
    bad: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        hashed = _hash_all(samples, pool)
        sample_of: dict[str, Sample] = {}
        for s, h in zip(samples, hashed):
            if isinstance(h, str):
                sample_of.setdefault(h, s)
        if cache is not None:
            cache.name_key(key, bb.id)
            vectors.update(cache.get_many(key, [view_key(h, v) for h in sample_of for v in views]))
        n_cached = [sum(1 for h in hashed if isinstance(h, str) and view_key(h, v) in vectors) for v in views]
        todo = [(h, s, lacking) for h, s in sample_of.items()
                if (lacking := tuple(v for v in views if view_key(h, v) not in vectors))]
        runner = resolve_runtime(bb, runtime or default_runtime(), _onnx_dir(cache)) if todo else bb
        with _progress(len(todo), desc, progress) as bar:
            for batch in _decoded_batches(todo, bb, pool, batch_size, max_pixels):
                bad.update({h: crops.reason for (h, _, _), crops in batch if isinstance(crops, ErrorRecord)})
                named = [(view_key(h, v), crop) for (h, _, lacking), crops in batch
                         if not isinstance(crops, ErrorRecord) for v, crop in zip(lacking, crops)]
                for i in range(0, len(named), batch_size):
                    chunk = named[i:i + batch_size]
                    new = dict(zip([name for name, _ in chunk], runner.embed(np.stack([c for _, c in chunk]))))
                    vectors.update(new)
                    if cache is not None:
                        cache.put_many(key, new)
                bar.update(len(batch))
    errors: list[ErrorRecord] = []
    kept: list[int] = []
    for i, (s, h) in enumerate(zip(samples, hashed)):
        if isinstance(h, ErrorRecord):
            errors.append(h)
        elif h in bad:
            errors.append(ErrorRecord(str(s.path), bad[h]))
        else:
            kept.append(i)
    computed = {v: sum(1 for h, _, lacking in todo if h not in bad and v in lacking) for v in views}
    return [Embeddings(X=np.stack([vectors[view_key(hashed[i], v)] for i in kept]).astype(np.float32) if kept else
                       np.zeros((0, bb.embed_dim), dtype=np.float32),
                       samples=[samples[i] for i in kept], shas=[hashed[i] for i in kept],
                       backbone_id=bb.id, cache_key=key, preprocess=bb.preprocess.to_dict(), errors=list(errors),
                       n_computed=computed[v], n_cached=cached)
            for v, cached in zip(views, n_cached)]


def _embed_composite(samples: Sequence[Sample], bb: CompositeBackbone, views: tuple[str | None, ...],
                     desc: str = "embedding", **kw: Any) -> list[Embeddings]:
    """Each member embeds every sample (through its own cache entries); rows are joined per image and view. An
    image any member could not read is an error for the whole, reported once."""
    parts = [_embed_member(samples, m, views, desc=f"{desc} ({m.id})", **kw) for m in bb.members]
    first = parts[0][0]
    rows = [dict(zip(p[0].shas, range(len(p[0].shas)))) for p in parts]  # a member's row of each content key
    errors = {e.path: e for p in parts for e in p[0].errors}
    kept = [i for i, h in enumerate(first.shas) if all(h in r for r in rows)]  # the rest have error records
    shas = [first.shas[i] for i in kept]
    out = []
    for v in range(len(views)):
        X = join_member_embeddings([p[v].X[[r[h] for h in shas]] if shas else
                                    np.zeros((0, m.embed_dim), dtype=np.float32)
                                    for p, r, m in zip(parts, rows, bb.members)])
        out.append(Embeddings(X=X, samples=[first.samples[i] for i in kept], shas=shas, backbone_id=bb.id,
                              cache_key=bb.cache_key, preprocess=bb.preprocess.to_dict(),
                              errors=[errors[str(s.path)] for s in samples if str(s.path) in errors],
                              n_computed=max(p[v].n_computed for p in parts),
                              n_cached=min(p[v].n_cached for p in parts)))
    return out


def join_member_embeddings(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Members' unit embeddings side by side, scaled by 1/√n so the joined row is unit length too."""
    return (np.hstack(parts) / np.sqrt(len(parts))).astype(np.float32)


def members_of(backbone: Backbone | CompositeBackbone) -> tuple[Backbone, ...]:
    """The networks that embed an image: a combined backbone's members, or the backbone itself."""
    return backbone.members if isinstance(backbone, CompositeBackbone) else (backbone,)


def preprocess_image(backbone: Backbone | CompositeBackbone, img: Image.Image,
                     views: Sequence[str] = ()) -> list[tuple[np.ndarray, ...]]:
    """The crops each member network sees — of the plain crop, then of each of `views` — exactly as
    `embed_samples` prepares files (one crop a view for a plain backbone), each framing resized once: callers
    that decode images themselves, like the HTTP server, reuse it rather than redo it."""
    return crops_for(member_preprocesses(backbone), img, views)


def member_preprocesses(backbone: Backbone | CompositeBackbone) -> tuple[Preprocess, ...]:
    """Each member network's preprocessing: small frozen values that decode workers can hold without the
    networks (a Ray task decodes images on a machine that never loads a backbone)."""
    return tuple(m.preprocess for m in members_of(backbone))


def crops_for(preprocesses: Sequence[Preprocess], img: Image.Image,
              views: Sequence[str] = ()) -> list[tuple[np.ndarray, ...]]:
    """`preprocess_image` from the members' preprocessing alone."""
    per_member = [view_crops(p, img, (None, *views)) for p in preprocesses]
    return [tuple(crops[i] for crops in per_member) for i in range(1 + len(views))]


def embed_preprocessed(backbone: Backbone | CompositeBackbone, crops: Sequence[tuple[np.ndarray, ...]], *,
                       runtime: str | None = None, cache_dir: Path | None = None) -> np.ndarray:
    """(N, D) embeddings of crops from `preprocess_image`, run by the same runtime choice as `embed_samples`
    (ONNX exports live under `cache_dir`, default the embedding cache folder). Nothing is cached: uploads
    have no file to key on and a server should not grow a disk cache per request."""
    members = members_of(backbone)
    onnx_dir = Path(cache_dir) / "onnx" if cache_dir is not None else _onnx_dir(None)
    parts = [resolve_runtime(m, runtime or default_runtime(), onnx_dir).embed(np.stack([c[i] for c in crops]))
             for i, m in enumerate(members)]
    return parts[0] if len(parts) == 1 else join_member_embeddings(parts)


EMBEDDINGS_FORMAT = "finegrain-embeddings/1"
# File names that are not UTF-8 are written back as their own bytes, so index.csv paths still open.
PATH_BYTES = "surrogateescape"


def save_embeddings(emb: Embeddings, directory: str | Path, provenance: dict) -> Path:
    """A folder any command can reuse: vectors (safetensors), index.csv (path,label,split,group,sha256,x,y,w,h),
    errors.csv, meta.json (backbone, preprocessing, provenance)."""
    from safetensors.numpy import save_file

    from .io import replace_dir_atomic, staging_dir, write_json

    target = Path(directory)
    tmp = staging_dir(target)
    save_file({"embeddings": np.ascontiguousarray(emb.X, dtype=np.float32)}, str(tmp / "embeddings.safetensors"))
    with (tmp / "index.csv").open("w", newline="", encoding="utf-8", errors=PATH_BYTES) as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "group", "sha256", *BOX_COLUMNS])
        for s, sha in zip(emb.samples, emb.shas):
            box = s.box.cells() if s.box else [""] * 4
            w.writerow([str(s.path), s.label or "", s.split or "", s.group or "", sha, *box])
    with (tmp / "errors.csv").open("w", newline="", encoding="utf-8", errors=PATH_BYTES) as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reason"])
        w.writerows([e.path, e.reason] for e in emb.errors)
    write_json(tmp / "meta.json", {"format": EMBEDDINGS_FORMAT, "backbone": emb.backbone_id,
                                   "cache_key": emb.cache_key, "preprocess": emb.preprocess,
                                   "n": len(emb.samples), "dim": int(emb.X.shape[1]),
                                   "n_errors": len(emb.errors), "provenance": provenance})
    replace_dir_atomic(tmp, target)
    return target


def is_embeddings_dir(path: str | Path) -> bool:
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == EMBEDDINGS_FORMAT
    except (ValueError, OSError):
        return False


def load_embeddings(directory: str | Path) -> Embeddings:
    from safetensors.numpy import load_file

    d = Path(directory)
    meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    X = load_file(str(d / "embeddings.safetensors"))["embeddings"]
    with (d / "index.csv").open(newline="", encoding="utf-8", errors=PATH_BYTES) as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != len(X):
        raise DataError(f"embeddings folder {d} is inconsistent", expected=f"{len(X)} rows in index.csv",
                        found=f"{len(rows)} rows", fix="re-create it with `finegrain embed`")
    samples = [Sample(Path(r["path"]), r["label"] or None, r["split"] or None, r["group"] or None,
                      parse_box([r.get(c) or "" for c in BOX_COLUMNS], f"{d.name}/index.csv")) for r in rows]
    with (d / "errors.csv").open(newline="", encoding="utf-8", errors=PATH_BYTES) as fh:
        errors = [ErrorRecord(r["path"], r["reason"]) for r in csv.DictReader(fh)]
    return Embeddings(X=X, samples=samples, shas=[r["sha256"] for r in rows], backbone_id=meta["backbone"],
                      cache_key=meta["cache_key"], preprocess=meta["preprocess"], errors=errors)
