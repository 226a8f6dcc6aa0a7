"""Long phases say when they start and how long they took (stderr), and `-q` silences them."""
from __future__ import annotations

from conftest import run_cli


def test_fit_names_its_phases_and_quiet_silences_them(capsys, split_folder, tmp_path):
    code, _, err = run_cli(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tiny")
    assert code == 0
    assert "fitting the logistic head on 24 embeddings …" in err
    assert "calibrating and fitting the unknown detector: done in" in err
    code, _, err = run_cli(capsys, "fit", split_folder, "-o", tmp_path / "m", "--backbone", "tiny", "-q")
    assert code == 0 and err == ""
