"""The steps of a Ray job, each a plain function or class over one batch (a dict of NumPy columns), so Ray Data
runs them in tasks and actors and tests can call them directly.

read → hash → skip what is done → decode + preprocess (tasks, finegrain's own loader and crops) → network + head
(actors: one model load each) → rows. A bad file becomes a row with its error, as in the in-process engine.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..backbones import Preprocess
from ..data.images import DEFAULT_MAX_PIXELS, load_rgb_bytes
from ..embed import crops_for
from ..errors import FinegrainError, ImageError
from .inputs import read_file_bytes

Batch = dict[str, np.ndarray]
# Between steps a missing value is "" (Ray turns a column of None into floats); rows leave with None.
NONE = ""
CROP = "crop_{}"  # one uint8 (N, size, size, 3) column per member network
PASSED_ON = ("path", "label", "split", "sha256", "error")


def _objects(values: Sequence[Any]) -> np.ndarray:
    """A 1-D object column (np.array would turn a list of equal-length bytes into a 2-D array)."""
    column = np.empty(len(values), dtype=object)
    column[:] = list(values)
    return column


def _read_one(path: str) -> tuple[bytes, str, str]:
    """(bytes, SHA-256, NONE), or (b"", NONE, reason) when the file cannot be read."""
    try:
        blob = read_file_bytes(path)
    except ImageError as exc:
        return b"", NONE, exc.reason
    return blob, hashlib.sha256(blob).hexdigest(), NONE


def read_and_hash(batch: Batch, done: frozenset[tuple[str, str]]) -> Batch:
    """Each input's bytes and SHA-256, minus the inputs already in the output (resume: same path and content;
    see `shards.done_inputs`). An unreadable input keeps its row, with the reason in `error` and no hash."""
    read = [_read_one(str(path)) for path in batch["path"]]
    keep = np.array([(str(path), sha) not in done for path, (_, sha, _) in zip(batch["path"], read)], dtype=bool)
    shas = [sha for _, sha, _ in read]
    out = {"path": batch["path"], "label": batch["label"], "split": batch["split"], "sha256": _objects(shas),
           "data": _objects([blob for blob, _, _ in read]), "error": _objects([err for _, _, err in read])}
    return {k: v[keep] for k, v in out.items()}


def decode_and_crop(batch: Batch, preprocesses: Sequence[Preprocess],
                    max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Batch:
    """Decode each file's bytes with finegrain's safe loader and crop it for each member network; rows that
    failed (here or when read) get black crops that the model step ignores."""
    errors = list(batch["error"])
    crops: list[list[np.ndarray]] = [[] for _ in preprocesses]
    for i, (path, blob) in enumerate(zip(batch["path"], batch["data"])):
        row = None
        if errors[i] == NONE:
            try:
                row = crops_for(preprocesses, load_rgb_bytes(blob, str(path), max_pixels=max_pixels))[0]
            except FinegrainError as exc:
                errors[i] = getattr(exc, "reason", str(exc))
        for m, p in enumerate(preprocesses):
            crops[m].append(row[m] if row is not None else np.zeros((p.size, p.size, 3), dtype=np.uint8))
    out = {k: batch[k] for k in PASSED_ON if k != "error"}
    out["error"] = _objects(errors)
    for m, p in enumerate(preprocesses):
        out[CROP.format(m)] = np.stack(crops[m]) if crops[m] else np.zeros((0, p.size, p.size, 3), dtype=np.uint8)
    return out


def _or_none(column: np.ndarray) -> list[str | None]:
    return [None if v == NONE else str(v) for v in column]


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    for rel, blob in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)


class _ModelActor:
    """Shared set-up of the model actors: a private folder for the exports shipped by the driver (so no actor
    exports or checks the network again) and the thread budget Ray gave it."""

    def __init__(self, onnx_files: dict[str, bytes], runtime: str, threads: int) -> None:
        from ..threads import set_thread_budget

        set_thread_budget(threads)
        self.runtime = runtime
        self._workdir = tempfile.TemporaryDirectory(prefix="finegrain-actor-")
        self.workdir = Path(self._workdir.name)
        _write_files(self.workdir / "onnx", onnx_files)

    def embed_ok_rows(self, backbone: Any, batch: Batch, views: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(mask of rows without error, their embeddings) through finegrain's own runtime choice; with a
        classifier's views (`finegrain.tta`: turns and mirrors of the crop) each row is averaged over them."""
        from ..embed import embed_preprocessed, members_of
        from ..tta import turned_crops
        from ..views import average_views

        ok = np.array([e == NONE for e in batch["error"]], dtype=bool)
        if not ok.any():
            return ok, np.zeros((0, 0), dtype=np.float32)
        columns = [batch[CROP.format(m)][ok] for m in range(len(members_of(backbone)))]
        parts = [embed_preprocessed(backbone, list(zip(*[c if view is None else turned_crops(c, view)
                                                         for c in columns])),
                                    runtime=self.runtime, cache_dir=self.workdir) for view in (None, *views)]
        return ok, parts[0] if len(parts) == 1 else average_views(parts)


