"""The index: round trip through its folder, incremental updates, codes, and refusing foreign embeddings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_split_folder, run_cli

from finegrain.data.samples import Sample
from finegrain.embed import Embeddings
from finegrain.errors import DataError
from finegrain.retrieval import SimilarityIndex, build_index, eval_retrieval, search, update_index
from finegrain.retrieval.index import factory_string


def synthetic(n: int = 300, d: int = 64, seed: int = 0, key: str = "k1") -> Embeddings:
    """Unit vectors around 6 class centres, as if embedded by backbone `key`."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, d))
    y = rng.integers(0, 6, n)
    X = np.abs(centres[y] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    samples = [Sample(Path(f"/img/{seed}_{i}.jpg"), f"c{c}", "train") for i, c in enumerate(y)]
    return Embeddings(X, samples, [f"{seed}-{i}" for i in range(n)], backbone_id=f"bb-{key}", cache_key=key,
                      preprocess={})


@pytest.mark.parametrize("codes,approximate", [("float32", False), ("float32", True), ("float16", False),
                                                ("pq", False), ("pq", True), ("binary", False)])
def test_round_trip_gives_the_same_answers(tmp_path, codes, approximate):
    emb = synthetic()
    idx = SimilarityIndex.build(emb, codes=codes, approximate=approximate)
    idx.save(tmp_path / "idx")
    again = SimilarityIndex.load(tmp_path / "idx")
    q = synthetic(20, seed=1)
    a, b = idx.search(q, 5), again.search(q, 5)
    assert [[h.path for h in row] for row in a] == [[h.path for h in row] for row in b]
    assert all(len(row) == 5 for row in b)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["codes"] == codes and meta["factory"] == factory_string(codes, approximate, 64, 300)
    assert meta["code_bytes"] == {"float32": 256, "float16": 128, "pq": 48, "binary": 8}[codes]  # pq: 64 × 6 bits


def test_exact_float_search_matches_brute_force():
    emb = synthetic()
    idx = SimilarityIndex.build(emb, transform="sqrt")
    q = synthetic(10, seed=2)
    V, G = idx.transform.apply(q.X), idx.transform.apply(emb.X)
    want = np.argsort(-(V @ G.T), axis=1, kind="stable")[:, :5]
    got = idx.search(q, 5)
    for row, w in zip(got, want):
        assert [h.path for h in row] == [str(emb.samples[i].path) for i in w]
        assert [h.distance for h in row] == sorted(h.distance for h in row)


def test_queries_from_another_backbone_are_refused():
    idx = SimilarityIndex.build(synthetic(key="lite0"))
    with pytest.raises(DataError) as err:
        idx.search(synthetic(5, seed=1, key="lite1"), 3)
    msg = str(err.value)
    assert "another backbone" in msg and "expected" in msg and "fix" in msg and "lite1" in msg


@pytest.mark.parametrize("codes,factory", [("float32", None), ("float32", "IVF8,Flat"), ("float32", "HNSW16,Flat"),
                                           ("binary", None)])
def test_add_drop_and_compaction_keep_answers_consistent(codes, factory):
    base = synthetic(100)
    idx = SimilarityIndex.build(base.subset(np.arange(100) < 60), transform="sqrt", codes=codes, factory=factory)
    assert idx.add(base) == 40 and idx.n_live == 100
    assert idx.add(base) == 0  # already there
    gone = {str(s.path) for s in base.samples[:30]}
    assert idx.drop(lambda r: r.path not in gone) == 30
    assert idx.n_live == 70 and len(idx.rows) == 70  # compacted: more than a tenth was dead
    hits = idx.search(base.subset(np.arange(100) < 40), 10)
    assert all(h.path not in gone for row in hits for h in row)


@pytest.mark.parametrize("codes,approximate", [("pq", False), ("pq", True), ("float16", True), ("binary", False)])
def test_compaction_keeps_every_live_code_as_it_was(tmp_path, codes, approximate):
    """Removing dead rows must not re-quantise PQ codes or move IVF rows: the same answers, the same distances."""
    base = synthetic(400)
    idx = SimilarityIndex.build(base, codes=codes, approximate=approximate)
    gone = {str(s.path) for s in base.samples[::3]}
    idx.live &= np.array([r.path not in gone for r in idx.rows])  # marked dead, not yet compacted
    queries = synthetic(30, seed=5)
    before = idx.search(queries, 8)
    idx.compact()
    assert idx.index.ntotal == len(idx.rows) == idx.n_live == 400 - len(gone)
    idx.save(tmp_path / "idx")
    after = SimilarityIndex.load(tmp_path / "idx").search(queries, 8)
    assert [[(h.path, h.distance) for h in row] for row in after] == [[(h.path, h.distance) for h in row]
                                                                       for row in before]
    assert len(SimilarityIndex.load(tmp_path / "idx").duplicates(threshold=1e-6)) == 0


def test_same_class_only_and_exclude_duplicates():
    emb = synthetic()
    idx = SimilarityIndex.build(emb)
    q = emb.subset(np.arange(300) < 10)
    plain = idx.search(q, 3)
    assert all(row[0].sha256 == sha for row, sha in zip(plain, q.shas))  # each finds itself first
    excl = idx.search(q, 3, exclude_duplicates=True)
    assert all(h.sha256 != sha for row, sha in zip(excl, q.shas) for h in row)
    same = idx.search(q, 8, same_class_only=True)
    assert all(h.label == s.label for row, s in zip(same, q.samples) for h in row)


def test_duplicates_find_copies_and_label_disagreements():
    emb = synthetic(50)
    X = np.vstack([emb.X, emb.X[:2]])
    samples = emb.samples + [Sample(Path("/img/copy0.jpg"), emb.samples[0].label, "train"),
                             Sample(Path("/img/copy1.jpg"), "wrong", "train")]
    emb2 = Embeddings(X, samples, emb.shas + ["c0", "c1"], emb.backbone_id, emb.cache_key, {})
    idx = SimilarityIndex.build(emb2, transform="sqrt")
    pairs = idx.duplicates(threshold=1e-4)
    found = {(idx.rows[i].path, idx.rows[j].path) for i, j, _ in pairs}
    assert found == {("/img/0_0.jpg", "/img/copy0.jpg"), ("/img/0_1.jpg", "/img/copy1.jpg")}


def test_damaged_index_folder_is_a_clear_error(tmp_path):
    SimilarityIndex.build(synthetic()).save(tmp_path / "idx")
    (tmp_path / "idx" / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(DataError, match="index.faiss"):
        SimilarityIndex.load(tmp_path / "idx")
    with pytest.raises(DataError, match="not a finegrain index"):
        SimilarityIndex.load(tmp_path / "nothing")


def test_images_end_to_end_with_tiny_backbones(tmp_path):
    data = make_split_folder(tmp_path / "birds")
    idx = build_index(data, tmp_path / "idx", backbone="tiny", splits=["train"])
    assert idx.n_live == 24 and idx.meta["transform"] == "whiten"
    report = eval_retrieval(tmp_path / "idx", data, split="test")
    assert report["n_queries"] == 12 and report["metrics"]["recall@1"] > 0.8
    emb, hits = search(tmp_path / "idx", [data / "test" / "red_finch"], k=3)
    assert len(hits) == 4 and all(len(row) == 3 for row in hits)
    with pytest.raises(DataError, match="another backbone"):
        search(tmp_path / "idx", [data / "test" / "red_finch"], backbone="tiny:24")
    # incremental: the test images appended, then their files removed and dropped
    idx, added, dropped = update_index(tmp_path / "idx", data, splits=["test"])
    assert (added, dropped, idx.n_live) == (12, 0, 36)
    for f in (data / "test" / "blue_jay").iterdir():
        f.unlink()
    idx, added, dropped = update_index(tmp_path / "idx", drop_missing=True)
    assert (added, dropped, idx.n_live) == (0, 4, 32)


def test_cli_index_search_duplicates_eval(capsys, tmp_path):
    data = make_split_folder(tmp_path / "birds")
    out = tmp_path / "idx"
    code, _, err = run_cli(capsys, "index", data, "-o", out, "--backbone", "tiny", "--split", "train", "-q")
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "search", out, data / "test" / "red_finch" / "00.png", "--k", "2",
                                "--format", "csv", "-q")
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert lines[0] == "query,rank,path,label,distance" and len(lines) == 3
    code, stdout, err = run_cli(capsys, "search", out, data / "test", "--backbone", "tiny:24", "-q")
    assert code == 1 and "another backbone" in err and "Traceback" not in err
    code, stdout, err = run_cli(capsys, "duplicates", out, "--format", "jsonl", "-q")
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "eval-retrieval", out, data, "--format", "json", "-q")
    assert code == 0, err
    assert json.loads(stdout)["metrics"]["recall@1"] > 0.8
    code, _, err = run_cli(capsys, "index", "-o", tmp_path / "none", "--add")
    assert code == 2 and "no index" in err


