"""Overlay drawing with OpenCV: pure functions, readable from 320 px to 1080p.

    img = draw(frame_bgr, result)                         # heat maps + boxes + legend (BGR in, BGR out)
    img = draw(frame_rgb, result, rgb=True, style="contour")
    img = draw(frame_bgr, result, silent=[(x, y, w, h, "violin")])   # known silent objects in red

Each class has its own colour (:func:`class_colour`). Sounding classes get a translucent heat map
of where they are heard (their sounding map, see :meth:`Result.sounding_map`) or its contour, and
a box labelled with the class name and score; objects known to be visible but silent can be
outlined in red (dashed); a legend in the top-left corner lists what is heard, or says that
nothing is sounding in view / that the audio is silent. Line widths and text scale with the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from .result import Result

# A qualitative palette (RGB) with 12 well-separated colours; none of them is the silent red.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 255), (255, 160, 20), (40, 200, 70), (190, 80, 255), (0, 210, 210), (255, 90, 180),
    (170, 220, 0), (140, 90, 40), (255, 230, 0), (120, 140, 255), (0, 150, 110), (250, 130, 110),
)
SILENT_RGB = (230, 20, 20)
FONT = cv2.FONT_HERSHEY_SIMPLEX
STYLES = ("heat", "contour", "both", "none")


def class_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour of class ``index`` (stable across frames and runs)."""
    return PALETTE[int(index) % len(PALETTE)]


def _order(colour: tuple[int, int, int], rgb: bool) -> tuple[int, int, int]:
    return colour if rgb else (colour[2], colour[1], colour[0])


def scale_of(height: int, width: int) -> float:
    """Drawing scale: 1.0 for a 640x480 frame, ~2.25 at 1080p, never below 0.5 (320 px frames)."""
    return max(0.5, min(height, width) / 480.0)


