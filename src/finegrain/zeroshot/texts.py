"""Class names, prompt templates and class descriptions as data: reading them from TXT/CSV/JSON/YAML files.

A user's knowledge about classes without photos lives in plain files, one place per domain, so it can be
reviewed and edited like any other data; nothing here embeds text (see `encoders`).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import DataError, MissingExtraError

BUILTIN_TEMPLATES = "templates.json"


@dataclass(frozen=True)
class Descriptor:
    """One piece of visual evidence for a class ("brown wings"), with how strongly it holds (0..1]."""

    text: str
    weight: float = 1.0


@dataclass
class ClassDescriptions:
    """Per-class descriptors; classes absent from the mapping simply have none."""

    by_class: dict[str, list[Descriptor]] = field(default_factory=dict)

    def for_class(self, name: str) -> list[Descriptor]:
        return self.by_class.get(name, [])

    @property
    def classes(self) -> list[str]:
        return list(self.by_class)


def _data_path(name: str) -> Path:
    return Path(str(resources.files("finegrain.zeroshot") / "data" / name))


def _read_structured(path: Path) -> Any:
    """JSON or YAML file → Python object; YAML needs PyYAML (installed with the `text` extra)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError as exc:
            raise MissingExtraError("pyyaml", f"reading {path.name}", "text") from exc
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"{path} is not valid YAML", expected="a YAML mapping", found=str(exc).splitlines()[0],
                            fix="fix the YAML syntax at the line shown") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON", expected="a JSON object", found=str(exc),
                        fix="fix the JSON syntax, or save the file as .yaml/.csv") from exc


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} file {p} not found", expected="an existing file", found="no such file",
                        fix=f"check the path of the {what} file")
    return p


def read_class_names(path: str | Path) -> list[str]:
    """One class per line (TXT), a `class`/`name`/`label` column (CSV), or a JSON/YAML list; '#' lines are comments."""
    p = _existing(path, "class list")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            column = next((c for c in ("class", "name", "label") if c in (reader.fieldnames or [])), None)
            if column is None:
                raise DataError(f"{p} has no class column", expected="a header with 'class', 'name' or 'label'",
                                found=", ".join(reader.fieldnames or []) or "no header",
                                fix="name the column holding the class names 'class'")
            names = [row[column].strip() for row in reader]
    elif suffix in {".json", ".yaml", ".yml"}:
        data = _read_structured(p)
        if isinstance(data, dict):
            data = list(data)
        if not isinstance(data, list):
            raise DataError(f"{p} does not hold a list of class names", expected="a list of strings",
                            found=type(data).__name__, fix="write the classes as a JSON/YAML list")
        names = [str(x).strip() for x in data]
    else:
        names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if not n.startswith("#")]
    return check_class_names([n for n in names if n], str(p))


def check_class_names(names: list[str], source: str) -> list[str]:
    """At least two distinct classes, no duplicates: a zero-shot classifier ranks classes against each other."""
    seen, dupes = set(), []
    for n in names:
        if n in seen:
            dupes.append(n)
        seen.add(n)
    if dupes:
        raise DataError(f"duplicate class names in {source}", expected="each class once",
                        found=", ".join(sorted(set(dupes))[:5]), fix="remove the repeated lines")
    if len(names) < 2:
        raise DataError(f"too few classes in {source}", expected="at least 2 class names",
                        found=f"{len(names)}", fix="list one class name per line")
    return names


def read_templates(spec: str | Path | None = None) -> list[str]:
    """Prompt templates: a built-in set name ('name', 'photo', 'imagenet', 'birds', ...), or a file.

    A file is TXT (one template per line) or a JSON/YAML list; each template has exactly one `{}` slot
    for the class name."""
    if spec is None:
        spec = "photo"
    builtin = _builtin_sets()
    if str(spec) in builtin:
        templates = list(builtin[str(spec)])
        source = f"built-in template set '{spec}'"
    else:
        p = Path(spec).expanduser()
        if not p.is_file():
            raise DataError(f"unknown template set '{spec}'",
                            expected=f"a built-in set ({', '.join(sorted(builtin))}) or a templates file",
                            found=str(spec), fix="pass --templates photo, or the path of a templates file")
        if p.suffix.lower() in {".json", ".yaml", ".yml"}:
            data = _read_structured(p)
            templates = [str(t) for t in (data if isinstance(data, list) else [])]
        else:
            templates = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()
                         if ln.strip() and not ln.startswith("#")]
        source = str(p)
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise DataError(f"bad prompt templates in {source}", expected="templates with exactly one '{}' slot",
                        found=repr(bad[0]) if bad else "no templates", fix="write templates like 'a photo of a {}.'")
    return templates


