"""What the edge Localizer gets right on an AV-COCO test split (torch-free).

    python scripts/edge_figures.py --model runs/cpu/bundle --data runs/cpu/data/test [--json out.json]

Per scene kind, with ``avsl_edge.localize`` as a user calls it (BGR frame, the clip at 16 kHz):
  solo             boxes hit the sounding instrument: the top-scoring box has IoU >= 0.5 with it
                   (also: any box does; the scene is declared sounding in view)
  duet, mosaic     the classes named equal the visible sounding classes (exact set), and the
                   per-scene precision / recall of the named classes
  offscreen        scenes where anything is named (lower is better)
  solo_distractor  the sounding instrument is named and the silent one is not
  silence          solo frames with an all-zero clip where anything is named
  noise            solo frames with white noise (-30 dBFS RMS) where anything is named

Negative-aware figures (as SLAVC, Mo & Morgado 2022, and the 2024 critical assessment of sound-source
localization ask), for the negatives (silence, noise, off-screen sound): the share of the frame that
the drawn boxes cover, the largest av-map value and the share of the frame where the av map is at
least 0.5; and over in-view scenes (solo, duet, mosaic, solo_distractor) against each negative kind,
the average precision and the best F1 of the in-view decision score (the rules' in-view score when
the audio gate is open, below every score when it is closed), threshold-free, beside the positives'
share (the AP of a score that carries nothing; declaring everything in view has F1 2p / (1 + p)). These need
scikit-learn's metrics (the `train` extra).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import avsl_edge  # noqa: E402
from avsl_edge.avcoco import load_avcoco, read_clip, read_frame  # noqa: E402
from avsl_edge.boxes import BOX_METHODS  # noqa: E402
from avsl_edge.localizer import IN_VIEW_SCORES  # noqa: E402
from avsl_edge.options import thread_count  # noqa: E402
from avsl_edge.result import Result  # noqa: E402

NOISE_DBFS = -30.0        # the noise-only clips' RMS level: well above any calibrated audio gate
NOISE_SEED = 2024
POSITIVE_KINDS = ("solo", "duet", "mosaic", "solo_distractor")
NEGATIVE_KINDS = ("silence", "noise", "offscreen")


def decision_score(r: Result) -> float:
    """The score the in-view rule thresholds, or -1 (below every score) when the audio gate is closed."""
    score = getattr(r, r.rules["in_view_score"])  # Result holds each in-view score under its rule name
    return float(score) if r.gate_open and score is not None else -1.0


def lit_share(r: Result) -> float:
    """The share of the frame under the boxes drawn (their union)."""
    h, w = r.frame_size
    mask = np.zeros((h, w), bool)
    for b in r.boxes:
        mask[max(0, int(b.y)):max(0, int(np.ceil(b.y + b.h))), max(0, int(b.x)):max(0, int(np.ceil(b.x + b.w)))] = True
    return float(mask.mean())


def negative_figures(results: list[Result]) -> dict[str, float]:
    """What a negative (nothing sounding in view) lights: scenes named anything, box share of the
    frame, the av map's max and its share >= 0.5 (means over the scenes, %, but the map max)."""
    return {"n": len(results), "lit": 100.0 * float(np.mean([bool(r.sounding) for r in results])),
            "box_share_of_frame": 100.0 * float(np.mean([lit_share(r) for r in results])),
            "av_map_max": float(np.mean([r.av_score for r in results])),
            "av_map_share@0.5": 100.0 * float(np.mean([(r.av_map_lowres >= 0.5).mean() for r in results]))}


def separation(positives: list[float], negatives: list[float]) -> dict[str, float]:
    """Average precision and the best F1 (and its threshold) of in view (positives) vs negatives."""
    from sklearn.metrics import average_precision_score, precision_recall_curve  # noqa: PLC0415

    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    s = np.r_[positives, negatives]
    precision, recall, thresholds = precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return {"positive_share": 100.0 * len(positives) / len(y),  # AP of a score that carries nothing
            "ap": 100.0 * float(average_precision_score(y, s)), "max_f1": 100.0 * float(f1[best]),
            "threshold_at_max_f1": float(thresholds[best]) if len(thresholds) else float("nan")}