def _text_ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``colour`` (any channel order)."""
    return (0, 0, 0) if (0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2]) > 140 else (255, 255, 255)


def blend_heat(img: np.ndarray, m: np.ndarray, colour: tuple[int, int, int], alpha: float = 0.55,
               floor: float = 0.25) -> None:
    """In place: tint ``img`` with ``colour`` where the (H, W) map ``m`` is high (relative to its max:
    transparent below ``floor``, ``alpha`` at the max)."""
    peak = float(m.max()) if m.size else 0.0
    if not peak > 0:
        return
    a = np.clip((m / peak - floor) / (1.0 - floor), 0.0, 1.0)
    ys, xs = np.nonzero(a > 0)
    if ys.size == 0:
        return
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    w = (alpha * a[y0:y1, x0:x1])[..., None].astype(np.float32)
    region = img[y0:y1, x0:x1].astype(np.float32)
    img[y0:y1, x0:x1] = np.clip(region * (1.0 - w) + np.asarray(colour, np.float32) * w + 0.5, 0, 255).astype(np.uint8)


def draw_contour(img: np.ndarray, m: np.ndarray, colour: tuple[int, int, int], level: float, thickness: int) -> None:
    """In place: the outline of ``m > level * max(m)``."""
    peak = float(m.max()) if m.size else 0.0
    if not peak > 0:
        return
    mask = (m > level * peak).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, colour, thickness, cv2.LINE_AA)


def _label(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], s: float,
           above: bool = True) -> None:
    """A filled tag with ``text`` whose bottom-left (``above``) or top-left corner is (x, y)."""
    fs, th = 0.5 * s, max(1, round(1.2 * s))
    (tw, tht), base = cv2.getTextSize(text, FONT, fs, th)
    pad = max(2, round(3 * s))
    h, w = img.shape[:2]
    bw, bh = tw + 2 * pad, tht + base + 2 * pad
    x = int(min(max(0, x), max(0, w - bw)))
    y0 = int(y - bh) if above else int(y)
    if above and y0 < 0:  # no room above: put it inside the box
        y0 = int(y)
    y0 = int(min(max(0, y0), max(0, h - bh)))
    cv2.rectangle(img, (x, y0), (x + bw, y0 + bh), colour, -1)
    cv2.putText(img, text, (x + pad, y0 + pad + tht), FONT, fs, _text_ink(colour), th, cv2.LINE_AA)


def draw_box(img: np.ndarray, box: tuple[float, float, float, float], colour: tuple[int, int, int], text: str,
             s: float, dashed: bool = False) -> None:
    """In place: an (x, y, w, h) box with a tag above it."""
    x, y, w, h = (int(round(v)) for v in box)
    t = max(1, round(2 * s))
    if dashed:
        dash = max(4, round(8 * s))
        for (ax, ay), (bx, by) in (((x, y), (x + w, y)), ((x + w, y), (x + w, y + h)),
                                   ((x + w, y + h), (x, y + h)), ((x, y + h), (x, y))):
            n = max(1, int(np.hypot(bx - ax, by - ay) // (2 * dash)))
            for i in range(n + 1):
                f0, f1 = min(1.0, 2 * i * dash / max(1.0, np.hypot(bx - ax, by - ay))), \
                    min(1.0, (2 * i + 1) * dash / max(1.0, np.hypot(bx - ax, by - ay)))
                p0 = (int(ax + (bx - ax) * f0), int(ay + (by - ay) * f0))
                p1 = (int(ax + (bx - ax) * f1), int(ay + (by - ay) * f1))
                cv2.line(img, p0, p1, colour, t, cv2.LINE_AA)
    else:
        cv2.rectangle(img, (x, y), (x + w, y + h), colour, t, cv2.LINE_AA)
    _label(img, text, x - t // 2, y - t // 2, colour, s)


def draw_legend(img: np.ndarray, entries: Sequence[tuple[str, tuple[int, int, int] | None]], s: float,
                title: str | None = None) -> None:
    """In place: a translucent panel in the top-left corner, one line per (text, swatch colour)."""
    fs, th = 0.5 * s, max(1, round(1.2 * s))
    pad, gap = max(3, round(6 * s)), max(2, round(4 * s))
    lines = ([(title, None)] if title else []) + list(entries)
    sizes = [cv2.getTextSize(t, FONT, fs, th)[0] for t, _ in lines]
    line_h = max(hh for _, hh in sizes) + gap
    sw = line_h - gap  # swatch side
    width = 2 * pad + max(w + (sw + gap if c is not None else 0) for (w, _), (_, c) in zip(sizes, lines))
    height = 2 * pad + len(lines) * line_h - gap
    h, w = img.shape[:2]
    x1, y1 = min(w, pad + width), min(h, pad + height)
    x0, y0 = min(pad, x1), min(pad, y1)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)
    y = y0 + pad
    for (text, colour), (tw, tht) in zip(lines, sizes):
        x = x0 + pad
        if colour is not None:
            cv2.rectangle(img, (x, y), (x + sw, y + sw), colour, -1)
            x += sw + gap
        cv2.putText(img, text, (x, y + sw - max(0, (sw - tht) // 2)), FONT, fs, (255, 255, 255), th, cv2.LINE_AA)
        y += line_h


def draw(image: np.ndarray, result: "Result", *, rgb: bool = False, style: str = "heat", boxes: bool = True,
         legend: bool = True, silent: Sequence[tuple[float, float, float, float, str]] | None = None,
         contour_level: float | None = None) -> np.ndarray:
    """The overlay of ``result`` on a copy of ``image`` ((H, W, 3) uint8, BGR unless ``rgb``).

    style: "heat" (translucent class colour where each sounding class is heard), "contour" (its
        outline at ``contour_level`` x max, default the box threshold), "both" or "none".
    silent: (x, y, w, h, class name) of objects known to be visible but silent, outlined in red.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    img = np.array(image, dtype=np.uint8, copy=True)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {img.shape}")
    h, w = img.shape[:2]
    if (h, w) != tuple(result.frame_size):
        raise ValueError(f"image is {w}x{h} but the result is for a {result.frame_size[1]}x{result.frame_size[0]} frame")
    s = scale_of(h, w)
    level = result.rules.get("box_tau", 0.5) if contour_level is None else contour_level
    colours = {c: _order(class_colour(i), rgb) for i, c in enumerate(result.classes)}
    for name in result.sounding:
        m = result.sounding_map(name)
        if style in ("heat", "both"):
            blend_heat(img, m, colours[name])
        if style in ("contour", "both"):
            draw_contour(img, m, colours[name], level, max(1, round(2 * s)))
    red = _order(SILENT_RGB, rgb)
    for x, y, bw, bh, name in silent or ():
        draw_box(img, (x, y, bw, bh), red, f"{name} (silent)", s, dashed=True)
    if boxes:
        for b in result.boxes:
            draw_box(img, (b.x, b.y, b.w, b.h), colours[b.label], f"{b.label} {b.score:.2f}", s)
    if legend:
        if not result.gate_open:
            entries: list[tuple[str, Any]] = [(f"silence ({result.audio_db:.0f} dBFS)", None)]
        elif not result.sounding:
            entries = [("nothing sounding in view", None)]
        else:
            entries = [(f"{c} {result.scores[c]:.2f}", colours[c]) for c in result.sounding]
        if silent:
            entries.append(("silent", red))
        draw_legend(img, entries, s, title="heard")
    return img
