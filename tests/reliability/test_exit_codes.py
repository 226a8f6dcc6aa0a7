"""A run that could read nothing fails (exit 1, one line saying why); a manifest missing a needed column
names the columns it has and the ones it needs."""
from __future__ import annotations

import json


def test_predict_with_no_readable_image_exits_1(cli, tiny_model, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"\xff\xd8\xff not really")
    (tmp_path / "in" / "b.png").write_bytes(b"")
    code, out, err = cli("predict", tiny_model, tmp_path / "in", "--format", "jsonl", "-q")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["status"] for r in rows] == ["error", "error"]  # the rows still say why
    assert err.strip().count("\n") == 0 and "none of the 2 input file(s) could be read (first: " in err


def test_embed_with_no_readable_image_exits_1_and_writes_nothing(cli, tmp_path):
    (tmp_path / "data" / "cls").mkdir(parents=True)
    (tmp_path / "data" / "cls" / "a.jpg").write_text("not an image")
    code, _, err = cli("embed", tmp_path / "data", "-o", tmp_path / "emb", "--backbone", "tiny", "-q")
    assert code == 1 and "none of the 1 input file(s) could be read" in err
    assert "not a recognised image format" in err and not (tmp_path / "emb").exists()


def test_embed_and_predict_still_succeed_with_one_good_image(cli, tiny_model, make_good, tmp_path):
    make_good(tmp_path / "data" / "cls" / "good.png")
    (tmp_path / "data" / "cls" / "bad.jpg").write_text("not an image")
    assert cli("embed", tmp_path / "data", "-o", tmp_path / "emb", "--backbone", "tiny", "-q")[0] == 0
    code, out, _ = cli("predict", tiny_model, tmp_path / "data", "--format", "csv", "-q")
    assert code == 0 and ",ok," in out and ",error," in out


def test_manifest_without_label_column_names_its_columns(cli, make_good, tmp_path):
    make_good(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,species\na.png,finch\n")
    code, _, err = cli("fit", tmp_path / "m.csv", "-o", tmp_path / "model", "--backbone", "tiny")
    assert code == 1 and "has no 'label' column" in err
    assert "expected: columns path,label[,split][,group]" in err and "found: columns path, species" in err


def test_manifest_without_path_column_names_its_columns(cli, tmp_path):
    (tmp_path / "m.csv").write_text("file,label\na.png,finch\n")
    code, _, err = cli("fit", tmp_path / "m.csv", "-o", tmp_path / "model", "--backbone", "tiny")
    assert code == 1 and "has no 'path' column" in err and "found: columns file, label" in err


def test_paths_naming_an_unknown_user_are_messages_not_tracebacks(cli, tiny_model, make_good, tmp_path):
    code, _, err = cli("predict", "~no_such_user_xyz/model", make_good(tmp_path / "good.png"), "-q")
    assert code == 1 and "not a finegrain model directory" in err
    code, out, err = cli("predict", tiny_model, "~no_such_user_xyz/a.png", tmp_path / "good.png", "--format", "csv")
    assert code == 0 and "file not found" in out and ",ok," in out
