"""The edge suite: tests of the torch-free library on a tiny ``onnx.helper`` bundle. It runs where
only ``pip install .[dev-edge]`` is installed (``pytest tests/edge``), and the main suite runs it once
more with torch blocked (tests/test_layers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_bundle, beside this file

from tiny_bundle import write_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A valid bundle (fp32 graphs with random weights, 3 classes, 64 px input), never modified."""
    return write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture
def tiny_bundle_copy(tmp_path) -> Path:
    """A bundle of the same graphs that a test may modify."""
    return write_tiny_bundle(tmp_path / "bundle")
