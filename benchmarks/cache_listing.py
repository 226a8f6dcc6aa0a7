"""How long `finegrain cache` takes to count a large embedding cache, before and after the key index.

    python benchmarks/cache_listing.py --cache /tmp/finegrain-bench-cache --before-src OLD_CHECKOUT/src

Copies the cache's SQLite file (SQLite's online backup: the source may be in use) into a scratch folder, then
times `EmbeddingCache.usage()` — the count per backbone that the listing and `--prune` start with — with the old
checkout and with this one, each in a fresh process: with a cold page cache (when this user may drop it:
root writes /proc/sys/vm/drop_caches) and warm. This checkout's first listing also builds the index. Writes
results/cache_listing.json; the copy is deleted.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine

SRC = Path(__file__).resolve().parents[1] / "src"
TIMED = """import json, sys, time
sys.path.insert(0, sys.argv[1])
from finegrain.store import EmbeddingCache
with EmbeddingCache(sys.argv[2]) as cache:
    t = time.perf_counter()
    usage = cache.usage()
    print(json.dumps({"seconds": round(time.perf_counter() - t, 2), "keys": len(usage),
                      "rows": sum(u[2] for u in usage)}))
"""


def drop_page_cache() -> bool:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def timed_usage(src: Path, folder: Path, cold: bool) -> dict:
    dropped = drop_page_cache() if cold else False
    out = subprocess.run([sys.executable, "-c", TIMED, str(src), str(folder)], capture_output=True, text=True,
                         check=True).stdout
    return {**json.loads(out), "page_cache": "dropped" if dropped else ("warm" if not cold else "not droppable")}


def copy_cache(cache: Path, folder: Path) -> None:
    source = sqlite3.connect(f"file:{cache / 'embeddings.sqlite3'}?mode=ro", uri=True)
    target = sqlite3.connect(folder / "embeddings.sqlite3")
    source.backup(target)
    target.close()
    source.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="a cache folder holding embeddings.sqlite3")
    ap.add_argument("--before-src", type=Path, required=True, help="the src/ folder of a checkout without the index")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cache-listing-"))
    try:
        copy_cache(args.cache, folder)
        size_before = (folder / "embeddings.sqlite3").stat().st_size
        runs = {"before, cold": timed_usage(args.before_src, folder, cold=True),
                "before, warm": timed_usage(args.before_src, folder, cold=False),
                "after, first listing (builds the index), cold": timed_usage(SRC, folder, cold=True),
                "after, cold": timed_usage(SRC, folder, cold=True),
                "after, warm": timed_usage(SRC, folder, cold=False)}
        size_after = (folder / "embeddings.sqlite3").stat().st_size
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"runs": runs, "file_bytes": size_before, "index_bytes": size_after - size_before,
              "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    (RESULTS / "cache_listing.json").write_text(json.dumps(result, indent=2) + "\n")
    for name, run in runs.items():
        print(f"{name:48s} {run['seconds']:7.2f} s  ({run['rows']} rows, {run['keys']} keys, {run['page_cache']})")


if __name__ == "__main__":
    main()
