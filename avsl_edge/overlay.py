"""Overlay drawing with OpenCV: pure functions, readable from 320 px to 1080p.

    img = draw(frame_bgr, result)                         # heat maps + boxes + legend (BGR in, BGR out)
    img = draw(frame_rgb, result, rgb=True, style="contour")
    img = draw(frame_bgr, result, silent=[(x, y, w, h, "violin")])   # known silent objects in red

Each class has its own colour (:func:`class_colour`). Sounding classes get a translucent heat map
of where they are heard (:meth:`Result.heard_map`: the av map where their class map leads) or
its contour, and a box labelled with the class name and score; objects known to be visible but
silent can be outlined in red (dashed); a legend in the top-left corner lists what is heard, or
says that nothing is sounding in view / that the audio is silent. Line widths and text scale with
the frame.
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
    transparent below ``floor``, ``alpha`` at the max). uint8 arithmetic on the lit region only."""
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"blend_heat: floor must be in [0, 1), got {floor}")
    peak = float(m.max()) if m.size else 0.0
    if not peak > 0:
        return
    lit = m > floor * peak
    rows, cols = np.nonzero(lit.any(axis=1))[0], np.nonzero(lit.any(axis=0))[0]
    if rows.size == 0:
        return
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # convertScaleAbs takes |m * scale + beta|: clamp at the floor first, so it is 0 (transparent) below it
    a = cv2.convertScaleAbs(np.maximum(m[y0:y1, x0:x1], floor * peak), alpha=255.0 * alpha / ((1.0 - floor) * peak),
                            beta=-255.0 * alpha * floor / (1.0 - floor))
    a3 = cv2.merge([a, a, a])
    region = img[y0:y1, x0:x1]
    tint = np.empty_like(region)
    tint[:] = colour
    img[y0:y1, x0:x1] = cv2.add(cv2.multiply(region, cv2.bitwise_not(a3), scale=1 / 255),
                                cv2.multiply(tint, a3, scale=1 / 255))


def draw_contour(img: np.ndarray, m: np.ndarray, colour: tuple[int, int, int], level: float, thickness: int) -> None:
    """In place: the outline of ``m > level * max(m)``."""
    peak = float(m.max()) if m.size else 0.0
    if not peak > 0:
        return
    mask = (m > level * peak).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, colour, thickness, cv2.LINE_AA)


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(img: np.ndarray, text: str, box: Rect, colour: tuple[int, int, int], s: float,
           taken: list[Rect] | None = None) -> Rect:
    """A filled tag with ``text`` at the first free spot among: above the box's top-left corner,
    inside it under the top edge, below its bottom edge (``taken``: tags already drawn)."""
    fs, th = 0.6 * s, max(1, round(1.4 * s))
    (tw, tht), base = cv2.getTextSize(text, FONT, fs, th)
    pad = max(2, round(3 * s))
    h, w = img.shape[:2]
    bw, bh = tw + 2 * pad, tht + base + 2 * pad
    x = int(min(max(0, box[0]), max(0, w - bw)))

    def at(y: int) -> Rect:
        y = int(min(max(0, y), max(0, h - bh)))
        return (x, y, x + bw, y + bh)

    spots = [at(box[1] - bh), at(box[1]), at(box[3])]
    if box[1] - bh < 0:  # no room above: inside first
        spots = spots[1:] + spots[:1]
    taken = taken if taken is not None else []
    rect = next((r for r in spots if not any(_overlaps(r, t) for t in taken)), spots[0])
    cv2.rectangle(img, rect[:2], (rect[2] - 1, rect[3] - 1), colour, -1)
    cv2.putText(img, text, (rect[0] + pad, rect[1] + pad + tht), FONT, fs, _text_ink(colour), th, cv2.LINE_AA)
    taken.append(rect)
    return rect


