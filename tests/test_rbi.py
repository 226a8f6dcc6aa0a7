from __future__ import annotations

import json

import numpy as np
import pytest

import finegrain
from finegrain.errors import ConfigError, DataError
from finegrain.heads import head_from_state, make_head
from conftest import run_cli

SMALL = {"width": 16, "heads": 2, "batch_size": 16, "max_epochs": 15, "patience": 5, "lr": 1e-2}


def blobs(n_per_class=24, n_classes=4, dim=16, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(n_classes, dim))
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres]).astype(np.float32)
    y = np.repeat(np.array([f"class_{i}" for i in range(n_classes)], dtype=object), n_per_class)
    return X, y


@pytest.fixture(scope="module")
def fitted():
    X, y = blobs(seed=1)
    return make_head("rbi", **SMALL).fit(X, y)


@pytest.fixture(scope="module")
def test_set():
    return blobs(seed=2, n_per_class=12)


@pytest.mark.parametrize("mode", ["single", "bank", "transductive", "plain"])
def test_learns_separable_classes_in_every_mode(fitted, test_set, mode):
    Xt, yt = test_set
    head = fitted.with_mode(mode)
    assert (head.predict(Xt) == yt).mean() > 0.9
    p = head.predict_proba(Xt)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("mode", ["single", "bank", "plain"])
