"""The Python API's docstring examples run (on the bundled sample with the tiny backbone)."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["finegrain.training", "finegrain.pipeline", "finegrain.data.check", "finegrain.openworld.discover"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
