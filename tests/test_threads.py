"""The thread budget: `--threads` / FINEGRAIN_THREADS reach PyTorch and ONNX Runtime; the heads' solvers run with
one BLAS thread; a bad value is a usage error."""
from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info

from conftest import run_cli
from finegrain.threads import set_thread_budget, solver_threads, thread_budget


@pytest.fixture(autouse=True)
def reset_budget():
    yield
    set_thread_budget(None)


def test_solver_threads_limit_blas_only():
    import torch
    before = torch.get_num_threads()
    with solver_threads():
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
        assert torch.get_num_threads() == before


def test_budget_from_option_then_environment(monkeypatch):
    monkeypatch.setenv("FINEGRAIN_THREADS", "3")
    assert thread_budget() == 3
    set_thread_budget(1)
    assert thread_budget() == 1
    monkeypatch.setenv("FINEGRAIN_THREADS", "many")
    set_thread_budget(None)
    with pytest.raises(Exception, match="FINEGRAIN_THREADS"):
        thread_budget()


def test_threads_option_reaches_torch(split_folder, tmp_path, capsys, monkeypatch):
    import torch
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    code, _, err = run_cli(capsys, "embed", split_folder, "-o", tmp_path / "e", "--backbone", "tiny", "--runtime", "torch",
                           "--threads", "1", "-q")
    assert code == 0, err
    assert seen and set(seen) == {1}
    code, _, err = run_cli(capsys, "embed", split_folder, "-o", tmp_path / "e", "--backbone", "tiny", "--threads", "0")
    assert code == 2 and "--threads" in err
