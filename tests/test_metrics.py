"""Examples of the DSOL localization metrics on hand-made maps with known answers."""

import itertools
import json

import numpy as np
import pytest
import sklearn.metrics
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from avsl_edge.metrics import (
    CURVE_THRESHOLDS,
    ClusterMatch,
    Thresholds,
    auc,
    baseline_probs,
    binary_iou,
    box_mask,
    centred_gaussian_map,
    ciou_image,
    class_ious,
    class_maps,
    class_softmax,
    cluster_class_affinity,
    false_positive_rate,
    frame_iou,
    match_clusters,
    multi_source,
    normalise_boxes,
    nsa_image,
    predicted_mask,
    silent_object_lit_rate,
    single_source,
    success_curve,
    success_rate,
    uniform_map,
    upsample,
)

S = 224
TOP_HALF = [0.0, 0.0, 1.0, 0.5]  # rows 0..111
BOTTOM_HALF = [0.0, 0.5, 1.0, 0.5]  # rows 112..223
CENTRE = [0.25, 0.25, 0.5, 0.5]  # rows/cols 56..167


def top_half_map_14():
    """A 14x14 map lighting rows 0..6 (the top half at model resolution)."""
    m = np.zeros((14, 14), np.float32)
    m[:7] = 1.0
    return m


def mask_map(boxes):
    """A 224x224 map that is exactly 1 on the box union and 0 elsewhere (upsampling is the identity)."""
    return box_mask(boxes).astype(np.float32)


# ---------------------------------------------------------------- thresholds / config


def test_default_thresholds_are_the_original_code_values():
    t = Thresholds()
    assert (t.solo_tau, t.mosaic_ciou_tau, t.duet_ciou_tau, t.nsa_threshold) == (0.1, 0.5, 0.2, 0.2)
    assert t.eval_size == 224 and t.softmax_scale == 3.0
    assert len(t.curve_thresholds) == 21
    # bit-for-bit the original's [0.05 * i for i in range(21)]: the "0.3" point is 0.30000000000000004
    assert t.curve_thresholds[6] == 0.05 * 6 != 0.3
    assert t.curve_thresholds[10] == 0.5 and t.curve_thresholds[-1] == 1.0
    assert t.ciou_tau("mosaic") == t.ciou_tau("synthetic") == 0.5 and t.ciou_tau("duet") == 0.2


def test_bad_thresholds_are_rejected():
    with pytest.raises(ValueError, match="solo_tau"):
        Thresholds(solo_tau=1.5)
    with pytest.raises(ValueError, match="strictly increasing"):
        Thresholds(curve_thresholds=(0.0, 0.5, 0.5, 1.0))
    with pytest.raises(ValueError, match="unknown multi-source protocol"):
        Thresholds().ciou_tau("solo")


# ---------------------------------------------------------------- boxes and upsampling


def test_box_mask_truncates_scaled_end_points():
    m = box_mask(CENTRE)
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (56, 167, 56, 167)
    # int(x*224) and int(x*224 + w*224): 0.1*224 = 22.4 -> 22, 22.4 + 0.3*224 = 89.6 -> 89 (exclusive)
    m = box_mask([0.1, 0.1, 0.3, 0.3])
    assert m[22, 22] and m[88, 88] and not m[89, 50] and not m[21, 50]
    assert m.sum() == 67 * 67


def test_box_mask_is_the_union_and_clips_to_the_frame():
    union = box_mask([TOP_HALF, CENTRE])
    assert union.sum() == 112 * 224 + 56 * 112  # top half plus the lower half of the centre box
    assert box_mask([-0.5, -0.5, 0.75, 0.75]).sum() == 56 * 56  # clipped, not wrapped around
    assert box_mask([]).sum() == 0
    # a trailing category column (the synthetic box files) is ignored
    assert np.array_equal(box_mask([[0.25, 0.25, 0.5, 0.5, 13]]), box_mask(CENTRE))


def test_box_errors_name_the_box():
    with pytest.raises(ValueError, match="box 1 has a negative width"):
        box_mask([CENTRE, [0.1, 0.1, -0.2, 0.1]])
    with pytest.raises(ValueError, match="non-finite"):
        box_mask([0.1, np.nan, 0.2, 0.2])


def test_normalise_boxes_from_avcoco_pixels():
    b = normalise_boxes([[40.0, 52.5, 96.0, 80.0]], width=320, height=210)
    assert np.allclose(b, [[0.125, 0.25, 0.3, 80 / 210]])


