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
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .audio import SAMPLE_RATE, AudioError
    from .backends import Backend, BackendError, create_backend
    from .bundle import BundleError, load_bundle
    from .localizer import AudioState, InputError, Localizer, Rules
    from .registry import ModelNotFoundError, resolve_model
    from .result import Box, Result
    from .tensorrt_engine import TensorRTUnavailable

__version__ = "0.1.0"

# The names below load their module on first use (PEP 562): `import avsl_edge` (and so the
# `avsl-edge` entry point) starts without numpy, OpenCV or ONNX Runtime, which keeps a Ctrl-C
# during start-up inside the entry point's handler.
_LAZY = {
    "SAMPLE_RATE": "audio", "AudioError": "audio", "Backend": "backends", "BackendError": "backends",
    "create_backend": "backends", "BundleError": "bundle", "load_bundle": "bundle", "AudioState": "localizer",
    "InputError": "localizer", "Localizer": "localizer", "Rules": "localizer", "ModelNotFoundError": "registry",
    "resolve_model": "registry", "Box": "result", "Result": "result", "TensorRTUnavailable": "tensorrt_engine",
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


def load(model: str | os.PathLike | None = None, backend: str = "auto", providers: list[Any] | None = None,
         variant: str | None = None, *, intra_op_threads: int = 0, inter_op_threads: int = 0,
         io_binding: bool | None = None, device_id: int = 0, verify: bool = True, keep_image: bool = True,
         **rules: float | str) -> Localizer:
    """A :class:`Localizer` for a bundle.

    model: a bundle folder; None = ``$AVSL_EDGE_MODEL``, else the bundle the last
        ``python -m training.pipeline`` registered, else :class:`ModelNotFoundError` saying how to get one.
    backend: "auto" (the bundle's TensorRT engines when built for this GPU, else ONNX Runtime),
        "onnxruntime" or "tensorrt".
    providers: ONNX Runtime execution providers, used as given (None: TensorRT EP, CUDA EP, CPU,
        as far as they work here).
    variant: "fp32" (default), "fp16", "int8" (symmetric QDQ, the TensorRT form) or "int8-cpu" (uint8
        activations: the fast one on a CPU with ONNX Runtime; bundles exported before it lack it).
    verify: check every file's sha256 against the manifest (a corrupt bundle is a BundleError).
    rules: overrides of :class:`Rules` (in_view_threshold, in_view_score, audio_gate_db, class_threshold,
        box_tau, box_method).

    >>> loc = avsl_edge.load("runs/cpu/bundle", variant="int8-cpu", intra_op_threads=2)  # doctest: +SKIP
    """
    from .backends import create_backend  # noqa: PLC0415
    from .bundle import load_bundle  # noqa: PLC0415
    from .localizer import Localizer, Rules  # noqa: PLC0415
    from .registry import resolve_model  # noqa: PLC0415

    bundle = load_bundle(resolve_model(model), verify=verify)
    rule_set = Rules.from_postprocessing(bundle.manifest.postprocessing, **rules)
    be = create_backend(bundle, backend, providers, variant, intra_op_threads, inter_op_threads, io_binding,
                        device_id)
    return Localizer(bundle, be, rule_set, keep_image=keep_image)


_default: dict[str, Localizer] = {}
_default_lock = threading.Lock()


def default_localizer(model: str | os.PathLike | None = None) -> Localizer:
    """The cached Localizer of :func:`localize` (one per resolved bundle path)."""
    from .registry import resolve_model  # noqa: PLC0415

    key = str(os.path.realpath(resolve_model(model)))
    with _default_lock:
        if key not in _default:
            _default[key] = load(key)
        return _default[key]


def localize(frame: Any, audio: Any, sample_rate: int = 16000, model: str | os.PathLike | None = None,
             *, rgb: bool = False) -> Result:
    """Localize the sounding objects of one frame (BGR uint8 array, or RGB with ``rgb=True``, or a PIL
    image) with the audio heard with it (any rate, default SAMPLE_RATE, 16 kHz; its last second),
    using a cached default :class:`Localizer` for ``model`` (see :func:`load`)."""
    return default_localizer(model).localize(frame, audio, sample_rate, rgb=rgb)
