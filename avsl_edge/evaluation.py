"""Score a model's per-image predictions on an AV-COCO folder: one table for every backend.

The training side (PyTorch) and the edge library (ONNX Runtime / TensorRT) both turn a folder
into :class:`Prediction` records and call :func:`score`; the numbers therefore differ only by
what the backends compute. Torch-free.

Rows of the table (x100 except counts), per scene kind present in the data:
  solo            IoU@0.5, AUC (av map, tau 0.1 x max)           + uniform / centred-Gaussian
  mosaic          CIoU@0.3, AUC, NSA (P = softmax(3M), tau 0.5)  + baselines
  duet            CIoU@0.3, AUC, NSA (tau 0.2)                   + baselines
  solo_distractor silent object lit (%), see metrics.silent_object_lit_rate
  offscreen       declared sounding in view (%): av_score >= sounding_threshold
  silent audio    declared sounding in view (%) with an all-zero clip (solo frames)
  audio class     accuracy of the audio class distribution on solo scenes (clusters -> classes)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import metrics
from .avcoco import AVCoco, AVCocoError, AVImage
from .fileio import atomic_path


@dataclass
class Prediction:
    av_map: np.ndarray                      # (h, w) sigmoid localization map
    av_score: float                         # its global max
    class_maps: np.ndarray | None = None    # (K, h, w) class-aware maps M (gated)
    cluster_probs: np.ndarray | None = None  # (K,) the audio's distribution over clusters


@dataclass(frozen=True)
class EvalSettings:
    thresholds: metrics.Thresholds = field(default_factory=metrics.Thresholds)
    sounding_threshold: float = 0.5


def class_index(coco: AVCoco, model_classes: Sequence[str]) -> dict[str, int]:
    """Data class name -> model class index; names, not ids, link model and data."""
    unknown = sorted(set(coco.categories) - set(model_classes))
    if unknown:
        raise AVCocoError(f"{coco.root}: classes {unknown} are not known to the model "
                          f"(it knows {list(model_classes)})")
    return {name: list(model_classes).index(name) for name in coco.categories}


def _boxes(img: AVImage, sounding: bool, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    objs = [o for o in img.objects if o.sounding == sounding]
    b = np.array([o.normalised(img.width, img.height) for o in objs], dtype=np.float64).reshape(-1, 4)
    c = np.array([index[o.category] for o in objs], dtype=np.int64)
    return b, c


def score(
    coco: AVCoco,
    predictions: dict[int, Prediction],
    model_classes: Sequence[str],
    match: metrics.ClusterMatch | None,
    settings: EvalSettings = EvalSettings(),
    silent_audio: dict[int, Prediction] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{"model": {...}, "uniform": {...}, "gaussian": {...}}`` with the rows described above.

    ``predictions`` maps image id -> Prediction for every image of ``coco``; ``silent_audio``
    (optional) holds predictions for solo frames paired with an all-zero clip.
    """
    index = class_index(coco, model_classes)
    th = settings.thresholds
    missing = [im.id for im in coco.images if im.id not in predictions]
    if missing:
        raise ValueError(f"no prediction for image ids {missing[:5]}{'...' if len(missing) > 5 else ''}")
    any_pred = next(iter(predictions.values()))
    h, w = any_pred.av_map.shape
    base_maps = {"uniform": metrics.uniform_map(h, w), "gaussian": metrics.centred_gaussian_map(h, w)}
    table: dict[str, dict[str, Any]] = {"model": {}, "uniform": {}, "gaussian": {}}

    solo = [im for im in coco.scenes("solo") if any(o.sounding for o in im.objects)]
    if solo:
        boxes = [_boxes(im, True, index)[0] for im in solo]
        r = metrics.single_source([predictions[im.id].av_map for im in solo], boxes, th)
        table["model"].update({"solo_iou@0.5": r["iou_at_0_5"], "solo_auc": r["auc"], "solo_n": r["n"]})
        for name, m in base_maps.items():
            rb = metrics.single_source([m] * len(solo), boxes, th)
            table[name].update({"solo_iou@0.5": rb["iou_at_0_5"], "solo_auc": rb["auc"], "solo_n": rb["n"]})
        probs = [predictions[im.id].cluster_probs for im in solo]
        if match is not None and all(p is not None for p in probs):
            hits = [match.cluster_to_class[int(np.argmax(p))] == _boxes(im, True, index)[1][0]
                    for p, im in zip(probs, solo)]
            table["model"]["audio_class_acc"] = 100.0 * float(np.mean(hits))

    for kind in ("mosaic", "duet"):
        imgs = [im for im in coco.scenes(kind) if any(o.sounding for o in im.objects)]
        if not imgs or match is None:
            continue
        if any(predictions[im.id].class_maps is None for im in imgs):
            continue
        pairs = [_boxes(im, True, index) for im in imgs]
        bs, cs = [p[0] for p in pairs], [p[1] for p in pairs]
        P = [metrics.class_softmax(predictions[im.id].class_maps, th.softmax_scale) for im in imgs]
        r = metrics.multi_source(P, bs, cs, match, kind, th)
        table["model"].update({f"{kind}_ciou@0.3": r["ciou_at_0_3"], f"{kind}_auc": r["auc"],
                               f"{kind}_nsa": r["nsa"], f"{kind}_n": r["n"]})
        k = len(match.cluster_to_class)
        for name, m in base_maps.items():
            rb = metrics.multi_source([metrics.baseline_probs(m, k)] * len(imgs), bs, cs, match, kind, th)
            table[name].update({f"{kind}_ciou@0.3": rb["ciou_at_0_3"], f"{kind}_auc": rb["auc"],
                                f"{kind}_nsa": rb["nsa"], f"{kind}_n": rb["n"]})

    distract = [im for im in coco.scenes("solo_distractor")
                if any(o.sounding for o in im.objects) and any(not o.sounding for o in im.objects)]
    if distract:
        args = ([_boxes(im, False, index)[0] for im in distract], [_boxes(im, True, index)[0] for im in distract])
        table["model"]["distractor_lit"] = metrics.silent_object_lit_rate(
            [predictions[im.id].av_map for im in distract], *args, tau=th.solo_tau, size=th.eval_size)
        for name, m in base_maps.items():
            table[name]["distractor_lit"] = metrics.silent_object_lit_rate(
                [m] * len(distract), *args, tau=th.solo_tau, size=th.eval_size)

    off = coco.scenes("offscreen")
    if off:
        table["model"]["offscreen_fp"] = metrics.false_positive_rate(
            [predictions[im.id].av_score >= settings.sounding_threshold for im in off])
    if silent_audio:
        table["model"]["silent_fp"] = metrics.false_positive_rate(
            [p.av_score >= settings.sounding_threshold for p in silent_audio.values()])
    return table


