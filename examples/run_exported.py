"""Run a model written by `finegrain export` with plain ONNX Runtime, Pillow and NumPy (no finegrain needed).

    python examples/run_exported.py birds.onnx photo1.jpg photo2.jpg
"""
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
classes, pre = json.loads(meta["classes"]), json.loads(meta["preprocess"])
size, resample = pre["size"], getattr(Image.Resampling, pre["interpolation"].upper())


def letterbox(img):
    """A model fitted with an '@pad' backbone: the longer side to size, centred on the border's median colour."""
    scale = size / max(img.size)
    w, h = min(size, max(1, round(img.width * scale))), min(size, max(1, round(img.height * scale)))
    arr = np.asarray(img.resize((w, h), resample, reducing_gap=None), dtype=np.uint8)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:] = np.median(border, axis=0).astype(np.uint8)
    canvas[(size - h) // 2:(size - h) // 2 + h, (size - w) // 2:(size - w) // 2 + w] = arr
    return canvas


def preprocess(path):
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")  # alpha, CMYK, grey → RGB
    if pre.get("fit") == "pad":
        return letterbox(img)
    scale = round(size / pre["crop_pct"]) / min(img.size)          # shorter side to size / crop_pct
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), resample, reducing_gap=None)
    left, top = (w - size) // 2, (h - size) // 2                    # centre crop size × size
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


probs = session.run(None, {"images": np.stack([preprocess(p) for p in sys.argv[2:]])})[0]
for path, p in zip(sys.argv[2:], probs):
    best = np.argsort(-p)[:3]
    print(path, ", ".join(f"{classes[i]} {p[i]:.3f}" for i in best))
