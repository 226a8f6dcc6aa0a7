"""Out-of-range options are usage errors (exit 2) that say what is allowed, before any work starts."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("args, message", [
    (["fit", "DATA", "-o", "M", "--C", "0"], "argument --C: must be a finite number > 0, got 0"),
    (["fit", "DATA", "-o", "M", "--C", "nan"], "argument --C: must be a finite number > 0, got nan"),
    (["fit", "DATA", "-o", "M", "--batch-size", "0"], "argument --batch-size: must be an integer ≥ 1, got 0"),
    (["fit", "DATA", "-o", "M", "-k", "0"], "argument -k: must be an integer ≥ 1, got 0"),
    (["fit", "DATA", "-o", "M", "--workers", "0"], "argument --workers: must be an integer ≥ 1, got 0"),
    (["fit", "DATA", "-o", "M", "--workers", "-2"], "argument --workers: must be an integer ≥ 1, got -2"),
    (["fit", "DATA", "-o", "M", "--shots", "-1"], "argument --shots: must be an integer ≥ 1, got -1"),
    (["fit", "DATA", "-o", "M", "--val-split", "1"], "argument --val-split: must be in (0, 1), got 1"),
    (["fit", "DATA", "-o", "M", "--max-error-rate", "-0.1"], "argument --max-error-rate: must be in [0, 1]"),
    (["fit", "DATA", "-o", "M", "--unknown-tpr", "0"], "argument --unknown-tpr: must be in (0, 1], got 0"),
    (["fit", "DATA", "-o", "M", "--max-image-pixels", "-5"], "argument --max-image-pixels: must be an integer ≥ 1"),
    (["predict", "M", "x.jpg", "--top-k", "0"], "argument --top-k: must be an integer ≥ 1, got 0"),
    (["eval", "M", "DATA", "--top-k", "-3"], "argument --top-k: must be an integer ≥ 1, got -3"),
    (["predict", "M", "x.jpg", "--batch-size", "many"], "argument --batch-size: must be an integer, got 'many'"),
    (["fewshot-eval", "DATA", "--ways", "0"], "argument --ways: must be an integer ≥ 1, got 0"),
    (["explain", "M", "x.jpg", "-o", "O", "--neighbours", "-1"], "argument --neighbours: must be an integer ≥ 0"),
])
def test_out_of_range_option_is_a_usage_error(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_zero_neighbours_still_means_none(cli, tmp_path):
    code, _, err = cli("explain", tmp_path / "no-model", "x.jpg", "-o", tmp_path / "o", "--neighbours", "0")
    assert code == 1 and "not a finegrain model directory" in err  # parsed fine; failed later on the model
