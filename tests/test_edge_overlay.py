"""Overlay drawing: a colour per class, heat maps or contours, labelled boxes, silent objects in
red, a legend; the same result drawn at 320 px and at 1080p."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import avsl_edge
from avsl_edge import overlay
from avsl_edge.backends import CPU_EP


@pytest.fixture(scope="module")
def lit(smoke_bundle: Path) -> avsl_edge.Localizer:
    """Decisions relaxed so that classes are named whatever the (barely trained) smoke model says
    (fp32: the variant "auto" takes depends on this host's timings)."""
    return avsl_edge.load(smoke_bundle, providers=[CPU_EP], variant="fp32", intra_op_threads=1, in_view_threshold=0.0,
                          class_threshold=0.2)


@pytest.fixture(scope="module")
def scene():
    from training.data.synth import SynthMusic

    return SynthMusic().scene("duet", 5)


def _colour_pixels(img: np.ndarray, bgr: tuple[int, int, int], tol: int = 12) -> int:
    return int(np.count_nonzero(np.all(np.abs(img.astype(int) - np.array(bgr)) <= tol, axis=-1)))


@pytest.mark.parametrize("width,height", [(320, 240), (1920, 1080)])
def test_overlay_is_drawn_to_scale(lit, scene, width, height, tmp_path):
    frame = cv2.resize(cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR), (width, height))
    r = lit.localize(frame, scene.audio)
    assert r.sounding and r.boxes
    silent = [(0.05 * width, 0.55 * height, 0.3 * width, 0.3 * height, "violin")]
    img = r.plot(silent=silent)
    cv2.imwrite(str(tmp_path / f"overlay_{width}.png"), img)
    assert img.shape == frame.shape and img.dtype == np.uint8 and not np.array_equal(img, frame)
    assert r.speed["overlay"] > 0
    s = overlay.scale_of(height, width)
    assert 0.5 <= s < 0.6 if width == 320 else s == pytest.approx(2.25)
    # each sounding class's box and tag are drawn in its own colour (BGR here)
    for b in r.boxes:
        rgb = overlay.class_colour(r.classes.index(b.label))
        assert _colour_pixels(img, rgb[::-1]) > 20 * s * s, b.label
    # the silent object is outlined in red, and the legend panel is there (darkened corner)
    assert _colour_pixels(img, overlay.SILENT_RGB[::-1]) > 20 * s * s
    w_leg, h_leg = overlay.legend_size([("heard", None), *[(f"{c} 0.00", (0, 0, 0)) for c in r.sounding],
                                        ("silent", (0, 0, 0))], s)
    assert w_leg < width / 2 and h_leg < height / 2  # readable without covering the picture
    darker = img.astype(int).sum(-1) < frame.astype(int).sum(-1) * 0.5
    corners = [darker[:h_leg, :w_leg], darker[:h_leg, -w_leg:], darker[-h_leg:, :w_leg], darker[-h_leg:, -w_leg:]]
    assert max(c.mean() for c in corners) > 0.5


def test_overlay_options_and_colour_orders(lit, scene):
    rgb_frame = scene.image
    r = lit.localize(rgb_frame, scene.audio, rgb=True)
    heat = r.plot()                                  # RGB in, RGB out
    first = overlay.class_colour(r.classes.index(r.boxes[0].label))
    assert _colour_pixels(heat, first) > 20
    contour = r.plot(style="contour", legend=False, boxes=False)
    assert not np.array_equal(contour, rgb_frame) and _colour_pixels(contour, first) > 5
    assert np.array_equal(r.plot(style="none", legend=False, boxes=False), rgb_frame)
    with pytest.raises(ValueError, match="style must be one of"):
        r.plot(style="glow")
    with pytest.raises(ValueError, match="224x224 frame"):
        overlay.draw(np.zeros((10, 10, 3), np.uint8), r)
    assert len({overlay.class_colour(i) for i in range(len(r.classes))}) == len(r.classes)


def test_nothing_sounding_is_said_in_the_legend(smoke_bundle, scene):
    quiet = avsl_edge.load(smoke_bundle, providers=[CPU_EP], intra_op_threads=1)
    r = quiet.localize(scene.image, np.zeros(8000, np.int16), rgb=True)
    assert not r.gate_open and r.boxes == []
    img = r.plot()
    changed = np.any(img != scene.image, axis=-1)
    assert changed.any() and changed[: img.shape[0] // 2, : img.shape[1] // 2].mean() > 0.02  # the legend, top-left


def test_heat_tints_only_above_its_floor_and_most_at_the_peak():
    """Two bright corners with a dark middle, floor 0.5: the dark middle stays as it was (though it
    lies between the lit corners), the tint reaches alpha at the peaks."""
    img = np.full((100, 100, 3), 200, np.uint8)
    yy, xx = np.mgrid[0:100, 0:100]
    m = np.maximum(1 - np.hypot(yy, xx) / 40, 1 - np.hypot(99 - yy, 99 - xx) / 40).clip(0, 1).astype(np.float32)
    overlay.blend_heat(img, m, (0, 0, 0), alpha=0.5, floor=0.5)
    assert np.all(img[m <= 0.5] == 200)                       # at or below the floor: untouched
    assert np.all(img[m > 0.6] < 200)                          # above: tinted
    assert abs(int(img[0, 0, 0]) - 100) <= 1                   # 50 % at the peak
    with pytest.raises(ValueError, match="floor must be in"):
        overlay.blend_heat(img, m, (0, 0, 0), floor=1.0)      # would divide by 1 - floor = 0