def test_index_from_ray_embed_shards(tmp_path):
    """`finegrain embed --engine ray` output (Parquet shards + job file) indexes without re-embedding."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finegrain.scale.shards import JOB_FILE
    from finegrain.scale.stages import embedding_schema

    emb = synthetic(40)
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / JOB_FILE).write_text(json.dumps({"format": "finegrain-shards/1", "task": "embed",
                                               "backbone": emb.backbone_id, "cache_key": emb.cache_key}))
    rows = {"path": [str(s.path) for s in emb.samples] + ["/img/bad.jpg"], "sha256": emb.shas + [None],
            "label": emb.labels + [None], "split": ["train"] * 41,
            "embedding": [list(map(float, x)) for x in emb.X] + [None], "error": [None] * 40 + ["truncated"]}
    for part, sl in enumerate((slice(0, 20), slice(20, 41))):
        pq.write_table(pa.table({k: v[sl] for k, v in rows.items()}, schema=embedding_schema()),
                       shards / f"part-{part}.parquet")
    idx = build_index(shards, tmp_path / "idx", transform="sqrt")
    assert idx.n_live == 40 and idx.meta["backbone"] == emb.backbone_id and idx.meta["n_unreadable"] == 1
    direct = SimilarityIndex.build(emb, transform="sqrt")
    q = synthetic(5, seed=3)
    assert [[h.path for h in r] for r in idx.search(q, 4)] == [[h.path for h in r] for r in direct.search(q, 4)]
