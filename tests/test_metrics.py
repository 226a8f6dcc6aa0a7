from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from finegrain.errors import ConfigError, DataError
from finegrain.metrics import (
    classification_summary,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    mean_per_class_accuracy,
    most_confused_pairs,
    per_class_metrics,
    reliability_bins,
    top_k_accuracy,
)

SEEDS = [0, 1, 2, 3, 4]


def random_case(seed: int, n: int = 200, c: int = 7, absent: tuple[int, ...] = (2, 5)):
    """Labels that never use the `absent` classes, noisy predictions that may, and softmax probabilities."""
    rng = np.random.default_rng(seed)
    present = np.setdiff1d(np.arange(c), absent)
    y_true = rng.choice(present, size=n)
    logits = rng.normal(size=(n, c)) * 2
    logits[np.arange(n), y_true] += rng.uniform(0, 3, size=n)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y_true, probs, probs.argmax(axis=1), c


def naive_ece(y_true, probs, n_bins):
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf >= lo) & ((conf < hi) | ((b == n_bins - 1) & (conf == 1.0)))
        if in_bin.any():
            total += in_bin.sum() / len(y_true) * abs((pred[in_bin] == y_true[in_bin]).mean() - conf[in_bin].mean())
    return total


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_matches_sklearn(seed, k):
    y, probs, _, c = random_case(seed)
    expected = skm.top_k_accuracy_score(y, probs, k=k, labels=np.arange(c))
    assert top_k_accuracy(y, probs, k) == pytest.approx(expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_top1_matches_accuracy_score(seed):
    y, probs, pred, _ = random_case(seed)
    assert top_k_accuracy(y, probs) == pytest.approx(skm.accuracy_score(y, pred))


def test_top_k_clips_k_and_breaks_ties_towards_lower_class():
    scores = np.array([[0.5, 0.5, 0.0]])
    assert top_k_accuracy([0], scores, k=1) == 1.0
    assert top_k_accuracy([1], scores, k=1) == 0.0
    assert top_k_accuracy([2], scores, k=99) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_mean_per_class_accuracy_matches_balanced_accuracy(seed):
    y, _, pred, _ = random_case(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has classes absent from y_true
        expected = skm.balanced_accuracy_score(y, pred)
    assert mean_per_class_accuracy(y, pred) == pytest.approx(expected)
    assert mean_per_class_accuracy(y, pred) != pytest.approx(skm.accuracy_score(y, pred))


def test_mean_per_class_accuracy_weights_classes_equally():
    # class 0: 3/3 right, class 1: 0/1 right -> (1 + 0) / 2, while plain accuracy is 3/4
    assert mean_per_class_accuracy([0, 0, 0, 1], [0, 0, 0, 0]) == 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_matches_sklearn(seed):
    y, _, pred, c = random_case(seed)
    cm = confusion_matrix(y, pred, c)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y, pred, labels=np.arange(c)))


def test_confusion_matrix_rows_are_true_classes():
    np.testing.assert_array_equal(confusion_matrix([0, 0, 1], [1, 1, 1], 2), [[0, 2], [0, 1]])


@pytest.mark.parametrize("seed", SEEDS)
def test_per_class_metrics_match_sklearn_on_present_classes(seed):
    y, _, pred, c = random_case(seed)
    stats = per_class_metrics(y, pred, c)
    labels = np.unique(y)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(stats["precision"][labels], p)
    np.testing.assert_allclose(stats["accuracy"][labels], r)
    np.testing.assert_allclose(stats["f1"][labels], f)
    np.testing.assert_array_equal(stats["support"][labels], s)


def test_per_class_metrics_undefined_values():
    # class 0 fine; class 1 present but never predicted; class 2 absent but predicted; class 3 absent, never predicted
    stats = per_class_metrics([0, 0, 1], [0, 2, 0], 4)
    np.testing.assert_array_equal(stats["support"], [2, 1, 0, 0])
    np.testing.assert_allclose(stats["accuracy"], [0.5, 0.0, np.nan, np.nan])
    np.testing.assert_allclose(stats["precision"], [0.5, 0.0, 0.0, np.nan])
    np.testing.assert_allclose(stats["f1"], [0.5, 0.0, np.nan, np.nan])


@pytest.mark.parametrize("seed", SEEDS)
def test_macro_f1_matches_sklearn_over_present_classes(seed):
    y, _, pred, c = random_case(seed)
    expected = skm.f1_score(y, pred, average="macro", labels=np.unique(y), zero_division=0)
    assert macro_f1(y, pred, c) == pytest.approx(expected)
    all_classes = skm.f1_score(y, pred, average="macro", labels=np.arange(c), zero_division=0)
    assert macro_f1(y, pred, c) != pytest.approx(all_classes)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_naive_loop(seed, n_bins):
    y, probs, _, _ = random_case(seed)
    assert expected_calibration_error(y, probs, n_bins) == pytest.approx(naive_ece(y, probs, n_bins))


