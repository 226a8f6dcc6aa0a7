"""Dataset checks run before training: catch leakage, label typos and tiny classes before they cost a run.

Checks never read files; the caller supplies content hashes (for duplicate checks) and empty class folders.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finegrain.data.samples import Sample
from finegrain.errors import ConfigError

_LEVEL_ORDER = {"error": 0, "warning": 1, "info": 2}
_PREVIEW = 5


@dataclass(frozen=True)
class Finding:
    """One problem found: `level` is 'error' | 'warning' | 'info'; `items` lists every class or path involved."""

    level: str
    code: str
    message: str
    items: tuple[str, ...] = ()


def _preview(names: Iterable[str]) -> str:
    """Join names for a message, cutting long lists to the first five plus 'and N more'."""
    names = list(names)
    shown = ", ".join(names[:_PREVIEW])
    return shown if len(names) <= _PREVIEW else f"{shown} and {len(names) - _PREVIEW} more"


def _quoted(names: Iterable[str]) -> list[str]:
    return [repr(name) for name in names]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}es" if word.endswith("s") else f"{n} {word}s"


def _training_counts(labelled: Sequence[Sample]) -> Counter[str]:
    """Images per class in the training data (split 'train' or None), or in all data if there is none."""
    train = [s for s in labelled if s.split in ("train", None)] or labelled
    return Counter(s.label for s in train)


def _unlabelled(samples: Sequence[Sample], labelled: Sequence[Sample]) -> list[Finding]:
    paths = sorted(str(s.path) for s in samples if s.label is None)
    if not paths or not labelled:
        return []
    return [Finding("warning", "unlabelled",
                    f"no label on {_plural(len(paths), 'image')} among labelled ones: {_preview(paths)}",
                    tuple(paths))]


def _bad_boxes(samples: Sequence[Sample]) -> list[Finding]:
    """Crop boxes that cannot be used whatever the image (not numbers, zero or negative size): those rows will be
    error rows. A box outside its image shows only once the image is read."""
    bad = [s for s in samples if s.box is not None and s.box.problem]
    if not bad:
        return []
    boxes = "crop box" if len(bad) == 1 else "crop boxes"
    return [Finding("warning", "bad-box", f"{len(bad)} unusable {boxes} (those images will be error rows), first: "
                                          f"{bad[0].box.problem}", tuple(str(s.path) for s in bad))]


def _tiny_classes(labelled: Sequence[Sample], counts: Counter[str], min_per_class: int) -> list[Finding]:
    tiny = sorted(label for label in {s.label for s in labelled} if counts[label] < min_per_class)
    if not tiny:
        return []
    described = [f"{label!r} ({counts[label]})" for label in tiny]
    return [Finding("warning", "tiny-class",
                    f"fewer than {min_per_class} training images in {_plural(len(tiny), 'class')}: "
                    f"{_preview(described)}", tuple(tiny))]


def _empty_classes(empty_classes: Sequence[str]) -> list[Finding]:
    empty = sorted(set(empty_classes))
    if not empty:
        return []
    return [Finding("warning", "empty-class",
                    f"no images in {_plural(len(empty), 'class folder')}: {_preview(_quoted(empty))}",
                    tuple(empty))]


def _normalise_label(label: str) -> str:
    return " ".join(label.replace("_", " ").split()).casefold()


def _near_duplicate_labels(labels: Iterable[str]) -> list[Finding]:
    """Labels equal after ignoring case, whitespace and '_' vs ' ' are almost surely one class split in two."""
    groups: dict[str, set[str]] = defaultdict(set)
    for label in labels:
        groups[_normalise_label(label)].add(label)
    findings = []
    for key in sorted(groups):
        spellings = sorted(groups[key])
        if len(spellings) > 1:
            findings.append(Finding("warning", "label-near-duplicate",
                                    f"labels {_preview(_quoted(spellings))} differ only by case, whitespace or "
                                    "underscores and are probably one class", tuple(spellings)))
    return findings


def _describe(samples: Iterable[Sample]) -> list[str]:
    return [f"{s.path} [{s.split}, {s.label!r}]" for s in samples]


def _duplicates(samples: Sequence[Sample], content_hashes: Mapping[Path, str]) -> list[Finding]:
    """Identical files: across splits they leak test data into training; within a split they skew or conflict.

    Samples whose path has no hash are skipped.
    """
    by_hash: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.path in content_hashes:
            by_hash[content_hashes[s.path]].append(s)
    groups = sorted((sorted(group, key=lambda s: str(s.path)) for group in by_hash.values() if len(group) > 1),
                    key=lambda group: str(group[0].path))
    findings = []
    for group in groups:
        findings += _across_splits(group) + _within_splits(group)
    return findings


def _across_splits(group: list[Sample]) -> list[Finding]:
    if len({s.split for s in group}) < 2:
        return []
    return [Finding("error", "duplicate-across-splits",
                    f"identical files in different splits leak evaluation data into training: "
                    f"{_preview(_describe(group))}", tuple(str(s.path) for s in group))]


def _within_splits(group: list[Sample]) -> list[Finding]:
    by_split: dict[str, list[Sample]] = defaultdict(list)
    for s in group:
        by_split[str(s.split)].append(s)
    findings = []
    for split in sorted(by_split):
        same = by_split[split]
        if len(same) < 2:
            continue
        paths = tuple(str(s.path) for s in same)
        if len({s.label for s in same if s.label is not None}) > 1:
            findings.append(Finding("error", "conflicting-duplicate",
                                    f"identical files in split {split} have different labels: "
                                    f"{_preview(_describe(same))}", paths))
        else:
            findings.append(Finding("warning", "duplicate-within-split",
                                    f"identical files in split {split} are counted more than once: "
                                    f"{_preview(paths)}", paths))
    return findings


def _imbalance(counts: Counter[str], ratio_limit: float) -> list[Finding]:
    present = sorted((n, label) for label, n in counts.items() if n > 0)
    if len(present) < 2:
        return []
    (small_n, small), large_n = present[0], present[-1][0]
    large = min(label for n, label in present if n == large_n)
    ratio = large_n / small_n
    if ratio <= ratio_limit:
        return []
    return [Finding("info", "imbalance",
                    f"classes are imbalanced: {large!r} has {large_n} training images and {small!r} has {small_n} "
                    f"(ratio {ratio:.1f} > {ratio_limit:g}); consider class-balanced sampling or loss weights",
                    (large, small))]


def _check_options(min_per_class: int, imbalance_ratio: float) -> None:
    if min_per_class < 0:
        raise ConfigError("min_per_class must not be negative", expected="an int >= 0 (0 turns the check off)",
                          found=repr(min_per_class), fix="pass min_per_class >= 0")
    if imbalance_ratio < 1:
        raise ConfigError("imbalance_ratio must be at least 1", expected="largest/smallest class ratio >= 1",
                          found=repr(imbalance_ratio), fix="pass imbalance_ratio >= 1, e.g. 10")


def check_samples(samples: Sequence[Sample], *, content_hashes: Mapping[Path, str] | None = None,
                  empty_classes: Sequence[str] = (), min_per_class: int = 2,
                  imbalance_ratio: float = 10.0) -> list[Finding]:
    """Run every check and return the findings, errors first, then warnings, then info (stable within a level).

    Duplicate checks run only when `content_hashes` (path -> content hash) is given.
    """
    _check_options(min_per_class, imbalance_ratio)
    labelled = [s for s in samples if s.label is not None]
    counts = _training_counts(labelled)
    findings = _unlabelled(samples, labelled) + _bad_boxes(samples)
    findings += _tiny_classes(labelled, counts, min_per_class)
    findings += _empty_classes(empty_classes)
    findings += _near_duplicate_labels({s.label for s in labelled} | set(empty_classes))
    if content_hashes is not None:
        findings += _duplicates(samples, content_hashes)
    findings += _imbalance(counts, imbalance_ratio)
    return sorted(findings, key=lambda f: _LEVEL_ORDER[f.level])


def format_findings(findings: Sequence[Finding]) -> str:
    """One line per finding, 'LEVEL code: message', for terminals and logs; 'no findings' when clean."""
    if not findings:
        return "no findings"
    return "\n".join(f"{f.level.upper()} {f.code}: {f.message}" for f in findings)


def findings_to_json(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """Plain dicts (items as a list) for JSON reports."""
    return [{"level": f.level, "code": f.code, "message": f.message, "items": list(f.items)} for f in findings]
