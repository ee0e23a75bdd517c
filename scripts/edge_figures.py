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


def figures(loc: avsl_edge.Localizer, data: Path) -> dict:
    coco = load_avcoco(data)
    out: dict[str, dict] = {}
    solo = coco.scenes("solo")
    if solo:
        top = anyb = declared = silent_lit = 0
        for im in solo:
            bgr = cv2.cvtColor(read_frame(coco, im), cv2.COLOR_RGB2BGR)
            clip = read_clip(coco, im)
            gt = next(o for o in im.objects if o.sounding)
            r = loc.localize(bgr, clip)
            declared += r.in_view
            ious = [b.iou(gt.bbox) for b in sorted(r.boxes, key=lambda b: -b.score)]
            top += bool(ious) and ious[0] >= 0.5
            anyb += any(i >= 0.5 for i in ious)
            silent_lit += bool(loc.localize(bgr, np.zeros(16000, np.float32)).sounding)
        n = len(solo)
        out["solo"] = {"n": n, "top_box_iou@0.5": 100.0 * top / n, "any_box_iou@0.5": 100.0 * anyb / n,
                       "declared_in_view": 100.0 * declared / n}
        out["silence"] = {"n": n, "lit": 100.0 * silent_lit / n}
    for kind in ("duet", "mosaic", "solo_distractor"):
        imgs = coco.scenes(kind)
        if not imgs:
            continue
        exact, prec, rec, ok = [], [], [], []
        for im in imgs:
            r = loc.localize(cv2.cvtColor(read_frame(coco, im), cv2.COLOR_RGB2BGR), read_clip(coco, im))
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
    off = coco.scenes("offscreen")
    if off:
        lit = [bool(loc.localize(cv2.cvtColor(read_frame(coco, im), cv2.COLOR_RGB2BGR), read_clip(coco, im)).sounding)
               for im in off]
        out["offscreen"] = {"n": len(off), "lit": 100.0 * np.mean(lit)}
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
