"""Test-time views: time to embed images with a classifier's views (`--tta flip|d4`), this checkout against an
older one, in one run.

    python benchmarks/views_speed.py --before-src /tmp/finegrain-before/src     # results/views_speed_ndsb_plankton_d4.json
    python benchmarks/views_speed.py --before-src /tmp/finegrain-before/src --data cub100 --backbone efficientnet_lite0@320-whole --tta flip

`--before-src` is the `src/` folder of a checkout from before a change (e.g. `git worktree add
/tmp/finegrain-before 47e2521`: each view decoded and resized its image again); it goes first on PYTHONPATH for
the "before" rows. Each row is a child process embedding the same images (`embed_with_views` without an
embedding cache, so everything is computed; the ONNX export is made once beforehand in a shared cache folder
and not timed), with a fixed thread budget. Rows alternate before/after so a load spike from other work hits both; the load
average is recorded with each row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, shared_dataset, write_result

CHILD = r"""
import json, sys, time
from finegrain.data.sources import load_data
from finegrain.embed import embed_with_views
from finegrain.tta import classifier_views

data, backbone, tta, n = sys.argv[1:5]
everything = load_data(data).samples
samples = everything[::max(1, len(everything) // int(n))][:int(n)]
t0 = time.perf_counter()
emb = embed_with_views(samples, backbone, classifier_views(tta), cache=None, progress=False)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "n": len(emb.samples), "computed": emb.n_computed}))
"""


def one_row(env: dict, data: Path, backbone: str, tta: str, n: int) -> dict:
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", CHILD, str(data), backbone, tta, str(n)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"a row failed ({env['PYTHONPATH']}):\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["load_before"] = round(load, 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-src", type=Path, required=True, help="src/ of the older checkout")
    ap.add_argument("--data", default="ndsb_plankton", help="shared dataset (default ndsb_plankton)")
    ap.add_argument("--backbone", default="efficientnet_lite0@pad")
    ap.add_argument("--tta", default="d4", help="flip, rot4 or d4 (default d4)")
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="FINEGRAIN_THREADS of every row (default 1)")
    args = ap.parse_args()

    data = shared_dataset(args.data)
    src = Path(__file__).resolve().parents[1] / "src"
    base = {**os.environ, "FINEGRAIN_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    versions = {"before": {**base, "PYTHONPATH": str(args.before_src)}, "after": {**base, "PYTHONPATH": str(src)}}
    with tempfile.TemporaryDirectory(prefix="views-speed-") as shared:
        for env in versions.values():
            env["FINEGRAIN_CACHE_DIR"] = shared  # where the ONNX export lives (no embeddings are cached)
        one_row(versions["after"], data, args.backbone, "none", 2)  # the export, made once, not timed
        rows = {name: [] for name in versions}
        for r in range(args.rounds):
            for name, env in versions.items():
                rows[name].append(one_row(env, data, args.backbone, args.tta, args.images))
                print(f"round {r} {name}: {rows[name][-1]}", file=sys.stderr)
    best = {name: min(x["seconds"] for x in rs) for name, rs in rows.items()}
    result = {"machine": machine(), "data": args.data, "backbone": args.backbone, "tta": args.tta,
              "images": args.images, "threads": args.threads, "rows": rows,
              "images_per_s": {name: round(args.images / s, 2) for name, s in best.items()},
              "speedup": round(best["before"] / best["after"], 3),
              "other_load": os.environ.get("FINEGRAIN_BENCH_NOTE", "")}
    write_result(f"views_speed_{args.data}_{args.tta}", result)
    print(json.dumps({k: result[k] for k in ("images_per_s", "speedup")}))


if __name__ == "__main__":
    main()
