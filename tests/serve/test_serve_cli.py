"""`finegrain serve` argument handling: usage errors exit 2 with a message, before any model is loaded."""
from __future__ import annotations

import socket
import subprocess
import sys

from conftest import run_cli
from serve_support import model_dir, serve_data  # noqa: F401 - fixtures


def test_help_imports_neither_torch_nor_fastapi():
    code = ("import sys; from finegrain.cli.main import build_parser; build_parser(); "
            "print(sorted({'torch', 'fastapi', 'uvicorn'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_bad_port_and_wait_are_usage_errors(capsys):
    for args, message in ((["--port", "70000"], "port number"), (["--max-wait-ms", "50"], "[0, 5] ms")):
        try:
            run_cli(capsys, "serve", "m", *args)
        except SystemExit as exc:
            assert exc.code == 2
        assert message in capsys.readouterr().err


def test_two_models_with_one_name_and_a_missing_folder_are_refused(capsys, model_dir, tmp_path):
    code, _, err = run_cli(capsys, "serve", model_dir, f"birds={tmp_path}")
    assert code == 2 and "two models would be served as 'birds'" in err
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    code, _, err = run_cli(capsys, "serve", tmp_path / "nothing", "--port", port)
    assert code == 1 and "not a finegrain model directory" in err


def test_a_port_in_use_is_named(capsys, model_dir):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code, _, err = run_cli(capsys, "serve", model_dir, "--port", port)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err


def test_a_missing_index_or_one_no_served_model_built_is_refused(capsys, model_dir, serve_data, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    code, _, err = run_cli(capsys, "serve", model_dir, "--port", port, "--index", tmp_path / "nothing")
    assert code == 1 and "not a finegrain index" in err and "Traceback" not in err
    other = tmp_path / "other.index"
    assert run_cli(capsys, "index", serve_data, "-o", other, "--backbone", "tiny:24", "-q",
                   "--cache-dir", tmp_path / "cache")[0] == 0
    code, _, err = run_cli(capsys, "serve", model_dir, "--port", port, "--index", other)
    assert code == 2 and "none of the served models" in err and "tiny:24" in err and "--model" in err
