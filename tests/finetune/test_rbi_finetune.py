"""RBI inside fine-tuning: P×K batches, pair similarities for the similarity RPEs, a trainer that learns and
resumes with the RBI network, and a model whose head is the tuned RBI network in every inference mode."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_split_folder, run_cli
from finegrain.errors import ConfigError
from finegrain.finetune.trainer import Trainer, TrainSettings, epoch_order, pair_similarity
from test_trainer import _settings, _store, _trainable

FAST = ["--backbone", "tiny", "--train-blocks", "1", "--views", "2", "--precision", "fp32", "-q"]


def _rbi_top(seed=0, rpe="self"):
    from finegrain.backbones import get_backbone
    from finegrain.finetune.network import staged_copy
    from finegrain.finetune.trainer import TopNetwork

    staged = staged_copy(get_backbone("tiny"))
    torch.manual_seed(seed)
    return _trainable(TopNetwork([staged.stages[-1]], 16, 3, dropout=0.0,
                                 rbi=TrainSettings(rbi=True, rbi_rpe=rpe, rbi_width=16, rbi_heads=2)))


def _rbi_settings(**kw):
    return _settings(rbi=True, rbi_width=16, rbi_heads=2, rbi_k=2, epochs=6, **kw)


def test_pk_order_makes_batches_of_p_classes_times_k_images():
    y = np.repeat(np.arange(10), 7)
    s = TrainSettings(rbi=True, rbi_k=4, batch_size=12)
    order = epoch_order(y, s, np.random.default_rng(0))
    assert len(order) == 12 * int(np.ceil(len(y) / 12))
    for batch in order.reshape(-1, 12):
        classes, counts = np.unique(y[batch], return_counts=True)
        assert len(classes) == 3 and set(counts) == {4}
    plain = epoch_order(y, TrainSettings(batch_size=12), np.random.default_rng(0))
    assert sorted(plain) == list(range(len(y)))


def test_pair_similarities_are_one_on_the_diagonal_and_rank_pairs_by_likeness():
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.normal(size=(1, 4, 5, 5)).astype(np.float32))
    x = torch.cat([base, base + 0.01 * torch.randn_like(base), torch.from_numpy(
        rng.normal(size=(1, 4, 5, 5)).astype(np.float32))])
    for kind in ("psnr", "cosine"):
        s = pair_similarity(x, kind)
        assert torch.allclose(s, s.T) and torch.allclose(torch.diagonal(s), torch.ones(3))
        assert s[0, 1] > s[0, 2] and s[0, 1] <= 1 and s.min() >= -1
    assert pair_similarity(x, "psnr").min() >= 0


@pytest.mark.parametrize("rpe", ["self", "psnr"])
def test_rbi_trainer_learns_and_its_attention_reads_the_similarity(tmp_path, rpe):
    store, train = _store(tmp_path)
    trainer = Trainer(_rbi_top(rpe=rpe), store, _rbi_settings(rbi_rpe=rpe), tmp_path / "run", progress=False)
    trainer.fit(train, train)
    assert trainer.best["val_accuracy"] == 1.0
    block = trainer.top.rbi.blocks[0]
    if rpe == "psnr":
        assert float(block.similarity_fill) > 0 and block.similarity_scale.abs().sum() > 0
    assert block.out.weight.abs().sum() > 0  # the attention branch, zero at the start, has learned something


def test_rbi_run_resumed_from_a_checkpoint_matches_an_uninterrupted_one(tmp_path):
    store, train = _store(tmp_path)
    full = Trainer(_rbi_top(), store, _rbi_settings(), tmp_path / "a", progress=False).fit(train, train)

    class Killed(Exception):
        pass

    interrupted = Trainer(_rbi_top(), store, _rbi_settings(), tmp_path / "b", progress=False)
    save = interrupted.save_checkpoint

    def save_then_die():
        save()
        if interrupted.epoch == 3:
            raise Killed
    interrupted.save_checkpoint = save_then_die
    with pytest.raises(Killed):
        interrupted.fit(train, train)
    resumed = Trainer(_rbi_top(seed=5), store, _rbi_settings(), tmp_path / "b", progress=False)
    state = resumed.fit(train, train)
    for k in full:
        assert torch.allclose(full[k].float(), state[k].float(), atol=1e-5), k


def test_rbi_settings_refuse_salmix_and_unknown_choices():
    with pytest.raises(ConfigError, match="--salmix cannot be combined with --rbi"):
        TrainSettings(rbi=True, salmix=1.0)
    with pytest.raises(ConfigError, match="--rbi-rpe"):
        TrainSettings(rbi=True, rbi_rpe="psnrr")
    with pytest.raises(ConfigError, match="--rbi-width"):
        TrainSettings(rbi=True, rbi_width=10, rbi_heads=4)


def test_the_torch_free_list_of_encodings_is_the_heads_own():
    """`--rbi-rpe` is checked before torch is imported, against a copy of the RBI head's encodings."""
    from finegrain.finetune.settings import RBI_RPES
    from finegrain.heads.rbi import RPES, SIMILARITY_RPES

    assert RBI_RPES == RPES + SIMILARITY_RPES


