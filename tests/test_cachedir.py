"""`finegrain cache`: the cache folder's parts listed with their size and last use, and `--prune DAYS` removing
only what no run used for that long — after which the runs that need it compute it again."""
from __future__ import annotations

import json
import os
import sqlite3
import time

from conftest import make_split_folder, run_cli

FAST = ["--backbone", "tiny", "--train-blocks", "1", "--views", "2", "--precision", "fp32", "-q"]
KINDS = {"embeddings", "activations", "finetune-run", "onnx"}


def _listing(capsys, cache):
    code, out, err = run_cli(capsys, "cache", "--cache-dir", cache, "--format", "json")
    assert code == 0, err
    return json.loads(out)["entries"]


def _age_everything(cache, days):
    """Pretend no run touched the cache for `days` days."""
    then = time.time() - days * 86400
    for path in cache.rglob("*"):
        os.utime(path, (then, then))
    with sqlite3.connect(cache / "embeddings.sqlite3") as db:
        db.execute("UPDATE key_use SET last_used = ?", [then])


def test_cache_lists_its_parts_and_prunes_only_what_went_unused(tmp_path, capsys, isolated_cache):
    data = make_split_folder(tmp_path / "birds")
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "tuned", "--epochs", "1", *FAST)
    assert code == 0, err
    entries = _listing(capsys, isolated_cache)
    assert {e["kind"] for e in entries} == KINDS
    assert all(e["size"] > 0 and time.time() - e["last_used"] < 600 for e in entries)
    run = next(e for e in entries if e["kind"] == "finetune-run")
    assert run["name"] == "tiny" and run["detail"] == "finished"
    assert any(e["kind"] == "embeddings" and e["name"].startswith("finetuned:tiny.") for e in entries)

    _age_everything(isolated_cache, 40)
    code, _, err = run_cli(capsys, "embed", data, "-o", tmp_path / "emb", "--backbone", "tiny", "-q")  # uses tiny now
    assert code == 0, err
    code, out, err = run_cli(capsys, "cache", "--cache-dir", isolated_cache, "--prune", "30", "--dry-run")
    assert code == 0 and "would free" in err
    assert len(_listing(capsys, isolated_cache)) == len(entries)  # a dry run removes nothing

    code, out, err = run_cli(capsys, "cache", "--cache-dir", isolated_cache, "--prune", "30", "--format", "json")
    assert code == 0, err
    pruned = json.loads(out)["entries"]
    assert {e["kind"] for e in pruned} == KINDS  # the stores, runs, tuned embeddings and exports went...
    left = _listing(capsys, isolated_cache)
    assert [e["name"] for e in left if e["kind"] == "embeddings"] == ["tiny"]  # ...not the stock tiny's
    assert not any((isolated_cache / "activations").iterdir()) and not any((isolated_cache / "finetune-runs").iterdir())

    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "again", "--epochs", "1", *FAST)
    assert code == 0, err  # everything pruned is computed again, to the same network
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["backbone"] == json.loads((tmp_path / "tuned" / "config.json").read_text())["backbone"]
    assert not again["finetune"]["members"][0]["reused_finished_run"]


def test_cache_refuses_a_missing_folder_and_a_dry_run_without_prune(tmp_path, capsys):
    code, _, err = run_cli(capsys, "cache", "--cache-dir", tmp_path / "nowhere")
    assert code != 0 and "no cache folder" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "cache", "--cache-dir", tmp_path, "--dry-run")
    assert code != 0 and "--dry-run only applies to --prune" in err
    try:
        run_cli(capsys, "cache", "--prune", "-1")
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("--prune -1 was accepted")


def test_listing_counts_each_backbone_through_a_key_index_kept_up_to_date(tmp_path):
    """The listing counts rows through a narrow index of the keys (kept up to date by later writes), not by
    reading every vector: a multi-GB cache is listed in about a second (benchmarks/cache_listing.py)."""
    import numpy as np

    from finegrain.store import EmbeddingCache

    rng = np.random.default_rng(0)
    with EmbeddingCache(tmp_path) as cache:
        cache.put_many("a", {f"sha{i}": rng.standard_normal(8).astype(np.float32) for i in range(5)})
        cache.put_many("b", {f"sha{i}": rng.standard_normal(3).astype(np.float32) for i in range(2)})
        first = {key: (rows, size) for key, _, rows, size, _ in cache.usage()}
        cache.put_many("a", {f"sha{i}": rng.standard_normal(8).astype(np.float32) for i in range(3, 9)})  # 4 new
        plan = " ".join(str(r) for r in cache._conn.execute(
            "EXPLAIN QUERY PLAN SELECT key, COUNT(*) FROM embeddings GROUP BY key"))
        later = {key: (rows, size) for key, _, rows, size, _ in cache.usage()}
    assert first == {"a": (5, 5 * 8 * 4), "b": (2, 2 * 3 * 4)}
    assert later == {"a": (9, 9 * 8 * 4), "b": (2, 2 * 3 * 4)}
    assert "embeddings_by_key" in plan
