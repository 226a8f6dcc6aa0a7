"""Test-time views of a classifier (`fit --tta`), importable without numpy (keeps `--help` instant).

With `flip`, every embedding the model uses — the images its head is fitted and calibrated on, and every image it
predicts — is the average of the image's plain crop and its mirror image (`finegrain.views`). The mirror is
taken of the crop the network already sees, so every path computes it from that crop alone: the in-process
engine, the HTTP server, Ray actors and the exported ONNX graph. It costs one more network pass per image.
cub100, lite0 `@320-whole` fine-tuned, seed 0: top-1 0.922 → 0.930 (benchmarks/finetune.py).
"""
from __future__ import annotations

from .errors import ConfigError

CLASSIFIER_TTA = {"none": (), "flip": ("flip",)}


def classifier_views(tta: str) -> tuple[str, ...]:
    """The views a `--tta` value averages with the plain crop."""
    if tta not in CLASSIFIER_TTA:
        raise ConfigError(f"unknown test-time augmentation '{tta}' for a classifier",
                          expected=", ".join(CLASSIFIER_TTA), found=str(tta),
                          fix="use --tta flip (each image averaged with its mirror image) or --tta none")
    return CLASSIFIER_TTA[tta]


def mirrored_crops(crops):
    """The mirror view of preprocessed (N, H, W, 3) crops: the `flip` view of `finegrain.views`, left and right
    swapped on the crop itself."""
    return crops[:, :, ::-1]


__all__ = ["CLASSIFIER_TTA", "classifier_views", "mirrored_crops"]
