"""Calibrating the Localizer's decision rules on scenes with known answers (torch-free).

``export/to_onnx.py`` runs :func:`calibrate` on freshly rendered SynthMUSIC scenes (seeds shared
with no training or test scene) and stores the result in the manifest's ``postprocessing``
(``in_view_threshold``, ``audio_gate_db``, ``class_threshold`` and a ``calibration`` report).
Anyone can recalibrate on their own labelled scenes the same way.

The rules, each a pure function below:

* ``in_view_score`` and ``in_view_threshold`` (:func:`fit_in_view_threshold`,
  :func:`choose_in_view_score`): for each in-view score (``av_score``, the av map's max,
  ``presence``, the heard cluster's :func:`avsl_edge.localizer.class_presence`, ``heard_av``,
  :func:`avsl_edge.localizer.heard_av_score`, ``heard_class``, :func:`avsl_edge.localizer.heard_class_score`,
  and ``combined``, the first three weighed by a logistic regression fitted on the same scenes,
  :func:`fit_in_view_combination`) the threshold that
  maximises the balanced accuracy between scenes with a sounding instrument in view (positives: ``solo``,
  ``solo_distractor``, ``duet``, ``mosaic``) and scenes whose sound comes from off screen
  (negatives: ``offscreen``), among the thresholds that declare at most ``max_fpr`` (2 %) of the
  off-screen scenes "sounding in view"; ties go to the higher threshold. Off-screen sound is meant
  to light nothing, so specificity is a constraint, not a trade. The bound needs at least
  ``1 / max_fpr`` off-screen scenes (the export renders 1000): with fewer it allows none, and the
  report warns (:func:`fpr_resolution_warnings`). The score whose fit has the higher balanced
  accuracy is kept (ties: av_score, the method's own; the combination only when it separates
  better than each score alone). Its weights (``in_view_combination``) are stored whichever score is
  kept, so ``--in-view-score combined`` works on any calibrated bundle. The report also lists, for each score, the
  fit at other false-positive bounds (:func:`operating_points`, :data:`OPERATING_FPRS`), so a user
  can move the operating point (``--in-view-threshold``) without recalibrating; the export's
  ``--max-fpr`` sets the bound it calibrates at.
* ``audio_gate_db`` (:func:`fit_audio_gate`): 20 dB below the quietest calibration clip's RMS
  level, kept within [-60, -40] dBFS, so every instrument clip passes and a silent room (digital
  silence, or room noise well below the music) does not.
* ``class_threshold`` (:func:`fit_class_threshold`): the audio-probability threshold (0.05 .. 0.50)
  that maximises the mean per-scene F1 between the classes named (probability >= threshold, else
  the most probable class) and the visible sounding classes, over the scenes with sounding
  instruments in view; ties go to the higher threshold.
* ``box_method`` and ``box_tau`` (:func:`fit_box_rule`): the way boxes are cut ("map" or
  "grabcut", :func:`avsl_edge.boxes.sounding_boxes`) and the fraction of its maximum (``map``:
  0.1 .. 0.8, ``grabcut``: 0.3 .. 0.5) at which the av map is cut or seeds GrabCut, whose boxes hit
  (IoU >= 0.5) the most visible sounding classes of those scenes (the scene's own sounding classes
  are the heard ones, so the choice does not depend on the audio classification); ties go to
  "map" (the cheaper) and then to the higher fraction.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .boxes import BOX_METHODS
from .errors import UserError
from .localizer import IN_VIEW_SCORES, audio_window, heard_av_score, heard_class_score
from .rules import COMBINED_SCORES, SINGLE_SCORES, combined_score
from .result import Box

if TYPE_CHECKING:
    from .localizer import Localizer

POSITIVE_KINDS: tuple[str, ...] = ("solo", "solo_distractor", "duet", "mosaic")
NEGATIVE_KINDS: tuple[str, ...] = ("offscreen",)
CLASS_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 11))
BOX_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 9))
GRABCUT_GRID: tuple[float, ...] = (0.3, 0.4, 0.5)  # GrabCut's probable-foreground cuts (~25 ms a scene each;
                                                  # 0.2 was below 0.3 on the validation and calibration scenes)
BOX_RULE_GRID: tuple[tuple[str, float], ...] = (tuple(("map", t) for t in BOX_GRID)
                                                + tuple(("grabcut", t) for t in GRABCUT_GRID))
OPERATING_FPRS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)  # bounds of the report's operating points

XYWH = tuple[float, float, float, float]


class CalibrationError(UserError, ValueError):
    """Calibration data or a bound that the export cannot calibrate the rules with."""


@dataclass(frozen=True)
class CalibrationScene:
    """One scene with its answer: an RGB frame, its audio (16 kHz float) and the visible sounding classes."""

    kind: str
    image: np.ndarray              # (H, W, 3) uint8 RGB
    audio: np.ndarray              # float32 mono, 16 kHz
    sounding: tuple[str, ...]      # visible sounding classes (empty for offscreen scenes)
    boxes: tuple[tuple[str, XYWH], ...] = ()  # (class, x, y, w, h in pixels) of the visible sounding objects


@dataclass(frozen=True)
class ThresholdFit:
    threshold: float
    tpr: float                # positives at or above the threshold
    fpr: float                # negatives at or above the threshold
    balanced_accuracy: float


def fit_in_view_threshold(positives: Sequence[float], negatives: Sequence[float], max_fpr: float = 0.02) -> ThresholdFit:
    """Rule for ``in_view_threshold`` (module docstring). Candidates are the midpoints between
    consecutive distinct scores and one step beyond either end."""
    pos = np.asarray(positives, np.float64).ravel()
    neg = np.asarray(negatives, np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"need positive and negative scores, got {pos.size} and {neg.size}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores must be finite")
    if not 0.0 <= max_fpr < 1.0:
        raise CalibrationError(f"max_fpr must be in [0, 1), got {max_fpr}")
    v = np.unique(np.concatenate([pos, neg]))
    step = max(1e-6, float(v[-1] - v[0]) * 1e-3)
    cands = np.concatenate([[v[0] - step], (v[:-1] + v[1:]) / 2.0, [v[-1] + step]])
    tpr = (pos[None, :] >= cands[:, None]).mean(axis=1)
    fpr = (neg[None, :] >= cands[:, None]).mean(axis=1)
    ba = 0.5 * (tpr + 1.0 - fpr)
    ok = fpr <= max_fpr + 1e-12
    best = np.max(ba[ok])
    i = int(np.nonzero(ok & (ba >= best - 1e-12))[0].max())
    return ThresholdFit(float(cands[i]), float(tpr[i]), float(fpr[i]), float(ba[i]))


COMBINATION_C = 1.0  # the logistic regression's inverse L2 strength (scikit-learn's default)


def fit_in_view_combination(positives: np.ndarray, negatives: np.ndarray, c: float = COMBINATION_C) -> dict[str, float]:
    """Rule for ``in_view_combination``: a logistic regression (scikit-learn, balanced classes) of the
    scenes with a sounding instrument in view against the off-screen ones, over the rows
    (N, len(COMBINED_SCORES)) of their scores -> {"bias", *COMBINED_SCORES: weight}."""
    pos = np.asarray(positives, np.float64).reshape(-1, len(COMBINED_SCORES))
    neg = np.asarray(negatives, np.float64).reshape(-1, len(COMBINED_SCORES))
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"need positive and negative scenes, got {len(pos)} and {len(neg)}")
    if not (np.isfinite(pos).all() and np.isfinite(neg).all()):
        raise ValueError("scores must be finite")
    try:
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - only a calibration needs it
    except ImportError:
        raise CalibrationError("fitting the combined in-view score needs scikit-learn (pip install scikit-learn); "
                               "calibrate(..., combine=False) fits the single scores only") from None
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos), int), np.zeros(len(neg), int)])
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=1000).fit(x, y)
    return {"bias": float(lr.intercept_[0]), **{k: float(w) for k, w in zip(COMBINED_SCORES, lr.coef_[0])}}


def operating_points(positives: Sequence[float], negatives: Sequence[float],
                     max_fprs: Sequence[float] = OPERATING_FPRS) -> list[dict[str, float]]:
    """The in-view fit at each false-positive bound of ``max_fprs``: ``[{"max_fpr", "threshold",
    "tpr", "fpr", "balanced_accuracy"}, ...]``, the table a user picks ``--in-view-threshold`` from."""
    return [{"max_fpr": float(m), **asdict(fit_in_view_threshold(positives, negatives, m))}
            for m in max_fprs]


def choose_in_view_score(fits: dict[str, ThresholdFit]) -> str:
    """The in-view score whose fit has the highest balanced accuracy; ties go to the earlier one of
    IN_VIEW_SCORES (av_score first)."""
    if not fits or set(fits) - set(IN_VIEW_SCORES):  # "combined" last: a tie keeps the single score
        raise ValueError(f"need fits of scores among {IN_VIEW_SCORES}, got {sorted(fits)}")
    order = [k for k in IN_VIEW_SCORES if k in fits]
    best = max(fits[k].balanced_accuracy for k in order)
    return next(k for k in order if fits[k].balanced_accuracy >= best - 1e-12)


MIN_USEFUL_TPR = 0.5  # below this the in-view rule hides most sounding instruments: say so


def in_view_warnings(fit: ThresholdFit, max_fpr: float, score: str = "av_score") -> list[str]:
    """What a user of the bundle should know about a fitted in-view threshold: a model whose
    in-view score cannot keep off-screen sound dark without also hiding most sounding instruments
    (true-positive rate < MIN_USEFUL_TPR) gets a threshold that lights almost nothing."""
    if fit.tpr >= MIN_USEFUL_TPR:
        return []
    return [f"in_view_threshold {fit.threshold:.3f} on {score}: keeping at most {100 * max_fpr:.0f} % of off-screen "
            f"scenes dark declares only {100 * fit.tpr:.0f} % of the scenes with a sounding instrument in view "
            f"(balanced accuracy {fit.balanced_accuracy:.2f}); this model's {score} barely tells them apart, so "
            "it will light almost nothing. Override it (avsl-edge live --in-view-threshold X, "
            "Localizer.with_rules(in_view_threshold=X)) at the cost of lighting off-screen sound, or train longer"]


def fpr_resolution_warnings(n_negatives: int, max_fpr: float) -> list[str]:
    """A false-positive bound that fewer than ``1 / max_fpr`` negatives cannot resolve: it then
    allows no false positive at all, and the threshold sits above the highest negative score."""
    if max_fpr <= 0 or n_negatives * max_fpr >= 1.0:  # max_fpr 0 asks for no false positive on purpose
        return []
    return [f"only {n_negatives} off-screen scenes: an off-screen false-positive rate of at most "
            f"{100 * max_fpr:g} % allows none of them, so the in-view threshold sits above the highest of their "
            f"scores; calibrate on at least {math.ceil(1 / max_fpr)} of them"]


def fit_audio_gate(levels_db: Sequence[float], margin_db: float = 20.0, floor_db: float = -60.0,
                   ceiling_db: float = -40.0) -> float:
    """Rule for ``audio_gate_db``: ``clip(min(levels) - margin, floor, ceiling)``."""
    lv = np.asarray(levels_db, np.float64)
    if lv.size == 0:
        raise ValueError("need at least one clip level")
    return float(np.clip(lv.min() - margin_db, floor_db, ceiling_db))


def named(probs: np.ndarray, threshold: float) -> set[int]:
    """The localizer's class rule: probability >= threshold, else the argmax."""
    idx = set(np.nonzero(probs >= threshold)[0].tolist())
    return idx or {int(np.argmax(probs))}


