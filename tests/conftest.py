"""Shared fixtures: tiny labelled image folders made at test time, and an isolated embedding cache."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"red_finch": (200, 40, 40), "blue_jay": (40, 60, 200), "green_warbler": (40, 180, 60)}


def make_image(path: Path, colour: tuple[int, int, int], seed: int, size: int = 40) -> Path:
    """A noisy image of one dominant colour: easy for even a random-weight backbone to tell apart."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FINEGRAIN_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(autouse=True)
def restored_root_logging():
    """A CLI run in this process configures the root logger on the stderr pytest captured for that test; later
    tests must not write to that closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def make_split_folder(root: Path) -> Path:
    """train/ and test/ folders, 3 classes, 8 train + 4 test images each."""
    seed = 0
    for split, n in (("train", 8), ("test", 4)):
        for name, colour in COLOURS.items():
            for i in range(n):
                seed += 1
                make_image(root / split / name / f"{i:02d}.png", colour, seed)
    return root


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run the `finegrain` CLI in-process: (exit code, stdout, stderr)."""
    from finegrain.cli.main import main
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def split_folder(tmp_path) -> Path:
    return make_split_folder(tmp_path / "birds")


@pytest.fixture
def class_folder(tmp_path) -> Path:
    """Folder-per-class without splits, 3 classes × 6 images."""
    root = tmp_path / "flat"
    for k, (name, colour) in enumerate(COLOURS.items()):
        for i in range(6):
            make_image(root / name / f"{i}.jpg", colour, 100 + 10 * k + i)
    return root
