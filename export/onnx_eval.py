"""Run the three ONNX graphs of a bundle variant with ONNX Runtime and score them on an AV-COCO
folder with the same torch-free :func:`avsl_edge.evaluation.score` the PyTorch evaluation uses.

    model = OnnxModel.from_bundle(load_bundle("runs/cpu/bundle"), "int8")
    out = model(images, waveforms)           # dict of every graph output, numpy
    table = evaluate_variant(model, load_avcoco("runs/cpu/data/test"), bundle)

No torch here (numpy, OpenCV, ONNX Runtime).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from avsl_edge.audio import fit_clip
from avsl_edge.avcoco import AVCoco, read_clip, read_frame
from avsl_edge.bundle import AUDIO, GRAPH_IO, HEAD, IMAGE, Bundle
from avsl_edge.evaluation import EvalSettings, Prediction, score
from avsl_edge.metrics import ClusterMatch, Thresholds
from avsl_edge.preprocess import preprocess_frame
from export.quantize import cpu_session


class OnnxModel:
    """audio + image + head sessions of one variant, chained like ``StageTwo.forward``."""

    def __init__(self, paths: Mapping[str, str | os.PathLike], dictionary: np.ndarray, threads: int = 0):
        self.paths = {g: Path(paths[g]) for g in (AUDIO, IMAGE, HEAD)}
        self.sessions = {g: cpu_session(p, threads) for g, p in self.paths.items()}
        self.dictionary = np.ascontiguousarray(dictionary, dtype=np.float32)

    @classmethod
    def from_bundle(cls, bundle: Bundle, variant: str = "fp32", threads: int = 0) -> "OnnxModel":
        return cls({g: bundle.graph_path(g, variant) for g in (AUDIO, IMAGE, HEAD)}, bundle.dictionary, threads)

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = GRAPH_IO[graph][1]
        return dict(zip(names, self.sessions[graph].run(list(names), dict(feeds))))

    def __call__(self, images: np.ndarray, waveforms: np.ndarray) -> dict[str, np.ndarray]:
        a = self.run(AUDIO, {"waveform": np.ascontiguousarray(waveforms, np.float32)})
        v = self.run(IMAGE, {"image": np.ascontiguousarray(images, np.float32)})
        h = self.run(HEAD, {"v_fea": v["v_fea"], "v_emb": v["v_emb"], "a_emb": a["a_emb"],
                            "dictionary": self.dictionary})
        return {**a, **v, **h}


def predict_coco(model: OnnxModel, coco: AVCoco, image_size: int, batch_size: int = 16, silent: bool = False,
                 scenes: Sequence[str] | None = None) -> dict[int, Prediction]:
    """Per-image predictions (``silent``: with an all-zero clip), as training.evaluate.predict."""
    images = [im for im in coco.images if scenes is None or im.scene in scenes]
    out: dict[int, Prediction] = {}
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = np.stack([preprocess_frame(read_frame(coco, im), image_size) for im in chunk])
        if silent:
            w = np.zeros((len(chunk), 16000), np.float32)
        else:
            w = np.stack([fit_clip(read_clip(coco, im)) for im in chunk])
        o = model(x, w)
        for i, im in enumerate(chunk):
            av = o["av_map"][i, 0]
            out[im.id] = Prediction(av_map=av, av_score=float(o["av_score"][i]), class_maps=o["class_maps"][i],
                                    audio_probs=o["audio_probs"][i])
    return out


def settings_from_bundle(bundle: Bundle) -> EvalSettings:
    p = bundle.manifest.postprocessing
    return EvalSettings(thresholds=Thresholds(solo_tau=p.solo_tau, mosaic_ciou_tau=p.mosaic_tau,
                                              duet_ciou_tau=p.duet_tau, nsa_threshold=p.nsa_threshold,
                                              softmax_scale=p.softmax_scale),
                        sounding_threshold=p.sounding_threshold)


def evaluate_variant(model: OnnxModel, coco: AVCoco, classes: Sequence[str], match: ClusterMatch,
                     image_size: int, settings: EvalSettings) -> dict[str, dict]:
    """The evaluation table (model + baselines) of one variant on ``coco``."""
    preds = predict_coco(model, coco, image_size)
    silent = predict_coco(model, coco, image_size, silent=True, scenes=("solo",)) if coco.scenes("solo") else None
    return score(coco, preds, list(classes), match, settings, silent)
