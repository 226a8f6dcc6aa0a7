"""Test-time views of a classifier (`fit --tta`), importable without numpy (keeps `--help` instant).

Every embedding the model uses — the images its head is fitted and calibrated on, and every image it predicts —
is the average of the image's plain crop and its views (`finegrain.views.average_views`). Each view is a turn
or mirror of the crop the network already sees (an element of the square's symmetry group), so every path
computes it from that crop alone: the in-process engine, the HTTP server, Ray actors and the exported ONNX
graph. Each view costs one more network pass per image.

- `flip`: the mirror image — for photos, whose subjects stand upright (cub100, fine-tuned lite0 `@320-whole`:
  top-1 0.925 → 0.931, 3 seeds).
- `rot4`: the three quarter turns — for subjects seen from above or through a microscope, in any orientation
  (plankton, fine-tuned lite0 `@pad`, seed 0: 0.654 → 0.680; the mirror alone 0.659).
- `d4`: every turn and mirror (7 views; plankton fine-tuned 0.678 ± 0.009, 3 seeds; the frozen `@pad` head
  0.627 → 0.662).
"""
from __future__ import annotations

from .errors import ConfigError

# view: (quarter turns counter-clockwise, mirrored left-right first)
TURNS = {"flip": (0, True), "vflip": (2, True), "rot90": (1, False), "rot180": (2, False), "rot270": (3, False),
         "transpose": (1, True), "antitranspose": (3, True)}
CLASSIFIER_TTA = {"none": (), "flip": ("flip",), "rot4": ("rot90", "rot180", "rot270"),
                  "d4": ("flip", "vflip", "rot90", "rot180", "rot270", "transpose", "antitranspose")}


def classifier_views(tta: str) -> tuple[str, ...]:
    """The views a `--tta` value averages with the plain crop."""
    if tta not in CLASSIFIER_TTA:
        raise ConfigError(f"unknown test-time augmentation '{tta}' for a classifier",
                          expected=", ".join(CLASSIFIER_TTA), found=str(tta),
                          fix="use --tta flip (photos: each image averaged with its mirror image), rot4 or d4 "
                              "(subjects in any orientation), or none")
    return CLASSIFIER_TTA[tta]


def inverse_view(view: str) -> str:
    """The view that undoes `view`: a mirror undoes itself, a quarter turn the three-quarter turn."""
    quarter_turns, mirrored = TURNS[view]
    if mirrored:
        return view
    return next(v for v, (turns, m) in TURNS.items() if not m and turns == (4 - quarter_turns) % 4)


def turned_crops(crops, view: str):
    """`view` (a key of TURNS) of square crops (N, S, S, C), NumPy or PyTorch: mirrored left-right first if the
    view says so, then turned a quarter counter-clockwise that many times."""
    quarter_turns, mirrored = TURNS[view]
    if hasattr(crops, "flip"):  # a torch tensor: flips and transposes, which ONNX exports (rot90 it does not)
        import torch

        out = torch.flip(crops, dims=(2,)) if mirrored else crops
        if quarter_turns == 1:
            return torch.flip(out.transpose(1, 2), dims=(1,))
        if quarter_turns == 2:
            return torch.flip(out, dims=(1, 2))
        return torch.flip(out, dims=(1,)).transpose(1, 2) if quarter_turns == 3 else out
    import numpy as np

    out = crops[:, :, ::-1] if mirrored else crops
    return np.ascontiguousarray(np.rot90(out, quarter_turns, axes=(1, 2)) if quarter_turns else out)


__all__ = ["CLASSIFIER_TTA", "TURNS", "classifier_views", "inverse_view", "turned_crops"]
