"""Shared by the Ray tests, built once per session: a small labelled folder with bad files and a tiny model
fitted on it (a plain module: a conftest.py here would shadow tests/conftest.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import make_split_folder

BAD_FILES = {"bad.png": b"not an image at all", "empty.jpg": b""}


def add_bad_files(folder: Path) -> None:
    """Unreadable inputs of each kind the engines must answer with an error row: not an image, empty, cut off,
    plus a duplicate (same bytes at another path)."""
    for name, data in BAD_FILES.items():
        (folder / name).write_bytes(data)
    good = sorted(folder.glob("*.png"))[0]
    (folder / "truncated.png").write_bytes(good.read_bytes()[:120])
    shutil.copy(good, folder / "duplicate.png")


_BUILT: dict[str, Path] = {}


def build_scale_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'data': split folder, 'test': its test split (with bad files), 'model': a tiny model fitted on it}."""
    from finegrain.cli.main import main

    if _BUILT:
        return _BUILT
    root = tmp_path_factory.mktemp("scale")
    data = make_split_folder(root / "birds")
    add_bad_files(data / "test" / "blue_jay")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FINEGRAIN_CACHE_DIR", str(root / "cache"))
        assert main(["fit", str(data), "-o", str(root / "model"), "--backbone", "tiny", "-q"]) == 0
    _BUILT.update(data=data, test=data / "test", model=root / "model")
    return _BUILT
