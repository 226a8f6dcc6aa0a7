"""kill -9 at seeded random moments during `embed` and `fit` (overwriting a model): the rerun finishes with the
same result as an uninterrupted run, the name always holds a complete model, and no staging folder is left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_image

SEEDS = (0, 1, 2)


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "finegrain", *map(str, args), "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill9") / "birds"
    for k, colour in enumerate([(200, 40, 40), (40, 60, 200), (40, 180, 60)]):
        for i in range(20):
            make_image(root / "train" / f"c{k}" / f"{i}.png", colour, 1000 * k + i, size=64)
    return root


def _run_killed(cmd: list[str], env: dict, delay: float) -> None:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def _no_staging_left(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


@pytest.mark.parametrize("seed", SEEDS)
def test_embed_killed_anywhere_resumes_to_the_same_vectors(data, tmp_path, seed):
    from safetensors.numpy import load_file

    env = {**os.environ, "FINEGRAIN_CACHE_DIR": str(tmp_path / "cache")}
    reference = _cmd("embed", data, "-o", tmp_path / "ref", "--backbone", "tiny", "--runtime", "torch", "--batch-size", "4")
    duration = _timed(reference, {**os.environ, "FINEGRAIN_CACHE_DIR": str(tmp_path / "cache_ref")})
    out = tmp_path / "out"
    cmd = _cmd("embed", data, "-o", out, "--backbone", "tiny", "--runtime", "torch", "--batch-size", "4")
    _run_killed(cmd, env, float(np.random.default_rng(seed).uniform(0.3, duration)))
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    a = load_file(str(tmp_path / "ref" / "embeddings.safetensors"))["embeddings"]
    b = load_file(str(out / "embeddings.safetensors"))["embeddings"]
    assert np.array_equal(a, b)
    assert _no_staging_left(tmp_path)


@pytest.mark.parametrize("seed", SEEDS)
def test_fit_killed_while_overwriting_leaves_a_complete_model(data, tmp_path, seed):
    from finegrain.pipeline import Classifier

    env = {**os.environ, "FINEGRAIN_CACHE_DIR": str(tmp_path / "cache")}
    model = tmp_path / "model"
    first = _cmd("fit", data, "-o", model, "--backbone", "tiny", "--seed", "0")
    duration = _timed(first, env)
    second = _cmd("fit", data, "-o", model, "--backbone", "tiny", "--seed", "1", "--head", "prototype")
    _run_killed(second, env, float(np.random.default_rng(seed).uniform(0.3, duration)))
    clf = Classifier.load(model)  # the old or the new model, complete either way
    assert clf.head.name in ("logistic", "prototype") and len(clf.classes) == 3
    subprocess.run(second, env=env, check=True, capture_output=True)
    assert json.loads((model / "config.json").read_text())["head"]["head"] == "prototype"
    assert _no_staging_left(tmp_path)
