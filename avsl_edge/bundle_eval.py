"""Score an exported bundle on an AV-COCO folder: the training side's evaluation, torch-free.

Predictions are made exactly like ``training.evaluate.predict`` (frames through
:func:`avsl_edge.preprocess.preprocess_frame`, the clip through :func:`avsl_edge.audio.fit_clip`,
plus the all-zero-clip predictions on solo frames) and scored by the same
:func:`avsl_edge.evaluation.score`, so the table differs from the PyTorch one only by what the
backend computes.

    bundle = load_bundle("runs/cpu/bundle")
    table = evaluate_bundle(create_backend(bundle, variant="int8"), load_avcoco("runs/cpu/data/test"))
    print(markdown_table(table))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .audio import CLIP_SAMPLES, fit_clip
from .avcoco import AVCoco, read_clip, read_frame
from .backends import Backend
from .bundle import Bundle
from .evaluation import EvalSettings, Prediction, score
from .metrics import Thresholds
from .preprocess import preprocess_frame


def predict_coco(backends: Mapping[str, Backend], coco: AVCoco, image_size: int, batch_size: int = 16,
                 silent: bool = False, scenes: Sequence[str] | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, dict[int, Prediction]]:
    """Per backend, per-image predictions (``silent``: with an all-zero clip), as
    ``training.evaluate.predict``. Each frame and clip is read and preprocessed once and run through
    every backend. ``progress(n)`` is called after each batch of n images."""
    images = [im for im in coco.images if scenes is None or im.scene in scenes]
    out: dict[str, dict[int, Prediction]] = {name: {} for name in backends}
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = np.stack([preprocess_frame(read_frame(coco, im), image_size) for im in chunk])
        if silent:
            w = np.zeros((len(chunk), CLIP_SAMPLES), np.float32)
        else:
            w = np.stack([fit_clip(read_clip(coco, im)) for im in chunk])
        for name, backend in backends.items():
            o = backend(x, w)
            for i, im in enumerate(chunk):
                out[name][im.id] = Prediction(av_map=o["av_map"][i, 0], av_score=float(o["av_score"][i]),
                                              class_maps=o["class_maps"][i], cluster_probs=o["audio_probs"][i])
        if progress is not None:
            progress(len(chunk))
    return out


def settings_from_bundle(bundle: Bundle) -> EvalSettings:
    """The evaluation thresholds the training run used (recorded in the manifest)."""
    p = bundle.manifest.postprocessing
    return EvalSettings(thresholds=Thresholds(solo_tau=p.solo_tau, mosaic_ciou_tau=p.mosaic_tau,
                                              duet_ciou_tau=p.duet_tau, nsa_threshold=p.nsa_threshold,
                                              softmax_scale=p.softmax_scale),
                        sounding_threshold=p.sounding_threshold)


def evaluate_bundle(backend: Backend, coco: AVCoco, batch_size: int = 16,
                    progress: Callable[[int], None] | None = None) -> dict[str, dict]:
    """The evaluation table (model + uniform/Gaussian baselines) of ``backend``'s bundle on ``coco``."""
    return evaluate_variants({"model": backend}, coco, batch_size, progress)["model"]


def evaluate_variants(backends: Mapping[str, Backend], coco: AVCoco, batch_size: int = 16,
                      progress: Callable[[int], None] | None = None) -> dict[str, dict[str, dict]]:
    """:func:`evaluate_bundle` of several backends of one bundle (its variants) in one pass over ``coco``."""
    if not backends:
        raise ValueError("evaluate_variants needs at least one backend")
    bundle = next(iter(backends.values())).bundle
    if any(b.bundle.root != bundle.root for b in backends.values()):
        raise ValueError("evaluate_variants scores variants of one bundle: the backends load different bundles")
    preds = predict_coco(backends, coco, bundle.image_size, batch_size, progress=progress)
    silent = (predict_coco(backends, coco, bundle.image_size, batch_size, silent=True, scenes=("solo",),
                           progress=progress) if coco.scenes("solo") else {name: None for name in backends})
    match, settings = bundle.cluster_match(), settings_from_bundle(bundle)
    return {name: score(coco, preds[name], list(bundle.classes), match, settings, silent[name]) for name in backends}


def images_to_predict(coco: AVCoco) -> int:
    """How many model runs :func:`evaluate_bundle` makes (for a progress bar)."""
    return len(coco.images) + len(coco.scenes("solo"))
