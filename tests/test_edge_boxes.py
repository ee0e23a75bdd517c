"""Boxes from maps (`avsl_edge.boxes.sounding_boxes`), on hand-made 4x4 maps with known answers.

The av map says where the sound comes from; the heard classes' maps split the frame between them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from avsl_edge.boxes import heard_maps, largest_component, sounding_boxes, working_size
from avsl_edge.result import Box


def blob(cells: list[tuple[int, int]], size: int = 4, value: float = 1.0, floor: float = 0.01) -> np.ndarray:
    m = np.full((size, size), floor, np.float32)
    for r, c in cells:
        m[r, c] = value
    return m


def test_one_heard_class_gets_the_av_maps_box_whatever_its_class_map_says():
    av = blob([(0, 0), (0, 1), (1, 0), (1, 1)])               # top-left quarter
    class_map = blob([(3, 3)])                                 # elsewhere: ignored with one class
    (box,) = sounding_boxes(av, class_map[None], frame_hw=(400, 400), tau=0.5)
    x, y, w, h = box
    assert x == 0 and y == 0 and 150 < w < 250 and 150 < h < 250   # about the top-left quarter


def test_two_heard_classes_split_the_frame_and_each_boxes_its_own_sound():
    av = blob([(0, 0), (3, 3)])                                # sound at two corners
    left, right = np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32)
    left[:, :2], right[:, 2:] = 1.0, 1.0                       # class 0 owns the left half
    a, b = sounding_boxes(av, np.stack([left, right]), frame_hw=(400, 400), tau=0.5)
    assert a[0] + a[2] <= 200 and a[1] + a[3] <= 200           # top-left corner, in class 0's half
    assert b[0] >= 200 and b[1] >= 200                         # bottom-right corner, class 1's half


def test_a_quieter_source_in_its_own_part_still_gets_a_box():
    """The cut is relative to the av map's maximum in the class's part, not in the whole frame."""
    av = blob([(0, 0)], value=1.0) + blob([(3, 3)], value=0.2, floor=0.0)
    left, right = np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32)
    left[:, :2], right[:, 2:] = 1.0, 1.0
    _, quiet = sounding_boxes(av, np.stack([left, right]), frame_hw=(400, 400), tau=0.5)
    assert quiet is not None and quiet[0] >= 200 and quiet[1] >= 200


def test_a_class_whose_map_is_nowhere_the_largest_is_boxed_on_its_own_map():
    av = blob([(0, 0)])
    strong, weak = np.full((4, 4), 0.6, np.float32), blob([(3, 3)], value=0.5, floor=0.0)
    _, own = sounding_boxes(av, np.stack([strong, weak]), frame_hw=(400, 400), tau=0.5)
    assert own is not None and own[0] >= 200 and own[1] >= 200   # where its own map peaks


def test_the_frame_is_split_as_argmax_over_the_heard_classes_ties_to_the_first():
    rng = np.random.default_rng(0)
    av = rng.random((32, 40)).astype(np.float32)
    maps = rng.integers(0, 4, (3, 32, 40)).astype(np.float32)   # many ties
    owner = np.argmax(maps, axis=0)
    heard = heard_maps(av, maps)
    for j in range(3):
        np.testing.assert_array_equal(heard[j], np.where(owner == j, av, 0.0))


def test_boxes_scale_to_the_frame_and_the_working_size_caps_the_long_side():
    assert working_size((1080, 1920), 256) == (144, 256)
    assert working_size((100, 50), 256) == (100, 50)           # never upscaled
    av = blob([(1, 1), (1, 2), (2, 1), (2, 2)])                # the centre
    (small,) = sounding_boxes(av, av[None], frame_hw=(108, 192), tau=0.5)
    (big,) = sounding_boxes(av, av[None], frame_hw=(1080, 1920), tau=0.5)
    assert np.allclose(np.array(big) / 10, small, atol=8)
    cx, cy = big[0] + big[2] / 2, big[1] + big[3] / 2
    assert abs(cx - 960) < 30 and abs(cy - 540) < 30


def test_no_class_no_box_and_a_zero_map_gives_none():
    assert sounding_boxes(blob([(0, 0)]), np.zeros((0, 4, 4), np.float32), (64, 64), 0.5) == []
    assert sounding_boxes(np.zeros((4, 4), np.float32), np.ones((1, 4, 4), np.float32), (64, 64), 0.5) == [None]


def test_largest_component_is_8_connected():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True                # a diagonal: one 8-connected component
    mask[5, 5] = True
    assert largest_component(mask) == (0, 0, 3, 3)
    assert largest_component(np.zeros((3, 3), bool)) is None


@pytest.mark.parametrize("av, maps, tau", [
    (np.zeros((4, 4)), np.zeros((1, 3, 3)), 0.5),             # different map sizes
    (np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), 0.5),          # av map not 2-D
    (np.zeros((4, 4)), np.zeros((1, 4, 4)), 1.5),             # tau outside [0, 1]
])
def test_bad_maps_are_clear_errors(av, maps, tau):
    with pytest.raises(ValueError, match="sounding_boxes"):
        sounding_boxes(av, maps, (64, 64), tau)


def test_grabcut_boxes_follow_the_object_where_the_coarse_map_only_marks_it():
    # a 200x200 frame: a red disc (the instrument, its box 60..140 x 50..130) on a grey, noisy wall
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(128, 12, (200, 200, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:200, :200]
    frame[(xx - 100) ** 2 + (yy - 90) ** 2 <= 40 ** 2] = (30, 30, 220)
    truth = Box("disc", 1.0, 60, 50, 81, 81)
    av = blob([(1, 1), (1, 2), (2, 1), (2, 2)], value=1.0, floor=0.05)   # 4x4 cells: the centre quarter
    av[1, 1] = 0.6                                                      # brightest near the disc's centre
    (cut,) = sounding_boxes(av, av[None], (200, 200), tau=0.3, method="map")
    (grab,) = sounding_boxes(av, av[None], (200, 200), tau=0.3, method="grabcut", image=frame)
    assert truth.iou(cut) < 0.5                  # the map's blob is not the disc's outline
    assert truth.iou(grab) > 0.85                # GrabCut finds it from the blob


def test_grabcut_needs_the_frame_and_falls_back_to_the_map_where_it_cannot_run():
    av = blob([(1, 1), (1, 2), (2, 1), (2, 2)])
    with pytest.raises(ValueError, match="method 'grabcut' needs the frame"):
        sounding_boxes(av, av[None], (64, 64), 0.5, method="grabcut")
    with pytest.raises(ValueError, match="needs the frame"):                       # not this frame's size
        sounding_boxes(av, av[None], (64, 64), 0.5, method="grabcut", image=np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="method must be one of map, grabcut"):
        sounding_boxes(av, av[None], (64, 64), 0.5, method="snake")
    tiny = np.zeros((4, 4, 3), np.uint8)                                          # too small for GrabCut
    assert sounding_boxes(av, av[None], (4, 4), 0.5, method="grabcut", image=tiny) \
        == sounding_boxes(av, av[None], (4, 4), 0.5, method="map")
    flat = np.ones((4, 4), np.float32)                                            # no probable background
    assert sounding_boxes(flat, flat[None], (64, 64), 0.5, method="grabcut", image=np.zeros((64, 64, 3), np.uint8)) \
        == [(0.0, 0.0, 64.0, 64.0)]


def test_grabcut_boxes_do_not_depend_on_what_ran_before_or_on_which_thread():
    # GrabCut starts its colour models from k-means++ on OpenCV's per-thread random generator; on this
    # SynthMUSIC scene, unseeded, the box changes with the generator's state (4 boxes in 6 runs)
    from training.data.synth import SynthMusic  # torch-free

    scene = SynthMusic().scene("solo", 2)
    x, y, w, h = next(o for o in scene.objects if o.sounding).bbox
    rows, cols = scene.image.shape[:2]
    av = np.full((9, 9), 0.05, np.float32)
    cy, cx = int((y + h / 2) / rows * 9), int((x + w / 2) / cols * 9)
    av[max(0, cy - 1):cy + 2, max(0, cx - 1):cx + 2] = 0.7
    av[cy, cx] = 1.0

    def box() -> tuple:
        return sounding_boxes(av, av[None], (rows, cols), 0.3, method="grabcut", image=scene.image)[0]

    first = box()
    seen = set()
    for k in range(6):
        cv2.randu(np.zeros((k + 1, 1)), 0, 1)    # move the generator on, as other OpenCV calls would
        seen.add(box())
    with ThreadPoolExecutor(2) as pool:
        seen.update(pool.map(lambda _: box(), range(4)))
    assert seen == {first}