def test_upsample_is_opencv_bilinear():
    m = top_half_map_14()
    up = upsample(m)
    assert up.shape == (224, 224) and up.dtype == np.float32
    # bilinear with half-pixel centres: row r samples source row (r + 0.5) / 16 - 0.5
    assert up[111, 0] == 0.53125 and up[112, 0] == 0.46875 and up[117, 0] == 0.15625 and up[118, 0] == 0.09375
    assert np.array_equal(upsample(up), up)  # a 224 map is left as it is
    assert np.array_equal(upsample(m[None]), up)  # (1, h, w) is accepted
    with pytest.raises(ValueError, match="NaN"):
        upsample(np.full((14, 14), np.nan))


# ---------------------------------------------------------------- single-frame IoU


def test_perfect_map_over_the_box_has_iou_one():
    assert frame_iou(mask_map(CENTRE), CENTRE) == 1.0


def test_map_lighting_the_wrong_half_has_iou_zero():
    assert frame_iou(mask_map(TOP_HALF), BOTTOM_HALF) == 0.0
    left = np.zeros((14, 14), np.float32)
    left[:, :4] = 1.0  # upsampled + thresholded at 0.1: columns 0..69, far from the right half
    assert frame_iou(left, [0.5, 0.0, 0.5, 1.0]) == 0.0


def test_half_overlapping_map_has_the_exact_iou():
    # pred = top half (rows 0..111), gt = full-width band of rows 56..167: |pred & gt| = 56 rows,
    # |gt| = 112 rows, |pred \ gt| = 56 rows -> 56 / (112 + 56) = 1/3
    band = [0.0, 0.25, 1.0, 0.5]
    assert frame_iou(mask_map(TOP_HALF), band) == 56 / 168
    # against the centre square: 56x112 overlap, 112x112 GT, 112x224 - 56x112 predicted outside
    assert frame_iou(mask_map(TOP_HALF), CENTRE) == (56 * 112) / (112 * 112 + 112 * 224 - 56 * 112)


def test_threshold_is_a_fraction_of_the_map_max():
    m = top_half_map_14()
    # tau=0.1 keeps the bilinear ramp down to row 117 (value 0.15625 > 0.1): 118 rows lit
    assert predicted_mask(m, 0.1).sum() == 118 * 224
    assert frame_iou(m, TOP_HALF, tau=0.1) == 112 / 118
    # tau=0.5 cuts the ramp exactly at the half: a perfect match
    assert predicted_mask(m, 0.5).sum() == 112 * 224
    assert frame_iou(m, TOP_HALF, tau=0.5) == 1.0
    # scaling the map changes nothing: the threshold follows the per-map max
    assert np.array_equal(predicted_mask(7 * m, 0.1), predicted_mask(m, 0.1))
    # a flat background is off while it stays at or below 10 % of the peak, then all of it lights up
    centre = mask_map(CENTRE)
    assert frame_iou(centre + np.float32(0.09), CENTRE) == 1.0  # 0.09 < 0.1 * 1.09
    assert frame_iou(centre + np.float32(0.12), CENTRE) == 0.25  # 0.12 > 0.1 * 1.12: whole frame
    # the comparison is strict: a pixel exactly at tau * max is off, and an all-zero map predicts nothing
    assert frame_iou(np.where(centre > 0, 1.0, 0.5).astype(np.float32), CENTRE, tau=0.5) == 1.0
    assert predicted_mask(np.zeros((14, 14)), 0.1).sum() == 0


def test_binary_iou_edge_cases():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    assert binary_iou(empty, empty) == 0.0
    assert binary_iou(full, empty) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        binary_iou(full, np.ones((4, 5), bool))


# ---------------------------------------------------------------- success curve / AUC


def test_constant_iou_one_gives_auc_exactly_100():
    res = single_source([mask_map(CENTRE)] * 3, [CENTRE] * 3)
    assert res["iou_at_0_5"] == 100.0
    assert res["curve"] == [100.0] * 21
    assert res["auc"] == 100.0  # the 21-point trapezoid of a constant 1 over [0, 1] is exactly 1.0
    assert res["n"] == 3