def f1(pred: set[int], truth: set[int]) -> float:
    if not pred and not truth:
        return 1.0
    tp = len(pred & truth)
    return 2.0 * tp / (len(pred) + len(truth))


def fit_class_threshold(class_probs: Sequence[np.ndarray], truths: Sequence[set[int]],
                        grid: Sequence[float] = CLASS_GRID) -> tuple[float, float]:
    """Rule for ``class_threshold``: (threshold, its mean F1)."""
    if len(class_probs) != len(truths) or not truths:
        raise ValueError(f"need as many class distributions as answers (>0), got {len(class_probs)} and {len(truths)}")
    scores = [float(np.mean([f1(named(np.asarray(p), t), truth) for p, truth in zip(class_probs, truths)]))
              for t in grid]
    best = max(scores)
    i = max(j for j, s in enumerate(scores) if s >= best - 1e-12)
    return float(grid[i]), scores[i]


def union_box(boxes: Sequence[XYWH]) -> XYWH:
    """The bounding rectangle of (x, y, w, h) boxes."""
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def fit_box_rule(hits: dict[tuple[str, float], Sequence[bool]]) -> tuple[str, float, float]:
    """Rule for ``box_method`` and ``box_tau`` from ``{(method, tau): [box hit per (scene, class)]}``:
    (method, tau, its hit rate)."""
    if not hits or not all(len(v) for v in hits.values()):
        raise ValueError("need box hits for every (method, tau)")
    if {m for m, _ in hits} - set(BOX_METHODS):
        raise ValueError(f"box methods must be among {BOX_METHODS}, got {sorted({m for m, _ in hits})}")
    rates = {k: float(np.mean(v)) for k, v in hits.items()}
    best = max(rates.values())
    method, tau = max((k for k, r in rates.items() if r >= best - 1e-12),
                      key=lambda k: (-BOX_METHODS.index(k[0]), k[1]))
    return method, float(tau), rates[(method, tau)]