def draw_box(img: np.ndarray, box: tuple[float, float, float, float], colour: tuple[int, int, int], text: str,
             s: float, dashed: bool = False, taken: list[Rect] | None = None) -> None:
    """In place: an (x, y, w, h) box with a tag (placed clear of the ``taken`` tags)."""
    x, y, w, h = (int(round(v)) for v in box)
    t = max(1, round(2 * s))
    if dashed:
        dash = max(4, round(8 * s))
        for (ax, ay), (bx, by) in (((x, y), (x + w, y)), ((x + w, y), (x + w, y + h)),
                                   ((x + w, y + h), (x, y + h)), ((x, y + h), (x, y))):
            length = max(1.0, float(np.hypot(bx - ax, by - ay)))
            for i in range(int(length // (2 * dash)) + 1):
                f0, f1 = min(1.0, 2 * i * dash / length), min(1.0, (2 * i + 1) * dash / length)
                cv2.line(img, (int(ax + (bx - ax) * f0), int(ay + (by - ay) * f0)),
                         (int(ax + (bx - ax) * f1), int(ay + (by - ay) * f1)), colour, t, cv2.LINE_AA)
    else:
        cv2.rectangle(img, (x, y), (x + w, y + h), colour, t, cv2.LINE_AA)
    _label(img, text, (x - t // 2, y - t // 2, x + w, y + h + t), colour, s, taken)


def legend_size(entries: Sequence[tuple[str, tuple[int, int, int] | None]], s: float) -> tuple[int, int]:
    """(width, height) of the legend panel."""
    fs, th = 0.6 * s, max(1, round(1.4 * s))
    pad, gap = max(3, round(6 * s)), max(2, round(4 * s))
    sizes = [cv2.getTextSize(t, FONT, fs, th)[0] for t, _ in entries]
    line_h = max(hh for _, hh in sizes) + gap
    sw = line_h - gap
    width = 2 * pad + max(w + (sw + gap if c is not None else 0) for (w, _), (_, c) in zip(sizes, entries))
    return width, 2 * pad + len(entries) * line_h - gap


def draw_legend(img: np.ndarray, entries: Sequence[tuple[str, tuple[int, int, int] | None]], s: float,
                avoid: Sequence[Rect] = ()) -> Rect:
    """In place: a translucent panel, one line per (text, swatch colour), in the corner that covers
    the least of the ``avoid`` rectangles (boxes), top-left first."""
    fs, th = 0.6 * s, max(1, round(1.4 * s))
    pad, gap = max(3, round(6 * s)), max(2, round(4 * s))
    sizes = [cv2.getTextSize(t, FONT, fs, th)[0] for t, _ in entries]
    line_h = max(hh for _, hh in sizes) + gap
    sw = line_h - gap  # swatch side
    width, height = legend_size(entries, s)
    h, w = img.shape[:2]
    m = pad
    corners = [(m, m), (w - m - width, m), (m, h - m - height), (w - m - width, h - m - height)]

    def covered(c: tuple[int, int]) -> int:
        r = (c[0], c[1], c[0] + width, c[1] + height)
        return sum(max(0, min(r[2], a[2]) - max(r[0], a[0])) * max(0, min(r[3], a[3]) - max(r[1], a[1])) for a in avoid)

    cx, cy = min(corners, key=covered)
    x0, y0 = max(0, cx), max(0, cy)
    x1, y1 = min(w, x0 + width), min(h, y0 + height)
    if x1 <= x0 or y1 <= y0:
        return (x0, y0, x0, y0)
    roi = img[y0:y1, x0:x1]
    roi[:] = cv2.convertScaleAbs(roi, alpha=0.35)
    y = y0 + pad
    for (text, colour), (_tw, tht) in zip(entries, sizes):
        x = x0 + pad
        if colour is not None:
            cv2.rectangle(img, (x, y), (x + sw, y + sw), colour, -1)
            x += sw + gap
        cv2.putText(img, text, (x, y + sw - max(0, (sw - tht) // 2)), FONT, fs, (255, 255, 255), th, cv2.LINE_AA)
        y += line_h
    return (x0, y0, x1, y1)


def draw(image: np.ndarray, result: Result, *, rgb: bool = False, style: str = "heat", boxes: bool = True,
         legend: bool = True, silent: Sequence[tuple[float, float, float, float, str]] | None = None,
         contour_level: float | None = None) -> np.ndarray:
    """The overlay of ``result`` on a copy of ``image`` ((H, W, 3) uint8, BGR unless ``rgb``).

    style: "heat" (translucent class colour where each sounding class is heard: above
        ``contour_level`` x max, default the box threshold, the region its box is cut from),
        "contour" (that region's outline), "both" or "none".
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
        m = result.heard_map(name)
        if style in ("heat", "both"):  # the region the box is cut from: above the contour level
            blend_heat(img, m, colours[name], floor=min(level, 0.9))
        if style in ("contour", "both"):
            draw_contour(img, m, colours[name], level, max(1, round(2 * s)))
    red = _order(SILENT_RGB, rgb)
    taken: list[Rect] = []
    for x, y, bw, bh, name in silent or ():
        draw_box(img, (x, y, bw, bh), red, f"{name} (silent)", s, dashed=True, taken=taken)
    if boxes:
        for b in result.boxes:
            draw_box(img, (b.x, b.y, b.w, b.h), colours[b.label], f"{b.label} {b.score:.2f}", s, taken=taken)
    if legend:
        if not result.gate_open:
            entries: list[tuple[str, Any]] = [(f"silence ({result.audio_db:.0f} dBFS)", None)]
        elif not result.sounding:
            entries = [("nothing sounding in view", None)]
        else:
            entries = [(f"{c} {result.scores[c]:.2f}", colours[c]) for c in result.sounding]
        if silent:
            entries.append(("silent", red))
        avoid = [(int(b.x), int(b.y), int(b.x + b.w), int(b.y + b.h)) for b in result.boxes] + \
            [(int(x), int(y), int(x + bw), int(y + bh)) for x, y, bw, bh, _ in silent or ()] + taken
        draw_legend(img, [("heard", None), *entries], s, avoid)
    return img