def test_ece_perfectly_calibrated_is_zero():
    # confidence 0.75 in every row and exactly 3 of 4 rows right
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error([0, 0, 0, 1], probs) == pytest.approx(0.0)


def test_ece_confident_and_always_wrong_is_one():
    probs = np.tile([1.0, 0.0, 0.0], (5, 1))
    assert expected_calibration_error([1, 2, 1, 2, 1], probs) == pytest.approx(1.0)


def test_reliability_bins_are_left_closed_with_one_in_last_bin_and_nan_in_empty_bins():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.55, 0.45], [0.5, 0.5]])
    bins = reliability_bins([0, 0, 0, 0], probs, n_bins=4)
    np.testing.assert_array_equal(bins["count"], [0, 0, 2, 2])
    np.testing.assert_allclose(bins["confidence"], [np.nan, np.nan, 0.525, 1.0])
    np.testing.assert_allclose(bins["accuracy"], [np.nan, np.nan, 1.0, 0.5])


def test_most_confused_pairs_orders_by_count_then_position():
    cm = np.array([[9, 2, 3], [2, 9, 0], [1, 3, 9]])
    assert most_confused_pairs(cm) == [(0, 2, 3), (2, 1, 3), (0, 1, 2), (1, 0, 2), (2, 0, 1)]
    assert most_confused_pairs(cm, k=2) == [(0, 2, 3), (2, 1, 3)]
    assert most_confused_pairs(np.eye(3, dtype=int) * 5) == []


def test_classification_summary_is_json_ready_and_consistent():
    y, probs, pred, c = random_case(0)
    names = [f"class_{i}" for i in range(c)]
    summary = json.loads(json.dumps(classification_summary(y, probs, names, top_k=3), allow_nan=False))
    assert summary["n"] == len(y)
    assert summary["top1"] == pytest.approx(top_k_accuracy(y, probs, 1))
    assert summary["top3"] == pytest.approx(top_k_accuracy(y, probs, 3))
    assert summary["mean_per_class_accuracy"] == pytest.approx(mean_per_class_accuracy(y, pred))
    assert summary["macro_f1"] == pytest.approx(macro_f1(y, pred, c))
    assert summary["ece"] == pytest.approx(expected_calibration_error(y, probs))
    assert summary["confusion_matrix"] == confusion_matrix(y, pred, c).tolist()
    absent = summary["per_class"][2]
    assert absent["class"] == "class_2" and absent["support"] == 0
    assert absent["accuracy"] is None and absent["f1"] is None
    true, predicted, count = most_confused_pairs(confusion_matrix(y, pred, c))[0]
    assert summary["most_confused"][0] == {"true": names[true], "predicted": names[predicted], "count": count}


@pytest.mark.parametrize("call", [
    lambda: top_k_accuracy([0, 1], np.ones((3, 2))),              # rows differ from labels
    lambda: top_k_accuracy([], np.ones((0, 2))),                  # empty
    lambda: top_k_accuracy([0, 2], np.ones((2, 2))),              # label outside [0, C)
    lambda: top_k_accuracy([0, 1], np.ones(2)),                   # scores not 2-D
    lambda: top_k_accuracy([0, 1], [[np.nan, 1], [0, 1]]),        # non-finite scores
    lambda: mean_per_class_accuracy([0, 1], [0]),                 # lengths differ
    lambda: mean_per_class_accuracy([0.0, 1.0], [0, 1]),          # float labels
    lambda: confusion_matrix([0, -1], [0, 0], 2),                 # negative label
    lambda: confusion_matrix([0, 1], [0, 3], 2),                  # prediction outside [0, C)
    lambda: macro_f1([[0, 1]], [[0, 1]], 2),                      # labels not 1-D
    lambda: expected_calibration_error([0], [[1.5, -0.5]]),       # not probabilities
    lambda: most_confused_pairs(np.ones((2, 3), dtype=int)),      # not square
    lambda: classification_summary([0], [[0.6, 0.4]], ["a"]),     # wrong number of class names
])
def test_bad_input_raises_data_error(call):
    with pytest.raises(DataError):
        call()


@pytest.mark.parametrize("call", [
    lambda: top_k_accuracy([0], [[1.0]], k=0),
    lambda: confusion_matrix([0], [0], 0),
    lambda: reliability_bins([0], [[1.0]], n_bins=0),
])
def test_bad_option_raises_config_error(call):
    with pytest.raises(ConfigError):
        call()


def test_error_message_says_what_was_found():
    with pytest.raises(DataError, match="found: 1 out of range, e.g. 7"):
        confusion_matrix([0, 7], [0, 0], 3)
