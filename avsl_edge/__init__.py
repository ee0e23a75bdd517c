"""avsl-edge: class-aware sounding-object localization on edge hardware (ONNX Runtime / TensorRT).

Torch-free: numpy, OpenCV, ONNX Runtime (and TensorRT when present).

    import cv2, soundfile, avsl_edge

    frame = cv2.imread("scene.jpg")                       # BGR, any size
    audio, rate = soundfile.read("scene.wav")             # any rate, mono or (samples, channels)
    r = avsl_edge.localize(frame, audio, rate)            # default bundle: $AVSL_EDGE_MODEL or the last pipeline run
    print(r.sounding, r.boxes)                            # ('guitar',) [Box(label='guitar', score=0.93, ...)]
    cv2.imwrite("overlay.png", r.plot())

    loc = avsl_edge.load("runs/cpu/bundle", backend="onnxruntime", providers=["CPUExecutionProvider"])
    state = loc.encode_audio(window, 48000)               # streaming: one audio embedding ...
    r = loc.localize_frame(frame, state)                  # ... for every frame until the next hop
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import default_localizer, load, localize
    from .audio import SAMPLE_RATE, AudioError
    from .backends import Backend, BackendError, create_backend
    from .bundle import BundleError, load_bundle
    from .localizer import AudioState, InputError, Localizer
    from .registry import ModelNotFoundError, resolve_model
    from .result import Box, Result
    from .rules import Rules
    from .tensorrt_engine import TensorRTUnavailable

__version__ = "0.1.0"

# The names below load their module on first use (PEP 562): `import avsl_edge` (and so the
# `avsl-edge` entry point) starts without numpy, OpenCV or ONNX Runtime, which keeps a Ctrl-C
# during start-up inside the entry point's handler.
_LAZY = {
    "SAMPLE_RATE": "audio", "AudioError": "audio", "Backend": "backends", "BackendError": "backends",
    "create_backend": "backends", "BundleError": "bundle", "load_bundle": "bundle", "AudioState": "localizer",
    "InputError": "localizer", "Localizer": "localizer", "Rules": "rules", "ModelNotFoundError": "registry",
    "resolve_model": "registry", "Box": "result", "Result": "result", "TensorRTUnavailable": "tensorrt_engine",
    "load": "api", "localize": "api", "default_localizer": "api",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "load", "localize", "Localizer", "Result", "Box", "AudioState", "Rules", "Backend",
    "BundleError", "BackendError", "InputError", "AudioError", "ModelNotFoundError", "TensorRTUnavailable",
    "__version__",
]
