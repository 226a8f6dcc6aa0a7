"""File names that are not UTF-8 (legal bytes on Linux) still give valid CSV / JSON lines output, no crash."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes")

LATIN1_NAME = os.fsdecode(b"caf\xe9.png")  # 'caf\udce9.png' in Python: not valid UTF-8


@pytest.fixture
def photos(make_good, tmp_path) -> Path:
    make_good(tmp_path / "in" / "good.png")
    make_good(tmp_path / "in" / LATIN1_NAME)
    (tmp_path / "in" / os.fsdecode(b"bad\xff.jpg")).write_text("not an image")
    return tmp_path / "in"


def predict_bytes(model: Path, photos: Path, fmt: str) -> tuple[int, bytes, bytes]:
    """A real process: its stdout is a UTF-8 byte stream, where a surrogate would crash the writer."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "PYTHONUTF8": "1"}
    done = subprocess.run([sys.executable, "-m", "finegrain", "predict", str(model), str(photos), "--format", fmt,
                           "-q"], capture_output=True, env=env, timeout=120)
    return done.returncode, done.stdout, done.stderr


def test_jsonl_and_csv_stay_valid_utf8(tiny_model, photos):
    code, out, err = predict_bytes(tiny_model, photos, "jsonl")
    assert code == 0 and b"Traceback" not in err
    rows = {r["path"].rsplit("/", 1)[1]: r for r in map(json.loads, out.decode("utf-8").splitlines())}
    assert rows["caf\\xe9.png"]["status"] == "ok" and rows["good.png"]["status"] == "ok"
    assert rows["bad\\xff.jpg"]["status"] == "error"

    code, out, err = predict_bytes(tiny_model, photos, "csv")
    csv_rows = list(csv.DictReader(io.StringIO(out.decode("utf-8"))))
    assert code == 0 and {Path(r["path"]).name for r in csv_rows} == {"caf\\xe9.png", "good.png", "bad\\xff.jpg"}


def test_table_and_output_file_in_process(cli, tiny_model, photos, tmp_path):
    code, out, _ = cli("predict", tiny_model, photos, "-q")
    assert code == 0 and "caf\\xe9.png" in out
    out.encode("utf-8")  # no lone surrogates left
    code, _, _ = cli("predict", tiny_model, photos, "--format", "jsonl", "--output", tmp_path / "p.jsonl", "-q")
    assert code == 0 and len((tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()) == 3


def test_embed_folder_round_trips_the_names(cli, make_good, tmp_path):
    make_good(tmp_path / "data" / "cls" / LATIN1_NAME)
    make_good(tmp_path / "data" / "cls" / "good.png")
    make_good(tmp_path / "data" / "other" / "1.png", (10, 10, 200))
    make_good(tmp_path / "data" / "other" / "2.png", (10, 10, 200))
    code, _, err = cli("embed", tmp_path / "data", "-o", tmp_path / "emb", "--backbone", "tiny", "-q")
    assert code == 0, err
    index = (tmp_path / "emb" / "index.csv").read_bytes()
    assert b"caf\xe9.png" in index  # the file's own bytes: the path opens again
    code, _, err = cli("fit", tmp_path / "emb", "-o", tmp_path / "m", "--backbone", "tiny", "-q", "--no-calibrate")
    assert code == 0 and "unreadable" not in err, err
