"""Run report: loss/accuracy curves and a Figure-1-style picture grid, as PNG files.

The grid shows, per test scene: the frame with green boxes on sounding objects and red boxes on
silent ones, the class-agnostic av map, then the class-aware map of every class in view (sounding
classes should light up, silent ones stay dark), as in the paper's Figure 1.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from avsl_edge.avcoco import AVCoco, read_frame  # noqa: E402
from avsl_edge.evaluation import Prediction  # noqa: E402
from avsl_edge.metrics import ClusterMatch, class_maps, class_softmax  # noqa: E402
from training.metrics_log import read_log  # noqa: E402

GREEN, RED, WHITE = (40, 200, 40), (230, 40, 40), (255, 255, 255)


def plot_curves(log_path: Path, out: Path) -> Path:
    """Per-step losses/accuracies of both stages, smoothed, one panel per phase."""
    recs = read_log(log_path)
    panels = [("stage1_location", ["loss", "acc"]), ("stage1_classify", ["loss", "acc_visual", "acc_audio"]),
              ("stage2_mosaic", ["total", "kl", "acc_pos", "acc_neg", "match_top1"]),
              ("stage1_epoch", ["val_acc", "nmi"])]
    panels = [(p, keys) for p, keys in panels if any(r.get("phase") == p for r in recs)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.5 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, (phase, keys) in zip(axes[0], panels):
        rows = [r for r in recs if r.get("phase") == phase]
        for k in keys:
            ys = np.array([r[k] for r in rows if isinstance(r.get(k), (int, float))], dtype=float)
            if len(ys) == 0:
                continue
            win = max(1, len(ys) // 30)
            smooth = np.convolve(ys, np.ones(win) / win, mode="valid") if len(ys) > win else ys
            ax.plot(smooth, label=k, marker="o" if phase.endswith("epoch") else None)
        ax.set_title(phase)
        ax.set_xlabel("epoch" if phase.endswith("epoch") else "step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _heat(rgb: np.ndarray, m: np.ndarray, vmax: float | None = None) -> np.ndarray:
    h, w = rgb.shape[:2]
    m = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    m = np.clip(m / (vmax if vmax else max(float(m.max()), 1e-6)), 0, 1)
    jet = cv2.cvtColor(cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return (0.45 * rgb + 0.55 * jet).astype(np.uint8)


def _label(img: np.ndarray, text: str, color=WHITE) -> np.ndarray:
    img = img.copy()
    cv2.rectangle(img, (0, 0), (img.shape[1], 16), (0, 0, 0), -1)
    cv2.putText(img, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return img


def figure_grid(coco: AVCoco, preds: dict[int, Prediction], classes: list[str], match: ClusterMatch,
                out: Path, kinds=("mosaic", "duet", "solo_distractor", "offscreen"), per_kind: int = 2,
                tile: int = 160, softmax_scale: float = 3.0) -> Path:
    rows = []
    for kind in kinds:
        for im in coco.scenes(kind)[:per_kind]:
            p = preds[im.id]
            rgb = cv2.resize(read_frame(coco, im), (tile, tile), interpolation=cv2.INTER_AREA)
            framed = rgb.copy()
            sx, sy = tile / im.width, tile / im.height
            for o in im.objects:
                x, y, w, h = o.bbox
                cv2.rectangle(framed, (int(x * sx), int(y * sy)), (int((x + w) * sx), int((y + h) * sy)),
                              GREEN if o.sounding else RED, 2)
            cells = [_label(framed, kind), _label(_heat(rgb, p.av_map, 1.0), f"av map {p.av_score:.2f}")]
            if p.class_maps is not None:
                cm = class_maps(class_softmax(p.class_maps, softmax_scale), match)
                in_view = list(dict.fromkeys(o.category for o in im.objects))
                for name in in_view:
                    c = classes.index(name)
                    heard = name in im.sounding_categories
                    cells.append(_label(_heat(rgb, cm[c], 1.0), f"{name} ({'heard' if heard else 'silent'})",
                                        GREEN if heard else RED))
            rows.append(cells)
    if not rows:
        raise ValueError(f"{coco.root}: no scene of kinds {kinds} to draw")
    width = max(len(r) for r in rows)
    blank = np.zeros((tile, tile, 3), np.uint8)
    grid = np.concatenate([np.concatenate(r + [blank] * (width - len(r)), axis=1) for r in rows], axis=0)
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return out
