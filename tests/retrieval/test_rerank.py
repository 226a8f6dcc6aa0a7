"""`index --codes pq --rerank N`: PQ codes in memory, float16 vectors on disk re-scoring the shortlist exactly."""
from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import pytest
from conftest import make_split_folder, run_cli

from finegrain.data.samples import Sample
from finegrain.embed import Embeddings
from finegrain.errors import ConfigError, DataError
from finegrain.retrieval import SimilarityIndex, build_index, update_index
from finegrain.retrieval.rerank import VECTORS_FILE

SMALL_PQ = "IVF16,PQ8x4"  # 4 bytes per 64-d vector: coarse enough that plain PQ loses most neighbours


def copies(n: int, seed: int = 0, tag: str = "g", d: int = 64, n_centres: int = 64) -> Embeddings:
    """Unit vectors jittered around seeded centres (≈ 31 per centre at n = 2,000): each query's 10 nearest are
    decided by fine differences, which coarse PQ codes blur and exact re-scoring restores."""
    centres = np.random.default_rng(0).normal(size=(n_centres, d))
    rng = np.random.default_rng(seed)
    X = centres[rng.integers(0, n_centres, n)] + 0.3 * rng.normal(size=(n, d))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    samples = [Sample(Path(f"/img/{tag}{i}.jpg")) for i in range(n)]
    return Embeddings(X, samples, [f"{tag}{seed}-{i}" for i in range(n)], backbone_id="bb", cache_key="k",
                      preprocess={})


def answers(index: SimilarityIndex, queries: Embeddings, k: int = 10) -> list[list[tuple[str, float]]]:
    return [[(h.path, h.distance) for h in row] for row in index.search(queries, k)]


def test_rerank_returns_the_exact_neighbours_where_plain_pq_does_not():
    gallery, queries = copies(2000), copies(100, seed=1, tag="q")
    exact = answers(SimilarityIndex.build(gallery, transform="l2", approximate=False), queries)
    plain = answers(SimilarityIndex.build(gallery, transform="l2", codes="pq", factory=SMALL_PQ), queries)
    reranked = answers(SimilarityIndex.build(gallery, transform="l2", codes="pq", factory=SMALL_PQ, rerank=10),
                       queries)

    def recall(rows):
        return np.mean([len({p for p, _ in r} & {p for p, _ in e}) / 10 for r, e in zip(rows, exact)])

    assert recall(plain) < 0.5 and recall(reranked) > 0.99
    same_list = [[p for p, _ in r] == [p for p, _ in e] for r, e in zip(reranked, exact)]
    assert np.mean(same_list) >= 0.85  # the rest swap near-ties (float16 rounding of the stored vectors)
    assert not any([p for p, _ in r] == [p for p, _ in e] for r, e in zip(plain, exact))
    for r, e in zip(reranked, exact):
        assert [d for _, d in r] == sorted(d for _, d in r)
        want = dict(e)
        assert all(abs(d - want[p]) < 1e-3 for p, d in r if p in want)  # the exact distance, not PQ's


def test_rerank_needs_pq_codes_and_a_positive_count():
    with pytest.raises(ConfigError, match="PQ codes only"):
        SimilarityIndex.build(copies(50), transform="l2", codes="float16", rerank=10)
    with pytest.raises(ConfigError, match="positive whole number"):
        SimilarityIndex.build(copies(50), transform="l2", codes="pq", rerank=0)


def test_round_trip_memory_maps_the_float16_file(tmp_path):
    gallery, queries = copies(2000), copies(30, seed=1, tag="q")
    idx = SimilarityIndex.build(gallery, transform="l2", codes="pq", factory=SMALL_PQ, rerank=10)
    before = answers(idx, queries)
    idx.save(tmp_path / "idx")
    stored = np.load(tmp_path / "idx" / VECTORS_FILE)
    assert stored.dtype == np.float16 and stored.shape == (2000, 64)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["rerank"] == 10 and meta["code_bytes"] == 4 and meta["vectors_bytes"] >= 2000 * 64 * 2
    again = SimilarityIndex.load(tmp_path / "idx")
    assert isinstance(again.vectors.base.base, mmap.mmap) and not again.vectors.base.flags.writeable
    assert answers(again, queries) == before


def test_an_index_saved_before_rerank_existed_still_loads(tmp_path):
    SimilarityIndex.build(copies(300), transform="l2", codes="pq").save(tmp_path / "idx")
    meta_path = tmp_path / "idx" / "index.json"
    meta = json.loads(meta_path.read_text())
    del meta["rerank"]  # what an older finegrain wrote
    meta_path.write_text(json.dumps(meta))
    old = SimilarityIndex.load(tmp_path / "idx")
    assert old.vectors is None and len(old.search(copies(3, seed=1, tag="q"), 5)[0]) == 5


