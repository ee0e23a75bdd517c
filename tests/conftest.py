"""Shared fixtures: one `smoke` pipeline run (trained, evaluated, exported) per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests share 2 cores with each other's subprocesses: keep every process single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished `python -m training.pipeline --preset smoke` run folder (with its ONNX bundle)."""
    from training.pipeline import main as pipeline_main

    out = tmp_path_factory.mktemp("runs") / "smoke"
    assert pipeline_main(["--preset", "smoke", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def smoke_bundle(smoke_run: Path) -> Path:
    """The ONNX bundle the smoke run exported."""
    bundle = smoke_run / "bundle"
    assert (bundle / "manifest.json").is_file()
    return bundle
