"""Response shapes, declared so /openapi.json documents what each route answers."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str
    message: str
    fix: Optional[str] = None
    details: Optional[list[dict[str, Any]]] = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class LabelProb(BaseModel):
    label: str
    prob: float


class PerImage(BaseModel):
    """What every per-image answer carries: which upload it is, and whether it could be read."""
    filename: str
    status: str  # "ok" or "error" (a request with several images answers the readable ones)
    error: Optional[str] = None
    error_code: Optional[str] = None


class ImageResult(PerImage):
    label: Optional[str] = None  # "unknown" when the unknown verdict is yes
    confidence: Optional[float] = None
    top_k: list[LabelProb] = []
    unknown: Optional[bool] = None
    known_score: Optional[float] = None


class Provenance(BaseModel):
    model: str
    backbone: str
    class_list_hash: str
    n_classes: int
    head: str
    calibrated: bool
    finegrain_version: str


class PredictResponse(BaseModel):
    model: str
    results: list[ImageResult]
    unknown_threshold: Optional[float] = None
    provenance: Provenance


class Neighbour(BaseModel):
    name: str
    label: Optional[str] = None
    similarity: float
    thumbnail_jpeg_base64: Optional[str] = None


class ExplainResponse(BaseModel):
    filename: str
    predicted: str
    confidence: float
    target: str
    target_prob: float
    method: str
    overlay_png_base64: str
    versus: Optional[str] = None
    versus_prob: Optional[float] = None
    contrast_png_base64: Optional[str] = None
    neighbours: list[Neighbour]
    provenance: Provenance


class IndexNeighbour(BaseModel):
    name: str  # the file name only: the server's paths are not given out
    label: Optional[str] = None
    distance: float  # 1 − cosine in the index's space
    sha256: str  # the indexed file's content hash (with ':box=…' for a crop box), to find it in the collection
    thumbnail_jpeg_base64: Optional[str] = None


class NeighboursResult(PerImage):
    neighbours: list[IndexNeighbour] = []


class IndexInfo(BaseModel):
    n_images: int
    backbone: str
    tta: str
    transform: str
    codes: str


class NeighboursResponse(BaseModel):
    model: str
    index: IndexInfo
    results: list[NeighboursResult]
    provenance: Provenance


class ModelInfo(BaseModel):
    name: str
    classes: list[str]
    unknown_threshold: Optional[float] = None
    explain: bool
    similar_images: bool  # POST .../neighbours answers for this model (the server's index holds its embeddings)
    provenance: Provenance


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    api_key_required: bool
