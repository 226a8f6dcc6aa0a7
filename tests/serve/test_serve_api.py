"""The JSON API through FastAPI's TestClient: answers, the unknown verdict, limits, errors, metrics, batching."""
from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from PIL import Image

from serve_support import (bird, classifier, client, fit_tiny, image_bytes, make_client,  # noqa: F401 - fixtures
                           model_dir, plain_model_dir, serve_data, wait_ready)

PREDICT = "/v1/models/birds/predict"


def files(*items: tuple[str, bytes, str]) -> list:
    return [("files", item) for item in items]


def test_predict_one_image_gives_top_k_with_provenance(client, classifier):
    r = client.post(PREDICT, files=files(("red.png", bird("red_finch"), "image/png")))
    assert r.status_code == 200, r.text
    body = r.json()
    (res,) = body["results"]
    assert res["filename"] == "red.png" and res["status"] == "ok"
    assert res["top_k"][0]["label"] == "red_finch" and len(res["top_k"]) == 3  # 3 classes < default top_k 5
    assert abs(sum(p["prob"] for p in res["top_k"]) - 1) < 1e-4
    prov = body["provenance"]
    assert prov["model"] == "birds" and prov["backbone"] == "tiny" and prov["n_classes"] == 3
    assert prov["class_list_hash"] == classifier.provenance()["class_list_hash"] and prov["finegrain_version"]


def test_predict_several_images_keeps_their_order_and_matches_the_classifier(client, classifier, tmp_path):
    names = ["blue_jay", "green_warbler", "red_finch"]
    r = client.post(PREDICT, files=files(*[(f"{n}.jpg", bird(n, 7, "JPEG"), "image/jpeg") for n in names]))
    results = r.json()["results"]
    assert [x["filename"] for x in results] == [f"{n}.jpg" for n in names]
    assert [x["top_k"][0]["label"] for x in results] == names
    for n in names:  # the same answer as the Python API on the same file
        (tmp_path / f"{n}.jpg").write_bytes(bird(n, 7, "JPEG"))
    expected = classifier.predict([tmp_path / f"{n}.jpg" for n in names], unknown="auto")
    assert [x["top_k"][0]["prob"] for x in results] == pytest.approx([p.probs[0] for p in expected], abs=1e-5)


def test_raw_image_body_and_top_k(client):
    r = client.post(PREDICT + "?top_k=1", content=bird("blue_jay"), headers={"content-type": "image/png"})
    (res,) = r.json()["results"]
    assert res["filename"] == "upload" and [p["label"] for p in res["top_k"]] == ["blue_jay"]


def test_unknown_verdict_auto_threshold_and_off(client, classifier):
    auto = client.post(PREDICT, content=bird("red_finch"), headers={"content-type": "image/png"}).json()
    assert auto["unknown_threshold"] == pytest.approx(classifier.detector.threshold_)
    assert auto["results"][0]["unknown"] is False and auto["results"][0]["known_score"] is not None
    strict = client.post(PREDICT + "?unknown=2", content=bird("red_finch"), headers={"content-type": "image/png"})
    res = strict.json()["results"][0]
    assert res["unknown"] is True and res["label"] == "unknown" and strict.json()["unknown_threshold"] == 2
    off = client.post(PREDICT + "?unknown=off", content=bird("red_finch"), headers={"content-type": "image/png"})
    assert off.json()["results"][0]["unknown"] is None and off.json()["unknown_threshold"] is None


def test_mixed_request_answers_readable_images_and_names_the_bad_one(client):
    r = client.post(PREDICT, files=files(("ok.png", bird("red_finch"), "image/png"),
                                         ("notes.png", b"not an image at all", "image/png")))
    assert r.status_code == 200
    ok, bad = r.json()["results"]
    assert ok["status"] == "ok" and bad["status"] == "error" and bad["error_code"] == "unreadable_image"
    assert "notes.png" in bad["error"] and "not a recognised image" in bad["error"]


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, format="PNG")  # 144 Mpx declared, a few kB on the wire
    return buf.getvalue()


