"""The fuzz targets (fuzz/): a short smoke run of each in CI, and every minimised crasher they found replayed as a
regression fixture (no atheris needed for those)."""
from __future__ import annotations

import importlib.util
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finegrain.data.sources import load_manifest
from finegrain.errors import DataError

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"


@pytest.mark.parametrize("crasher", sorted((FUZZ / "crashers").glob("manifest-*")), ids=lambda p: p.name)
def test_manifest_crashers_are_clean_errors(crasher, tmp_path):
    manifest = tmp_path / "manifest.csv"
    shutil.copy(crasher, manifest)
    with pytest.raises(DataError) as err:
        load_manifest(manifest)
    assert "manifest" in str(err.value) and "fix:" in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed (pip install atheris)")
@pytest.mark.parametrize("target,corpus", [("fuzz_images.py", "images"), ("fuzz_manifest.py", "manifests")])
def test_fuzz_smoke(target, corpus, tmp_path):
    work = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus" / corpus, work)  # the run adds inputs to its corpus: keep the repo's clean
    proc = subprocess.run([sys.executable, str(FUZZ / target), str(work), "-max_total_time=8", "-rss_limit_mb=3000",
                           f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmp_path)})  # the target's scratch files die with tmp_path
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done" in proc.stderr
