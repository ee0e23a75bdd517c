"""Localization metrics of DSOL (docs/method.md §5), torch-free.

Pure numpy + scipy + OpenCV. Used by the training-side evaluation and by the edge
library's ``eval`` on exported models, so the two report identical numbers.

Conventions shared by every function here
-----------------------------------------
* A *map* is a 2-D float array at the model resolution (14x14 in DSOL). Before any
  comparison it is upsampled to ``size x size`` (224) with ``cv2.resize`` bilinear,
  exactly like the original ``tools.py`` / ``eval.py`` / ``eval_duet.py``. Maps are
  cast to float32 first (the dtype of the original pickled torch outputs).
* A *box* is ``[x, y, w, h]`` normalised by the frame's width and height (top-left
  origin). It is rasterised on the ``size x size`` grid as
  ``mask[int(y*size) : int(y*size + h*size), int(x*size) : int(x*size + w*size)] = True``
  where ``int`` truncates toward zero, as the original did. Bounds are then clipped to
  ``[0, size]`` (the original would have wrapped a negative start around the array;
  for boxes inside the frame the two are identical). Use :func:`normalise_boxes` to
  convert AV-COCO pixel boxes.
* A prediction is ``upsampled_map > tau * max(upsampled_map)`` (strict ``>``; tau is a
  fraction of *that map's own* maximum: docs/method.md, 'per-map thresholds').
* Per-frame / per-image functions return fractions in [0, 1]. The dataset-level
  functions (:func:`single_source`, :func:`multi_source`, :func:`false_positive_rate`,
  :func:`silent_object_lit_rate`) report percentages (x100), like the paper.
* The success-curve thresholds are ``0.05 * i`` for ``i = 0..20`` computed in floating
  point as the original did, so the "0.3" point is really ``0.30000000000000004`` and
  an IoU of exactly 0.3 does not count at it (identical to the original).

NMI is deliberately not here: training computes it with scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import softmax as _softmax

__all__ = [
    "CURVE_THRESHOLDS",
    "Thresholds",
    "ClusterMatch",
    "upsample",
    "normalise_boxes",
    "box_mask",
    "predicted_mask",
    "binary_iou",
    "frame_iou",
    "success_curve",
    "success_rate",
    "auc",
    "single_source",
    "class_softmax",
    "cluster_class_affinity",
    "match_clusters",
    "class_maps",
    "class_ious",
    "ciou_image",
    "nsa_image",
    "multi_source",
    "uniform_map",
    "centred_gaussian_map",
    "baseline_probs",
    "false_positive_rate",
    "silent_object_lit_rate",
]

#: ``0.05 * i`` for ``i = 0..20``, bit-for-bit the list of the original scripts.
CURVE_THRESHOLDS: tuple[float, ...] = tuple(0.05 * i for i in range(21))


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the evaluation protocols (defaults = the original code; docs/method.md,
    'per-map thresholds').

    solo_tau: single-source prediction = map > solo_tau * max(map) (``tools.py``: 0.1).
    mosaic_ciou_tau: multi-source class map threshold, synthetic 2x2 mosaics (``eval.py``: 0.5).
    duet_ciou_tau: multi-source class map threshold, real duets (``eval_duet.py``: 0.2).
    nsa_threshold: NSA counts pixels with P_k <= nsa_threshold (absolute, on the class softmax).
    curve_thresholds: IoU thresholds of the success curve; AUC integrates over them.
    eval_size: maps are upsampled and boxes rasterised on an eval_size x eval_size grid.
    softmax_scale: P = softmax(softmax_scale * M over K) (docs/method.md §4.6).
    """

    solo_tau: float = 0.1
    mosaic_ciou_tau: float = 0.5
    duet_ciou_tau: float = 0.2
    nsa_threshold: float = 0.2
    curve_thresholds: tuple[float, ...] = field(default=CURVE_THRESHOLDS)
    eval_size: int = 224
    softmax_scale: float = 3.0

    def __post_init__(self) -> None:
        for name in ("solo_tau", "mosaic_ciou_tau", "duet_ciou_tau", "nsa_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"Thresholds.{name} must be a number in [0, 1], got {value!r}")
        object.__setattr__(self, "curve_thresholds", tuple(float(t) for t in self.curve_thresholds))
        _check_curve_thresholds(self.curve_thresholds)
        if isinstance(self.eval_size, bool) or not isinstance(self.eval_size, (int, np.integer)) or self.eval_size < 1:
            raise ValueError(f"Thresholds.eval_size must be a positive integer, got {self.eval_size!r}")
        if not (math.isfinite(self.softmax_scale) and self.softmax_scale > 0):
            raise ValueError(f"Thresholds.softmax_scale must be a positive number, got {self.softmax_scale!r}")

    def ciou_tau(self, protocol: str) -> float:
        """The CIoU tau of a protocol: ``"mosaic"`` / ``"synthetic"`` -> 0.5, ``"duet"`` -> 0.2."""
        if protocol in ("mosaic", "synthetic"):
            return self.mosaic_ciou_tau
        if protocol == "duet":
            return self.duet_ciou_tau
        raise ValueError(f"unknown multi-source protocol {protocol!r}; expected 'mosaic', 'synthetic' or 'duet'")


def _check_curve_thresholds(thresholds: Sequence[float]) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size < 2:
        raise ValueError(f"curve thresholds must be a 1-D sequence of at least 2 numbers, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("curve thresholds contain a non-finite value")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"curve thresholds must be strictly increasing, got {t.tolist()}")
    return t


# --------------------------------------------------------------------------------------
# Maps, boxes, IoU
# --------------------------------------------------------------------------------------


def _as_map(map2d: Any, what: str = "map") -> np.ndarray:
    m = np.asarray(map2d)
    while m.ndim > 2 and m.shape[0] == 1:  # tolerate (1, h, w) / (1, 1, h, w)
        m = m[0]
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{what} must be a 2-D array (h, w), got shape {np.shape(map2d)}")
    if not np.issubdtype(m.dtype, np.number) or np.issubdtype(m.dtype, np.complexfloating):
        raise ValueError(f"{what} must be real-valued, got dtype {m.dtype}")
    m = m.astype(np.float32, copy=False)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return m


def upsample(map2d: Any, size: int = 224) -> np.ndarray:
    """Resize a 2-D map to ``(size, size)`` float32 with ``cv2.resize`` bilinear (``INTER_LINEAR``).

    This is the original's ``cv2.resize(map, (224, 224))``; a map already at
    ``size x size`` comes back unchanged. A leading singleton axis ((1, h, w)) is dropped.
    """
    m = _as_map(map2d)
    return cv2.resize(m, (int(size), int(size)), interpolation=cv2.INTER_LINEAR)


def normalise_boxes(boxes_xywh_px: Any, width: float, height: float) -> np.ndarray:
    """Pixel ``[x, y, w, h]`` boxes (AV-COCO ``bbox``) -> boxes normalised by the frame size, (n, 4)."""
    if not (width > 0 and height > 0):
        raise ValueError(f"frame width and height must be positive, got {width} x {height}")
    b = _as_boxes(boxes_xywh_px)
    return b / np.array([width, height, width, height], dtype=np.float64)


def _as_boxes(boxes: Any, what: str = "boxes") -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if b.ndim == 1:
        b = b[None, :]
    if b.ndim != 2 or b.shape[1] < 4:
        raise ValueError(f"{what} must be [x, y, w, h] or an (n, 4) array, got shape {np.shape(boxes)}")
    b = b[:, :4]  # tolerate a trailing category column ([x, y, w, h, category_id] rows)
    if not np.all(np.isfinite(b)):
        bad = int(np.argwhere(~np.isfinite(b))[0, 0])
        raise ValueError(f"{what}: box {bad} has a non-finite coordinate: {b[bad].tolist()}")
    neg = np.nonzero((b[:, 2] < 0) | (b[:, 3] < 0))[0]
    if neg.size:
        raise ValueError(f"{what}: box {int(neg[0])} has a negative width or height: {b[neg[0]].tolist()}")
    return b


def box_mask(boxes_xywh_normalised: Any, size: int = 224) -> np.ndarray:
    """Boolean ``(size, size)`` mask of the union of normalised ``[x, y, w, h]`` boxes.

    Each box is scaled by ``size`` and rasterised with integer truncation of the *scaled
    float end points* (not of the width):
    ``rows int(y*size) : int(y*size + h*size)``, ``cols int(x*size) : int(x*size + w*size)``
    (half-open), clipped to ``[0, size]``. A ``[0.25, 0.25, 0.5, 0.5]`` box at size 224 is
    rows/cols 56..167. Accepts one box (4,), an (n, 4) array, or an empty list (empty mask).
    Extra columns after the 4th (e.g. a category id) are ignored.
    """
    size = int(size)
    mask = np.zeros((size, size), dtype=bool)
    for x, y, w, h in _as_boxes(boxes_xywh_normalised) * size:
        r0, r1 = int(y), int(y + h)
        c0, c1 = int(x), int(x + w)
        r0, r1 = min(max(r0, 0), size), min(max(r1, 0), size)
        c0, c1 = min(max(c0, 0), size), min(max(c1, 0), size)
        mask[r0:r1, c0:c1] = True
    return mask


def predicted_mask(map2d: Any, tau: float, size: int = 224) -> np.ndarray:
    """``upsample(map) > tau * max(upsample(map))`` -- the thresholded prediction (strict ``>``)."""
    up = upsample(map2d, size)
    return up > tau * up.max()


def binary_iou(pred: Any, gt: Any) -> float:
    """``|pred & gt| / (|gt| + |pred & ~gt|)`` (= |pred & gt| / |pred | gt|) of two boolean masks.

    When both masks are empty the union is empty; this returns 0.0 (the original would
    produce NaN, which also fails every curve threshold).
    """
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt masks differ in shape: {p.shape} vs {g.shape}")
    inter = int(np.count_nonzero(p & g))
    denom = int(np.count_nonzero(g)) + int(np.count_nonzero(p & ~g))
    return inter / denom if denom else 0.0


def frame_iou(map2d: Any, boxes_xywh_normalised: Any, tau: float = 0.1, size: int = 224) -> float:
    """IoU of one map against the union of its normalised boxes (docs/method.md §5.2, one frame)."""
    return binary_iou(predicted_mask(map2d, tau, size), box_mask(boxes_xywh_normalised, size))


def success_curve(ious: Sequence[float], thresholds: Sequence[float] = CURVE_THRESHOLDS) -> np.ndarray:
    """``r(t)`` = fraction of ``ious`` that are ``>= t``, for each t (values in [0, 1]).

    A NaN IoU fails every threshold (as in the original).
    """
    t = _check_curve_thresholds(thresholds)
    v = np.asarray(ious, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("success_curve needs at least one IoU value")
    with np.errstate(invalid="ignore"):
        return (v[None, :] >= t[:, None]).mean(axis=1)


def success_rate(ious: Sequence[float], t: float, thresholds: Sequence[float] = CURVE_THRESHOLDS) -> float:
    """Fraction of ``ious >= t``; ``t`` snaps to a curve threshold within 1e-9 (so 0.3 -> 0.05*6).

    This makes "IoU@0.3" identical to the original's ``results[6]``.
    """
    near = [c for c in thresholds if abs(float(c) - t) <= 1e-9]
    t_used = float(near[0]) if near else float(t)
    v = np.asarray(ious, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("success_rate needs at least one IoU value")
    with np.errstate(invalid="ignore"):
        return float((v >= t_used).mean())


def auc(thresholds: Sequence[float], curve: Sequence[float]) -> float:
    """Trapezoidal area under ``curve`` over ``thresholds`` (= ``sklearn.metrics.auc`` bit for bit)."""
    x = _check_curve_thresholds(thresholds)
    y = np.asarray(curve, dtype=np.float64).reshape(-1)
    if y.shape != x.shape:
        raise ValueError(f"curve has {y.size} points but there are {x.size} thresholds")
    return float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())


def _summary(ious: Sequence[float], thresholds: Thresholds) -> tuple[np.ndarray, float]:
    curve = success_curve(ious, thresholds.curve_thresholds)
    return curve, auc(thresholds.curve_thresholds, curve)


def single_source(
    av_maps: Sequence[Any],
    gt_boxes: Sequence[Any],
    thresholds: Thresholds = Thresholds(),
) -> dict[str, Any]:
    """Single-source IoU@0.5 and AUC over frames (docs/method.md §5.2), reported x100.

    av_maps: one 2-D localization map per frame (any resolution; upsampled to eval_size).
    gt_boxes: per frame, its normalised [x, y, w, h] boxes ((n, 4) or a list). The GT is
        their union. Frames with no box are skipped (not counted in ``n``).
    Prediction = map > thresholds.solo_tau * max(map).

    Returns ``{"iou_at_0_5": r(0.5)*100, "auc": AUC*100, "curve": [r(t)*100 for t], "n": frames}``.
    """
    if len(av_maps) != len(gt_boxes):
        raise ValueError(f"{len(av_maps)} maps but {len(gt_boxes)} box lists; they must be paired per frame")
    size = thresholds.eval_size
    ious = []
    for i, (m, boxes) in enumerate(zip(av_maps, gt_boxes)):
        b = _as_boxes(boxes, what=f"frame {i} boxes")
        if len(b) == 0:
            continue
        try:
            ious.append(frame_iou(m, b, thresholds.solo_tau, size))
        except ValueError as e:
            raise ValueError(f"frame {i}: {e}") from None
    if not ious:
        raise ValueError("single_source: no frame has a ground-truth box; nothing to evaluate")
    curve, area = _summary(ious, thresholds)
    return {
        "iou_at_0_5": 100.0 * success_rate(ious, 0.5, thresholds.curve_thresholds),
        "auc": 100.0 * area,
        "curve": [100.0 * float(r) for r in curve],
        "n": len(ious),
    }


# --------------------------------------------------------------------------------------
# Class-aware maps and cluster -> class matching
# --------------------------------------------------------------------------------------


def class_softmax(M: Any, scale: float = 3.0) -> np.ndarray:
    """``P = softmax(scale * M)`` over the K axis of (K, h, w) or (N, K, h, w) class-aware maps."""
    m = np.asarray(M)
    if m.ndim not in (3, 4):
        raise ValueError(f"M must be (K, h, w) or (N, K, h, w), got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.floating):
        m = m.astype(np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError("M contains NaN or infinite values")
    return _softmax(scale * m, axis=-3)


def cluster_class_affinity(pseudo_labels: Any, gt_labels: Any, n_clusters: int, n_classes: int) -> np.ndarray:
    """``A[c, k]`` = fraction of class-c samples whose pseudo-label is cluster k, shape (C, K).

    A class with no sample gets an all-zero row.
    """
    p = np.asarray(pseudo_labels).reshape(-1)
    g = np.asarray(gt_labels).reshape(-1)
    if p.shape != g.shape:
        raise ValueError(f"{p.size} pseudo-labels but {g.size} ground-truth labels")
    for name, v, hi in (("pseudo_labels", p, n_clusters), ("gt_labels", g, n_classes)):
        if v.size and not np.issubdtype(v.dtype, np.integer):
            if not np.all(np.equal(np.mod(v, 1), 0)):
                raise ValueError(f"{name} must be integers")
            v = v.astype(np.int64)
        if v.size and (v.min() < 0 or v.max() >= hi):
            bad = int(np.nonzero((v < 0) | (v >= hi))[0][0])
            raise ValueError(f"{name}[{bad}] = {v[bad]} is outside [0, {hi})")
    counts = np.zeros((n_classes, n_clusters), dtype=np.float64)
    np.add.at(counts, (g.astype(np.int64), p.astype(np.int64)), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


@dataclass(frozen=True, eq=False)
class ClusterMatch:
    """An assignment of every one of K clusters to one of C classes, each class getting >= 1.

    cluster_to_class: (K,) int, the class of each cluster.
    representative: (C,) int, each class's best cluster: the assigned cluster with the
        highest affinity A[c, k] (ties -> lowest k); without an affinity, the lowest-index
        assigned cluster (the original's "first assigned cluster").
    affinity: the (C, K) matrix A the match was computed from, or None.
    """

    cluster_to_class: np.ndarray
    representative: np.ndarray
    affinity: np.ndarray | None = None

    @property
    def n_clusters(self) -> int:
        return int(self.cluster_to_class.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.representative.shape[0])

    def clusters_of(self, c: int) -> np.ndarray:
        """Indices of the clusters assigned to class ``c`` (ascending)."""
        return np.nonzero(self.cluster_to_class == c)[0]

    def assignment_matrix(self) -> np.ndarray:
        """Binary (C, K) matrix, 1 where cluster k belongs to class c (the original's ``corr.npy``)."""
        out = np.zeros((self.n_classes, self.n_clusters), dtype=np.int64)
        out[self.cluster_to_class, np.arange(self.n_clusters)] = 1
        return out

    def score(self) -> float:
        """``sum_k A[class(k), k]``, the objective the matching maximises (needs ``affinity``)."""
        if self.affinity is None:
            raise ValueError("this ClusterMatch has no affinity matrix")
        return float(self.affinity[self.cluster_to_class, np.arange(self.n_clusters)].sum())

    @classmethod
    def from_cluster_to_class(cls, cluster_to_class: Any, n_classes: int, affinity: Any = None) -> ClusterMatch:
        """Build (and validate) a match from a saved ``cluster_to_class`` list."""
        c2c = np.asarray(cluster_to_class)
        if c2c.ndim != 1 or c2c.size == 0 or not np.issubdtype(c2c.dtype, np.integer):
            raise ValueError(f"cluster_to_class must be a non-empty 1-D integer array, got {c2c!r}")
        c2c = c2c.astype(np.int64)
        if c2c.min() < 0 or c2c.max() >= n_classes:
            bad = int(np.nonzero((c2c < 0) | (c2c >= n_classes))[0][0])
            raise ValueError(f"cluster_to_class[{bad}] = {c2c[bad]} is outside [0, {n_classes})")
        missing = sorted(set(range(n_classes)) - set(c2c.tolist()))
        if missing:
            raise ValueError(f"classes {missing} have no cluster; every class needs at least one")
        A = None
        if affinity is not None:
            A = np.asarray(affinity, dtype=np.float64)
            if A.shape != (n_classes, c2c.size):
                raise ValueError(f"affinity must be (C, K) = ({n_classes}, {c2c.size}), got {A.shape}")
        rep = np.empty(n_classes, dtype=np.int64)
        for c in range(n_classes):
            ks = np.nonzero(c2c == c)[0]
            rep[c] = ks[int(np.argmax(A[c, ks]))] if A is not None else ks[0]
        c2c.setflags(write=False)
        rep.setflags(write=False)
        if A is not None:
            A.setflags(write=False)
        return cls(cluster_to_class=c2c, representative=rep, affinity=A)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for checkpoints and exported-model metadata)."""
        return {
            "cluster_to_class": [int(c) for c in self.cluster_to_class],
            "n_classes": self.n_classes,
            "affinity": None if self.affinity is None else self.affinity.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClusterMatch:
        try:
            return cls.from_cluster_to_class(d["cluster_to_class"], int(d["n_classes"]), d.get("affinity"))
        except KeyError as e:
            raise ValueError(f"ClusterMatch dict is missing key {e.args[0]!r}") from None


def match_clusters(
    affinity: Any = None,
    *,
    pseudo_labels: Any = None,
    gt_labels: Any = None,
    n_clusters: int | None = None,
    n_classes: int | None = None,
) -> ClusterMatch:
    """Exact, deterministic cluster -> class matching (docs/method.md §5.3, 'exact Hungarian matching').

    Call either ``match_clusters(A)`` with the (C, K) affinity ``A[c, k]`` (fraction of
    class-c samples in cluster k), or
    ``match_clusters(pseudo_labels=..., gt_labels=..., n_clusters=K, n_classes=C)``.

    Maximises ``sum_k A[class(k), k]`` over all maps cluster -> class that give every
    class at least one cluster (what the original's 10^6-trial random search approximated):

    * K == C: Hungarian on A (``linear_sum_assignment``, maximise): a one-to-one match.
    * K > C: Hungarian on a K x K matrix whose rows are clusters, whose first C columns
      are ``A[c, k]`` and whose K - C "free" columns all hold ``max_c A[c, k]``. A cluster
      matched to column c < C goes to class c; a cluster matched to a free column goes to
      its argmax class (ties -> lowest class index). This is optimal: any feasible map
      picks one distinct cluster per class and the rest can do no better than their max.
    * K < C: impossible (some class would have no cluster) -> ValueError.
    """
    if affinity is not None:
        if any(v is not None for v in (pseudo_labels, gt_labels, n_clusters, n_classes)):
            raise ValueError("give either the affinity matrix or pseudo_labels/gt_labels/n_clusters/n_classes, not both")
        A = np.asarray(affinity, dtype=np.float64)
    else:
        if any(v is None for v in (pseudo_labels, gt_labels, n_clusters, n_classes)):
            raise ValueError("match_clusters needs an affinity matrix, or all of pseudo_labels, gt_labels, n_clusters, n_classes")
        A = cluster_class_affinity(pseudo_labels, gt_labels, int(n_clusters), int(n_classes))
    if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"affinity must be a non-empty (C, K) matrix, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError("affinity contains NaN or infinite values")
    C, K = A.shape
    if K < C:
        raise ValueError(
            f"cannot match K={K} clusters to C={C} classes: with fewer clusters than classes some class "
            f"would get no cluster (use K >= C)"
        )
    # rows = clusters, columns = C class columns then K - C free columns
    best = A.max(axis=0)
    cost = np.empty((K, K), dtype=np.float64)
    cost[:, :C] = A.T
    cost[:, C:] = best[:, None]
    rows, cols = linear_sum_assignment(cost, maximize=True)
    c2c = np.empty(K, dtype=np.int64)
    argbest = A.argmax(axis=0)
    for k, j in zip(rows, cols):
        c2c[k] = j if j < C else argbest[k]
    return ClusterMatch.from_cluster_to_class(c2c, C, A)


def _check_P(P: Any, match: ClusterMatch, what: str = "P") -> np.ndarray:
    p = np.asarray(P)
    if p.ndim != 3:
        raise ValueError(f"{what} must be (K, h, w), got shape {p.shape}")
    if p.shape[0] != match.n_clusters:
        raise ValueError(f"{what} has {p.shape[0]} channels but the cluster match has K={match.n_clusters}")
    p = p.astype(np.float32, copy=False)
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return p


def class_maps(P: Any, match: ClusterMatch) -> np.ndarray:
    """(C, h, w) class maps: each class's map is the sum of P over the clusters assigned to it."""
    p = _check_P(P, match)
    K, h, w = p.shape
    onehot = match.assignment_matrix().astype(p.dtype)
    return (onehot @ p.reshape(K, h * w)).reshape(match.n_classes, h, w)


def _image_boxes(boxes: Any, classes: Any, n_classes: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    b = _as_boxes(boxes, what=f"{what} boxes")
    c = np.asarray(classes).reshape(-1)
    if c.size != len(b):
        raise ValueError(f"{what}: {len(b)} boxes but {c.size} class labels")
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"{what}: class labels must be integers, got {c.dtype}")
    if c.size and (c.min() < 0 or c.max() >= n_classes):
        bad = int(np.nonzero((c < 0) | (c >= n_classes))[0][0])
        raise ValueError(f"{what}: box {bad} has class {c[bad]} outside [0, {n_classes})")
    return b, c.astype(np.int64)


def class_ious(
    P: Any, boxes: Any, classes: Any, match: ClusterMatch, tau: float = 0.5, size: int = 224
) -> dict[int, float]:
    """Per sounding class of one image: IoU(class map > tau * max(class map), union of that class's boxes).

    P: (K, h, w) class-softmax maps. boxes: the image's SOUNDING boxes, normalised (n, 4).
    classes: (n,) class index of each box. Returns ``{class: IoU}`` for each class present.
    """
    cm = class_maps(P, match)
    b, c = _image_boxes(boxes, classes, match.n_classes, "image")
    return {
        int(cls): binary_iou(predicted_mask(cm[cls], tau, size), box_mask(b[c == cls], size))
        for cls in np.unique(c)
    }


def ciou_image(P: Any, boxes: Any, classes: Any, match: ClusterMatch, tau: float = 0.5, size: int = 224) -> float:
    """One image's CIoU (docs/method.md §5.4): mean over its sounding classes of :func:`class_ious`."""
    ious = class_ious(P, boxes, classes, match, tau, size)
    if not ious:
        raise ValueError("ciou_image: the image has no sounding box")
    return float(np.mean(list(ious.values())))


def nsa_image(
    P: Any, sounding_classes: Sequence[int], match: ClusterMatch, threshold: float = 0.2, size: int = 224
) -> float:
    """One image's No-Sounding-Area, a fraction in [0, 1] (docs/method.md §5.4, 'NSA over unassigned clusters').

    Channels counted: every cluster k whose assigned class is NOT one of the image's
    sounding classes (so all clusters of a sounding class are excluded, not only its
    representative, and all K clusters are considered, not only 0..10). For each such
    channel: fraction of the ``size x size`` pixels with ``upsample(P_k) <= threshold``
    (absolute threshold); then the mean over those channels. With K == C this equals the
    original's duet definition. Returns NaN when no channel qualifies (every class is
    sounding); :func:`multi_source` skips such images in the NSA mean.
    """
    p = _check_P(P, match)
    sounding = {int(c) for c in sounding_classes}
    bad = [c for c in sounding if not 0 <= c < match.n_classes]
    if bad:
        raise ValueError(f"sounding class {bad[0]} outside [0, {match.n_classes})")
    silent = [k for k in range(match.n_clusters) if int(match.cluster_to_class[k]) not in sounding]
    if not silent:
        return float("nan")
    return float(np.mean([np.count_nonzero(upsample(p[k], size) <= threshold) / (size * size) for k in silent]))


def multi_source(
    P_list: Sequence[Any],
    boxes_per_image: Sequence[Any],
    classes_per_image: Sequence[Any],
    match: ClusterMatch,
    tau: float | str = "mosaic",
    thresholds: Thresholds = Thresholds(),
) -> dict[str, Any]:
    """Multi-source CIoU@0.3, CIoU@0.5, AUC and NSA over images (docs/method.md §5.4), reported x100.

    P_list: per image, the (K, h, w) class-softmax P (:func:`class_softmax`).
    boxes_per_image: per image, its SOUNDING boxes, normalised [x, y, w, h] (n, 4).
        Silent objects must not be passed here. Images with no box are skipped entirely
        (neither CIoU nor NSA), as in the original.
    classes_per_image: per image, the (n,) class index of each box.
    tau: a float, or a protocol name: ``"mosaic"``/``"synthetic"`` (0.5) or ``"duet"`` (0.2).

    Returns ``{"ciou_at_0_3", "ciou_at_0_5", "auc", "nsa", "curve", "n"}``: the success-curve
    rates at 0.3 / 0.5, its AUC and the per-image curve, all x100; ``nsa`` = mean over
    images of :func:`nsa_image` x100 (images where every class sounds are left out; NaN if
    that is all of them); ``n`` = number of images evaluated.
    """
    n_img = len(P_list)
    if len(boxes_per_image) != n_img or len(classes_per_image) != n_img:
        raise ValueError(
            f"{n_img} maps, {len(boxes_per_image)} box lists and {len(classes_per_image)} class lists; "
            "they must be paired per image"
        )
    t = thresholds.ciou_tau(tau) if isinstance(tau, str) else float(tau)
    size = thresholds.eval_size
    cious, nsas = [], []
    for i in range(n_img):
        b, c = _image_boxes(boxes_per_image[i], classes_per_image[i], match.n_classes, f"image {i}")
        if len(b) == 0:
            continue
        try:
            cious.append(ciou_image(P_list[i], b, c, match, t, size))
            nsas.append(nsa_image(P_list[i], np.unique(c).tolist(), match, thresholds.nsa_threshold, size))
        except ValueError as e:
            raise ValueError(f"image {i}: {e}") from None
    if not cious:
        raise ValueError("multi_source: no image has a sounding box; nothing to evaluate")
    curve, area = _summary(cious, thresholds)
    finite = [v for v in nsas if not math.isnan(v)]
    return {
        "ciou_at_0_3": 100.0 * success_rate(cious, 0.3, thresholds.curve_thresholds),
        "ciou_at_0_5": 100.0 * success_rate(cious, 0.5, thresholds.curve_thresholds),
        "auc": 100.0 * area,
        "nsa": 100.0 * float(np.mean(finite)) if finite else float("nan"),
        "curve": [100.0 * float(r) for r in curve],
        "n": len(cious),
    }


# --------------------------------------------------------------------------------------
# Baselines (fed through the very same functions as a model's maps)
# --------------------------------------------------------------------------------------


def uniform_map(h: int = 14, w: int = 14) -> np.ndarray:
    """All-ones (h, w) float32 map: predicts the whole frame, so its IoU is the GT's area fraction."""
    return np.ones((int(h), int(w)), dtype=np.float32)


def centred_gaussian_map(h: int = 14, w: int = 14, sigma: float = 0.25) -> np.ndarray:
    """Centre-prior (h, w) float32 map with peak 1.

    ``exp(-((u - 0.5)^2 + (v - 0.5)^2) / (2 sigma^2))`` with u = (j + 0.5) / w and
    v = (i + 0.5) / h the cell centres in normalised frame coordinates, so ``sigma`` is a
    fraction of the frame side; then divided by its maximum.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    h, w = int(h), int(w)
    v = (2.0 * np.arange(h) + 1.0 - h) / (2.0 * h)  # (i + 0.5) / h - 0.5, exactly symmetric
    u = (2.0 * np.arange(w) + 1.0 - w) / (2.0 * w)
    g = np.exp(-(v[:, None] ** 2 + u[None, :] ** 2) / (2.0 * sigma**2))
    return (g / g.max()).astype(np.float32)


def baseline_probs(map2d: Any, n_clusters: int) -> np.ndarray:
    """A (K, h, w) stand-in for P in which every channel (hence every class) is ``map2d``.

    Feeding it to :func:`multi_source` scores a class-agnostic baseline: each class's
    map is a positive multiple of ``map2d`` so CIoU is that of ``map2d`` itself, and NSA
    is the fraction of pixels where ``map2d <= nsa_threshold`` (uniform ones -> 0; the
    Gaussian -> its tail area). It is deliberately NOT renormalised over K: an
    uninformative softmax (1/K everywhere) would score NSA = 100 whenever 1/K <= 0.2,
    which says more about NSA than about the baseline.
    """
    m = _as_map(map2d, "baseline map")
    if int(n_clusters) < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    return np.repeat(m[None], int(n_clusters), axis=0)


# --------------------------------------------------------------------------------------
# Negative-aware figures (SLAVC-style)
# --------------------------------------------------------------------------------------


def false_positive_rate(declared_sounding_in_view: Sequence[bool]) -> float:
    """x100 fraction of negative scenes (off-screen sound, silence) where the system declared
    a sounding object in view. Lower is better; input = one bool per negative scene."""
    d = np.asarray(declared_sounding_in_view).reshape(-1)
    if d.size == 0:
        raise ValueError("false_positive_rate needs at least one scene")
    if d.dtype != bool:
        if not np.all(np.isin(d, (0, 1))):
            raise ValueError("declared_sounding_in_view must hold booleans (or 0/1)")
        d = d.astype(bool)
    return 100.0 * float(d.mean())


def silent_object_lit_rate(
    maps: Sequence[Any],
    silent_boxes: Sequence[Any],
    sounding_boxes: Sequence[Any],
    tau: float = 0.1,
    size: int = 224,
) -> float:
    """x100 fraction of images (one sounding + one or more silent objects, e.g. ``solo_distractor``)
    where the map lights the silent object more than the sounding one. Lower is better.

    Definition: pred = ``upsample(map) > tau * max`` (as in :func:`single_source`);
    S = union of the silent boxes, T = union of the sounding boxes, both rasterised as in
    :func:`box_mask`. Pixels in both S and T are ambiguous and ignored. The image counts
    iff ``|pred & S & ~T| > |pred & T & ~S|`` (strict: a tie, e.g. neither lit, does not
    count). Every image needs at least one silent and one sounding box.
    """
    n = len(maps)
    if len(silent_boxes) != n or len(sounding_boxes) != n:
        raise ValueError(f"{n} maps, {len(silent_boxes)} silent-box lists, {len(sounding_boxes)} sounding-box lists")
    if n == 0:
        raise ValueError("silent_object_lit_rate needs at least one image")
    lit = 0
    for i in range(n):
        s = box_mask(_as_boxes(silent_boxes[i], f"image {i} silent boxes"), size)
        t = box_mask(_as_boxes(sounding_boxes[i], f"image {i} sounding boxes"), size)
        if not s.any() or not t.any():
            raise ValueError(f"image {i}: needs a non-empty silent box and a non-empty sounding box")
        try:
            pred = predicted_mask(maps[i], tau, size)
        except ValueError as e:
            raise ValueError(f"image {i}: {e}") from None
        lit += int(np.count_nonzero(pred & s & ~t) > np.count_nonzero(pred & t & ~s))
    return 100.0 * lit / n


# --------------------------------------------------------------------------------------------
# streams: how steady the decisions are


def state_changes_per_second(shown: Sequence[Sequence[str]], times: Sequence[float]) -> float:
    """Flicker: per second of stream, how many times a class went from shown to not shown or back
    between consecutive frames (``shown[i]``: the classes shown at ``times[i]``, seconds). A steady
    scene's ideal is 0."""
    if len(shown) != len(times):
        raise ValueError(f"need one time per frame, got {len(shown)} frames and {len(times)} times")
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    changes = sum(len(set(a) ^ set(b)) for a, b in zip(shown, shown[1:]))
    return changes / (times[-1] - times[0])


def onset_delay(shown: Sequence[Sequence[str]], times: Sequence[float], name: str, onset: float) -> float | None:
    """Seconds from a sound's ``onset`` to the first frame at or after it that shows class ``name``;
    None when no frame does."""
    if len(shown) != len(times):
        raise ValueError(f"need one time per frame, got {len(shown)} frames and {len(times)} times")
    return next((t - onset for s, t in zip(shown, times) if t >= onset and name in s), None)
