"""A damaged, hand-edited or hostile model folder fails on load with a message (exit 1), never a traceback,
never a silently wrong model; nothing is unpickled. Overwriting a model never leaves the name empty."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_split_folder, run_cli
from finegrain import io as fio
from finegrain.errors import DataError
from finegrain.pipeline import Classifier


@pytest.fixture
def model(tiny_model, tmp_path) -> Path:
    """A private copy of the session's model, free to damage."""
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


def edit_config(model: Path, change) -> None:
    config = json.loads((model / "config.json").read_text())
    change(config)
    (model / "config.json").write_text(json.dumps(config))


def predict_fails(cli, model: Path, tmp_path: Path, make_good) -> str:
    code, out, err = cli("predict", model, make_good(tmp_path / "good.png"), "-q")
    assert code == 1 and out == "" and "Traceback" not in err
    return err


@pytest.mark.parametrize("damage, message", [
    (lambda m: (m / "config.json").unlink(), "is not a finegrain model directory"),
    (lambda m: (m / "config.json").write_text((m / "config.json").read_text()[:200]), "is not valid JSON"),
    (lambda m: (m / "config.json").write_text(""), "is empty"),
    (lambda m: (m / "config.json").write_text("[1, 2]"), "is not a JSON object"),
    (lambda m: (m / "config.json").write_bytes(b"\xff\xfe{}"), "is not text"),
    (lambda m: edit_config(m, lambda c: c.update(format="finegrain-model/99")), "unknown format"),
    (lambda m: edit_config(m, lambda c: c.pop("classes")), "lacks required keys"),
    (lambda m: (m / "head.safetensors").unlink(), "head.safetensors is missing"),
    (lambda m: (m / "ood.safetensors").unlink(), "ood.safetensors is missing"),
    (lambda m: (m / "head.safetensors").write_bytes(pickle.dumps({"means": [1.0]})), "a Python pickle"),
    (lambda m: (m / "ood.safetensors").write_bytes((m / "ood.safetensors").read_bytes()[:40]),
     "ood.safetensors is not a valid safetensors file"),
    (lambda m: edit_config(m, lambda c: c["head"].update(head="resnet")), "names an unknown head"),
    (lambda m: edit_config(m, lambda c: c["head"]["params"].update(bogus=1)), "unknown parameters"),
    (lambda m: edit_config(m, lambda c: c.update(classes=c["classes"][:2])), "disagrees with its head"),
    (lambda m: edit_config(m, lambda c: (c["classes"].append("ghost"), c["head"]["classes"].append("ghost"))),
     "weights for another number of classes"),
    (lambda m: edit_config(m, lambda c: c["ood"]["params"].update(method="nope")), "unusable unknown detector"),
])
def test_damaged_model_is_refused_with_a_message(cli, model, tmp_path, make_good, damage, message):
    damage(model)
    err = predict_fails(cli, model, tmp_path, make_good)
    assert message in err and "expected:" in err and "fix:" in err


@pytest.mark.parametrize("value", [0, -1.5, "NaN", "Infinity", "warm", None, True])
def test_temperature_must_be_finite_and_positive(cli, model, tmp_path, make_good, value):
    text = (model / "config.json").read_text()
    config = json.loads(text)
    config["temperature"] = "__T__"
    raw = value if value in ("NaN", "Infinity") else json.dumps(value)
    (model / "config.json").write_text(json.dumps(config).replace('"__T__"', raw))
    assert "has an invalid temperature" in predict_fails(cli, model, tmp_path, make_good)


def test_permission_denied_is_a_message(cli, model, tmp_path, make_good, monkeypatch):
    real_read_text = Path.read_text

    def refuse(self, *args, **kwargs):  # chmod does not stop root, so simulate it
        if self.name == "config.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    assert "permission denied" in predict_fails(cli, model, tmp_path, make_good)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_head_file_is_a_message(cli, model, tmp_path, make_good):
    (model / "head.safetensors").chmod(0)
    assert "permission denied" in predict_fails(cli, model, tmp_path, make_good)