def test_added_images_are_found_and_appended_to_the_file(tmp_path):
    first, later = copies(1500), copies(300, seed=2, tag="new")
    SimilarityIndex.build(first, transform="l2", codes="pq", factory=SMALL_PQ, rerank=10).save(tmp_path / "idx")
    idx = SimilarityIndex.load(tmp_path / "idx")
    assert idx.add(later) == 300
    idx.save(tmp_path / "idx")
    again = SimilarityIndex.load(tmp_path / "idx")
    assert np.load(tmp_path / "idx" / VECTORS_FILE).shape == (1800, 64)
    hits = again.search(later, 10)
    assert [row[0].path for row in hits] == [str(s.path) for s in later.samples]  # each finds itself
    assert max(row[0].distance for row in hits) < 1e-3


def test_compaction_keeps_answers_and_the_file_in_step(tmp_path):
    """Dead rows leave faiss and the float16 file together: rows of the loaded file and rows added since."""
    base, extra, queries = copies(1200), copies(400, seed=2, tag="new"), copies(40, seed=1, tag="q")
    SimilarityIndex.build(base, transform="l2", codes="pq", factory=SMALL_PQ, rerank=10).save(tmp_path / "idx")
    idx = SimilarityIndex.load(tmp_path / "idx")
    idx.add(extra)
    gone = {str(s.path) for s in base.samples[::4]} | {str(s.path) for s in extra.samples[::3]}
    idx.live &= np.array([r.path not in gone for r in idx.rows])  # marked dead, not yet compacted
    before = answers(idx, queries)
    idx.compact()
    assert idx.index.ntotal == len(idx.vectors) == len(idx.rows) == 1600 - len(gone)
    assert answers(idx, queries) == before
    idx.save(tmp_path / "idx")
    assert answers(SimilarityIndex.load(tmp_path / "idx"), queries) == before
    pairs = SimilarityIndex.load(tmp_path / "idx").duplicates(threshold=1e-6)
    assert pairs == []


@pytest.mark.parametrize("damage,message", [
    ("missing", "is missing"), ("truncated", "cannot be read"), ("other shape", "does not match the index"),
    ("rewritten", "changed after the index was saved")])
def test_a_damaged_float16_file_is_a_clear_error(tmp_path, damage, message):
    SimilarityIndex.build(copies(500), transform="l2", codes="pq", factory=SMALL_PQ, rerank=10).save(tmp_path / "idx")
    path = tmp_path / "idx" / VECTORS_FILE
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    elif damage == "other shape":
        np.save(path, np.zeros((499, 64), dtype=np.float16))
    else:
        np.save(path, np.load(path)[::-1].copy())
    with pytest.raises(DataError, match=message) as err:
        SimilarityIndex.load(tmp_path / "idx")
    assert all(part in str(err.value) for part in ("expected:", "found:", "fix:", "--rerank"))


def test_cli_index_add_search_duplicates_eval_with_rerank(capsys, tmp_path):
    data = make_split_folder(tmp_path / "birds")
    out = tmp_path / "idx"
    code, _, err = run_cli(capsys, "index", data, "-o", out, "--backbone", "tiny", "--split", "train",
                           "--codes", "pq", "--rerank", "5")
    assert code == 0, err
    assert "on disk as float16" in err
    code, stdout, err = run_cli(capsys, "search", out, data / "train" / "red_finch" / "00.png", "--k", "2",
                                "--format", "csv", "-q")
    assert code == 0, err
    assert stdout.splitlines()[1].split(",")[2].endswith("00.png")  # finds itself first, at distance ≈ 0
    code, stdout, err = run_cli(capsys, "eval-retrieval", out, data, "--format", "json", "-q")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["index_settings"]["rerank"] == 5 and report["metrics"]["recall@1"] > 0.8
    code, _, err = run_cli(capsys, "index", data, "-o", out, "--split", "test", "--add", "-q")
    assert code == 0, err
    assert np.load(out / VECTORS_FILE).shape[0] == 36
    code, stdout, err = run_cli(capsys, "duplicates", out, "--format", "jsonl", "-q")
    assert code == 0, err
    code, _, err = run_cli(capsys, "index", data, "-o", out, "--add", "--rerank", "3")
    assert code == 2 and "cannot change an existing index" in err
    code, _, err = run_cli(capsys, "index", data, "-o", tmp_path / "f32", "--rerank", "5")
    assert code == 2 and "PQ codes only" in err and "Traceback" not in err
    (out / VECTORS_FILE).unlink()
    code, _, err = run_cli(capsys, "search", out, data / "test", "-q")
    assert code == 1 and "is missing" in err and "fix:" in err and "Traceback" not in err


def test_update_index_drops_and_compacts_the_float16_rows(tmp_path):
    data = make_split_folder(tmp_path / "birds")
    idx = build_index(data, tmp_path / "idx", backbone="tiny", codes="pq", rerank=4)
    for f in (data / "test" / "blue_jay").iterdir():
        f.unlink()
    idx, added, dropped = update_index(tmp_path / "idx", drop_missing=True)
    assert (added, dropped, len(idx.rows)) == (0, 4, 32)  # compacted: a tenth was dead
    again = SimilarityIndex.load(tmp_path / "idx")
    assert np.load(tmp_path / "idx" / VECTORS_FILE).shape[0] == 32
    V = again.vectors.rows(np.arange(32))
    assert np.allclose(np.linalg.norm(V, axis=1), 1, atol=1e-2)
    assert all("blue_jay" not in r.path or "/train/" in r.path for r in again.rows)
