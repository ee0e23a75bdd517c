"""Boxes from maps: one rectangle per heard class, in frame pixels (pure numpy + OpenCV).

    boxes = sounding_boxes(av_map, class_maps[named], frame_hw=(480, 640), tau=0.6)

The class-agnostic av map says *where* the sound comes from; the class maps say *which* of the
heard classes each place belongs to. So class j's box is the bounding rectangle of the largest
8-connected component of the pixels

    where class j's map is the largest of the heard classes' maps   (its part of the frame)
    and   the av map > tau x the av map's maximum over that part

With one heard class its part is the whole frame, and its box is the av map's own. A heard class
whose map is nowhere the largest owns no part; its box is then cut from its own class map (pixels
above tau x that map's maximum), so every heard class gets one. Both maps are upsampled bilinearly
(as the evaluation does) to a working size whose long side is at most ``resolution`` pixels, and
the box is scaled back to the frame.

Why not the class map alone: on SynthMUSIC's solo test scenes with the `cpu` model, the class
map's box hit the instrument (IoU >= 0.5) on 4-7 % of scenes at any tau, the av map's on 22-32 %
(docs/experiments.md, "Boxes").

Two ways to cut the box (``method``, :data:`BOX_METHODS`):

* ``"map"``: the rectangle around the heard map's pixels above ``tau`` x its max (above). Cheap,
  but the maps are 9x9 or 14x14 cells: the rectangle follows the map's blob, not the object's outline.
* ``"grabcut"``: the heard maps seed OpenCV's GrabCut on the frame itself, which then finds the
  objects' outlines from their colours. Seeds, at a working size whose long side is
  :data:`GRABCUT_RESOLUTION`: sure foreground where a heard map is >= ``GRABCUT_SURE`` (0.9) x its
  max, probable foreground where it is >= ``tau`` x its max, probable background elsewhere (nothing
  is sure background: an object may reach anywhere the map is low). One GrabCut for all heard
  classes; a class's box bounds the largest component of the foreground within its part of the
  frame. With the `cpu` model on the validation solo scenes the av map's peak lies inside the
  instrument's box on 95 % of them, while the "map" box hits (IoU >= 0.5) on 49 % and the "grabcut"
  box on 87 %; it costs ~20 ms a frame on one core. Where GrabCut cannot run (no probable
  background, a frame under 8 pixels a side) or keeps nothing of a class's part, the "map" box is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

XYWH = tuple[float, float, float, float]
WORKING_RESOLUTION = 256  # long side (pixels) at which maps are split and boxes cut
BOX_METHODS: tuple[str, ...] = ("map", "grabcut")
GRABCUT_RESOLUTION = 128  # long side (pixels) at which GrabCut runs (160: +1 point of hits, 1.6x the time)
GRABCUT_SURE = 0.9        # heard map >= this x its max: sure foreground
GRABCUT_ITERATIONS = 2    # 1: -3 points of hits; 5: no better, 1.3x the time
GRABCUT_MIN_SIDE = 8      # a frame smaller than this (working size) gets the "map" box
GRABCUT_SEED = 0x5EED     # OpenCV's random generator state before each GrabCut (determinism)


def upsample_map(m: np.ndarray, height: int, width: int) -> np.ndarray:
    """A low-resolution map -> (height, width) float32, bilinear (cv2.INTER_LINEAR, like the evaluation)."""
    return cv2.resize(np.ascontiguousarray(m, dtype=np.float32), (int(width), int(height)),
                      interpolation=cv2.INTER_LINEAR)


def working_size(frame_hw: Sequence[int], resolution: int) -> tuple[int, int]:
    """(height, width) of the frame scaled so that its long side is at most ``resolution``."""
    h, w = int(frame_hw[0]), int(frame_hw[1])
    s = min(1.0, resolution / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def largest_component(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the largest 8-connected component of a boolean mask; None if it is empty."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    # 16-bit labels (half the label memory traffic, about twice as fast) whenever the component
    # count cannot overflow them: fewer components than pixels
    ltype = cv2.CV_16U if m.size < 65535 else cv2.CV_32S
    n, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8, ltype=ltype)
    if n < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = (int(v) for v in stats[best, :4])
    return x, y, bw, bh


def heard_maps(av: np.ndarray, class_maps: np.ndarray) -> np.ndarray:
    """(n, H, W) where each of the n heard classes is heard, from maps at one resolution: the av
    map ``av`` (H, W) where that class's map in ``class_maps`` (n, H, W) is the largest of the
    heard classes' (0 elsewhere); a class whose map is nowhere the largest gets its own map."""
    if len(class_maps) <= 1:
        return np.broadcast_to(av, (len(class_maps), *av.shape)).copy()
    # per frame, so kept cheap: argmax over the few classes one comparison at a time into 8-bit
    # labels (ties go to the first, as np.argmax), and no temporaries for the parts: about 6x
    # faster at 224 px than np.argmax + np.where
    owner = np.zeros(class_maps.shape[1:], dtype=np.uint8 if len(class_maps) < 256 else np.intp)
    best = class_maps[0]
    for j in range(1, len(class_maps)):
        owner[class_maps[j] > best] = j
        best = np.maximum(best, class_maps[j])
    out = np.zeros(class_maps.shape, dtype=np.float32)
    for j in range(len(class_maps)):
        part = owner == j
        if part.any():
            np.copyto(out[j], av, where=part)
        else:
            out[j] = class_maps[j]
    return out


