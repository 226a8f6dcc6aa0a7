"""Class lists, templates and descriptions read from TXT/CSV/JSON/YAML, with errors that say how to fix them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from finegrain.errors import DataError
from finegrain.zeroshot.attributes import attribute_descriptions, attribute_phrase, write_descriptions_csv
from finegrain.zeroshot.texts import (builtin_template_sets, imagenet_class_names, read_class_names,
                                      read_descriptions, read_templates, readable_name)


def test_class_names_from_txt_csv_json(tmp_path):
    (tmp_path / "a.txt").write_text("# birds\nred finch\n\nblue jay\n")
    (tmp_path / "b.csv").write_text("class,other\nred finch,1\nblue jay,2\n")
    (tmp_path / "c.json").write_text(json.dumps(["red finch", "blue jay"]))
    for name in ("a.txt", "b.csv", "c.json"):
        assert read_class_names(tmp_path / name) == ["red finch", "blue jay"]


def test_class_name_errors(tmp_path):
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(DataError, match="duplicate") as e:
        read_class_names(tmp_path / "dup.txt")
    assert "fix:" in str(e.value)
    (tmp_path / "one.txt").write_text("a\n")
    with pytest.raises(DataError, match="too few"):
        read_class_names(tmp_path / "one.txt")
    with pytest.raises(DataError, match="not found"):
        read_class_names(tmp_path / "missing.txt")


def test_templates_builtin_and_file(tmp_path):
    assert {"name", "photo", "imagenet", "birds"} <= set(builtin_template_sets())
    assert len(read_templates("imagenet")) == 80 and read_templates(None) == ["a photo of a {}."]
    (tmp_path / "t.txt").write_text("a {} bird\n# comment\nthe {}\n")
    assert read_templates(tmp_path / "t.txt") == ["a {} bird", "the {}"]
    (tmp_path / "bad.txt").write_text("no slot\n")
    with pytest.raises(DataError, match="exactly one"):
        read_templates(tmp_path / "bad.txt")
    with pytest.raises(DataError, match="unknown template set"):
        read_templates("nonsense")


def test_descriptions_csv_json_yaml(tmp_path):
    (tmp_path / "d.csv").write_text("class,description,weight\nred finch,red wings,0.9\nred finch,a cone bill,\n")
    (tmp_path / "d.json").write_text(json.dumps({"red finch": ["red wings", {"text": "a cone bill", "weight": 0.5}]}))
    (tmp_path / "d.yaml").write_text("red finch:\n  - red wings\n  - {text: a cone bill, weight: 0.5}\n")
    csv_d = read_descriptions(tmp_path / "d.csv").for_class("red finch")
    assert [(d.text, d.weight) for d in csv_d] == [("red wings", 0.9), ("a cone bill", 1.0)]
    for name in ("d.json", "d.yaml"):
        got = read_descriptions(tmp_path / name).for_class("red finch")
        assert [(d.text, d.weight) for d in got] == [("red wings", 1.0), ("a cone bill", 0.5)]


def test_description_errors(tmp_path):
    (tmp_path / "w.csv").write_text("class,description,weight\nred finch,red wings,-1\n")
    with pytest.raises(DataError, match="weight"):
        read_descriptions(tmp_path / "w.csv")
    (tmp_path / "h.csv").write_text("name,text\nx,y\n")
    with pytest.raises(DataError, match="columns"):
        read_descriptions(tmp_path / "h.csv")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_descriptions(tmp_path / "bad.json")


def test_names_and_attribute_phrases():
    assert readable_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert attribute_phrase("has_wing_color::brown") == "brown wings"
    assert attribute_phrase("has_bill_shape::hooked_seabird") == "a hooked seabird bill"
    assert attribute_phrase("has_size::small_(5_-_9_in)") == "small size"
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench"


def test_attribute_descriptions_keep_frequent_attributes_by_weight(tmp_path):
    values = np.array([[80.0, 5.0, 40.0], [0.0, 60.0, 12.0]])
    attrs = ["has_wing_color::red", "has_wing_color::blue", "has_bill_shape::cone"]
    desc = attribute_descriptions(["001.Red_Finch", "002.Blue_Jay"], attrs, values, min_percent=10)
    assert [(d.text, d.weight) for d in desc.for_class("Red Finch")] == [("red wings", 0.8), ("a cone bill", 0.4)]
    assert [d.text for d in desc.for_class("Blue Jay")] == ["blue wings", "a cone bill"]
    back = read_descriptions(write_descriptions_csv(desc, tmp_path / "d.csv"))
    assert back.by_class == desc.by_class
