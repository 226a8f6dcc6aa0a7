"""Model soups: weights averaged tensor by tensor, greedy soups validated on images no ingredient trained on,
`finetune --sweep` training such ingredients (and resuming), and the refusals."""
from __future__ import annotations

import json

import torch

from conftest import make_split_folder, run_cli

FAST = ["--backbone", "tiny", "--train-blocks", "1", "--views", "2", "--precision", "fp32", "--epochs", "2", "-q"]


def test_average_weights_is_the_mean_of_floats_and_keeps_counters():
    from finegrain.finetune.soup import average_weights

    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}
    out = average_weights([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 3


def test_greedy_order_is_best_first_and_stable():
    from finegrain.finetune.soup import greedy_order

    assert greedy_order([0.5, 0.9, 0.5, 0.7]) == [1, 3, 0, 2]


def _config(model):
    return json.loads((model / "config.json").read_text())


def test_sweep_trains_ingredients_with_one_held_out_set_and_soups_them(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    out = tmp_path / "soup"
    code, _, err = run_cli(capsys, "finetune", data, "-o", out, "--sweep", "2", "--val-split", "0.25", *FAST)
    assert code == 0, err
    ingredients = sorted((tmp_path / "soup-ingredients").iterdir())
    assert [p.name for p in ingredients] == ["seed0", "seed1"]
    a, b = (_config(p) for p in ingredients)
    assert a["finetune"]["val_sha256"] == b["finetune"]["val_sha256"] and a["finetune"]["val_sha256"]
    assert a["finetune"]["seed"] == 0 and b["finetune"]["seed"] == 1 and b["finetune"]["split_seed"] == 0
    assert a["backbone"] != b["backbone"]  # different seeds, different weights

    soup = _config(out)["soup"]
    assert soup["method"] == "greedy" and soup["kept"][0] == str(ingredients[max(
        range(2), key=lambda i: (soup["ingredient_val_accuracy"][i], -i))])
    assert soup["val_accuracy"] >= max(soup["ingredient_val_accuracy"])  # the greedy guarantee, on validation
    kept_two = len(soup["kept"]) == 2
    assert (_config(out)["backbone"] not in (a["backbone"], b["backbone"])) == kept_two
    code, out_text, err = run_cli(capsys, "predict", out, data / "test", "--format", "jsonl", "-q")
    assert code == 0 and len(out_text.splitlines()) == len(list((data / "test").rglob("*.png"))), err

    stamps = [(p / "config.json").stat().st_mtime_ns for p in ingredients]
    code, _, err = run_cli(capsys, "finetune", data, "-o", out, "--sweep", "2", "--val-split", "0.25", *FAST)
    assert code == 0, err
    assert [(p / "config.json").stat().st_mtime_ns for p in ingredients] == stamps  # trained once, reused


def test_uniform_soup_of_separate_runs_and_greedy_refusal(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    for seed in (0, 1):
        code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / f"m{seed}", "--seed", str(seed),
                               "--val-split", "0.25", *FAST)
        assert code == 0, err
    models = [tmp_path / "m0", tmp_path / "m1"]
    code, _, err = run_cli(capsys, "soup", *models, "-o", tmp_path / "greedy", "-q")
    assert code == 2 and "greedy soup needs validation images" in err and "--sweep" in err
    assert "Traceback" not in err and not (tmp_path / "greedy").exists()

    code, _, err = run_cli(capsys, "soup", *models, "-o", tmp_path / "uniform", "--method", "uniform", "-q")
    assert code == 0, err
    config = _config(tmp_path / "uniform")
    weights = [_config(m)["backbone"] for m in models]
    assert config["soup"]["kept"] == [str(m) for m in models] and config["backbone"] not in weights
    assert _config(models[0])["tta"] == "flip" and config["tta"] == "flip"  # finetune's default; a soup keeps it
    code, _, err = run_cli(capsys, "soup", *models, "-o", tmp_path / "plain", "--method", "uniform", "--tta", "none",
                           "-q")
    assert code == 0 and "tta" not in _config(tmp_path / "plain"), err  # the plain crop alone
    from safetensors.torch import load_file

    def tensors(model):
        return load_file(str(next(model.glob("backbone-*.safetensors"))))
    t0, t1, ts = tensors(models[0]), tensors(models[1]), tensors(tmp_path / "uniform")
    name = next(k for k in ts if ts[k].is_floating_point() and not torch.equal(t0[k], t1[k]))
    assert torch.allclose(ts[name], (t0[name] + t1[name]) / 2, atol=1e-6)


def test_soup_refuses_a_model_that_was_not_fine_tuned(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    assert run_cli(capsys, "fit", data, "-o", tmp_path / "plain", "--backbone", "tiny", "-q")[0] == 0
    assert run_cli(capsys, "finetune", data, "-o", tmp_path / "tuned", *FAST)[0] == 0
    code, _, err = run_cli(capsys, "soup", tmp_path / "tuned", tmp_path / "plain", "-o", tmp_path / "s", "-q")
    assert code == 2 and "is not a fine-tuned model" in err and "Traceback" not in err


def test_finegrain_finetune_stays_callable_twice_in_one_process(tmp_path):
    """Importing any finegrain.finetune.* module makes the package the attribute `finegrain.finetune`: it must
    still fine-tune (a second call used to fail with "'module' object is not callable")."""
    import finegrain
    from finegrain.finetune.settings import TrainSettings

    data = make_split_folder(tmp_path / "birds")
    settings = TrainSettings(epochs=1, precision="fp32", probe_steps=5)
    models = [finegrain.finetune(data, backbone="tiny", train_blocks=1, views=1, settings=settings, seed=s)
              for s in (0, 1)]
    assert all(m.backbone_id.startswith("finetuned:tiny.") for m in models)


def test_bad_soup_and_sweep_options_are_usage_errors(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    for args in (["finetune", data, "-o", tmp_path / "m", "--sweep", "1", *FAST],
                 ["finetune", data, "-o", tmp_path / "m", "--salmix", "-1", *FAST],
                 ["soup", tmp_path / "missing_a", tmp_path / "missing_b", "-o", tmp_path / "s", "-q"]):
        code, _, err = run_cli(capsys, *args)
        assert code in (1, 2) and "fix:" in err and "Traceback" not in err, err
    assert not (tmp_path / "m").exists() and not (tmp_path / "s").exists()
