"""Under -q a clean run prints nothing on stderr: the commands that tests/test_cli.py's subprocess check does
not run (#14; zeroshot, align and describe: tests/zeroshot/test_zs_api.py). In-process: no interpreter start."""
from __future__ import annotations

import pytest

from conftest import run_cli


@pytest.fixture
def model(capsys, split_folder, tmp_path):
    path = tmp_path / "m"
    assert run_cli(capsys, "fit", split_folder, "-o", path, "--backbone", "tiny", "--runtime", "torch", "-q")[0] == 0
    return path


def test_quiet_check_backbones_discover_explain_report_fewshot_print_nothing_on_stderr(capsys, split_folder, model,
                                                                                       tmp_path):
    image = split_folder / "test" / "blue_jay" / "00.png"
    runs = [("check", split_folder),
            ("backbones",),
            ("discover", model, split_folder / "test", "-o", tmp_path / "found"),
            ("explain", model, image, "-o", tmp_path / "why"),
            ("report", model, split_folder, "-o", tmp_path / "report.html"),
            ("fewshot-eval", split_folder, "--backbone", "tiny", "--ways", "2", "--shots", "1", "--queries", "2",
             "--episodes", "4")]
    for args in runs:
        code, _, err = run_cli(capsys, *args, "-q")
        assert (code, err) == (0, ""), (args, err)