def test_prediction_does_not_depend_on_the_rest_of_the_batch(fitted, test_set, mode):
    Xt, _ = test_set
    head = fitted.with_mode(mode)
    alone = np.concatenate([head.decision_function(x[None]) for x in Xt[:6]])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(Xt))
    mixed = head.decision_function(Xt[order])[np.argsort(order)][:6]
    with_noise = head.decision_function(np.concatenate([Xt[:6], 5 * rng.normal(size=(30, 16)).astype(np.float32)]))[:6]
    np.testing.assert_allclose(mixed, alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(with_noise, alone, rtol=1e-5, atol=1e-5)
    assert (mixed.argmax(1) == alone.argmax(1)).all() and (with_noise.argmax(1) == alone.argmax(1)).all()


def test_transductive_depends_on_batch_mates_but_not_on_input_order(fitted, test_set):
    Xt, _ = test_set
    head = fitted.with_mode("transductive")
    order = np.random.default_rng(3).permutation(len(Xt))
    base = head.decision_function(Xt)
    np.testing.assert_allclose(head.decision_function(Xt[order]), base[order], rtol=1e-5, atol=1e-5)
    assert not np.allclose(base, fitted.with_mode("single").decision_function(Xt), atol=1e-4)
    assert 0.0 <= head.flip_rate(Xt) <= 1.0


def test_transductive_refuses_class_sorted_unshuffled_input(fitted, test_set):
    Xt, _ = test_set  # rows come sorted by class
    head = fitted.with_mode("transductive")
    head.shuffle = False
    with pytest.raises(DataError, match="sorted by class") as e:
        head.predict(Xt)
    assert "shuffle" in str(e.value)
    mixed = Xt[np.random.default_rng(0).permutation(len(Xt))]
    assert len(head.predict(mixed)) == len(Xt)  # a shuffled order is accepted


def test_training_is_deterministic_given_a_seed():
    X, y = blobs(seed=4)
    a = make_head("rbi", sampler="pk", rpe="relative", **SMALL).fit(X, y)
    b = make_head("rbi", sampler="pk", rpe="relative", **SMALL).fit(X, y)
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    assert a.epochs_ == b.epochs_ and len(a.validation_) >= 1


def test_state_round_trip_through_json_in_every_mode(fitted, test_set):
    Xt, _ = test_set
    values, arrays = fitted.to_state()
    back = head_from_state(json.loads(json.dumps(values)), arrays)
    for mode in ("single", "bank", "transductive"):
        np.testing.assert_allclose(back.with_mode(mode).predict_proba(Xt), fitted.with_mode(mode).predict_proba(Xt),
                                   rtol=1e-6)


def test_classifier_save_load_keeps_mode_and_answers(split_folder, tmp_path):
    clf = finegrain.fit(split_folder, backbone="tiny", head="rbi",
                        head_params={**SMALL, "batch_size": 8, "mode": "bank", "bank": "samples", "bank_size": 12})
    clf.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["head"]["head"] == "rbi" and config["head"]["params"]["mode"] == "bank"
    loaded = finegrain.Classifier.load(tmp_path / "model")
    assert loaded.head.mode == "bank" and loaded.head.bank_.shape[0] == 12
    a = clf.predict(split_folder / "test", top_k=2)
    b = loaded.predict(split_folder / "test", top_k=2)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert np.mean([p.label == p.path.split("/")[-2] for p in b]) > 0.9


@pytest.mark.parametrize("params, message", [
    ({"mode": "batch"}, "unknown mode"), ({"rpe": "absolute"}, "unknown rpe"),
    ({"width": 10, "heads": 4}, "multiple of heads"), ({"batch_size": 1}, "batches of 2"),
])
def test_bad_parameters_are_usage_errors(params, message):
    X, y = blobs()
    with pytest.raises(ConfigError, match=message):
        make_head("rbi", **params).fit(X, y)
    with pytest.raises(ConfigError, match="unknown mode"):
        make_head("rbi").with_mode("sideways")


def test_cli_fit_then_eval_in_another_mode_names_the_mode(capsys, split_folder, tmp_path):
    from finegrain.cli.main import main

    model = tmp_path / "model"
    params = [a for k, v in {**SMALL, "batch_size": 8}.items() for a in ("--head-param", f"{k}={v}")]
    assert main(["fit", str(split_folder), "-o", str(model), "--backbone", "tiny", "--head", "rbi", "-q", *params]) == 0
    capsys.readouterr()
    assert main(["eval", str(model), str(split_folder), "--format", "json", "-q", "--head-mode", "transductive"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["provenance"]["head"] == "rbi" and report["provenance"]["head_mode"] == "transductive"
    assert main(["predict", str(model), str(split_folder / "test"), "--format", "jsonl", "-q"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["model"]["head"] == "rbi" and first["model"]["head_mode"] == "single"


def test_head_mode_on_a_single_mode_head_is_a_usage_error(capsys, split_folder, tmp_path):
    from finegrain.cli.main import main

    model = tmp_path / "model"
    assert main(["fit", str(split_folder), "-o", str(model), "--backbone", "tiny", "--head", "prototype", "-q"]) == 0
    assert main(["eval", str(model), str(split_folder), "-q", "--head-mode", "bank"]) == 2
    assert "single inference mode" in capsys.readouterr().err


def test_smoothed_validation_curve_is_a_centred_moving_average():
    from finegrain.heads.rbi import smoothed

    curve = list(np.random.default_rng(0).uniform(size=7))
    naive = [np.mean(curve[max(0, i - 1):i + 2]) for i in range(len(curve))]
    np.testing.assert_allclose(smoothed(curve), naive)
    assert int(np.argmax(smoothed([0.9, 0.5, 0.5, 0.8, 0.8, 0.8]))) == 4  # a lone early spike is not the best epoch


def test_eval_reports_the_flip_rate_of_transductive_mode(capsys, split_folder, tmp_path):
    model = tmp_path / "rbi"
    code, _, err = run_cli(capsys, "fit", split_folder, "-o", model, "--backbone", "tiny", "--head", "rbi",
                           "--head-param", "max_epochs=3", "--head-param", "batch_size=6", "-q")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "eval", model, split_folder, "--head-mode", "transductive", "-q")
    assert code == 0 and "flip rate (transductive) %" in out
    code, out, _ = run_cli(capsys, "eval", model, split_folder, "-q")
    assert "flip rate" not in out
