from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from finegrain.cli.main import main


from conftest import run_cli as run


def test_fit_eval_predict_embed(capsys, split_folder, tmp_path):
    model = tmp_path / "model"
    code, _, err = run(capsys, "fit", split_folder, "-o", model, "--backbone", "tiny", "--head", "prototype")
    assert code == 0 and "fitted prototype head on 24 images of 3 classes" in err

    code, out, _ = run(capsys, "eval", model, split_folder, "--format", "json", "-q")
    rep = json.loads(out)
    assert code == 0 and rep["split"] == "test" and rep["top1"] > 0.9
    assert not (model / "eval").exists()  # the model folder is not written into unless asked
    code, out, _ = run(capsys, "eval", model, split_folder, "-q", "--output", tmp_path / "results" / "test.json")
    assert json.loads((tmp_path / "results" / "test.json").read_text())["n"] == 12

    code, out, _ = run(capsys, "eval", model, split_folder, "-q")
    assert "mean per-class accuracy %" in out and "per-class" in out

    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, out, err = run(capsys, "predict", model, split_folder / "test" / "blue_jay", tmp_path / "broken.jpg",
                         "--format", "csv", "--top-k", "2", "-q")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 5
    assert rows[-1]["status"] == "error" and rows[-1]["label_1"] == ""
    assert all(r["label_1"] == "blue_jay" for r in rows[:4])
    assert rows[0]["model_backbone"] == "tiny" and "could not be read" in err

    code, out, _ = run(capsys, "predict", model, split_folder / "test", "--format", "jsonl", "-q")
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 12 and lines[0]["model"]["backbone"] == "tiny" and len(lines[0]["top_k"]) == 3

    code, out, _ = run(capsys, "predict", model, split_folder / "test" / "red_finch" / "00.png", "-q")
    assert "red_finch" in out and "top1" in out

    code, _, err = run(capsys, "embed", split_folder, "-o", tmp_path / "emb", "--backbone", "tiny")
    assert code == 0 and "36 from cache" in err
    code, _, _ = run(capsys, "fit", tmp_path / "emb", "-o", tmp_path / "m2", "--backbone", "tiny", "-q")
    assert code == 0


def test_exit_codes(capsys, split_folder, tmp_path):
    code, _, err = run(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tinny")
    assert code == 2 and "did you mean 'tiny'" in err
    code, _, err = run(capsys, "eval", tmp_path / "no-model", split_folder)
    assert code == 1 and "not a finegrain model directory" in err
    with pytest.raises(SystemExit) as e:
        main(["fit"])
    assert e.value.code == 2


def test_check_reports_leak(capsys, split_folder):
    src = next((split_folder / "train" / "blue_jay").iterdir())
    (split_folder / "test" / "blue_jay" / "dup.png").write_bytes(src.read_bytes())
    code, out, _ = run(capsys, "check", split_folder)
    assert code == 1 and "duplicate-across-splits" in out


def test_help_is_fast_and_does_not_import_torch():
    probe = ("import sys, contextlib, io\nfrom finegrain.cli.main import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    try: main(['fit', '--help'])\n    except SystemExit: pass\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_head_param_reaches_the_head(capsys, split_folder, tmp_path):
    code, _, _ = run(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tiny", "--head", "knn",
                     "--head-param", "k=3", "--head-param", "temperature=0.1", "-q")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert code == 0 and config["head"]["params"] == {"k": 3, "temperature": 0.1}
    code, _, err = run(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tiny", "--head-param", "x")
    assert code == 2 and "KEY=VALUE" in err


def test_every_help_page_renders(capsys):
    from finegrain.cli.main import build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for argv in [["--help"]] + [[name, "--help"] for name in commands]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0, argv
    out = capsys.readouterr().out
    assert "example" in out and "fewshot-eval" in out


def test_predict_reads_stdin_refuses_urls_and_fits_100_columns(capsys, split_folder, tmp_path, monkeypatch):
    import io
    model = tmp_path / "model"
    assert run(capsys, "fit", split_folder, "-o", model, "--backbone", "tiny", "-q")[0] == 0
    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "photo_with_a_long_name.png"
    deep.parent.mkdir(parents=True)
    deep.write_bytes(next((split_folder / "test" / "blue_jay").iterdir()).read_bytes())
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{deep}\n\n"))
    code, out, _ = run(capsys, "predict", model, "-", "--top-k", "5", "-q")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and max(map(len, lines)) <= 100
    assert "top3" in lines[0] and "top4" not in lines[0] and lines[2].startswith("…") and "long_name.png" in lines[2]
    code, out, _ = run(capsys, "predict", model, deep, "--top-k", "5", "--wide", "-q")
    assert str(deep) in out and "top3" in out  # 3 classes: top-k is capped at 3
    code, _, err = run(capsys, "predict", model, "https://example.org/bird.jpg")
    assert code == 2 and "is a URL" in err


def test_unknown_option_shows_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "fit", "data", "-o", "m", "--no-such-option")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "usage: finegrain fit" in err and "--no-such-option" in err


def test_quiet_commands_print_nothing_on_stderr(split_folder, tmp_path):
    import os
    import subprocess
    import sys

    def quiet(*args):
        proc = subprocess.run([sys.executable, "-m", "finegrain", *map(str, args), "-q"], capture_output=True, text=True,
                              env={**os.environ, "FINEGRAIN_CACHE_DIR": str(tmp_path / "cache")})
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)

    model = tmp_path / "m"
    quiet("fit", split_folder, "-o", model, "--backbone", "tiny")
    quiet("eval", model, split_folder)
    quiet("predict", model, split_folder / "test", "--unknown", "auto")
    quiet("embed", split_folder, "-o", tmp_path / "e", "--backbone", "tiny")
    quiet("export", model, "-o", tmp_path / "m.onnx")
    quiet("finetune", split_folder, "-o", tmp_path / "t", "--backbone", "tiny", "--train-blocks", "1", "--views", "2",
          "--epochs", "1", "--val-split", "0.25")  # 2 held-out images a class: enough to calibrate, no warning
