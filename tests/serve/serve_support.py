"""Shared by the serve tests (imported by them: a second conftest.py would clash with tests/conftest.py): tiny
models fitted once per session with `finegrain fit --backbone tiny`, and test clients of the app."""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import COLOURS, make_split_folder

pytest.importorskip("fastapi")


def fit_tiny(tmp: Path, data: Path, name: str, *extra: str) -> Path:
    from finegrain.cli.main import main

    model = tmp / name
    code = main(["fit", str(data), "-o", str(model), "--backbone", "tiny", "-q", "--cache-dir", str(tmp / "cache"),
                 *extra])
    assert code == 0
    return model


@pytest.fixture(scope="session")
def serve_data(tmp_path_factory) -> Path:
    return make_split_folder(tmp_path_factory.mktemp("serve") / "birds")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, serve_data) -> Path:
    return fit_tiny(tmp_path_factory.mktemp("models"), serve_data, "birds")


@pytest.fixture(scope="session")
def plain_model_dir(tmp_path_factory, serve_data) -> Path:
    """Fitted without calibration: no unknown detector."""
    return fit_tiny(tmp_path_factory.mktemp("models"), serve_data, "plain", "--no-calibrate")


@pytest.fixture(scope="session")
def classifier(model_dir):
    from finegrain.pipeline import Classifier
    return Classifier.load(model_dir)


def image_bytes(colour: tuple[int, int, int], seed: int, fmt: str = "PNG", size: int = 40) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def bird(name: str, seed: int = 1000, fmt: str = "PNG") -> bytes:
    return image_bytes(COLOURS[name], seed, fmt)


def wait_ready(client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.02)


def make_client(models: dict, index=None, **settings):
    from fastapi.testclient import TestClient

    from finegrain.serve import ServeSettings, create_app

    return TestClient(create_app(models, ServeSettings(**settings), index), raise_server_exceptions=False)


@pytest.fixture
def client(classifier, tmp_path):
    with make_client({"birds": classifier}, max_upload_bytes=200_000, max_images=4,
                     cache_dir=tmp_path / "cache") as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory, serve_data, model_dir) -> Path:
    """A similar-image index of the training images, embedded with the served model's backbone."""
    from finegrain.cli.main import main

    out = tmp_path_factory.mktemp("index") / "birds.index"
    assert main(["index", str(serve_data), "-o", str(out), "--model", str(model_dir), "--split", "train", "-q",
                 "--cache-dir", str(out.parent / "cache")]) == 0
    return out
