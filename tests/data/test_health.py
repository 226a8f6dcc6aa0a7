from __future__ import annotations

import json
from pathlib import Path

import pytest

from finegrain.data.health import Finding, check_samples, findings_to_json, format_findings
from finegrain.data.samples import Sample
from finegrain.errors import ConfigError


def s(path: str, label: str | None = "a", split: str | None = "train") -> Sample:
    return Sample(Path(path), label, split)


def clean() -> list[Sample]:
    return [s(f"{label}/{split}{i}.jpg", label, split)
            for label in ("a", "b") for split in ("train", "val") for i in range(3)]


def hashes(samples, same: dict[str, str] | None = None) -> dict[Path, str]:
    """Unique fake hashes for every sample, except paths in `same`, which get the hash given there."""
    same = same or {}
    return {x.path: same.get(str(x.path), f"h-{x.path}") for x in samples}


def codes(findings) -> list[str]:
    return [f.code for f in findings]


def only(findings, code) -> Finding:
    matching = [f for f in findings if f.code == code]
    assert len(matching) == 1, findings
    return matching[0]


def test_clean_dataset_has_no_findings():
    samples = clean()
    assert check_samples(samples, content_hashes=hashes(samples)) == []
    assert format_findings([]) == "no findings"


def test_tiny_class_counts_training_images_only():
    samples = clean() + [s("c/t.jpg", "c"), s("d/v1.jpg", "d", "val"), s("d/v2.jpg", "d", "val")]
    finding = only(check_samples(samples), "tiny-class")
    assert finding.level == "warning"
    assert finding.items == ("c", "d")
    assert "'c' (1)" in finding.message and "'d' (0)" in finding.message


def test_tiny_class_uses_all_samples_when_there_is_no_training_split():
    samples = [s("a/1.jpg", "a", "test"), s("a/2.jpg", "a", "test"), s("b/1.jpg", "b", "test")]
    assert only(check_samples(samples), "tiny-class").items == ("b",)


def test_empty_class_warns_with_sorted_unique_names():
    finding = only(check_samples(clean(), empty_classes=["z", "y", "z"]), "empty-class")
    assert (finding.level, finding.items) == ("warning", ("y", "z"))


def test_duplicate_across_splits_is_an_error_naming_both_paths():
    samples = clean()
    findings = check_samples(samples, content_hashes=hashes(samples, {"a/train0.jpg": "x", "a/val0.jpg": "x"}))
    finding = only(findings, "duplicate-across-splits")
    assert finding.level == "error"
    assert finding.items == ("a/train0.jpg", "a/val0.jpg")
    assert "a/train0.jpg" in finding.message and "a/val0.jpg" in finding.message


def test_duplicate_within_split_same_label_is_a_warning():
    samples = clean()
    findings = check_samples(samples, content_hashes=hashes(samples, {"a/train0.jpg": "x", "a/train1.jpg": "x"}))
    assert codes(findings) == ["duplicate-within-split"]
    assert findings[0].level == "warning"
    assert findings[0].items == ("a/train0.jpg", "a/train1.jpg")


def test_duplicate_within_split_with_different_labels_is_a_conflict():
    samples = clean()
    findings = check_samples(samples, content_hashes=hashes(samples, {"a/train0.jpg": "x", "b/train0.jpg": "x"}))
    assert codes(findings) == ["conflicting-duplicate"]
    assert findings[0].level == "error"
    assert findings[0].items == ("a/train0.jpg", "b/train0.jpg")


def test_duplicate_checks_are_skipped_without_hashes():
    samples = clean() + [s("a/train0.jpg", "b")]
    assert check_samples(samples) == []


def test_label_near_duplicates_are_grouped():
    samples = [s(f"{i}.jpg", label) for i, label in enumerate(["Blue Jay", "blue_jay ", "Blue  jay", "Crow"] * 2)]
    finding = only(check_samples(samples), "label-near-duplicate")
    assert finding.level == "warning"
    assert finding.items == ("Blue  jay", "Blue Jay", "blue_jay ")


def test_imbalance_is_info_naming_largest_and_smallest_class():
    samples = [s(f"a/{i}.jpg", "a") for i in range(21)] + [s(f"b/{i}.jpg", "b") for i in range(2)]
    finding = only(check_samples(samples), "imbalance")
    assert finding.level == "info"
    assert finding.items == ("a", "b")
    assert "10.5" in finding.message
    assert check_samples(samples[1:]) == []  # ratio exactly 10 is not over the limit


def test_unlabelled_among_labelled_warns_but_all_unlabelled_does_not():
    findings = check_samples(clean() + [s("x/2.jpg", None), s("x/1.jpg", None)])
    finding = only(findings, "unlabelled")
    assert (finding.level, finding.items) == ("warning", ("x/1.jpg", "x/2.jpg"))
    assert check_samples([s("x/1.jpg", None), s("x/2.jpg", None)]) == []


def test_long_lists_are_truncated_in_message_but_complete_in_items():
    names = [f"c{i}" for i in range(8)]
    finding = only(check_samples(clean(), empty_classes=names), "empty-class")
    assert finding.items == tuple(names)
    assert "'c4' and 3 more" in finding.message and "c5" not in finding.message


def test_findings_are_ordered_errors_then_warnings_then_info():
    samples = clean() + [s(f"a/extra{i}.jpg", "a") for i in range(30)] + [s("c/1.jpg", "c")]
    content = hashes(samples, {"b/train0.jpg": "x", "b/val0.jpg": "x"})
    findings = check_samples(samples, content_hashes=content)
    assert [f.level for f in findings] == ["error", "warning", "info"]
    assert findings == check_samples(list(reversed(samples)), content_hashes=content)


def test_format_and_json():
    findings = [Finding("error", "e-code", "bad thing", ("p",)), Finding("info", "i-code", "note")]
    assert format_findings(findings) == "ERROR e-code: bad thing\nINFO i-code: note"
    as_json = findings_to_json(findings)
    assert json.loads(json.dumps(as_json)) == [
        {"level": "error", "code": "e-code", "message": "bad thing", "items": ["p"]},
        {"level": "info", "code": "i-code", "message": "note", "items": []},
    ]


@pytest.mark.parametrize("options", [{"min_per_class": -1}, {"imbalance_ratio": 0.5}])
def test_bad_options_raise_config_error(options):
    with pytest.raises(ConfigError):
        check_samples(clean(), **options)
