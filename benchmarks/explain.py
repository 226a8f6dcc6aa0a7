"""Explanation benchmark on cub100: are the Grad-CAM maps faithful, how long does one explanation take, and how
long does the HTML report take?

    python benchmarks/explain.py          # writes benchmarks/results/explain.json and prints a summary

Faithfulness (deletion test): on 200 seeded test images, replace the 20 % most salient pixels of the crop the
model sees with the mean colour and measure the drop in the predicted class's probability; compare with
deleting 20 % random pixels, and 20 % chosen by a random coarse map upsampled like a CAM (same blob shape as a
real map, so it controls for "big blobs hurt more than scattered pixels").
Model: $FINEGRAIN_BENCH_MODEL (default /tmp/models/cub100), fitted through the cache when missing.
Torch threads follow $FINEGRAIN_THREADS (default: one per core); wall and CPU seconds are both recorded,
because on a shared, overloaded machine two spinning threads can be slower than one.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, shared_dataset, write_result

N_IMAGES = 200
FRACTION = 0.2
SEED = 0


def load_model(data: Path):
    from finegrain.pipeline import Classifier
    from finegrain.training import fit

    model = Path(os.environ.get("FINEGRAIN_BENCH_MODEL", "/tmp/models/cub100"))
    if not (model / "config.json").is_file():
        model = Path(tempfile.mkdtemp(prefix="fg-explain-")) / "model"
        fit(data, progress=True).save(model)
    return Classifier.load(model), model


def delete(image: np.ndarray, order_key: np.ndarray, fraction: float, fill: np.ndarray) -> np.ndarray:
    """Replace the pixels with the highest `order_key` (the top `fraction`) by `fill` (one colour, or an image)."""
    n = int(round(fraction * order_key.size))
    idx = np.argsort(-order_key.ravel(), kind="stable")[:n]
    out = image.reshape(-1, 3).copy()
    out[idx] = fill.reshape(-1, 3)[idx] if fill.ndim == 3 else fill
    return out.reshape(image.shape)


def blurred(image: np.ndarray, radius: float = 8.0) -> np.ndarray:
    from PIL import Image, ImageFilter
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def class_probs(clf, bb, images: np.ndarray, classes: np.ndarray, batch: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        p = clf.head.predict_proba(bb.embed(images[i:i + batch]))
        out.append(p[np.arange(len(p)), classes[i:i + batch]])
    return np.concatenate(out)


def faithfulness(clf, samples) -> tuple[dict, float, list]:
    from finegrain.backbones import get_backbone
    from finegrain.explain import explain_images, upsample_maps

    bb = get_backbone(clf.backbone_id)
    t0, c0 = time.perf_counter(), time.process_time()
    expl = explain_images(clf, samples, methods=("gradcam", "gradcam++"), contrast=True)
    explain_s, explain_cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = [e for e in expl if e.error is None]
    images = np.stack([e.image for e in ok])
    pred = np.array([clf.classes.index(e.predicted) for e in ok])
    mean_colour = np.round(np.array(bb.preprocess.mean) * 255).astype(np.uint8)
    rng = np.random.default_rng(SEED)
    size = images.shape[1:3]
    coarse = upsample_maps(rng.random((len(ok), 7, 7)).astype(np.float32), *size)
    jitter = rng.random((len(ok), *size)) * 1e-6  # breaks ties among equal map values at random
    p0 = class_probs(clf, bb, images, pred)
    keys = {"gradcam": [e.maps["gradcam"] for e in ok], "gradcam++": [e.maps["gradcam++"] for e in ok],
            "random_pixels": [rng.random(size) for _ in ok], "random_coarse_map": list(coarse)}
    result = {"n_images": len(ok), "fraction_deleted": FRACTION, "mean_prob_intact": round(float(p0.mean()), 4)}
    for fill_name in ("mean_colour", "blur"):
        fills = [mean_colour] * len(ok) if fill_name == "mean_colour" else [blurred(img) for img in images]
        result[fill_name] = {}
        for name, maps in keys.items():
            deleted = np.stack([delete(img, m + j, FRACTION, f) for img, m, j, f in zip(images, maps, jitter, fills)])
            p = class_probs(clf, bb, deleted, pred)
            result[fill_name][name] = {"mean_prob_after": round(float(p.mean()), 4),
                                       "mean_drop": round(float((p0 - p).mean()), 4),
                                       "median_drop": round(float(np.median(p0 - p)), 4)}
    timing = {"wall": explain_s / len(samples), "cpu": explain_cpu / len(samples)}
    return result, timing, ok


def panel_seconds(clf, samples, reference) -> float:
    """Seconds per image for the full `finegrain explain` product: maps, contrast, 5 neighbours, PNG panel."""
    from finegrain.explain import explain_images
    from finegrain.explain.render import explanation_png

    t0, c0 = time.perf_counter(), time.process_time()
    for e in explain_images(clf, samples, reference=reference, n_neighbours=5):
        explanation_png(e)
    return {"wall": (time.perf_counter() - t0) / len(samples), "cpu": (time.process_time() - c0) / len(samples)}


def main() -> None:
    from finegrain.backbones.torch_backbone import configure_torch_threads
    from finegrain.data.sources import load_data
    from finegrain.explain import reference_embeddings
    import torch

    from finegrain.report import build_report

    data = shared_dataset("cub100")
    clf, model = load_model(data)
    configure_torch_threads()
    test = load_data(data).select(["test"])
    pick = np.sort(np.random.default_rng(SEED).choice(len(test), size=min(N_IMAGES, len(test)), replace=False))
    samples = [test[i] for i in pick]
    load_start = os.getloadavg()[0]
    faith, per_image, _ = faithfulness(clf, samples)
    reference = reference_embeddings(clf, data)
    per_panel = panel_seconds(clf, samples[:20], reference)

    t0 = time.perf_counter()
    page, summary = build_report(clf, data)
    report_s = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="fg-report-")) / "cub100_report.html"
    out.write_text(page, encoding="utf-8")

    result = {"dataset": "cub100", "model": str(model), "backbone": clf.backbone_id, "head": clf.head.name,
              "machine": machine(), "torch_threads": torch.get_num_threads(),
              "load_average_1min": {"start": round(load_start, 1), "end": round(os.getloadavg()[0], 1)},
              "faithfulness": faith,
              "seconds_per_image": {"maps_gradcam_gradcampp_contrast_batched": {k: round(v, 3) for k, v in per_image.items()},
                                    "full_panel_with_5_neighbours_and_png": {k: round(v, 3) for k, v in per_panel.items()}},
              "report": {"seconds": round(report_s, 1), "stages_s": summary["seconds"], "n_images": summary["n"],
                         "html_mib": round(len(page.encode()) / 2 ** 20, 2), "path": str(out)}}
    path = write_result("explain", result)
    f = faith
    print(f"deletion of {FRACTION:.0%} of the pixels, mean drop of p(predicted) from {f['mean_prob_intact']:.3f} "
          f"over {f['n_images']} images (filled with mean colour | blur):")
    for name in ("gradcam", "gradcam++", "random_pixels", "random_coarse_map"):
        print(f"  {name:18s} {f['mean_colour'][name]['mean_drop']:.3f} | {f['blur'][name]['mean_drop']:.3f}")
    print(f"seconds per image (wall/cpu): maps {per_image['wall']:.3f}/{per_image['cpu']:.3f}, full panel "
          f"{per_panel['wall']:.3f}/{per_panel['cpu']:.3f}; report {report_s:.1f}s → {out}")
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