def heard_maps_at(av_map: np.ndarray, class_maps: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """(n, H, W) :func:`heard_maps` of low-resolution maps upsampled to ``size_hw`` = (H, W)."""
    h, w = int(size_hw[0]), int(size_hw[1])
    if len(class_maps) == 0:
        return np.zeros((0, h, w), np.float32)
    return heard_maps(upsample_map(av_map, h, w), np.stack([upsample_map(m, h, w) for m in class_maps]))


def grabcut_foreground(image: np.ndarray, heard: np.ndarray, tau: float) -> np.ndarray | None:
    """(H, W) bool: what GrabCut keeps as foreground on ``image`` (H, W, 3) uint8, seeded by the
    heard maps ``heard`` (n, H, W) at the image's size, each against its own max (module docstring).
    One GrabCut serves all n classes, so its cost does not grow with the classes named. None where
    GrabCut cannot run (then the caller cuts the maps themselves)."""
    mask = np.full(heard.shape[1:], cv2.GC_PR_BGD, np.uint8)
    seeded = [(m, float(m.max())) for m in heard if m.max() > 0]
    for m, peak in seeded:
        mask[m >= tau * peak] = cv2.GC_PR_FGD
    for m, peak in seeded:  # sure foreground last, so no class's probable cut overwrites another's sure one
        mask[m >= GRABCUT_SURE * peak] = cv2.GC_FGD
    if min(mask.shape) < GRABCUT_MIN_SIDE or not (mask == cv2.GC_PR_BGD).any() or not (mask == cv2.GC_FGD).any():
        return None
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)  # GrabCut's two colour GMMs
    # GrabCut seeds its colour models with k-means++ on OpenCV's per-thread random generator: reseed
    # it, so a frame's boxes do not depend on what ran before on this thread
    cv2.setRNGSeed(GRABCUT_SEED)
    cv2.grabCut(image, mask, None, *models, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def sounding_boxes(av_map: np.ndarray, class_maps: np.ndarray, frame_hw: Sequence[int], tau: float,
                   resolution: int = WORKING_RESOLUTION, method: str = "map",
                   image: np.ndarray | None = None) -> list[XYWH | None]:
    """One (x, y, w, h) box in frame pixels per row of ``class_maps`` (module docstring).

    av_map: (h, w) low-resolution av map; class_maps: (n, h, w), the maps of the n heard classes;
    frame_hw: the frame's (height, width); tau: the cut, a fraction of the maximum of the class's
    heard map (:func:`heard_maps`); method: "map" or "grabcut" (which needs ``image``, the frame
    itself, (H, W, 3) uint8 in either channel order). None only where the heard map is all zero."""
    av_low = np.asarray(av_map, dtype=np.float32)
    maps = np.asarray(class_maps, dtype=np.float32)
    if av_low.ndim != 2 or maps.ndim != 3 or maps.shape[1:] != av_low.shape:
        raise ValueError(f"sounding_boxes: av_map (h, w) and class_maps (n, h, w) of the same h, w; got "
                         f"{av_low.shape} and {maps.shape}")
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"sounding_boxes: tau is a fraction of the maximum in [0, 1], got {tau}")
    if method not in BOX_METHODS:
        raise ValueError(f"sounding_boxes: method must be one of {', '.join(BOX_METHODS)}, got {method!r}")
    grabcut = method == "grabcut"
    if grabcut and (image is None or np.ndim(image) != 3
                    or np.shape(image)[:2] != tuple(int(v) for v in frame_hw[:2])):
        raise ValueError(f"sounding_boxes: method 'grabcut' needs the frame, (H, W, 3) uint8 of frame_hw "
                         f"{tuple(frame_hw)}, got {None if image is None else np.shape(image)}")
    wh, ww = working_size(frame_hw, min(resolution, GRABCUT_RESOLUTION) if grabcut else resolution)
    small = (cv2.resize(np.ascontiguousarray(image, dtype=np.uint8), (ww, wh), interpolation=cv2.INTER_AREA)
             if grabcut else None)
    heard = heard_maps_at(av_low, maps, (wh, ww))
    fg = grabcut_foreground(small, heard, tau) if small is not None and len(heard) else None
    fx, fy = int(frame_hw[1]) / ww, int(frame_hw[0]) / wh
    boxes: list[XYWH | None] = []
    for m in heard:
        peak = float(m.max())
        # GrabCut's foreground within the class's part of the frame (where its heard map is not 0)
        found = largest_component(fg & (m > 0)) if fg is not None and peak > 0 else None
        if found is None:
            found = largest_component(m > tau * peak) if peak > 0 else None
        boxes.append(None if found is None else (found[0] * fx, found[1] * fy, found[2] * fx, found[3] * fy))
    return boxes