def test_loading_never_unpickles(model, monkeypatch):
    (model / "head.safetensors").write_bytes(pickle.dumps({"means": np.zeros(3)}))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(DataError, match="never unpickles"):
        Classifier.load(model)


# --- overwriting is atomic ------------------------------------------------------------------------------

def classes_of(model: Path) -> list[str]:
    return Classifier.load(model).classes


def renamed(clf: Classifier, names: list[str]) -> Classifier:
    clf.head.classes_ = np.asarray(names, dtype=object)
    return clf


@pytest.mark.skipif(sys.platform != "linux", reason="the one-step swap needs Linux renameat2")
def test_overwrite_swaps_in_one_step(model, monkeypatch):
    real_replace = os.replace

    def no_rename_onto_the_model(src, dst):  # the two-rename fallback would leave a moment without a model
        assert Path(dst) != model
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", no_rename_onto_the_model)
    new = renamed(Classifier.load(model), ["a", "b", "c"]).save(model)
    assert classes_of(new) == ["a", "b", "c"]
    assert sorted(p.name for p in model.parent.iterdir()) == ["model"]  # no staging or backup left behind


def test_kill_between_the_two_renames_leaves_the_old_model_loadable(model, monkeypatch, caplog):
    """Where the atomic swap is unavailable, a kill after the old folder became the backup must not lose it."""
    old_classes = classes_of(model)
    clf = renamed(Classifier.load(model), ["a", "b", "c"])
    monkeypatch.setattr(fio, "_exchange", lambda a, b: False)
    real_replace = os.replace

    def killed_on_second_rename(src, dst):
        if Path(dst) == model:
            raise KeyboardInterrupt  # stands for SIGKILL between the renames
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        clf.save(model)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not model.exists() and (model.parent / ".model.old").is_dir()
    with caplog.at_level("WARNING", logger="finegrain"):
        assert classes_of(model) == old_classes
    assert "using the backup" in caplog.text
    assert classes_of(clf.save(model)) == ["a", "b", "c"]  # the next save completes and cleans up
    assert not (model.parent / ".model.old").exists()


# --- files honour the umask ---------------------------------------------------------------------------------

def test_saved_files_and_folders_honour_the_umask(model, tmp_path):
    old = os.umask(0o027)
    try:
        target = Classifier.load(model).save(tmp_path / "shared")
        fio.write_text_atomic(tmp_path / "out.csv", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o640


@pytest.mark.parametrize("backbone,message", [
    ("no_such_net", "unknown backbone 'no_such_net'"),
    ("finetuned:tiny.0123456789abcdef", "without its weights file"),
    ("open_clip:ViT-B-32/laion2b", "FINEGRAIN_TRUST_BACKBONE=1"),
])
def test_backbone_spec_is_checked_before_anything_loads(tmp_path, capsys, backbone, message):
    data = make_split_folder(tmp_path / "birds")
    model = tmp_path / "m"
    assert run_cli(capsys, "fit", data, "-o", model, "--backbone", "tiny", "-q")[0] == 0
    config = json.loads((model / "config.json").read_text())
    config["backbone"] = backbone
    (model / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "predict", model, data / "test", "-q")
    assert code == 1 and message in err and "Traceback" not in err


def test_pickled_clip_weights_are_refused(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    model = tmp_path / "m"
    assert run_cli(capsys, "fit", data, "-o", model, "--backbone", "tiny", "-q")[0] == 0
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    (clip_dir / "pytorch_model.bin").write_bytes(b"\\x80\\x04not really")
    config = json.loads((model / "config.json").read_text())
    config["backbone"] = f"hf_clip:{clip_dir}"
    (model / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "predict", model, data / "test", "-q")
    assert code == 1 and "pickled" in err
