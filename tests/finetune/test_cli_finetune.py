"""`finegrain finetune` end to end on a tiny backbone: a model folder that carries its tuned network and works
with every command, ONNX agreeing with PyTorch, kill -9 and resume, and `fit`'s refusals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_image, make_split_folder, run_cli

FAST = ["--backbone", "tiny", "--train-blocks", "1", "--views", "2", "--precision", "fp32", "-q"]


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "finegrain", *map(str, args)], capture_output=True, text=True,
                          env=env, **kw)


def test_finetune_writes_a_model_every_command_uses(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    model = tmp_path / "tuned"
    code, _, err = run_cli(capsys, "finetune", data, "-o", model, "--epochs", "3", *FAST)
    assert code == 0, err
    config = json.loads((model / "config.json").read_text())
    (member, weights), = config["tuned_backbones"].items()
    assert config["backbone"] == member and member.startswith("finetuned:tiny.") and (model / weights).is_file()
    assert config["finetune"]["members"][0]["trained_stages"] == 1 and config["training"]["n_val"] == 3
    assert len(config["finetune"]["members"][0]["history"]) == 3

    code, out, err = run_cli(capsys, "eval", model, data, "--format", "json", "-q", "--output", tmp_path / "e.json")
    assert code == 0, err
    assert json.loads(out)["n"] == 12
    outputs = {}
    for runtime in ("torch", "onnx"):
        code, out, err = run_cli(capsys, "predict", model, data / "test", "--format", "jsonl", "--runtime", runtime, "-q")
        assert code == 0, err
        outputs[runtime] = [json.loads(line) for line in out.splitlines()]
    for a, b in zip(outputs["torch"], outputs["onnx"]):
        assert a["label"] == b["label"] and abs(a["confidence"] - b["confidence"]) < 1e-3
    _a_mirrored_photo_gets_the_same_answer(model, data, tmp_path, capsys)
    code, out, err = run_cli(capsys, "embed", data, "-o", tmp_path / "emb", "--backbone", model, "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "emb" / "meta.json").read_text())["backbone"] == member
    code, out, err = run_cli(capsys, "predict", model, data / "test", "--unknown", "auto", "--format", "jsonl", "-q")
    assert code == 0 and all("unknown" in json.loads(line) for line in out.splitlines())
    photo = next((data / "test" / "blue_jay").iterdir())
    code, _, err = run_cli(capsys, "explain", model, photo, "-o", tmp_path / "why", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "why" / "explanations.json").read_text())
    code, _, err = run_cli(capsys, "discover", model, data / "test", "-o", tmp_path / "found", "-q")
    assert code == 0, err


def _a_mirrored_photo_gets_the_same_answer(model: Path, data: Path, tmp_path: Path, capsys) -> None:
    """`finetune`'s default `--tta flip`: every image is averaged with its mirror, so a photo and its mirror image
    are one answer (without the mirror view, the tuned network alone tells them apart)."""
    from PIL import Image, ImageOps

    assert json.loads((model / "config.json").read_text())["tta"] == "flip"
    pair = tmp_path / "pair"
    pair.mkdir()
    photo = next((data / "test" / "blue_jay").iterdir())
    with Image.open(photo) as img:
        img.convert("RGB").save(pair / "a.png")
        ImageOps.mirror(img.convert("RGB")).save(pair / "b.png")
    code, out, err = run_cli(capsys, "predict", model, pair, "--format", "jsonl", "--top-k", "3", "-q")
    assert code == 0, err
    a, b = sorted((json.loads(line) for line in out.splitlines()), key=lambda r: r["path"])
    assert a["label"] == b["label"] and abs(a["confidence"] - b["confidence"]) < 1e-5


def test_an_input_size_chosen_in_the_backbone_id_travels_with_the_tuned_network(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    model = tmp_path / "tuned"
    args = [a for a in FAST if a != "tiny"]
    args[args.index("--backbone") + 1:args.index("--backbone") + 1] = ["tiny@40-whole"]
    code, _, err = run_cli(capsys, "finetune", data, "-o", model, "--epochs", "1", *args)
    assert code == 0, err
    config = json.loads((model / "config.json").read_text())
    assert config["backbone"].startswith("finetuned:tiny@40-whole.")
    assert (config["preprocess"]["size"], config["preprocess"]["crop_pct"]) == (40, 1.0)
    outputs = {}
    for runtime in ("torch", "onnx"):
        code, out, err = run_cli(capsys, "predict", model, data / "test", "--format", "jsonl", "--runtime", runtime, "-q")
        assert code == 0, err
        outputs[runtime] = [json.loads(line)["confidence"] for line in out.splitlines()]
    assert outputs["torch"] == pytest.approx(outputs["onnx"], abs=1e-3)


def test_tuned_model_refuses_tampered_weights(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    model = tmp_path / "tuned"
    assert run_cli(capsys, "finetune", data, "-o", model, "--epochs", "1", *FAST)[0] == 0
    config = json.loads((model / "config.json").read_text())
    member, weights = next(iter(config["tuned_backbones"].items()))
    other = tmp_path / "other"
    assert run_cli(capsys, "finetune", data, "-o", other, "--epochs", "2", "--seed", "1", *FAST)[0] == 0
    other_weights = next(iter(json.loads((other / "config.json").read_text())["tuned_backbones"].values()))
    (model / weights).write_bytes((other / other_weights).read_bytes())
    from finegrain.finetune import network
    network._TUNED.clear()
    code, _, err = run_cli(capsys, "predict", model, data / "test", "-q")
    assert code == 1 and "not the ones this model was trained with" in err and "Traceback" not in err


def test_kill_9_then_resume_gives_the_uninterrupted_model(tmp_path):
    data = make_split_folder(tmp_path / "birds")
    args = ["finetune", data, "--epochs", "40", *FAST]
    env = {**os.environ, "FINEGRAIN_CACHE_DIR": str(tmp_path / "cache_a")}
    assert _cli(*args, "-o", tmp_path / "a", env=env).returncode == 0
    env["FINEGRAIN_CACHE_DIR"] = str(tmp_path / "cache_b")
    proc = subprocess.Popen([sys.executable, "-m", "finegrain", *map(str, args), "-o", tmp_path / "b"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300  # a loaded CI machine can take a minute to reach the first epoch
    while not list((tmp_path / "cache_b").glob("finetune-runs/*/checkpoint.json")) and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    assert list((tmp_path / "cache_b").glob("finetune-runs/*/checkpoint.json")), "no checkpoint before the kill"
    proc.wait()
    assert not (tmp_path / "b").exists()
    done = _cli(*args[:-1], "-o", tmp_path / "b", env=env)  # same command without -q: says it resumed
    assert done.returncode == 0, done.stderr
    assert "resuming from the checkpoint of epoch" in done.stderr
    a, b = (json.loads((tmp_path / m / "config.json").read_text()) for m in ("a", "b"))
    assert a["backbone"] == b["backbone"]  # the id is the weights' hash: bit-identical networks


def test_finetune_refuses_what_fit_refuses(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    for i in range(4):
        (data / "train" / "red_finch" / f"bad{i}.png").write_bytes(b"not an image")
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "m", "--epochs", "1", *FAST)
    assert code == 1 and "could not be read" in err and "--max-error-rate" in err
    with pytest.raises(SystemExit) as exit_:
        run_cli(capsys, "finetune", data, "-o", tmp_path / "m", "--train-blocks", "-1")
    assert exit_.value.code == 2 and "--train-blocks" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "m", "--epochs", "0", *FAST)
    assert code == 2 and "--epochs" in err


def test_combined_backbone_is_tuned_member_by_member(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    model = tmp_path / "joined"
    args = [a if a != "tiny" else "tiny+tiny:24" for a in FAST]
    code, _, err = run_cli(capsys, "finetune", data, "-o", model, "--epochs", "1", *args)
    assert code == 0, err
    config = json.loads((model / "config.json").read_text())
    assert len(config["tuned_backbones"]) == 2 and config["backbone"].count("finetuned:") == 2
    code, out, err = run_cli(capsys, "predict", model, data / "test", "--format", "jsonl", "-q")
    assert code == 0 and len(out.splitlines()) == 12


def test_single_image_classes_warn_and_still_train(tmp_path, capsys):
    root = tmp_path / "flat"
    for k, colour in enumerate([(200, 40, 40), (40, 60, 200)]):
        for i in range(6):
            make_image(root / f"c{k}" / f"{i}.png", colour, 10 * k + i)
    make_image(root / "rare" / "0.png", (40, 180, 60), 99)
    code, _, err = run_cli(capsys, "finetune", root, "-o", tmp_path / "m", "--epochs", "1", "--val-split", "0.2",
                           "--backbone", "tiny", "--train-blocks", "1", "--views", "2")
    assert code == 0, err
    assert "too few images to hold any out for validation (rare)" in err


def test_without_held_out_images_the_last_epoch_is_kept_uncalibrated(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "m", "--epochs", "2", "--val-split", "0",
                           *FAST[:-1])
    assert code == 0, err
    assert "no held-out images" in err
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "calibration" not in config and config["finetune"]["members"][0]["best_epoch"] is None


def test_a_finished_member_is_reused_by_a_larger_joined_run_or_another_tta_and_restart_trains_again(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "one", "--epochs", "2", *FAST)
    assert code == 0, err
    one = json.loads((tmp_path / "one" / "config.json").read_text())
    joined = [a if a != "tiny" else "tiny+tiny:24" for a in FAST if a != "-q"]
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "two", "--epochs", "2", *joined)
    assert code == 0, err
    assert err.count("reusing the finished fine-tuning") == 1  # the tiny member; tiny:24 is trained
    two = json.loads((tmp_path / "two" / "config.json").read_text())
    assert two["backbone"].split("+")[0] == one["backbone"]
    assert [m["reused_finished_run"] for m in two["finetune"]["members"]] == [True, False]
    assert two["finetune"]["members"][0]["history"] == one["finetune"]["members"][0]["history"]
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "three", "--epochs", "2", "--restart", *FAST)
    assert code == 0, err
    three = json.loads((tmp_path / "three" / "config.json").read_text())
    assert three["finetune"]["members"][0]["reused_finished_run"] is False
    assert three["backbone"] == one["backbone"]  # trained again, to the same weights
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "plain", "--epochs", "2", "--tta", "none", *FAST)
    assert code == 0, err
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert plain["finetune"]["members"][0]["reused_finished_run"] and plain["backbone"] == one["backbone"]
    assert one["tta"] == "flip" and "tta" not in plain  # finetune's default views, and none