def test_success_curve_and_auc_match_sklearn():
    ious = [0.0, 0.3, 1 / 3, 0.5, 0.62, 0.95, 1.0]
    curve = success_curve(ious)
    assert curve[0] == 1.0 and curve[-1] == 1 / 7
    assert curve[6] == 5 / 7  # 0.3 < 0.05 * 6, so an IoU of exactly 0.3 fails the "0.3" point
    assert success_rate(ious, 0.3) == 5 / 7 and success_rate(ious, 0.5) == 4 / 7
    x = [0.05 * i for i in range(21)]
    assert auc(CURVE_THRESHOLDS, curve) == sklearn.metrics.auc(x, curve)
    # a curve that is 1 on the first ten points and 0 after: 9 full steps + 1 half step = 0.475
    step = [1.0] * 10 + [0.0] * 11
    assert auc(CURVE_THRESHOLDS, step) == sklearn.metrics.auc(x, step) == pytest.approx(0.475)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_auc_equals_sklearn_for_any_ious(ious):
    curve = success_curve(ious)
    assert np.all(np.diff(curve) <= 0) and curve[0] == 1.0
    assert auc(CURVE_THRESHOLDS, curve) == sklearn.metrics.auc(list(CURVE_THRESHOLDS), curve)


def test_single_source_skips_frames_without_boxes():
    maps = [mask_map(CENTRE), mask_map(TOP_HALF), uniform_map()]
    boxes = [[CENTRE], [BOTTOM_HALF], []]
    res = single_source(maps, boxes)
    assert res["n"] == 2
    assert res["iou_at_0_5"] == 50.0
    assert res["curve"][0] == 100.0 and res["curve"][1] == 50.0
    assert res["auc"] == pytest.approx(100 * (0.0375 + 19 * 0.025))  # 1 -> 0.5 in the first step, then 0.5
    with pytest.raises(ValueError, match="no frame has a ground-truth box"):
        single_source([uniform_map()], [[]])
    with pytest.raises(ValueError, match="frame 1"):
        single_source([uniform_map(), np.zeros((3, 3, 3))], [[CENTRE], [CENTRE]])


def test_uniform_baseline_iou_is_the_box_area_fraction():
    assert frame_iou(uniform_map(), CENTRE) == 0.25
    assert frame_iou(uniform_map(), [0.1, 0.1, 0.3, 0.3]) == 67 * 67 / 224**2
    res = single_source([uniform_map()] * 2, [[CENTRE], [TOP_HALF]])
    assert res["iou_at_0_5"] == 50.0  # the half-frame box reaches 0.5, the quarter does not


def test_centred_gaussian_baseline():
    g = centred_gaussian_map(14, 14, sigma=0.25)
    assert g.shape == (14, 14) and g.max() == 1.0
    assert np.array_equal(g, g[::-1]) and np.array_equal(g, g.T)  # symmetric about the centre
    assert frame_iou(g, CENTRE) > frame_iou(g, [0.0, 0.0, 0.25, 0.25])


# ---------------------------------------------------------------- hypothesis properties

boxes_st = st.lists(
    st.tuples(st.floats(0, 0.9), st.floats(0, 0.9), st.floats(0.01, 0.5), st.floats(0.01, 0.5)),
    min_size=1,
    max_size=3,
)
map_st = arrays(np.uint8, (6, 6))  # turned into [0, 1] float32 maps (no subnormals)


@settings(max_examples=60, deadline=None)
@given(map_st, boxes_st, st.sampled_from([0.1, 0.2, 0.5]), st.integers(-3, 3))
def test_iou_is_in_unit_interval_and_scale_invariant(m, boxes, tau, log2_scale):
    m = m.astype(np.float32) / np.float32(255)
    iou = frame_iou(m, boxes, tau)
    assert 0.0 <= iou <= 1.0
    assert frame_iou(m * np.float32(2.0**log2_scale), boxes, tau) == iou  # powers of two are exact


@settings(max_examples=60, deadline=None)
@given(arrays(bool, (8, 8)), arrays(bool, (8, 8)))
def test_binary_iou_is_symmetric_and_one_only_when_equal(a, b):
    assert binary_iou(a, b) == binary_iou(b, a)
    assert 0.0 <= binary_iou(a, b) <= 1.0
    assert (binary_iou(a, b) == 1.0) == (np.array_equal(a, b) and a.any())


# ---------------------------------------------------------------- cluster -> class matching


