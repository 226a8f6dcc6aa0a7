"""Fixtures for hostile-input tests: one tiny fitted model per session, the CLI in-process, a hang guard."""
from __future__ import annotations

import faulthandler
import json
import os
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

COLOURS = {"red_finch": (200, 40, 40), "blue_jay": (40, 60, 200), "green_warbler": (40, 180, 60)}


def good_image(path: Path, colour: tuple[int, int, int] = COLOURS["red_finch"]) -> Path:
    """A small readable image: every hostile-input test also checks that such files still get their row."""
    rng = np.random.default_rng(zlib.crc32(os.fsencode(path)))
    arr = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A calibrated prototype model on the random-weight 'tiny' backbone, fitted once; tests copy it to edit it."""
    from finegrain.training import fit
    root = tmp_path_factory.mktemp("model")
    data = make_class_folders(root / "birds", 8)
    return fit(data, backbone="tiny", head="prototype", cache_dir=root / "cache").save(root / "model")


def make_class_folders(root: Path, per_class: int) -> Path:
    """root/<class>/NN.png for the three colour classes."""
    for name, colour in COLOURS.items():
        for i in range(per_class):
            good_image(root / name / f"{i:02d}.png", colour)
    return root


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run `finegrain ARGS` in-process: (exit code, stdout, stderr). Usage errors (SystemExit) count as exits."""
    from finegrain.cli.main import main

    def run(*args: object) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def predict_rows(cli) -> Callable[..., tuple[int, dict[str, dict], str]]:
    """`finegrain predict MODEL INPUTS --format jsonl`: (exit code, rows by file name, stderr)."""
    def run(model: Path, *inputs: object) -> tuple[int, dict[str, dict], str]:
        code, out, err = cli("predict", model, *inputs, "--format", "jsonl", "-q")
        rows = [json.loads(line) for line in out.splitlines()]
        return code, {Path(r["path"]).name: r for r in rows}, err
    return run


@pytest.fixture
def no_hang():
    """Fail loudly (dump stacks and exit) instead of hanging the suite if a test blocks for 60 s."""
    faulthandler.dump_traceback_later(60, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def make_good() -> Callable[..., Path]:
    """`good_image` for test modules (conftest helpers are not importable by name in this suite)."""
    return good_image


@pytest.fixture
def make_classes() -> Callable[[Path, int], Path]:
    return make_class_folders
