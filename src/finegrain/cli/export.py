"""`finegrain export MODEL -o model.onnx`: one ONNX graph from uint8 image to calibrated probabilities."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="model directory from `finegrain fit` or `finegrain finetune`")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the weights (smaller, may cost accuracy)")
    p.add_argument("--check", default=None, metavar="DATA",
                   help="labelled data: report the file's top-1 on its test split (and float32's, with --int8)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result line")


def run(args: argparse.Namespace) -> int:
    import tempfile

    from ..export.onnx_model import export_onnx, onnx_top1
    from ..pipeline import Classifier
    from .common import info

    clf = Classifier.load(args.model)
    written = export_onnx(clf, args.output, opset=args.opset, int8=args.int8)
    info(args, f"wrote {written['path']} ({written['bytes'] / 2**20:.1f} MiB, opset {written['opset']}"
               f"{', int8 weights' if args.int8 else ''}); max |p − finegrain's p| on check images "
               f"{written['max_abs_diff_vs_finegrain']:.1e}")
    if args.check:
        result = onnx_top1(args.output, clf, args.check)
        line = f"top-1 on {result['n']} test images: {result['top1']:.4f}"
        if args.int8:
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = Path(tmp) / "fp32.onnx"
                export_onnx(clf, fp32, opset=args.opset)
                base = onnx_top1(fp32, clf, args.check)
            line += f" (float32 {base['top1']:.4f}: {100 * (result['top1'] - base['top1']):+.2f} points)"
        print(line)
    return 0