def figures(loc: avsl_edge.Localizer, data: Path) -> dict:
    coco = load_avcoco(data)
    out: dict[str, dict] = {}
    scores: dict[str, list[float]] = {k: [] for k in POSITIVE_KINDS + NEGATIVE_KINDS}
    negatives: dict[str, list[Result]] = {k: [] for k in NEGATIVE_KINDS}
    rng = np.random.default_rng(NOISE_SEED)
    solo = coco.scenes("solo")
    if solo:
        top = anyb = declared = 0
        for im in solo:
            bgr = cv2.cvtColor(read_frame(coco, im), cv2.COLOR_RGB2BGR)
            clip = read_clip(coco, im)
            gt = next(o for o in im.objects if o.sounding)
            r = loc.localize(bgr, clip)
            scores["solo"].append(decision_score(r))
            declared += r.in_view
            ious = [b.iou(gt.bbox) for b in sorted(r.boxes, key=lambda b: -b.score)]
            top += bool(ious) and ious[0] >= 0.5
            anyb += any(i >= 0.5 for i in ious)
            noise = (rng.standard_normal(16000) * 10 ** (NOISE_DBFS / 20)).astype(np.float32)
            for kind, audio in (("silence", np.zeros(16000, np.float32)), ("noise", noise)):
                negatives[kind].append(loc.localize(bgr, audio))
        n = len(solo)
        out["solo"] = {"n": n, "top_box_iou@0.5": 100.0 * top / n, "any_box_iou@0.5": 100.0 * anyb / n,
                       "declared_in_view": 100.0 * declared / n}
    for kind in ("duet", "mosaic", "solo_distractor"):
        imgs = coco.scenes(kind)
        if not imgs:
            continue
        exact, prec, rec, ok = [], [], [], []
        for im in imgs:
            r = loc.localize(cv2.cvtColor(read_frame(coco, im), cv2.COLOR_RGB2BGR), read_clip(coco, im))
            scores[kind].append(decision_score(r))
            truth = {o.category for o in im.objects if o.sounding}
            silent = {o.category for o in im.objects if not o.sounding}
            named = set(r.sounding)
            exact.append(named == truth)
            prec.append(len(named & truth) / len(named) if named else 0.0)
            rec.append(len(named & truth) / len(truth))
            ok.append(truth <= named and not (named & silent))
        row = {"n": len(imgs), "exact_classes": 100.0 * np.mean(exact), "precision": 100.0 * np.mean(prec),
               "recall": 100.0 * np.mean(rec)}
        if kind == "solo_distractor":
            row["sounding_named_silent_not"] = 100.0 * np.mean(ok)
        out[kind] = row
    negatives["offscreen"] = [loc.localize(cv2.cvtColor(read_frame(coco, im), cv2.COLOR_RGB2BGR), read_clip(coco, im))
                              for im in coco.scenes("offscreen")]
    for kind, results in negatives.items():
        if results:
            out[kind] = negative_figures(results)
            scores[kind] = [decision_score(r) for r in results]
    positives = [s for k in POSITIVE_KINDS for s in scores[k]]
    if positives and any(scores[k] for k in NEGATIVE_KINDS):
        out["in_view_vs_negatives"] = {k: separation(positives, scores[k]) for k in NEGATIVE_KINDS if scores[k]}
        out["in_view_vs_negatives"]["all"] = separation(positives, [s for k in NEGATIVE_KINDS for s in scores[k]])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="bundle (default: $AVSL_EDGE_MODEL or the last pipeline run)")
    p.add_argument("--data", type=Path, required=True, help="AV-COCO test split")
    p.add_argument("--variant", default=None)
    p.add_argument("--threads", type=thread_count, default=0)
    p.add_argument("--in-view-threshold", type=float, help="override the calibrated threshold (0: always in view)")
    p.add_argument("--in-view-score", choices=IN_VIEW_SCORES, help="override the calibrated in-view score")
    p.add_argument("--box-tau", type=float, help="override the calibrated box cut (a fraction of the av map's max)")
    p.add_argument("--box-method", choices=BOX_METHODS, help="override the calibrated way of cutting boxes")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    loc = avsl_edge.load(args.model, variant=args.variant, intra_op_threads=args.threads,
                         in_view_threshold=args.in_view_threshold, in_view_score=args.in_view_score,
                         box_tau=args.box_tau, box_method=args.box_method)
    result = {"bundle": str(loc.bundle.root), "rules": loc.rules.to_dict(), "figures": figures(loc, args.data)}
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