ROWS = [
    ("solo_iou@0.5", "solo IoU@0.5"), ("solo_auc", "solo AUC"),
    ("mosaic_ciou@0.3", "mosaic CIoU@0.3"), ("mosaic_auc", "mosaic AUC"), ("mosaic_nsa", "mosaic NSA"),
    ("duet_ciou@0.3", "duet CIoU@0.3"), ("duet_auc", "duet AUC"), ("duet_nsa", "duet NSA"),
    ("audio_class_acc", "audio class accuracy (solo)"),
    ("distractor_lit", "silent distractor lit (lower is better)"),
    ("offscreen_fp", "off-screen sound declared in view (lower is better)"),
    ("silent_fp", "silent clip declared in view (lower is better)"),
    ("nmi", "NMI (stage-one clustering, train split)"),
]


def markdown_table(table: dict[str, dict[str, Any]]) -> str:
    """The table as GitHub markdown: metrics as rows, model and baselines as columns."""
    cols = list(table)
    lines = ["| metric | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for key, label in ROWS:
        if not any(key in table[c] for c in cols):
            continue
        cells = []
        for c in cols:
            v = table[c].get(key)
            cells.append("–" if v is None or (isinstance(v, float) and math.isnan(v))
                         else (f"{v:.3f}" if key == "nmi" else f"{v:.1f}"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(table: dict[str, dict[str, Any]], json_path: Path | None, md_path: Path | None,
                 extra: dict[str, Any] | None = None) -> str:
    md = markdown_table(table)
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps({"table": table, **(extra or {})}, indent=2, default=float) + "\n")
    if md_path is not None:
        with atomic_path(md_path) as tmp:
            tmp.write_text(md + "\n")
    return md
