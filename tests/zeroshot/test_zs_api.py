"""`finegrain.zeroshot_classifier`, `align` and `describe` (#14): the docstring examples run, with the tiny text model
standing in for the offline default 'minilm' (whose weights package the tests do not install)."""
from __future__ import annotations

import doctest
from pathlib import Path

import pytest

import finegrain
from finegrain.zeroshot import api, encoders


@pytest.fixture
def tiny_minilm(monkeypatch, tiny_text_encoder):
    monkeypatch.setattr(encoders, "minilm_dir", lambda: Path(tiny_text_encoder.partition(":")[2]))
    encoders.get_text_encoder.cache_clear()
    yield
    encoders.get_text_encoder.cache_clear()


def test_docstring_examples(tiny_minilm):
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_zeroshot_from_names_and_a_mapping_of_descriptions(tiny_minilm, split_folder, tmp_path):
    aligned = finegrain.align(split_folder, {"red_finch": "red", "blue_jay": "blue", "green_warbler": "green",
                                             "yellow_bird": "yellow"}, backbone="tiny")
    clf = finegrain.zeroshot_classifier(["red_finch", "yellow_bird"], descriptions={"yellow_bird": ["yellow"]},
                             alignment=aligned.save(tmp_path / "a"), progress=False)
    assert clf.classes == ["red_finch", "yellow_bird"] and clf.info["zeroshot"]["method"] == "linear"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    rows = finegrain.describe(aligned, [split_folder / "test" / "blue_jay" / "00.png", tmp_path / "bad.png"])
    assert rows[0]["label"] in aligned.classes and rows[1]["path"].endswith("bad.png") and rows[1]["error"]


def test_quiet_align_zeroshot_describe_print_nothing_on_stderr(split_folder, tmp_path, tiny_text_encoder):
    """In a fresh process, as a user runs them (transformers reads its quiet settings when first imported)."""
    import os
    import subprocess
    import sys

    (tmp_path / "desc.csv").write_text("class,description\nred_finch,red\nblue_jay,blue\ngreen_warbler,green\n"
                                       "yellow_bird,yellow\n")
    (tmp_path / "classes.txt").write_text("red_finch\nyellow_bird\n")
    given = ("--gamma", "1", "--lam", "1", "--text-weight", "0.5", "--seen-penalty", "0")  # nothing left to choose
    runs = [("align", split_folder, "--descriptions", tmp_path / "desc.csv", "-o", tmp_path / "a", "--backbone", "tiny",
             "--text-encoder", tiny_text_encoder, *given),
            ("zeroshot", "--classes", tmp_path / "classes.txt", "--alignment", tmp_path / "a", "-o", tmp_path / "z",
             "--text-encoder", tiny_text_encoder),
            ("describe", tmp_path / "a", split_folder / "test" / "blue_jay")]
    for args in runs:
        proc = subprocess.run([sys.executable, "-m", "finegrain", *map(str, args), "-q"], capture_output=True,
                              text=True, env={**os.environ, "FINEGRAIN_CACHE_DIR": str(tmp_path / "cache")})
        assert (proc.returncode, proc.stderr) == (0, ""), (args, proc.stderr)