def brute_force_best(A):
    """Best value over every map cluster -> class that gives each class >= 1 cluster."""
    C, K = A.shape
    best, arg = -np.inf, None
    for f in itertools.product(range(C), repeat=K):
        if len(set(f)) == C:
            v = A[list(f), range(K)].sum()
            if v > best:
                best, arg = v, f
    return best, np.array(arg)


def test_hungarian_beats_greedy_on_a_hand_made_case():
    # Greedy (each cluster to its argmax class, or the largest entry first) gives cluster 0
    # to class 0 and leaves 0.6 + 0.1 = 0.7; the optimum swaps: 0.4 + 0.5 = 0.9.
    A = np.array([[0.6, 0.4], [0.5, 0.1]])
    m = match_clusters(A)
    assert m.cluster_to_class.tolist() == [1, 0]
    assert m.representative.tolist() == [1, 0]
    assert m.score() == pytest.approx(0.9)
    assert m.assignment_matrix().tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("C,K", [(2, 2), (3, 3), (4, 4), (2, 3), (2, 5), (3, 5), (3, 6), (4, 6)])
def test_matching_equals_brute_force(C, K):
    rng = np.random.default_rng(1000 * C + K)
    for _ in range(15):
        A = rng.dirichlet(np.ones(K), size=C)  # rows = class distributions over clusters
        m = match_clusters(A)
        best, arg = brute_force_best(A)
        assert m.score() == pytest.approx(best, abs=1e-12)
        assert m.cluster_to_class.tolist() == arg.tolist()  # continuous A: the optimum is unique
        assert sorted(set(m.cluster_to_class.tolist())) == list(range(C))
        assert match_clusters(A).cluster_to_class.tolist() == m.cluster_to_class.tolist()  # deterministic


def test_extra_clusters_go_to_their_argmax_class_and_representative_is_the_best():
    # 2 classes, 4 clusters: cluster 3 looks most like class 0, cluster 2 like class 1
    A = np.array([[0.5, 0.0, 0.1, 0.4], [0.1, 0.6, 0.3, 0.0]])
    m = match_clusters(A)
    assert m.cluster_to_class.tolist() == [0, 1, 1, 0]
    assert m.clusters_of(0).tolist() == [0, 3] and m.clusters_of(1).tolist() == [1, 2]
    assert m.representative.tolist() == [0, 1]


def test_matching_from_labels():
    gt = [0, 0, 0, 1, 1, 2, 2, 2]
    pseudo = [2, 2, 1, 0, 0, 1, 1, 3]  # K = 4 clusters, C = 3 classes
    A = cluster_class_affinity(pseudo, gt, n_clusters=4, n_classes=3)
    assert np.allclose(A, [[0, 1 / 3, 2 / 3, 0], [1, 0, 0, 0], [0, 2 / 3, 0, 1 / 3]])
    m = match_clusters(pseudo_labels=pseudo, gt_labels=gt, n_clusters=4, n_classes=3)
    assert m.cluster_to_class.tolist() == [1, 2, 0, 2]
    assert np.array_equal(m.affinity, A)
    with pytest.raises(ValueError, match=r"pseudo_labels\[1\] = 7"):
        cluster_class_affinity([0, 7], [0, 1], n_clusters=4, n_classes=3)


def test_fewer_clusters_than_classes_is_an_error():
    with pytest.raises(ValueError, match="K=2 clusters to C=3 classes"):
        match_clusters(np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="not both"):
        match_clusters(np.eye(2), n_classes=2)


def test_cluster_match_round_trips_through_json():
    m = match_clusters(np.array([[0.5, 0.0, 0.1, 0.4], [0.1, 0.6, 0.3, 0.0]]))
    back = ClusterMatch.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.cluster_to_class.tolist() == m.cluster_to_class.tolist()
    assert back.representative.tolist() == m.representative.tolist()
    assert np.array_equal(back.affinity, m.affinity)
    with pytest.raises(ValueError, match=r"classes \[1\] have no cluster"):
        ClusterMatch.from_cluster_to_class([0, 0, 2], n_classes=3)


# ---------------------------------------------------------------- class maps, CIoU, NSA


def test_class_softmax_over_k():
    M = np.zeros((3, 2, 2), np.float32)
    M[1] = np.log(2.0) / 3.0  # exp(3 * M) = 2 on channel 1
    P = class_softmax(M)
    assert np.allclose(P[:, 0, 0], [0.25, 0.5, 0.25])
    assert np.allclose(class_softmax(M, scale=1.0).sum(axis=0), 1.0)
    assert class_softmax(np.zeros((2, 3, 2, 2))).shape == (2, 3, 2, 2)  # batched: softmax over axis 1


