"""`finegrain finetune --engine ray` on a local Ray (started once for this module): Ray Train workers train the
same network as one process (to float tolerance without dropout: the global batch and the steps are the same;
each Ray Train job costs ~12 s of start-up here, hence few of them), a killed run resumes from the run
folder's checkpoint, and failures and misuse are clean errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_split_folder, run_cli

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train.torch")

from finegrain.errors import ConfigError, FinegrainError  # noqa: E402
from finegrain.finetune.trainer import Trainer  # noqa: E402
from finegrain.scale.train import (RayTrainOptions, check_shared_folders, fit_on_ray,  # noqa: E402
                                   training_failed)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from test_trainer import _settings, _store, _top, _trainable, killed_after_epoch  # noqa: E402

FAST = ["--backbone", "tiny", "--train-blocks", "1", "--views", "2", "--precision", "fp32", "-q"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module: 2 CPUs, one per Ray Train worker."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def tiny_backbone_built():
    """Built once before any `_top()`: its first build draws from torch's seeded generator, which would give
    the first network of a comparison another classifier start than the second."""
    from finegrain.backbones import get_backbone
    get_backbone("tiny")


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_two_workers_resume_a_killed_run_and_match_one_process(tmp_path):
    """The run folder of a local run killed after epoch 2 is resumed by 2 workers, each taking half of every
    global batch (batch 8 over 24 images: 3 steps an epoch, as in one process)."""
    store, train = _store(tmp_path)
    want = Trainer(_trainable(_top()), store, _settings(), tmp_path / "full", progress=False).fit(train, train)

    killed = killed_after_epoch(2, store, train, tmp_path / "run")
    resumed = Trainer(_trainable(_top(seed=99)), store, _settings(), tmp_path / "run", progress=False)
    got = fit_on_ray(resumed, train, train, RayTrainOptions(workers=2, quiet=True))
    assert resumed.history[:2] == killed.history[:2] and resumed.epoch == 4
    _assert_same_weights(got, want)


def test_cli_two_workers_give_a_model_like_the_local_engine(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    models = {}
    for engine in ("local", "ray"):
        extra = ["--engine", "ray", "--ray-workers", "2"] if engine == "ray" else []
        code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / engine, "--epochs", "3", *FAST, *extra)
        assert code == 0, err
        models[engine] = json.loads((tmp_path / engine / "config.json").read_text())
    local, on_ray = (models[e]["finetune"]["members"][0] for e in ("local", "ray"))
    assert on_ray["engine"] == {"ray_workers": 2, "ray_address": None} and len(on_ray["history"]) == 3
    assert models["ray"]["classes"] == models["local"]["classes"]
    assert abs(on_ray["network_val_accuracy"] - local["network_val_accuracy"]) <= 0.34  # 3 validation images
    losses = [h["loss"] for h in local["history"]]
    assert [h["loss"] for h in on_ray["history"]] == pytest.approx(losses, abs=0.05)  # dropout differs by rank
    assert on_ray["backbone"] != "tiny" and on_ray["backbone"].startswith("finetuned:tiny.")

    code, out, err = run_cli(capsys, "predict", tmp_path / "ray", data / "test", "--format", "jsonl", "-q")
    assert code == 0, err
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == 12 and sum(a["label"] == Path(a["path"]).parent.name for a in answers) >= 10


def test_ray_options_without_the_ray_engine_are_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "finetune", tmp_path, "-o", tmp_path / "m", "--ray-workers", "3")
    assert code == 2 and "--ray-workers only apply to --engine ray" in err and "Traceback" not in err


def test_more_workers_than_the_local_ray_has_cpus_is_refused_before_training(tmp_path):
    store, train = _store(tmp_path)
    trainer = Trainer(_trainable(_top()), store, _settings(), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="need more CPUs than Ray has"):
        fit_on_ray(trainer, train, train, RayTrainOptions(workers=3, quiet=True))


def test_a_worker_that_cannot_see_the_cache_folder_says_so(tmp_path):
    with pytest.raises(FinegrainError, match="cannot see the fine-tuning files") as err:
        check_shared_folders(tmp_path / "store", tmp_path / "run")
    assert "same path on every Ray node" in str(err.value) or "mounts at the same path" in str(err.value)


def test_a_failed_job_is_told_by_the_workers_own_error():
    from finegrain.errors import DataError

    worker_error = DataError("the activation store is gone", expected="chunk files", found="none", fix="rerun")
    ray_text = ("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback (most recent call last):\n"
                '  File "train.py", line 1, in train_worker\n'
                f"finegrain.errors.DataError: {worker_error}\n")
    err = training_failed(RuntimeError(ray_text))
    assert "DataError: the activation store is gone expected: chunk files found: none fix: rerun" in err.found
    assert "rerun the same command" in err.fix


def test_worker_threads_are_an_equal_share_that_fits_on_one_node():
    from finegrain.scale.train import default_threads

    assert default_threads(32, 8, 2) == 8  # 4 nodes of 8 CPUs: a 16-thread worker would never be placed
    assert default_threads(2, 2, 2) == 1
    assert default_threads(0, 0, 4) == 1  # an autoscaling cluster with no worker node yet: Ray adds them


def test_engine_names_and_options_are_checked():
    from finegrain.scale.train import engine_options

    assert engine_options("local", None) is None and engine_options("ray", None) == RayTrainOptions()
    with pytest.raises(ConfigError, match="unknown fine-tuning engine"):
        engine_options("spark", None)
    with pytest.raises(ConfigError, match="Ray options given for a local"):
        engine_options("local", RayTrainOptions(workers=4))
    with pytest.raises(ConfigError, match="--ray-workers 0"):
        RayTrainOptions(workers=0)


def test_an_address_nothing_listens_on_is_refused_in_seconds():
    import socket

    from finegrain.scale.train import engine_options

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(FinegrainError, match=f"cannot join the Ray cluster at 127.0.0.1:{port}") as err:
        engine_options("ray", RayTrainOptions(address=f"127.0.0.1:{port}"))
    assert "ray status" in err.value.fix
