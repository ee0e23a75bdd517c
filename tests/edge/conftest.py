"""The edge suite: tests of the torch-free library on the tiny ``onnx.helper`` bundle (the
``tiny_bundle`` fixtures of tests/conftest.py). It runs where only ``pip install .[dev-edge]`` is
installed (``pytest tests/edge``), and the main suite runs it once more with torch blocked
(tests/test_layers.py)."""
