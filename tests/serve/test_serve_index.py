"""POST /v1/models/{name}/neighbours: the nearest images of `finegrain serve --index`, answered by the same
`SimilarityIndex` code as `finegrain search`, and refused clearly without an index or with another network's."""
from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from serve_support import (bird, classifier, fit_tiny, index_dir, make_client, model_dir,  # noqa: F401 - fixtures
                           serve_data, wait_ready)

NEIGHBOURS = "/v1/models/birds/neighbours"
PNG = {"content-type": "image/png"}


@pytest.fixture(scope="module")
def index(index_dir):
    from finegrain.retrieval.index import SimilarityIndex
    return SimilarityIndex.load(index_dir)


@pytest.fixture
def index_client(classifier, index, tmp_path):
    with make_client({"birds": classifier}, cache_dir=tmp_path / "cache", max_images=4, index=index) as c:
        wait_ready(c)
        yield c


def test_neighbours_match_finegrain_search_on_the_same_file(index_client, index_dir, tmp_path):
    from finegrain.retrieval import search

    query = tmp_path / "jay.png"
    query.write_bytes(bird("blue_jay"))
    r = index_client.post(NEIGHBOURS + "?k=3", files=[("files", ("jay.png", query.read_bytes(), "image/png"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["index"] == {"n_images": 24, "backbone": "tiny", "tta": "none", "transform": "whiten", "codes": "float32"}
    (res,) = body["results"]
    assert res["filename"] == "jay.png" and res["status"] == "ok" and len(res["neighbours"]) == 3
    _, (want,) = search(index_dir, [query], k=3, cache_dir=tmp_path / "cache")
    assert [n["name"] for n in res["neighbours"]] == [h.path.rsplit("/", 1)[-1] for h in want]
    assert [n["distance"] for n in res["neighbours"]] == pytest.approx([h.distance for h in want], abs=1e-5)
    assert [n["sha256"] for n in res["neighbours"]] == [h.sha256 for h in want]
    assert all(n["label"] == "blue_jay" and "/" not in n["name"] for n in res["neighbours"])
    thumb = Image.open(io.BytesIO(base64.b64decode(res["neighbours"][0]["thumbnail_jpeg_base64"])))
    assert thumb.format == "JPEG"


def test_an_indexed_file_finds_itself_unless_duplicates_are_excluded(index_client, serve_data):
    own = (serve_data / "train" / "red_finch" / "00.png").read_bytes()
    first = index_client.post(NEIGHBOURS + "?k=2", content=own, headers=PNG).json()["results"][0]["neighbours"][0]
    assert first["name"] == "00.png" and first["label"] == "red_finch" and first["distance"] < 1e-4
    kept = index_client.post(NEIGHBOURS + "?k=2&exclude_duplicates=true", content=own, headers=PNG).json()
    assert all(n["sha256"] != first["sha256"] for n in kept["results"][0]["neighbours"])


def test_unreadable_images_are_error_rows_and_bad_k_is_refused(index_client):
    r = index_client.post(NEIGHBOURS, files=[("files", ("ok.png", bird("red_finch"), "image/png")),
                                             ("files", ("notes.png", b"not an image", "image/png"))])
    ok, bad = r.json()["results"]
    assert r.status_code == 200 and len(ok["neighbours"]) == 5 and ok["neighbours"][0]["label"] == "red_finch"
    assert bad["status"] == "error" and bad["error_code"] == "unreadable_image" and "notes.png" in bad["error"]
    assert index_client.post(NEIGHBOURS + "?k=0", content=bird("red_finch"), headers=PNG).status_code == 422
    assert index_client.post(NEIGHBOURS + "?k=51", content=bird("red_finch"), headers=PNG).status_code == 422


def test_no_index_is_404_and_another_networks_index_is_409(classifier, index, serve_data, tmp_path):
    from finegrain.pipeline import Classifier

    with make_client({"birds": classifier}, cache_dir=tmp_path) as c:
        wait_ready(c)
        r = c.post(NEIGHBOURS, content=bird("red_finch"), headers=PNG)
        assert r.status_code == 404 and r.json()["error"]["code"] == "no_index" and "--index" in r.json()["error"]["fix"]
        assert c.get("/v1/models").json()["models"][0]["similar_images"] is False
    other = Classifier.load(fit_tiny(tmp_path, serve_data, "wide", "--backbone", "tiny:24"))
    with make_client({"birds": classifier, "wide": other}, cache_dir=tmp_path, index=index) as c:
        wait_ready(c)
        r = c.post("/v1/models/wide/neighbours", content=bird("red_finch"), headers=PNG)
        error = r.json()["error"]
        assert r.status_code == 409 and error["code"] == "index_mismatch"
        assert "expected" in error["message"] and "found 'tiny'" in error["message"] and "tiny:24" in error["message"]
        assert "ask model birds" in error["fix"] and "Traceback" not in r.text
        listed = {m["name"]: m["similar_images"] for m in c.get("/v1/models").json()["models"]}
        assert listed == {"birds": True, "wide": False}
    from finegrain.errors import ConfigError
    from finegrain.serve import ServeSettings, create_app
    with pytest.raises(ConfigError, match="none of the served models"):
        create_app({"wide": other}, ServeSettings(cache_dir=tmp_path), index)


def test_a_flip_index_embeds_uploads_with_their_mirror_like_search(classifier, model_dir, serve_data, tmp_path):
    from finegrain.retrieval import build_index, search

    idx = build_index(serve_data, tmp_path / "flip.index", model=model_dir, splits=["train"], tta="flip",
                      cache_dir=tmp_path / "cache")
    query = tmp_path / "warbler.png"
    query.write_bytes(bird("green_warbler"))
    _, (want,) = search(idx, [query], k=4, cache_dir=tmp_path / "cache")
    with make_client({"birds": classifier}, cache_dir=tmp_path / "cache", index=idx) as c:
        wait_ready(c)
        body = c.post(NEIGHBOURS + "?k=4", content=query.read_bytes(), headers=PNG).json()
    assert body["index"]["tta"] == "flip"
    got = body["results"][0]["neighbours"]
    assert [n["sha256"] for n in got] == [h.sha256 for h in want]
    assert [n["distance"] for n in got] == pytest.approx([h.distance for h in want], abs=1e-5)
