"""Choices and defaults of the retrieval commands, importable without numpy or faiss (keeps `--help` instant)."""
from __future__ import annotations

CODES = ("float32", "float16", "pq", "binary")
TRANSFORMS = ("auto", "l2", "sqrt", "whiten")
APPROXIMATE_ABOVE = 100_000  # exact search up to this many images (≈ 5 ms per query at 1280 floats, 1 thread)
# Near-duplicate distance (1 − cosine in the index's space) per transform. Measured on cub100 with 20 train
# images re-saved at 80 % size as JPEG quality 60, and cropped by 5 %: in the sqrt space copies lie at
# 0.00–0.09 (median 0.05) while distinct gallery images are ≥ 0.05 apart (1 % quantile 0.11); whitening stretches
# both (copies 0.13–0.42, distinct ≥ 0.27, 1 % quantile 0.48). Index with --transform sqrt to hunt duplicates.
DUPLICATE_THRESHOLDS = {"l2": 0.05, "sqrt": 0.05, "whiten": 0.25}
# --tta: the views embedded besides the plain crop and averaged with it (finegrain.views); each costs one more
# network pass per image. cub100, stock lite0, whitened, Recall@1: none 0.866, flip 0.877, whole 0.880,
# whole+flip 0.889 (benchmarks/retrieval.py --part views).
TTA = {"none": (), "flip": ("flip",), "whole": ("whole",), "whole+flip": ("flip", "whole", "whole-flip")}
