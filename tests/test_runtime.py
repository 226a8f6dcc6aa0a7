"""The ONNX Runtime path must give the PyTorch path's embeddings, export once, and never hide a bad export."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import finegrain.backbones.onnx_runtime as onnx_runtime
from finegrain.backbones import get_backbone
from finegrain.backbones.onnx_runtime import OnnxBackbone, resolve_runtime
from finegrain.cli.main import main
from finegrain.data.samples import Sample
from finegrain.embed import embed_samples
from finegrain.errors import ConfigError
from finegrain.store import EmbeddingCache

from conftest import COLOURS, make_image

SAMPLE_JPEGS = sorted((Path(__file__).parent.parent / "src/finegrain/sample_data/cub10/test").rglob("*.jpg"))


@pytest.fixture(autouse=True)
def fresh_sessions(monkeypatch):
    """Each test sees its own export, not a session an earlier test left in the process."""
    monkeypatch.setattr(onnx_runtime, "_SESSIONS", {})
    monkeypatch.setattr(onnx_runtime, "_FAILED", {})
    monkeypatch.setattr(onnx_runtime, "_default_runtime", "auto")


def fixture_images(folder: Path, n: int = 6, size: int = 40) -> list[Sample]:
    colours = list(COLOURS.values())
    return [Sample(make_image(folder / f"{i}.png", colours[i % 3], seed=i, size=size + 7 * i)) for i in range(n)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_and_torch_embed_fixture_images_alike(tmp_path):
    samples = fixture_images(tmp_path / "img")
    onnx = embed_samples(samples, "tiny", runtime="onnx", progress=False)
    torch_ = embed_samples(samples, "tiny", runtime="torch", progress=False)
    assert cosines(onnx.X, torch_.X).min() >= 0.999
    assert onnx.cache_key == torch_.cache_key == get_backbone("tiny").cache_key
    np.testing.assert_allclose(np.linalg.norm(onnx.X, axis=1), 1.0, rtol=1e-5)


def test_efficientnet_lite0_onnx_matches_torch_on_photos(tmp_path):
    samples = [Sample(p) for p in SAMPLE_JPEGS[:4]]
    with EmbeddingCache(tmp_path / "cache") as cache:
        onnx = embed_samples(samples, "efficientnet_lite0", cache=cache, runtime="onnx", progress=False)
    torch_ = embed_samples(samples, "efficientnet_lite0", runtime="torch", progress=False)
    assert len(onnx.X) == 4 and cosines(onnx.X, torch_.X).min() >= 0.999
    assert isinstance(onnx_runtime._SESSIONS[onnx.cache_key], OnnxBackbone)


def test_export_is_cached_on_disk_beside_the_embedding_cache(tmp_path, monkeypatch):
    bb = get_backbone("tiny")
    first = resolve_runtime(bb, "onnx", tmp_path / "onnx")
    assert first.model_path.parent == tmp_path / "onnx" and first.model_path.is_file()
    assert bb.cache_key in first.model_path.name and "opset" in first.model_path.name
    onnx_runtime._SESSIONS.clear()

    def no_export(*_):
        raise AssertionError("exported again")
    monkeypatch.setattr(onnx_runtime, "_export", no_export)
    second = resolve_runtime(bb, "onnx", tmp_path / "onnx")
    assert second.model_path == first.model_path and second is not first


def test_micro_batching_does_not_change_embeddings(tmp_path):
    bb = get_backbone("tiny")
    onnx = resolve_runtime(bb, "onnx", tmp_path / "onnx")
    batch = np.random.default_rng(3).integers(0, 256, (2 * onnx_runtime.MICRO_BATCH + 1, 32, 32, 3), dtype=np.uint8)
    whole = onnx.embed(batch)
    one_by_one = np.concatenate([onnx.embed(batch[i:i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-6)
    assert onnx.embed(batch[:0]).shape == (0, bb.embed_dim)


def test_disagreeing_export_is_refused_not_used(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(onnx_runtime, "_agreement", lambda source, path: 0.5)
    bb = get_backbone("tiny")
    with pytest.raises(ConfigError, match="disagrees with PyTorch"):
        resolve_runtime(bb, "onnx", tmp_path / "onnx")
    assert not list((tmp_path / "onnx").glob("*.onnx"))  # nothing half-checked left behind
    with caplog.at_level(logging.WARNING, logger="finegrain"):
        assert resolve_runtime(bb, "auto", tmp_path / "onnx") is bb
    assert "embedding with PyTorch" in caplog.text
    with pytest.raises(ConfigError):  # an explicit request is not answered by the fallback 'auto' chose
        resolve_runtime(bb, "onnx", tmp_path / "onnx")


def test_torch_runtime_and_unknown_runtime(tmp_path):
    bb = get_backbone("tiny")
    assert resolve_runtime(bb, "torch", tmp_path) is bb
    assert not (tmp_path / "onnx").exists()
    with pytest.raises(ConfigError, match="unknown runtime 'tensorrt'"):
        resolve_runtime(bb, "tensorrt", tmp_path)


def test_unreadable_image_is_an_error_record_on_the_onnx_path(tmp_path):
    good = make_image(tmp_path / "good.png", (10, 200, 10), 0)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    emb = embed_samples([Sample(bad), Sample(good)], "tiny", runtime="onnx", progress=False)
    assert emb.paths == [str(good)] and [e.path for e in emb.errors] == [str(bad)]


def test_cli_runtime_option_reaches_embedding(split_folder, tmp_path, monkeypatch):
    seen = []
    real = onnx_runtime.resolve_runtime
    monkeypatch.setattr("finegrain.embed.resolve_runtime", lambda bb, rt, d: seen.append(rt) or real(bb, rt, d))
    assert main(["embed", str(split_folder), "-o", str(tmp_path / "e"), "--backbone", "tiny", "--runtime", "torch",
                 "-q"]) == 0
    assert seen == ["torch"]
    with pytest.raises(SystemExit):
        main(["embed", str(split_folder), "-o", str(tmp_path / "e3"), "--runtime", "bogus"])