def test_class_maps_sum_the_clusters_of_each_class():
    match = ClusterMatch.from_cluster_to_class([0, 1, 0], n_classes=2)
    P = np.stack([np.full((2, 2), v, np.float32) for v in (0.1, 0.3, 0.6)])
    cm = class_maps(P, match)
    assert cm.shape == (2, 2, 2)
    assert np.allclose(cm[0], 0.7) and np.allclose(cm[1], 0.3)
    with pytest.raises(ValueError, match="K=3"):
        class_maps(P[:2], match)


def mosaic_P():
    """A hand-built P for a 2x2 mosaic, K = C = 4, at 224x224 (no upsampling blur).

    Class 0 sounds in the top-left quadrant, class 1 in the bottom-right quadrant and the
    model gets both right; classes 2 and 3 are silent. Channel 2 wrongly puts 0.3 over the
    whole top half (NSA 50 % for it); channel 3 is 0.1 everywhere (NSA 100 %).
    """
    P = np.zeros((4, S, S), np.float32)
    P[0, :112, :112] = 0.9
    P[1, 112:, 112:] = 0.9
    P[2, :112, :] = 0.3
    P[3] = 0.1
    return P


TL, BR, TR = [0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5], [0.5, 0.0, 0.5, 0.5]


def test_ciou_and_nsa_on_a_hand_built_mosaic():
    P = mosaic_P()
    match = ClusterMatch.from_cluster_to_class([0, 1, 2, 3], n_classes=4)
    assert class_ious(P, [TL, BR], [0, 1], match) == {0: 1.0, 1: 1.0}
    assert ciou_image(P, [TL, BR], [0, 1], match) == 1.0
    # if the GT said class 1 sounds in the top-right quadrant instead, its IoU is 0: mean 0.5
    assert ciou_image(P, [TL, TR], [0, 1], match) == 0.5
    assert nsa_image(P, [0, 1], match) == (0.5 + 1.0) / 2
    # channels 0 and 1 are silent when only class 2 sounds: 0.9 > 0.2 on a quarter of the frame
    assert nsa_image(P, [2], match) == (0.75 + 0.75 + 1.0) / 3
    assert np.isnan(nsa_image(P, [0, 1, 2, 3], match))


def test_nsa_skips_every_cluster_of_a_sounding_class():
    # K = 5 > C = 4: cluster 4 also belongs to class 0. It lights the whole frame at 0.5, so
    # counting it as "silent" (the original's bug) would drag NSA down; the fix skips it
    # (docs/method.md, 'NSA over unassigned clusters').
    P = np.concatenate([mosaic_P(), np.full((1, S, S), 0.5, np.float32)])
    match = ClusterMatch.from_cluster_to_class([0, 1, 2, 3, 0], n_classes=4)
    assert nsa_image(P, [0, 1], match) == 0.75
    assert class_ious(P, [TL], [0], match)[0] == 1.0  # class 0 map = P0 + P4: 1.4 in TL, 0.5 elsewhere


def test_multi_source_report():
    P = mosaic_P()
    match = ClusterMatch.from_cluster_to_class([0, 1, 2, 3], n_classes=4)
    P_list = [P, P, P]
    boxes = [[TL, BR], [TL, TR], []]  # the third image has no sounding box and is skipped
    classes = [[0, 1], [0, 1], []]
    res = multi_source(P_list, boxes, classes, match, tau="mosaic")
    assert res["n"] == 2
    assert res["ciou_at_0_3"] == 100.0 and res["ciou_at_0_5"] == 100.0  # CIoUs 1.0 and 0.5
    assert res["nsa"] == 75.0
    assert res["curve"][10] == 100.0 and res["curve"][11] == 50.0
    assert res["auc"] == pytest.approx(100 * (10 * 0.05 + 0.0375 + 9 * 0.025))
    assert multi_source(P_list, boxes, classes, match, tau=0.2)["n"] == 2
    with pytest.raises(ValueError, match="image 1: box 1 has class 9"):
        multi_source(P_list, boxes, [[0, 1], [0, 9], []], match)


