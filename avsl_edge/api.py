"""The package's entry points, :func:`load` and :func:`localize` (re-exported lazily by
:mod:`avsl_edge`, so ``import avsl_edge`` stays light)."""

from __future__ import annotations

import os
import threading
from typing import Any

from .backends import create_backend
from .bundle import load_bundle
from .localizer import Localizer, Rules
from .registry import resolve_model
from .result import Result
from .variant_choice import AUTO_VARIANT


def load(model: str | os.PathLike | None = None, backend: str = "auto", providers: list[Any] | None = None,
         variant: str = AUTO_VARIANT, *, intra_op_threads: int = 0, inter_op_threads: int = 0,
         io_binding: bool | None = None, device_id: int = 0, verify: bool = True, keep_image: bool = True,
         **rules: float | str) -> Localizer:
    """A :class:`Localizer` for a bundle.

    model: a bundle folder; None = ``$AVSL_EDGE_MODEL``, else the bundle the last
        ``python -m training.pipeline`` registered, else :class:`ModelNotFoundError` saying how to get one.
    backend: "auto" (the bundle's TensorRT engines when built for this GPU, else ONNX Runtime),
        "onnxruntime" or "tensorrt".
    providers: ONNX Runtime execution providers, used as given (None: TensorRT EP, CUDA EP, CPU,
        as far as they work here).
    variant: "auto" (default): the fastest variant here within 2 points of fp32 on the export's test
        split, timed at load (``loc.backend.variant_choice`` says which and why); or one by name:
        "fp32" (the reference numerics), "fp16", "int8" (symmetric QDQ, the TensorRT form) or
        "int8-cpu" (uint8 activations: the fast one on a CPU with ONNX Runtime).
    verify: check every file's sha256 against the manifest (a corrupt bundle is a BundleError).
    rules: overrides of :class:`Rules` (in_view_threshold, in_view_score, audio_gate_db, class_threshold,
        box_tau, box_method).

    >>> loc = avsl_edge.load("runs/cpu/bundle", variant="int8-cpu", intra_op_threads=2)  # doctest: +SKIP
    """
    bundle = load_bundle(resolve_model(model), verify=verify)
    rule_set = Rules.from_postprocessing(bundle.manifest.postprocessing, **rules)
    be = create_backend(bundle, backend, providers, variant, intra_op_threads, inter_op_threads, io_binding,
                        device_id)
    return Localizer(bundle, be, rule_set, keep_image=keep_image)


_default: dict[str, Localizer] = {}
_default_lock = threading.Lock()


def default_localizer(model: str | os.PathLike | None = None) -> Localizer:
    """The cached Localizer of :func:`localize` (one per resolved bundle path)."""
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
