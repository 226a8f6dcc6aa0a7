from __future__ import annotations

import numpy as np

from finegrain.backbones import get_backbone
from finegrain.data.samples import Sample
from finegrain.data.sources import load_data
from finegrain.embed import embed_samples, load_embeddings, save_embeddings
from finegrain.store import EmbeddingCache

from conftest import make_image


def test_second_run_computes_nothing(split_folder, isolated_cache):
    samples = load_data(split_folder).samples
    with EmbeddingCache() as cache:
        first = embed_samples(samples, "tiny", cache=cache, progress=False)
        second = embed_samples(samples, "tiny", cache=cache, progress=False)
    assert first.n_computed == len(samples) and first.n_cached == 0
    assert second.n_computed == 0 and second.n_cached == len(samples)
    np.testing.assert_array_equal(first.X, second.X)
    assert (isolated_cache / "embeddings.sqlite3").is_file()


def test_interrupted_run_resumes(split_folder):
    samples = load_data(split_folder).samples
    with EmbeddingCache() as cache:
        embed_samples(samples[:10], "tiny", cache=cache, progress=False, batch_size=4)
        rest = embed_samples(samples, "tiny", cache=cache, progress=False, batch_size=4)
    assert rest.n_cached == 10 and rest.n_computed == len(samples) - 10


def test_embeddings_are_normalised_and_match_direct_backbone(split_folder):
    samples = load_data(split_folder).samples[:5]
    emb = embed_samples(samples, "tiny", progress=False)
    np.testing.assert_allclose(np.linalg.norm(emb.X, axis=1), 1.0, rtol=1e-5)
    bb = get_backbone("tiny")
    from finegrain.data.images import load_rgb
    direct = bb.embed(np.stack([bb.preprocess.apply(load_rgb(s.path)) for s in samples]))
    np.testing.assert_allclose(emb.X, direct, atol=1e-6)


def test_bad_file_becomes_error_record_not_substitute(tmp_path):
    good = make_image(tmp_path / "good.png", (10, 200, 10), 0)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    missing = tmp_path / "missing.jpg"
    emb = embed_samples([Sample(good), Sample(bad), Sample(missing)], "tiny", progress=False)
    assert emb.paths == [str(good)]
    assert len(emb.X) == 1
    reasons = {e.path: e.reason for e in emb.errors}
    assert set(reasons) == {str(bad), str(missing)}
    assert "not a recognised image" in reasons[str(bad)] and "not found" in reasons[str(missing)]


def test_identical_files_are_embedded_once(tmp_path):
    a = make_image(tmp_path / "a.png", (10, 20, 30), 0)
    b = tmp_path / "b.png"
    b.write_bytes(a.read_bytes())
    emb = embed_samples([Sample(a), Sample(b)], "tiny", progress=False)
    assert emb.n_computed == 1 and len(emb.X) == 2
    np.testing.assert_array_equal(emb.X[0], emb.X[1])


def test_cache_key_separates_backbones():
    assert get_backbone("tiny").cache_key != get_backbone("efficientnet_lite0").cache_key


def test_embeddings_folder_round_trip(split_folder, tmp_path):
    emb = embed_samples(load_data(split_folder).samples, "tiny", progress=False)
    save_embeddings(emb, tmp_path / "emb", {"backbone": "tiny"})
    back = load_embeddings(tmp_path / "emb")
    np.testing.assert_array_equal(back.X, emb.X)
    assert back.labels == emb.labels and [s.split for s in back.samples] == [s.split for s in emb.samples]
    assert back.cache_key == emb.cache_key and back.shas == emb.shas


def test_views_are_decoded_once_and_equal_each_view_embedded_alone(tmp_path, monkeypatch):
    """`embed_with_views` decodes each file once for all the views it lacks (d4: 8 crops from one decoding),
    computes only what the cache lacks, and gives what each view embedded on its own gives; an unreadable
    file is one error, not one per view."""
    import finegrain.embed
    from finegrain.embed import embed_with_views
    from finegrain.tta import classifier_views
    from finegrain.views import average_views

    paths = [make_image(tmp_path / f"img{i}.png", (60 * i, 120, 200), i, size=40 + 8 * i) for i in range(3)]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    samples = [Sample(p) for p in paths] + [Sample(tmp_path / "broken.png")]
    views = classifier_views("d4")
    decoded = []
    real = finegrain.embed.load_sample_rgb
    monkeypatch.setattr(finegrain.embed, "load_sample_rgb", lambda s, **kw: decoded.append(s.path) or real(s, **kw))
    with EmbeddingCache(tmp_path / "cache") as cache:
        embed_samples(samples, "tiny", cache=cache, progress=False, view="rot90")  # one view already cached
        decoded.clear()
        joined = embed_with_views(samples, "tiny", views, cache=cache, progress=False, batch_size=5)
        assert sorted(decoded) == sorted(s.path for s in samples)  # each file once, for 7 missing views
        assert (joined.n_computed, joined.n_cached) == (7 * 3, 3)
    assert [e.path for e in joined.errors] == [str(tmp_path / "broken.png")] and len(joined.X) == 3
    alone = [embed_samples(samples, "tiny", progress=False, view=v).X for v in (None, *views)]
    np.testing.assert_allclose(joined.X, average_views(alone), atol=1e-5)