@dataclass
class Calibration:
    in_view_threshold: float
    audio_gate_db: float
    class_threshold: float
    box_tau: float
    report: dict[str, Any] = field(default_factory=dict)
    in_view_score: str = "av_score"
    box_method: str = "map"
    in_view_combination: dict[str, float] | None = None  # kept whichever score is chosen, so a user can switch

    def postprocessing(self) -> dict[str, Any]:
        """The manifest ``postprocessing`` fields this calibration sets."""
        return {"in_view_score": self.in_view_score, "in_view_threshold": self.in_view_threshold,
                "in_view_combination": self.in_view_combination,
                "audio_gate_db": self.audio_gate_db, "class_threshold": self.class_threshold,
                "box_method": self.box_method, "box_tau": self.box_tau, "calibration": self.report}


def calibrate(localizer: Localizer, scenes: Sequence[CalibrationScene], max_fpr: float = 0.02,
              batch_size: int = 16, source: str = "", combine: bool = True) -> Calibration:
    """Fit the rules on ``scenes`` with ``localizer``'s backend (module docstring); ``combine``: also
    fit the combined score (needs scikit-learn)."""
    classes = list(localizer.classes)
    kinds = {s.kind for s in scenes}
    if not kinds & set(POSITIVE_KINDS) or not kinds & set(NEGATIVE_KINDS):
        raise CalibrationError(f"calibration needs scenes of {POSITIVE_KINDS} and {NEGATIVE_KINDS}, got {sorted(kinds)}")
    scores: dict[str, list[float]] = {k: [] for k in SINGLE_SCORES}
    probs, levels = [], []
    box_hits: dict[tuple[str, float], list[bool]] = {k: [] for k in BOX_RULE_GRID}
    box_jobs: list[tuple] = []  # (scene, av map, its heard classes' maps, their true boxes)
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start:start + batch_size]
        x = np.concatenate([localizer.preprocess(s.image, rgb=True)[0] for s in chunk])
        windows = [audio_window(s.audio, 16000) for s in chunk]
        out = localizer.backend(x, np.stack([w for w, _ in windows]))
        scores["av_score"] += [float(v) for v in out["av_score"]]
        scores["presence"] += [float(v) for v in localizer.presence(out["v_fea"], out["audio_probs"])]
        chunk_probs = localizer.class_probs(out["audio_probs"])
        class_maps = np.stack([localizer.class_maps(cp) for cp in out["class_probs"]])
        scores["heard_av"] += [float(v) for v in heard_av_score(out["av_map"][:, 0], class_maps, chunk_probs)]
        scores["heard_class"] += [float(v) for v in heard_class_score(class_maps, chunk_probs)]
        probs += list(chunk_probs)
        levels += [lv for _, lv in windows]
        for s, cm, av in zip(chunk, class_maps, out["av_map"]):
            if s.kind in POSITIVE_KINDS and s.boxes:
                heard = list(dict.fromkeys(c for c, _ in s.boxes))
                box_jobs.append((s, av[0], cm[[classes.index(c) for c in heard]],
                                 [union_box([b for k, b in s.boxes if k == c]) for c in heard]))

    def hits(job: tuple, method: str, tau: float) -> list[bool]:
        s, av, cmaps, truths = job
        return [b is not None and Box("", 1.0, *b).iou(truth) >= 0.5
                for b, truth in zip(localizer.boxes(av, cmaps, s.image, tau=tau, method=method), truths)]

    # GrabCut (~25 ms a scene) releases the GIL: one thread per core
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        for key in BOX_RULE_GRID:
            box_hits[key] = [h for job_hits in pool.map(lambda job, key=key: hits(job, *key), box_jobs) for h in job_hits]
    pos = [i for i, s in enumerate(scenes) if s.kind in POSITIVE_KINDS]
    neg = [i for i, s in enumerate(scenes) if s.kind in NEGATIVE_KINDS]
    combination = None
    if combine:
        rows = np.array([scores[k] for k in COMBINED_SCORES], np.float64).T
        combination = fit_in_view_combination(rows[pos], rows[neg])
        scores["combined"] = [float(v) for v in combined_score(combination, **dict(zip(COMBINED_SCORES, rows.T)))]
    split = {k: ([v[i] for i in pos], [v[i] for i in neg]) for k, v in scores.items()}
    fits = {k: fit_in_view_threshold(p, n, max_fpr) for k, (p, n) in split.items()}
    chosen = choose_in_view_score(fits)
    fit = fits[chosen]
    gate = fit_audio_gate(levels)
    truths = [{classes.index(c) for c in scenes[i].sounding} for i in pos]
    cls_t, cls_f1 = fit_class_threshold([probs[i] for i in pos], truths)
    box_method, box_tau, box_rate = (fit_box_rule(box_hits) if all(box_hits.values())
                                     else (localizer.rules.box_method, localizer.rules.box_tau, float("nan")))
    per_kind = {k: {"n": sum(s.kind == k for s in scenes),
                    "declared_in_view": float(np.mean([scores[chosen][i] >= fit.threshold
                                                       for i, s in enumerate(scenes) if s.kind == k]))}
                for k in sorted(kinds)}
    report = {
        "rules": "in_view_threshold: max balanced accuracy (positives " + "/".join(POSITIVE_KINDS) + ", negatives "
                 + "/".join(NEGATIVE_KINDS) + f") with off-screen false-positive rate <= {max_fpr}, on the score ("
                 + " or ".join(scores) + ") that reaches the higher one"
                 + ("; in_view_combination: balanced logistic regression of in view vs off-screen over "
                    + ", ".join(COMBINED_SCORES) if combine else "") + "; audio_gate_db: "
                 "quietest clip - 20 dB within [-60, -40]; class_threshold: max mean F1 of the named classes; "
                 "box_method, box_tau: most class boxes with IoU >= 0.5",
        "source": source, "scenes": len(scenes), "max_fpr": max_fpr,
        "in_view": {"score": chosen, "tpr": fit.tpr, "fpr": fit.fpr, "balanced_accuracy": fit.balanced_accuracy},
        "in_view_combination": combination,
        "in_view_fits": {k: {"threshold": f.threshold, "tpr": f.tpr, "fpr": f.fpr,
                             "balanced_accuracy": f.balanced_accuracy} for k, f in fits.items()},
        "in_view_operating_points": {k: operating_points(p, n, sorted({*OPERATING_FPRS, max_fpr}))
                                     for k, (p, n) in split.items()},
        "class_f1": cls_f1, "box_hit_rate": box_rate,
        "box_hit_rates": ({m: {f"{t:g}": float(np.mean(box_hits[(m, t)])) for mm, t in BOX_RULE_GRID if mm == m}
                           for m in BOX_METHODS} if all(box_hits.values()) else {}),
        "quietest_clip_db": float(min(levels)), "per_kind": per_kind,
        "warnings": fpr_resolution_warnings(len(neg), max_fpr) + in_view_warnings(fit, max_fpr, chosen),
    }
    return Calibration(fit.threshold, gate, cls_t, box_tau, report, chosen, box_method, combination)
