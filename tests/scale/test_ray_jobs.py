"""`--engine ray` on a local Ray (started once for this module): the same rows as the in-process engine, bad
files as error rows, resume by content hash, and clear errors for what a Ray job cannot do."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from scale_support import build_scale_data

ray = pytest.importorskip("ray")

from finegrain.scale.shards import read_shards  # noqa: E402 - after the skip: needs pyarrow only, but with ray


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (2 CPUs: one model actor + decode tasks); jobs reuse the open session."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def scale_data(tmp_path_factory) -> dict[str, Path]:
    return build_scale_data(tmp_path_factory)


def rows_by_path(out: Path) -> dict[str, dict]:
    rows = read_shards(str(out)).to_pylist()
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "one row per input"
    return by_path


def test_predict_rows_equal_the_local_engine(capsys, scale_data, tmp_path):
    from finegrain.pipeline import Classifier

    out = tmp_path / "preds"
    code, _, err = run_cli(capsys, "predict", scale_data["model"], scale_data["test"], "--engine", "ray",
                           "--output", out, "--batch-size", "4", "--shard-rows", "6", "--top-k", "2")
    assert code == 0, err
    assert "unreadable" in err
    local = Classifier.load(scale_data["model"]).predict([scale_data["test"]], top_k=2)
    got = rows_by_path(out)
    assert sorted(got) == sorted(p.path for p in local)
    for p in local:
        row = got[p.path]
        assert row["error"] == p.error
        assert row["label"] == p.label and row["labels"] == (p.labels or None)
        if p.probs:
            np.testing.assert_allclose(row["probs"], p.probs, atol=1e-6)
    assert sum(r["error"] is not None for r in got.values()) == 3  # bad, empty, truncated
    assert len(list(out.glob("*.parquet"))) >= 2


def test_unknown_answers_equal_the_local_engine(scale_data, tmp_path):
    from finegrain.pipeline import Classifier
    from finegrain.scale.jobs import RayOptions, predict_on_ray

    out = tmp_path / "preds"
    predict_on_ray(scale_data["model"], [str(scale_data["test"])], str(out), RayOptions(quiet=True), unknown=0.9)
    local = Classifier.load(scale_data["model"]).predict([scale_data["test"]], unknown=0.9)
    got = rows_by_path(out)
    assert [(got[p.path]["label"], got[p.path]["unknown"]) for p in local] == [(p.label, p.unknown) for p in local]
    np.testing.assert_allclose([got[p.path]["known_score"] or 0 for p in local], [p.known_score or 0 for p in local],
                               atol=1e-6)


def test_embed_rows_equal_the_local_engine(capsys, scale_data, tmp_path):
    from finegrain.data.sources import load_data
    from finegrain.embed import embed_samples

    out = tmp_path / "emb"
    code, _, err = run_cli(capsys, "embed", scale_data["data"], "-o", out, "--backbone", "tiny", "--engine", "ray",
                           "--batch-size", "8", "-q")
    assert code == 0, err
    local = embed_samples(load_data(scale_data["data"]).samples, "tiny", progress=False)
    got = rows_by_path(out)
    assert {e.path: e.reason for e in local.errors} == {p: r["error"] for p, r in got.items() if r["error"]}
    X = np.array([got[str(s.path)]["embedding"] for s in local.samples], dtype=np.float32)
    cosine = np.sum(X * local.X, axis=1) / np.linalg.norm(X, axis=1) / np.linalg.norm(local.X, axis=1)
    assert cosine.min() >= 1 - 1e-5
    assert [got[str(s.path)]["label"] for s in local.samples] == local.labels
    assert [got[str(s.path)]["sha256"] for s in local.samples] == local.shas
    assert {got[str(s.path)]["split"] for s in local.samples} == {"train", "test"}


def test_rerun_skips_inputs_already_written(scale_data, tmp_path):
    from finegrain.scale.jobs import RayOptions, predict_on_ray

    out, options = tmp_path / "preds", RayOptions(batch_size=4, shard_rows=5, quiet=True)
    first = predict_on_ray(scale_data["model"], [str(scale_data["test"])], str(out), options)
    assert first.n_new == first.n_inputs == 16 and first.n_errors == 3
    again = predict_on_ray(scale_data["model"], [str(scale_data["test"])], str(out), options)
    assert again.n_new == 0 and again.n_rows == first.n_rows
    shards = sorted(out.glob("*.parquet"))
    n_lost = pq.read_metadata(shards[0]).num_rows
    shards[0].unlink()                                                          # a shard that never got written
    (out / "cut-off.parquet").write_bytes(b"PAR1 and then the job was killed")  # one killed mid-write
    resumed = predict_on_ray(scale_data["model"], [str(scale_data["test"])], str(out), options)
    assert resumed.n_new == n_lost and resumed.n_rows == first.n_rows
    assert not (out / "cut-off.parquet").exists()
    assert len(rows_by_path(out)) == first.n_rows


def test_another_job_into_the_same_output_is_refused(capsys, scale_data, tmp_path):
    out = tmp_path / "emb"
    assert run_cli(capsys, "embed", scale_data["test"], "-o", out, "--backbone", "tiny", "--engine", "ray", "-q")[0] == 0
    code, _, err = run_cli(capsys, "embed", scale_data["test"], "-o", out, "--backbone", "tiny:24", "--engine", "ray")
    assert code == 2 and "holds shards of another job" in err and "Traceback" not in err


def test_options_a_ray_job_cannot_honour_are_refused(capsys, scale_data, tmp_path):
    model, test = scale_data["model"], scale_data["test"]
    code, _, err = run_cli(capsys, "predict", model, test, "--engine", "ray")
    assert code == 2 and "--output" in err
    code, _, err = run_cli(capsys, "predict", model, test, "--engine", "ray", "--output", tmp_path / "o", "--transductive")
    assert code == 2 and "--transductive" in err
    code, _, err = run_cli(capsys, "predict", model, test, "--ray-actors", "2")
    assert code == 2 and "--engine ray" in err
    code, _, err = run_cli(capsys, "predict", model, test, "--engine", "ray", "--output", tmp_path / "o",
                           "--ray-actors", "2", "--threads", "1")
    assert code == 2 and "no CPU for decoding" in err


def test_without_ray_installed_the_error_names_the_extra(capsys, scale_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code, _, err = run_cli(capsys, "predict", scale_data["model"], scale_data["test"], "--engine", "ray",
                           "--output", tmp_path / "o")
    assert code == 1 and "pip install 'finegrain[ray]'" in err and "Traceback" not in err


def test_help_imports_neither_ray_nor_the_scale_package():
    probe = ("import sys, contextlib, io\nfrom finegrain.cli.main import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    try: main(['predict', '--help'])\n    except SystemExit: pass\n"
             "print('ray' in sys.modules, 'finegrain.scale' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
