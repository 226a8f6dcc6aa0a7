"""A served model: the `Classifier` the CLI uses, plus what answering over HTTP needs (decoding of uploads,
the backbone call behind the micro-batcher, a compact provenance, training images for explanations, and the
nearest images of a `finegrain index` searched with the same `SimilarityIndex` code as `finegrain search`)."""
from __future__ import annotations

import base64
import hashlib
import io
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .._version import __version__
from ..data.images import load_rgb_bytes
from ..data.samples import Sample
from ..embed import Embeddings, embed_preprocessed, members_of, preprocess_image
from ..errors import ConfigError
from ..pipeline import Classifier
from .errors import ApiError
from .settings import ServeSettings
from .uploads import Upload

if TYPE_CHECKING:
    from ..retrieval.index import SimilarityIndex

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
UNKNOWN_OFF = "off"
THUMBNAIL_PX = 96


def check_model_name(name: str) -> str:
    """Model names appear in URLs: letters, digits, '.', '_' and '-' only."""
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"model name '{name}' cannot be used in a URL",
                          expected="1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                          found=name, fix="name it explicitly: finegrain serve NAME=MODEL_DIR")
    return name


class ServedModel:
    """One model behind /v1/models/{name}/...; decoding and embedding run in thread pools, never on the loop."""

    def __init__(self, name: str, classifier: Classifier, settings: ServeSettings) -> None:
        self.name, self.classifier, self.settings = check_model_name(name), classifier, settings
        self.backbone = classifier.backbone()
        self.reference: Embeddings | None = None
        self.provenance = {"model": name, "backbone": classifier.backbone_id,
                           "class_list_hash": classifier.provenance()["class_list_hash"],
                           "n_classes": len(classifier.classes), "head": classifier.head.name,
                           "calibrated": classifier.temperature != 1.0, "finegrain_version": __version__}

    @property
    def auto_threshold(self) -> float | None:
        """The unknown threshold saved at fit, or None when the model has no detector with one."""
        threshold = getattr(self.classifier.detector, "threshold_", None)
        return None if threshold is None else float(threshold)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "classes": self.classifier.classes, "unknown_threshold": self.auto_threshold,
                "explain": len(members_of(self.backbone)) == 1, "provenance": self.provenance}

    # --- work done in thread pools -------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Resolve the runtime (exporting to ONNX once) with one blank image, and embed the training images
        explanations draw neighbours from, so the first real request is not the slow one."""
        from PIL import Image

        blank = Image.new("RGB", (64, 64), (128, 128, 128))
        self.embed_crops(preprocess_image(self.backbone, blank))
        if self.settings.neighbours and len(members_of(self.backbone)) == 1:
            from ..explain import reference_embeddings
            self.reference = reference_embeddings(self.classifier, cache_dir=self.settings.cache_dir, progress=False)

    def decode(self, upload: Upload, views: Sequence[str] = ()) -> list[tuple[np.ndarray, ...]]:
        """The crops the backbone sees: the plain crop, then one per test-time view (`finegrain.views`), from
        one decoding and one resize; ImageError (with the reason) for anything that is not a usable image."""
        img = load_rgb_bytes(upload.data, upload.filename, max_pixels=self.settings.max_pixels)
        return preprocess_image(self.backbone, img, views)

    def embed_crops(self, crops: list[tuple[np.ndarray, ...]]) -> np.ndarray:
        return embed_preprocessed(self.backbone, crops, runtime=self.settings.runtime, cache_dir=self.settings.cache_dir)

    def explain(self, upload: Upload, crop: np.ndarray, method: str, target: str | None,
                neighbours: int) -> dict[str, Any]:
        """Grad-CAM of one image through `finegrain.explain`, as JSON with base64 PNG overlays."""
        from ..explain import explain_crops
        from ..explain.render import overlay_heatmap

        expl = explain_crops(self.classifier, [upload.filename], [crop], target=target, methods=(method,),
                             reference=self.reference if neighbours else None, n_neighbours=neighbours)[0]
        return {"filename": upload.filename, "predicted": expl.predicted, "confidence": expl.confidence,
                "target": expl.target, "target_prob": expl.target_prob, "method": method,
                "overlay_png_base64": png_base64(overlay_heatmap(expl.image, expl.maps[method])),
                "versus": expl.versus, "versus_prob": expl.versus_prob,
                "contrast_png_base64": None if expl.contrast is None else
                png_base64(overlay_heatmap(expl.image, expl.contrast)),
                "neighbours": [neighbour_json(n.path, n.label, n.similarity) for n in expl.neighbours],
                "provenance": self.provenance}

    # --- cheap work done on the event loop -----------------------------------------------------------------
    def unknown_mode(self, value: str | None) -> str | float | None:
        """?unknown=: absent → 'auto' when the model has a threshold; 'off' → no verdict; 'auto' or a number."""
        if value is None:
            return "auto" if self.auto_threshold is not None else None
        if value == UNKNOWN_OFF:
            return None
        mode = value if value == "auto" else _finite_number(value)
        if self.classifier.detector is None or (mode == "auto" and self.auto_threshold is None):
            raise ApiError(400, "no_unknown_detector", f"model '{self.name}' has no unknown detector",
                           fix="leave out ?unknown=, or serve a model fitted with calibration (the default)")
        return mode

    def predictions(self, X: np.ndarray, top_k: int, unknown: str | float | None) -> list[dict[str, Any]]:
        """Top-k labels with calibrated probabilities (and the unknown verdict) for embeddings of uploads (each
        averaged over the model's test-time views)."""
        samples = [Sample(Path(f"#{i}")) for i in range(len(X))]  # unique keys even when file names repeat
        emb = Embeddings(X, samples, [""] * len(X), self.classifier.backbone_id, self.classifier.cache_key,
                         dict(self.classifier.preprocess), views=self.classifier.views)
        rows = [p.to_dict() for p in self.classifier.predictions_from_embeddings(samples, emb, top_k, unknown)]
        for row in rows:
            del row["path"]
        return rows

    def index_mismatch(self, index: "SimilarityIndex") -> str | None:
        """Why the index cannot answer for this model (it holds another network's embeddings), or None."""
        if index.meta["cache_key"] == self.classifier.cache_key:
            return None
        return (f"model '{self.name}' embeds images with '{self.classifier.backbone_id}', but the index holds "
                f"embeddings of another network; expected an index of '{self.classifier.backbone_id}' (key "
                f"{self.classifier.cache_key}); found '{index.meta['backbone']}' (key {index.meta['cache_key']})")

    def index_neighbours(self, index: "SimilarityIndex", X: np.ndarray, uploads: Sequence[Upload], k: int,
                         exclude_duplicates: bool) -> list[list[dict[str, Any]]]:
        """The k nearest indexed images of each embedded upload (X already averaged over the index's views),
        through `SimilarityIndex.search` as `finegrain search` calls it; `exclude_duplicates` leaves out the
        upload's own file (same content) and its near-copies."""
        from ..retrieval.settings import TTA

        samples = [Sample(Path(f"#{i}")) for i in range(len(X))]
        shas = [hashlib.sha256(u.data).hexdigest() for u in uploads]
        emb = Embeddings(X, samples, shas, self.classifier.backbone_id, self.classifier.cache_key,
                         dict(self.classifier.preprocess), views=TTA[index.tta])
        hits = index.search(emb, k, exclude_duplicates=exclude_duplicates)
        return [[{"name": Path(h.path).name, "label": h.label, "distance": round(h.distance, 6),
                  "sha256": h.sha256, "thumbnail_jpeg_base64": thumbnail_base64(h.path)} for h in row] for row in hits]

    def threshold_of(self, unknown: str | float | None) -> float | None:
        return self.auto_threshold if unknown == "auto" else unknown  # type: ignore[return-value]


def _finite_number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ApiError(422, "invalid_parameter", f"unknown={value!r} is neither auto, off nor a number",
                       fix="use ?unknown=auto, ?unknown=off or a threshold such as ?unknown=0.5")
    return number


def png_base64(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def neighbour_json(path: str, label: str | None, similarity: float) -> dict[str, Any]:
    """A training image by its file name, label and a small JPEG: the server's own paths are not given out."""
    return {"name": Path(path).name, "label": label, "similarity": round(float(similarity), 6),
            "thumbnail_jpeg_base64": thumbnail_base64(path)}


def thumbnail_base64(path: str) -> str | None:
    """A small square JPEG of a server-side image, inlined in the answer (so no route ever serves files by
    path), or None when the file cannot be read."""
    from PIL import Image

    from ..explain.render import thumbnail

    thumb = thumbnail(path, THUMBNAIL_PX)
    if thumb is None:
        return None
    buf = io.BytesIO()
    Image.fromarray(thumb).save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")