def embedding_schema():
    import pyarrow as pa
    return pa.schema([("path", pa.string()), ("sha256", pa.string()), ("label", pa.string()),
                      ("split", pa.string()), ("embedding", pa.list_(pa.float32())), ("error", pa.string())])


class Embedder(_ModelActor):
    """Actor: crops → L2-normalised embeddings, one backbone load per actor."""

    def __init__(self, backbone_id: str, onnx_files: dict[str, bytes], runtime: str, threads: int) -> None:
        from ..backbones import get_backbone

        super().__init__(onnx_files, runtime, threads)
        self.backbone = get_backbone(backbone_id)

    def __call__(self, batch: Batch):
        import pyarrow as pa

        ok, X = self.embed_ok_rows(self.backbone, batch)
        rows = iter(X)
        vectors = [next(rows).tolist() if good else None for good in ok]
        return pa.table({"path": list(batch["path"]), "sha256": _or_none(batch["sha256"]),
                         "label": _or_none(batch["label"]), "split": _or_none(batch["split"]), "embedding": vectors,
                         "error": _or_none(batch["error"])}, schema=embedding_schema())


def prediction_schema(with_unknown: bool):
    import pyarrow as pa
    fields = [("path", pa.string()), ("sha256", pa.string()), ("label", pa.string()),
              ("labels", pa.list_(pa.string())), ("probs", pa.list_(pa.float64())), ("error", pa.string())]
    return pa.schema(fields + ([("unknown", pa.bool_()), ("known_score", pa.float64())] if with_unknown else []))


class Predictor(_ModelActor):
    """Actor: crops → top-k labels and probabilities, from the model folder the driver shipped (loaded once,
    with finegrain's validating loader: nothing is unpickled)."""

    def __init__(self, model_files: dict[str, bytes], onnx_files: dict[str, bytes], runtime: str, threads: int,
                 top_k: int, unknown: str | float | None) -> None:
        from ..pipeline import Classifier

        super().__init__(onnx_files, runtime, threads)
        _write_files(self.workdir / "model", model_files)
        self.classifier = Classifier.load(self.workdir / "model")
        self.backbone = self.classifier.backbone()
        self.top_k, self.unknown = top_k, unknown

    def __call__(self, batch: Batch):
        import pyarrow as pa

        ok, X = self.embed_ok_rows(self.backbone, batch, self.classifier.views)
        answers = iter(self._predictions(X, batch["sha256"][ok]))
        preds = [next(answers) if good else None for good in ok]
        columns = {"path": list(batch["path"]), "sha256": _or_none(batch["sha256"]),
                   "label": [p.label if p else None for p in preds],
                   "labels": [p.labels if p else None for p in preds],
                   "probs": [p.probs if p else None for p in preds], "error": _or_none(batch["error"])}
        if self.unknown is not None:
            columns.update(unknown=[p.unknown if p else None for p in preds],
                           known_score=[p.known_score if p else None for p in preds])
        return pa.table(columns, schema=prediction_schema(self.unknown is not None))

    def _predictions(self, X: np.ndarray, shas: np.ndarray) -> list:
        """The in-process engine's own answer code on these embeddings (samples named by position: paths
        may repeat, and URIs are not file paths)."""
        from ..data.samples import Sample
        from ..embed import Embeddings

        clf = self.classifier
        if not len(X):
            return []
        samples = [Sample(Path(str(i))) for i in range(len(X))]
        emb = Embeddings(X=X, samples=samples, shas=list(shas), backbone_id=clf.backbone_id,
                         cache_key=clf.cache_key, preprocess=clf.preprocess, views=clf.views)
        return clf.predictions_from_embeddings(samples, emb, top_k=self.top_k, unknown=self.unknown)