def _builtin_sets() -> dict[str, list[str]]:
    return {k: v for k, v in _read_structured(_data_path(BUILTIN_TEMPLATES)).items() if not k.startswith("_")}


def builtin_template_sets() -> list[str]:
    return sorted(_builtin_sets())


def _descriptor(item: Any, source: str, cls: str) -> Descriptor:
    if isinstance(item, str):
        return Descriptor(item.strip())
    if isinstance(item, dict) and "text" in item:
        return Descriptor(str(item["text"]).strip(), _weight(item.get("weight", 1.0), source, cls))
    raise DataError(f"bad descriptor for class '{cls}' in {source}",
                    expected="a string, or a mapping with 'text' (and optional 'weight')", found=repr(item)[:80],
                    fix="write descriptors as strings, e.g. - brown wings")


def _weight(value: Any, source: str, cls: str) -> float:
    try:
        w = float(value)
    except (TypeError, ValueError):
        w = float("nan")
    if not w > 0 or w != w or w == float("inf"):
        raise DataError(f"bad descriptor weight for class '{cls}' in {source}", expected="a positive number",
                        found=repr(value), fix="give each descriptor a weight > 0, or leave the weight out")
    return w


def read_descriptions(path: str | Path) -> ClassDescriptions:
    """Descriptions file → per-class descriptors.

    CSV: columns `class,description[,weight]`, one descriptor per row. JSON/YAML: a mapping from class
    name to a list of descriptors (strings, or `{text, weight}` mappings)."""
    p = _existing(path, "descriptions")
    by_class: dict[str, list[Descriptor]] = {}
    if p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "class" not in cols or "description" not in cols:
                raise DataError(f"{p} lacks the columns a descriptions CSV needs",
                                expected="a header with class,description[,weight]", found=", ".join(cols) or "no header",
                                fix="add the header line: class,description,weight")
            for row in reader:
                cls, text = (row["class"] or "").strip(), (row["description"] or "").strip()
                if cls and text:
                    w = _weight(row.get("weight") or 1.0, str(p), cls)
                    by_class.setdefault(cls, []).append(Descriptor(text, w))
    else:
        data = _read_structured(p)
        if not isinstance(data, dict):
            raise DataError(f"{p} does not map classes to descriptors", expected="a mapping class → list of descriptors",
                            found=type(data).__name__, fix="write `Class name: [descriptor, ...]`")
        for cls, items in data.items():
            items = [items] if isinstance(items, str) else list(items or [])
            by_class[str(cls).strip()] = [d for d in (_descriptor(it, str(p), str(cls)) for it in items) if d.text]
    if not any(by_class.values()):
        raise DataError(f"no descriptions in {p}", expected="at least one descriptor", found="none",
                        fix="add rows `class,description`")
    return ClassDescriptions(by_class)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the order of the classifier's outputs (from open_clip, MIT)."""
    return _data_path("imagenet_classes.txt").read_text(encoding="utf-8").splitlines()


def readable_name(name: str) -> str:
    """'Black_footed_Albatross' or '001.Black_footed_Albatross' → 'Black footed Albatross' for prompts."""
    head, dot, rest = name.partition(".")
    if dot and head.isdigit():
        name = rest
    return " ".join(name.replace("_", " ").split())


def class_key(name: str) -> str:
    """How class names are matched across files and models: without regard to case, underscores or a 'NNN.' prefix."""
    return readable_name(name).casefold()