def _truncated_jpeg() -> bytes:
    data = image_bytes((200, 40, 40), 3, "JPEG", size=200)
    return data[: len(data) // 2]


PNG = {"content-type": "image/png"}
BAD_UPLOADS = {
    "not an image": dict(content=b"hello, I am text", headers=PNG, status=422, code="unreadable_image"),
    "truncated JPEG": dict(content=_truncated_jpeg(), headers={"content-type": "image/jpeg"}, status=422,
                           code="unreadable_image"),
    "empty body": dict(content=b"", headers=PNG, status=400, code="empty_upload"),
    "oversized body": dict(content=b"\xff" * 300_000, headers=PNG, status=413, code="upload_too_large"),
    "wrong content type": dict(content=bird("red_finch"), headers={"content-type": "text/plain"}, status=415,
                               code="unsupported_media_type"),
    "no content type": dict(content=bird("red_finch"), headers={}, status=415, code="unsupported_media_type"),
    "text part in multipart": dict(files=files(("a.txt", b"text", "text/plain")), status=415,
                                   code="unsupported_media_type"),
    "multipart without a file": dict(content=b"--xyz--\r\n", headers={"content-type": "multipart/form-data; boundary=xyz"},
                                     status=400, code="no_image"),
    "too many images": dict(files=files(*[(f"{i}.png", bird("red_finch", i), "image/png") for i in range(5)]),
                            status=413, code="too_many_images"),
    "decompression bomb": dict(content=_bomb(), headers=PNG, status=413, code="too_many_pixels"),
    "unknown model": dict(path="/v1/models/nope/predict", content=bird("red_finch"), headers=PNG, status=404,
                          code="unknown_model"),
    "top_k zero": dict(path=PREDICT + "?top_k=0", content=bird("red_finch"), headers=PNG, status=422,
                       code="invalid_parameter"),
    "top_k not a number": dict(path=PREDICT + "?top_k=five", content=bird("red_finch"), headers=PNG, status=422,
                               code="invalid_parameter"),
    "bad unknown value": dict(path=PREDICT + "?unknown=maybe", content=bird("red_finch"), headers=PNG, status=422,
                              code="invalid_parameter"),
    "unknown nan": dict(path=PREDICT + "?unknown=nan", content=bird("red_finch"), headers=PNG, status=422,
                        code="invalid_parameter"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS), ids=list(BAD_UPLOADS))
def test_bad_requests_get_a_4xx_json_error_and_the_server_keeps_serving(client, case):
    spec = dict(BAD_UPLOADS[case])
    status, code, path = spec.pop("status"), spec.pop("code"), spec.pop("path", PREDICT)
    r = client.post(path, **spec)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["fix"]
    good = client.post(PREDICT, content=bird("green_warbler"), headers=PNG)
    assert good.status_code == 200 and good.json()["results"][0]["top_k"][0]["label"] == "green_warbler"


def test_pixel_limit_is_configurable(classifier, tmp_path):
    with make_client({"birds": classifier}, max_pixels=1000, cache_dir=tmp_path) as c:
        wait_ready(c)
        r = c.post(PREDICT, content=bird("red_finch"), headers=PNG)  # 40×40 = 1600 pixels
        assert r.status_code == 413 and "1,600 pixels" in r.json()["error"]["message"]


def test_api_key_is_required_when_set(classifier, tmp_path):
    with make_client({"birds": classifier}, api_key="s3cret", cache_dir=tmp_path) as c:
        wait_ready(c)
        missing = c.post(PREDICT, content=bird("red_finch"), headers=PNG)
        assert missing.status_code == 401 and missing.json()["error"]["message"] == "missing API key"
        wrong = c.get("/v1/models", headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "wrong API key"
        assert c.post(PREDICT, content=bird("red_finch"), headers={**PNG, "X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).json()["api_key_required"] is True
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200  # the page asks for the key


def test_models_list_several_models_and_no_detector(classifier, plain_model_dir, tmp_path):
    from finegrain.pipeline import Classifier

    with make_client({"birds": classifier, "plain": Classifier.load(plain_model_dir)}, cache_dir=tmp_path) as c:
        wait_ready(c)
        listed = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert set(listed) == {"birds", "plain"} and listed["plain"]["unknown_threshold"] is None
        assert listed["birds"]["classes"] == classifier.classes
        plain = c.post("/v1/models/plain/predict", content=bird("red_finch"), headers=PNG)
        assert plain.status_code == 200 and plain.json()["results"][0]["unknown"] is None
        r = c.post("/v1/models/plain/predict?unknown=auto", content=bird("red_finch"), headers=PNG)
        assert r.status_code == 400 and r.json()["error"]["code"] == "no_unknown_detector"


def test_explain_returns_an_overlay_png_and_nearest_training_images(client):
    r = client.post("/v1/models/birds/explain", content=bird("blue_jay"), headers=PNG)
    assert r.status_code == 200, r.text
    body = r.json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert overlay.format == "PNG" and overlay.size == (32, 32)  # the tiny backbone's crop
    assert body["predicted"] == "blue_jay" and len(body["neighbours"]) == 5
    assert all(n["label"] == "blue_jay" and n["thumbnail_jpeg_base64"] for n in body["neighbours"][:3])
    assert "/" not in body["neighbours"][0]["name"]  # file names only, never the server's paths
    bad_class = client.post("/v1/models/birds/explain?class=dodo", content=bird("blue_jay"), headers=PNG)
    assert bad_class.status_code == 400 and "dodo" in bad_class.json()["error"]["message"]
    bad_method = client.post("/v1/models/birds/explain?method=lime", content=bird("blue_jay"), headers=PNG)
    assert bad_method.status_code == 422
    unreadable = client.post("/v1/models/birds/explain", content=b"GIF89a broken", headers=PNG)
    assert unreadable.status_code == 422


def test_operations_routes_openapi_page_and_cors(client, classifier, tmp_path):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "models": ["birds"]}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/models", "/v1/models/{name}/predict", "/v1/models/{name}/explain", "/metrics"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    page = client.get("/")
    assert 'accept="image/*" capture multiple' in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # nothing from a CDN
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"
    pre = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options(PREDICT, headers=pre).headers
    with make_client({"birds": classifier}, cors_origins=("https://example.org",), cache_dir=tmp_path) as c:
        assert c.options(PREDICT, headers=pre).headers["access-control-allow-origin"] == "https://example.org"


def test_metrics_count_requests_latency_batches_and_errors(client):
    client.post(PREDICT, content=bird("red_finch"), headers=PNG)
    client.post(PREDICT, content=b"junk", headers=PNG)
    text = client.get("/metrics").text
    assert 'finegrain_requests_total{route="/v1/models/{name}/predict",method="POST",status="200"} 1' in text
    assert 'finegrain_requests_total{route="/v1/models/{name}/predict",method="POST",status="422"} 1' in text
    assert 'finegrain_request_duration_seconds_count{route="/v1/models/{name}/predict"} 2' in text
    assert 'finegrain_batch_size_bucket{model="birds",le="1"}' in text
    assert 'finegrain_errors_total{code="unreadable_image"} 1' in text
    assert 'finegrain_queue_depth{model="birds"} 0' in text
    assert "# TYPE finegrain_request_duration_seconds histogram" in text


class Gate:
    """Wraps a batcher's embed function so a test can hold the backbone busy, and records batch sizes."""

    def __init__(self, embed_fn) -> None:
        self.embed_fn, self.entered, self.release, self.sizes = embed_fn, threading.Event(), threading.Event(), []

    def __call__(self, crops):
        self.sizes.append(len(crops))
        self.entered.set()
        assert self.release.wait(20)
        return self.embed_fn(crops)


def _post_in_thread(c, results: list) -> threading.Thread:
    t = threading.Thread(target=lambda: results.append(c.post(PREDICT, content=bird("red_finch"), headers=PNG)))
    t.start()
    return t


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_concurrent_requests_share_one_backbone_call_and_a_full_queue_answers_503(classifier, tmp_path):
    with make_client({"birds": classifier}, queue_size=3, max_batch=8, max_wait_ms=5, cache_dir=tmp_path) as c:
        wait_ready(c)
        batcher = c.app.state.finegrain.batchers["birds"]
        gate = Gate(batcher.embed_fn)
        batcher.embed_fn = gate
        results: list = []
        threads = [_post_in_thread(c, results)]
        assert gate.entered.wait(10)  # the first request holds the backbone
        threads += [_post_in_thread(c, results) for _ in range(3)]
        _until(lambda: batcher.depth == 3)  # three more wait: the queue is full
        full = c.post(PREDICT, content=bird("red_finch"), headers=PNG)
        assert full.status_code == 503 and full.headers["retry-after"] == "1"
        assert full.json()["error"]["code"] == "queue_full"
        gate.release.set()
        for t in threads:
            t.join(20)
        assert [r.status_code for r in results] == [200] * 4
        assert gate.sizes == [1, 3]  # the three waiting requests went through one backbone call
        assert 'finegrain_batch_size_bucket{model="birds",le="2"} 1' in c.get("/metrics").text


def test_slow_backbone_answers_504_within_the_request_timeout(classifier, tmp_path):
    with make_client({"birds": classifier}, request_timeout_s=0.3, cache_dir=tmp_path) as c:
        wait_ready(c)
        batcher = c.app.state.finegrain.batchers["birds"]
        gate = Gate(batcher.embed_fn)
        batcher.embed_fn = gate
        r = c.post(PREDICT, content=bird("red_finch"), headers=PNG)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        gate.release.set()
        assert c.post(PREDICT, content=bird("red_finch"), headers=PNG).status_code == 200


def test_app_mounted_in_another_asgi_app_starts_by_itself(classifier, tmp_path):
    from fastapi.testclient import TestClient
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from finegrain.serve import ServeSettings, create_app

    host = Starlette(routes=[Mount("/birds-api", app=create_app({"birds": classifier}, ServeSettings(cache_dir=tmp_path)))])
    with TestClient(host) as c:
        _until(lambda: c.get("/birds-api/readyz").status_code == 200, timeout=60)
        r = c.post("/birds-api" + PREDICT, content=bird("red_finch"), headers=PNG)
        assert r.status_code == 200 and r.json()["results"][0]["top_k"][0]["label"] == "red_finch"


def test_a_model_fitted_with_tta_flip_is_served_with_its_mirror_view(serve_data, tmp_path):
    from finegrain.pipeline import Classifier

    flip = Classifier.load(fit_tiny(tmp_path, serve_data, "flip", "--tta", "flip", "--C", "0.001",
                                    "--no-calibrate"))  # soft probabilities
    names = ["blue_jay", "green_warbler", "red_finch"]
    for n in names:
        (tmp_path / f"{n}.png").write_bytes(bird(n, 11))
    expected = flip.predict([tmp_path / f"{n}.png" for n in names], top_k=3)
    plain = Classifier.load(tmp_path / "flip")
    plain.info = {k: v for k, v in plain.info.items() if k != "tta"}  # the same head on the plain crop alone
    unmirrored = plain.predict([tmp_path / f"{n}.png" for n in names], top_k=3)
    assert max(abs(a - b) for p, q in zip(expected, unmirrored) for a, b in zip(p.probs, q.probs)) > 1e-4
    with make_client({"birds": flip}, cache_dir=tmp_path / "cache") as c:
        wait_ready(c)
        r = c.post(PREDICT, files=files(*[(f"{n}.png", bird(n, 11), "image/png") for n in names]))
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [[t["label"] for t in x["top_k"]] for x in got] == [p.labels for p in expected]
    for x, p in zip(got, expected):
        assert [t["prob"] for t in x["top_k"]] == pytest.approx(p.probs, abs=1e-5)