def test_duet_tau_keeps_weaker_responses():
    # class 0's map: 0.9 on the top-left quadrant, 0.3 on the top-right one
    P = mosaic_P()
    P[0, :112, 112:] = 0.3
    match = ClusterMatch.from_cluster_to_class([0, 1, 2, 3], n_classes=4)
    top = [0.0, 0.0, 1.0, 0.5]
    assert ciou_image(P, [top], [0], match, tau=Thresholds().ciou_tau("mosaic")) == 0.5
    assert ciou_image(P, [top], [0], match, tau=Thresholds().ciou_tau("duet")) == 1.0


def test_baselines_run_through_the_multi_source_code_path():
    match = ClusterMatch.from_cluster_to_class([0, 1, 2, 3], n_classes=4)
    P = baseline_probs(uniform_map(), n_clusters=4)
    assert P.shape == (4, 14, 14)
    res = multi_source([P], [[TL, BR]], [[0, 1]], match)
    # every class map is uniform: each CIoU is the quarter-frame area fraction 0.25, so the
    # curve is 1 up to t = 0.25 (6 points) and 0 after: AUC = 5 * 0.05 + 0.025
    assert res["ciou_at_0_3"] == 0.0 and res["auc"] == pytest.approx(27.5)
    assert res["nsa"] == 0.0  # the uniform baseline claims every class everywhere
    g = baseline_probs(centred_gaussian_map(), 4)
    assert 0.0 < multi_source([g], [[TL]], [[0]], match)["nsa"] < 100.0


# ---------------------------------------------------------------- negative-aware figures


def test_false_positive_rate():
    assert false_positive_rate([True, False, False, False]) == 25.0
    assert false_positive_rate(np.zeros(5, bool)) == 0.0
    with pytest.raises(ValueError, match="at least one scene"):
        false_positive_rate([])


def test_silent_object_lit_rate():
    sounding, silent = [[0.0, 0.0, 0.5, 1.0]], [[0.5, 0.0, 0.5, 1.0]]  # left half sounds, right half is silent
    right = mask_map([0.5, 0.0, 0.5, 1.0])
    left = mask_map([0.0, 0.0, 0.5, 1.0])
    both = np.ones((S, S), np.float32)
    mostly_right = mask_map([[0.25, 0.0, 0.75, 1.0]])  # 56 columns on the left, 112 on the right
    maps = [right, left, both, mostly_right]
    rate = silent_object_lit_rate(maps, [silent] * 4, [sounding] * 4)
    assert rate == 50.0  # "right" and "mostly_right" count; the tie ("both") does not
    with pytest.raises(ValueError, match="image 0: needs a non-empty silent box"):
        silent_object_lit_rate([right], [[]], [sounding])


# ---------------------------------------------------------------- fidelity to the original scripts


def original_style_iou(map14, boxes, tau):
    """The original per-frame computation written out longhand (tools.py / eval.py), as an oracle."""
    gtmap = np.zeros((224, 224))
    for box in boxes:
        box = np.array(box) * 224
        gtmap[int(box[1]) : int(box[1] + box[3]), int(box[0]) : int(box[0] + box[2])] = 1
    import cv2

    predmap = cv2.resize(map14, (224, 224))
    thr = tau * np.max(predmap)
    return np.sum((predmap > thr) * (gtmap > 0)) / (np.sum(gtmap) + np.sum((predmap > thr) * (gtmap == 0)))


def test_single_source_equals_the_original_computation_on_random_maps():
    # noisy blobs with a jittered box around each: IoUs spread over the whole curve
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:14, 0:14] / 14
    maps, boxes = [], []
    for _ in range(40):
        cy, cx, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.25)
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)) + 0.05 * rng.random((14, 14))
        maps.append(m.astype(np.float32))
        x0, y0, w, h = np.array([cx - 1.5 * s, cy - 1.5 * s, 3 * s, 3 * s]) + rng.normal(0, 0.05, 4)
        boxes.append([[max(x0, 0.0), max(y0, 0.0), max(w, 0.02), max(h, 0.02)]])
    ious = [original_style_iou(m, b, 0.1) for m, b in zip(maps, boxes)]
    curve = [np.sum(np.array(ious) >= 0.05 * i) / len(ious) for i in range(21)]
    assert 0.2 < curve[10] < 0.8  # a non-trivial curve
    res = single_source(maps, boxes)
    assert res["auc"] == 100 * sklearn.metrics.auc([0.05 * i for i in range(21)], curve)
    assert res["iou_at_0_5"] == 100 * curve[10]
    assert [frame_iou(m, b) for m, b in zip(maps, boxes)] == ious
