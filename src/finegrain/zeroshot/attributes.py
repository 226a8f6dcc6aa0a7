"""Class-level attribute tables (CUB style: `has_<part>::<value>` with the % of images showing it) → descriptors.

Attribute tables are the descriptions many fine-grained datasets already have; turned into short phrases
("brown wings", "a hooked seabird bill") weighted by how often they hold, they feed the same text path as
hand- or LLM-written descriptions.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .texts import ClassDescriptions, Descriptor, readable_name

_PART = {"upperparts": "upperparts", "underparts": "underparts", "upper_tail": "upper tail",
         "under_tail": "under tail", "primary": "plumage", "leg": "legs", "eye": "eyes", "wing": "wings"}


def attribute_phrase(attribute: str) -> str:
    """'has_wing_color::brown' → 'brown wings'; 'has_bill_shape::hooked_seabird' → 'a hooked seabird bill'."""
    name, sep, value = attribute.partition("::")
    if not sep:
        return attribute.replace("_", " ")
    group = name[4:] if name.startswith("has_") else name
    value = value.replace("_", " ").replace("-", " ").strip()
    if group.endswith("_color"):
        part = group[: -len("_color")]
        return f"{value} {_PART.get(part, part.replace('_', ' '))}"
    if group.endswith("_pattern"):
        part = group[: -len("_pattern")]
        return f"{value} {part.replace('_', ' ')} pattern" if part == "head" else f"a {value} {part.replace('_', ' ')}"
    if group == "bill_shape":
        return f"a {value} bill"
    if group == "bill_length":
        return f"a bill {value}"
    if group == "tail_shape":
        return f"a {value}"
    if group == "wing_shape":
        return value
    if group == "size":
        return f"{value.split(' (')[0]} size"
    if group == "shape":
        return f"a {value} shape"
    return f"{group.replace('_', ' ')}: {value}"


def read_cub_attributes(folder: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """(CUB class names, attribute names, (200, 312) matrix of % of images with the attribute)."""
    root = Path(folder)
    paths = {"classes": root / "classes.txt", "names": root / "attributes" / "attributes_reconstructed.txt",
             "values": root / "attributes" / "class_attribute_labels_continuous.txt"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"{root} is not a CUB attributes folder", expected="classes.txt and attributes/*.txt",
                        found="missing " + ", ".join(missing), fix="point at the folder with CUB's metadata files")
    classes = [ln.split(maxsplit=1)[1].strip() for ln in paths["classes"].read_text().splitlines() if ln.strip()]
    names = [ln.split(maxsplit=1)[1].strip() for ln in paths["names"].read_text().splitlines() if ln.strip()]
    values = np.loadtxt(paths["values"], dtype=np.float64)
    if values.shape != (len(classes), len(names)):
        raise DataError("CUB attribute matrix does not match its class and attribute lists",
                        expected=f"({len(classes)}, {len(names)})", found=str(values.shape),
                        fix="use the unmodified CUB metadata files")
    return classes, names, values


def attribute_descriptions(classes: Sequence[str], attributes: Sequence[str], values: np.ndarray,
                           min_percent: float = 10.0) -> ClassDescriptions:
    """One descriptor per attribute present in at least `min_percent` % of a class's images, weighted by it."""
    out: dict[str, list[Descriptor]] = {}
    for cls, row in zip(classes, np.asarray(values, dtype=np.float64)):
        keep = np.flatnonzero(row >= min_percent)
        out[readable_name(cls)] = [Descriptor(attribute_phrase(attributes[j]), round(float(row[j]) / 100.0, 4))
                                   for j in keep[np.argsort(-row[keep], kind="stable")]]
    return ClassDescriptions(out)


def write_descriptions_csv(desc: ClassDescriptions, path: str | Path) -> Path:
    """The `class,description,weight` CSV that `finegrain zeroshot --descriptions` reads."""
    from ..io import write_text_atomic
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["class", "description", "weight"])
    for cls, items in desc.by_class.items():
        w.writerows([cls, d.text, d.weight] for d in items)
    return write_text_atomic(path, buf.getvalue())