def test_finetune_rbi_model_predicts_in_every_mode(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    model = tmp_path / "tuned-rbi"
    code, _, err = run_cli(capsys, "finetune", data, "-o", model, "--epochs", "3", "--rbi", "--rbi-rpe", "psnr",
                           "--rbi-width", "16", "--rbi-heads", "2", "--rbi-k", "2", "--train-batch-size", "8", *FAST)
    assert code == 0, err
    config = json.loads((model / "config.json").read_text())
    assert config["head"]["head"] == "rbi" and config["head"]["params"]["rpe"] == "psnr"
    assert 0 <= config["training"]["val_accuracy"] <= 1
    reports = {}
    for mode in ("single", "bank", "transductive", "plain"):
        code, out, err = run_cli(capsys, "eval", model, data, "--head-mode", mode, "--format", "json", "-q")
        assert code == 0, err
        reports[mode] = json.loads(out)
    assert reports["single"]["n"] == 12 and "flip_rate" in reports["transductive"]
    assert all(0 <= r["top1"] <= 1 for r in reports.values())
    code, out, err = run_cli(capsys, "predict", model, data / "test", "--format", "jsonl", "--unknown", "auto", "-q")
    assert code == 0, err
    assert len(out.splitlines()) == 12 and all("unknown" in json.loads(line) for line in out.splitlines())
    code, _, err = run_cli(capsys, "soup", model, model, "-o", tmp_path / "soup", "--method", "uniform", "-q")
    assert code != 0 and "fine-tuned with --rbi" in err and "Traceback" not in err


@pytest.mark.parametrize("extra, message", [
    (["--rbi", "--salmix", "1"], "--salmix cannot be combined with --rbi"),
    (["--rbi", "--mixoe", "1"], "--mixoe cannot be combined with --rbi"),
    (["--rbi", "--backbone", "tiny+tiny"], "--rbi tunes one backbone"),
    (["--rbi", "--engine", "ray"], "--rbi runs in this process only"),
    (["--mixoe", "1", "--engine", "ray"], "--mixoe runs in this process only")])
def test_finetune_refuses_rbi_and_mixoe_where_they_cannot_run_without_a_traceback(tmp_path, capsys, extra, message):
    data = make_split_folder(tmp_path / "birds")
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "m", *FAST, *extra)
    assert code != 0 and message in err and "Traceback" not in err


def test_soups_refuse_rbi_models_rather_than_drop_their_network(tmp_path, capsys):
    data = make_split_folder(tmp_path / "birds")
    code, _, err = run_cli(capsys, "finetune", data, "-o", tmp_path / "m", "--rbi", "--sweep", "2", *FAST)
    assert code != 0 and "--sweep cannot be combined with --rbi" in err and "Traceback" not in err


def test_rbi_network_starts_as_the_linear_probe_and_plain_mode_skips_the_attention():
    top = _rbi_top()
    feats = torch.rand(6, 16) + 0.1
    h = top.rbi.project(top.embedding(feats))
    for context in ("single", "plain"):
        assert torch.allclose(top.rbi.refine(h, context), h)  # zero-initialised branches: the identity
    top.rbi.blocks[0].out.weight.data.normal_()
    assert not torch.allclose(top.rbi.refine(h, "single"), h) and torch.equal(top.rbi.refine(h, "plain"), h)


@pytest.mark.parametrize("mode", ["single", "plain"])
def test_tuned_rbi_head_reports_the_held_out_accuracy_of_its_own_deployable_mode(mode):
    from finegrain.finetune.api import rbi_head

    top = _rbi_top()
    top.rbi.blocks[0].out.weight.data.normal_(std=3.0)  # attention that changes answers: the modes now differ
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.array(["a", "b", "c"] * 10)
    head = rbi_head(top, ["a", "b", "c"], TrainSettings(rbi=True, rbi_width=16, rbi_heads=2, rbi_mode=mode), 3)
    head.fit(X[:15], y[:15], X[15:], y[15:])
    expected = (head.with_mode(mode).predict(X[15:]) == y[15:]).mean()
    assert head.val_accuracy_ == pytest.approx(expected)
