"""The Localizer's decision rules: the pure fitting functions on small examples, and what the
smoke run's export stored in its manifest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avsl_edge.bundle import Postprocessing, load_bundle
from avsl_edge.calibrate import (BOX_RULE_GRID, OPERATING_FPRS, ThresholdFit, choose_in_view_score, f1,
                                 fit_audio_gate, fit_box_rule, fit_class_threshold, fit_in_view_combination,
                                 fit_in_view_threshold,
                                 fpr_resolution_warnings, in_view_warnings, named, operating_points, union_box)
from avsl_edge.localizer import IN_VIEW_SCORES, Rules, class_presence, heard_av_score, heard_class_score
from avsl_edge.rules import COMBINED_SCORES, RuleError, combined_score
from export.calibrate import NEGATIVE_SCENES


def test_in_view_threshold_separates_separable_scores():
    fit = fit_in_view_threshold([0.6, 0.7, 0.9], [0.1, 0.2, 0.3])
    assert 0.3 < fit.threshold < 0.6 and fit.tpr == 1.0 and fit.fpr == 0.0 and fit.balanced_accuracy == 1.0


def test_in_view_threshold_keeps_offscreen_dark_when_scores_overlap():
    pos = [0.2, 0.4, 0.5, 0.6, 0.8]
    neg = [0.1, 0.3, 0.45, 0.7]
    strict = fit_in_view_threshold(pos, neg, max_fpr=0.0)
    assert strict.threshold > 0.7 and strict.fpr == 0.0 and strict.tpr == pytest.approx(0.2)
    loose = fit_in_view_threshold(pos, neg, max_fpr=0.5)
    assert loose.balanced_accuracy >= strict.balanced_accuracy and loose.fpr <= 0.5
    with pytest.raises(ValueError, match="positive and negative"):
        fit_in_view_threshold([], [0.1])


def test_operating_points_trade_offscreen_light_for_sounding_scenes_declared():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.6, 0.15, size=300), rng.normal(0.4, 0.15, size=300)  # overlapping scores
    points = operating_points(pos, neg)
    assert [q["max_fpr"] for q in points] == list(OPERATING_FPRS)
    assert all(q["fpr"] <= q["max_fpr"] for q in points)
    # a looser bound never raises the threshold nor declares fewer sounding scenes
    assert all(a["threshold"] >= b["threshold"] and a["tpr"] <= b["tpr"] for a, b in zip(points, points[1:]))
    assert points[-1]["tpr"] > 2 * points[0]["tpr"]
    at_2 = points[OPERATING_FPRS.index(0.02)]
    assert at_2["threshold"] == fit_in_view_threshold(pos, neg, 0.02).threshold


def test_a_threshold_that_hides_most_sounding_scenes_comes_with_a_warning():
    useful = fit_in_view_threshold([0.6, 0.7, 0.9], [0.1, 0.2, 0.3])
    assert in_view_warnings(useful, 0.02) == []
    # scores that overlap completely: staying dark on off-screen sound means declaring almost nothing
    rng = np.random.default_rng(0)
    weak = fit_in_view_threshold(rng.uniform(size=200), rng.uniform(size=200), max_fpr=0.02)
    (warning,) = in_view_warnings(weak, 0.02)
    assert weak.tpr < 0.1 and f"{weak.threshold:.3f}" in warning and "--in-view-threshold" in warning


def test_too_few_offscreen_scenes_for_the_false_positive_bound_come_with_a_warning():
    assert fpr_resolution_warnings(250, 0.02) == [] and fpr_resolution_warnings(50, 0.02) == []
    (warning,) = fpr_resolution_warnings(48, 0.02)
    assert warning.startswith("only 48 off-screen scenes") and "at least 50" in warning
    assert fpr_resolution_warnings(10, 0.0) == []  # no false positive at all, asked for on purpose


def test_the_export_calibrates_on_enough_offscreen_scenes_for_its_bound():
    from export.calibrate import NEGATIVE_SCENES, calibration_scenes

    scenes = calibration_scenes(per_kind=2, negatives=5)
    kinds = [s.kind for s in scenes]
    assert kinds[:5] == ["solo", "solo_distractor", "duet", "mosaic", "offscreen"]
    assert kinds.count("offscreen") == 5 and kinds.count("solo") == 2
    assert all(not s.sounding and not s.boxes and s.audio.any() for s in scenes if s.kind == "offscreen")
    assert NEGATIVE_SCENES * 0.02 >= 5


def test_presence_is_the_best_cosine_of_each_key_anywhere_in_the_frame():
    v_fea = np.zeros((2, 3, 2, 2), np.float32)  # two frames, 3 channels, 2x2 positions
    v_fea[0, :, 0, 1] = [0.0, 5.0, 0.0]         # frame 0: one position shows key 1's direction, loudly
    v_fea[0, :, 1, 0] = [1.0, 1.0, 0.0]         # ... and one half-way between keys 0 and 1
    v_fea[1, :, :, :] = -1.0                    # frame 1: nothing like any key
    dictionary = np.array([[2.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 1.0]])  # key lengths do not matter
    p = class_presence(v_fea, dictionary)
    np.testing.assert_allclose(p[0], [np.sqrt(0.5), 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(p[1], [0.0, 0.0, 0.0])  # cosines of -0.58 are floored at 0
    with pytest.raises(ValueError, match="class_presence"):
        class_presence(v_fea, dictionary[:, :2])


def test_the_in_view_score_that_separates_better_is_kept():
    weak = ThresholdFit(0.8, tpr=0.08, fpr=0.02, balanced_accuracy=0.53)
    strong = ThresholdFit(0.6, tpr=0.26, fpr=0.02, balanced_accuracy=0.62)
    assert choose_in_view_score({"av_score": weak, "presence": strong}) == "presence"
    assert choose_in_view_score({"av_score": strong, "presence": weak}) == "av_score"
    assert choose_in_view_score({"av_score": weak, "presence": weak}) == "av_score"  # a tie: the method's own
    with pytest.raises(ValueError, match="need fits"):
        choose_in_view_score({"loudness": weak})
    (warning,) = in_view_warnings(strong, 0.02, "presence")
    assert "on presence" in warning and "this model's presence" in warning


def test_two_weak_scores_combined_separate_better_than_either():
    # in view: av_score + heard_av is high, though each alone overlaps the off-screen scenes
    rng = np.random.default_rng(3)
    n = 400
    av_pos, av_neg = rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 0.7, n)
    heard_pos = np.clip(1.3 - av_pos + rng.normal(0, 0.05, n), 0, 1)
    heard_neg = np.clip(0.6 - av_neg + rng.normal(0, 0.05, n), 0, 1)
    presence = rng.uniform(0, 1, 2 * n)                 # carries nothing
    pos = np.stack([av_pos, presence[:n], heard_pos], 1)
    neg = np.stack([av_neg, presence[n:], heard_neg], 1)
    w = fit_in_view_combination(pos, neg)
    assert list(w) == ["bias", *COMBINED_SCORES] and w["av_score"] > 0 and w["heard_av"] > 0
    assert abs(w["presence"]) < 0.5 * min(w["av_score"], w["heard_av"])
    single = max(fit_in_view_threshold(pos[:, i], neg[:, i]).tpr for i in range(3))
    p, q = (combined_score(w, **dict(zip(COMBINED_SCORES, rows.T))) for rows in (pos, neg))
    assert ((0 < p) & (p < 1)).all()
    assert fit_in_view_threshold(p, q).tpr > single + 0.3
    with pytest.raises(ValueError, match="positive and negative"):
        fit_in_view_combination(pos, neg[:0])


def test_the_combined_score_needs_its_weights_and_every_score_it_weighs():
    w = {"bias": -3.0, "av_score": 2.0, "presence": 0.0, "heard_av": 4.0}
    assert combined_score(w, av_score=0.5, presence=None, heard_av=0.5) == pytest.approx(0.5)
    with pytest.raises(RuleError, match="weighs presence, which was not computed"):
        combined_score({**w, "presence": 1.0}, av_score=0.5, presence=None, heard_av=0.5)
    with pytest.raises(RuleError, match="'combined' needs the weights"):
        Rules(in_view_score="combined")
    with pytest.raises(RuleError, match="must map exactly bias, av_score, presence, heard_av"):
        Rules(in_view_score="combined", in_view_combination={"bias": 1.0})
    with pytest.raises(RuleError, match=r"in_view_combination\['heard_av'\] must be a finite number"):
        Rules(in_view_combination={**w, "heard_av": float("nan")})
    rules = Rules(in_view_score="combined", in_view_combination=w)
    assert rules.to_dict()["in_view_combination"] == w
    from_manifest = Rules.from_postprocessing(Postprocessing(), in_view_score="combined", in_view_combination=w)
    assert from_manifest.in_view_combination == w and from_manifest.in_view_threshold == 0.5  # nothing calibrated


def test_audio_gate_sits_below_the_quietest_clip_within_bounds():
    assert fit_audio_gate([-25.0, -18.0]) == -45.0
    assert fit_audio_gate([-12.0]) == -40.0     # never above -40 dBFS
    assert fit_audio_gate([-70.0]) == -60.0     # never below -60 dBFS


def test_class_threshold_maximises_f1_of_the_named_classes():
    probs = [np.array([0.5, 0.45, 0.05]), np.array([0.9, 0.05, 0.05]), np.array([0.3, 0.3, 0.4])]
    truths = [{0, 1}, {0}, {2}]
    t, score = fit_class_threshold(probs, truths)
    assert named(probs[0], t) == {0, 1} and named(probs[1], t) == {0} and score == 1.0
    assert named(np.array([0.2, 0.3]), 0.9) == {1}  # nothing reaches it: the most probable class
    assert f1({0, 1}, {0}) == pytest.approx(2 / 3)


def test_the_box_rule_is_the_way_and_cut_with_the_most_box_hits():
    assert fit_box_rule({("map", 0.2): [True, False], ("map", 0.5): [True, True], ("map", 0.7): [True, True]}) \
        == ("map", 0.7, 1.0)
    assert fit_box_rule({("map", 0.3): [False, True, True], ("map", 0.6): [False, False, True]}) \
        == ("map", 0.3, pytest.approx(2 / 3))
    # GrabCut only when it hits more: on a tie the cheaper map cut wins
    assert fit_box_rule({("map", 0.3): [True, False], ("grabcut", 0.3): [True, True]}) == ("grabcut", 0.3, 1.0)
    assert fit_box_rule({("map", 0.3): [True, True], ("grabcut", 0.4): [True, True]}) == ("map", 0.3, 1.0)
    with pytest.raises(ValueError, match="box methods must be among"):
        fit_box_rule({("snake", 0.3): [True]})
    assert union_box([(10, 10, 5, 5), (30, 0, 10, 20)]) == (10, 0, 30, 20)


def test_heard_av_fires_only_where_the_frame_shows_what_is_heard():
    av = np.zeros((2, 3, 3), np.float32)
    av[:, 0, 0] = 0.9                                   # the av map fires top-left in both frames
    maps = np.zeros((2, 2, 3, 3), np.float32)
    maps[0, 0, 0, 0] = 1.0                              # frame 0 shows class 0 there ...
    maps[1, 1, 0, 0] = 1.0                              # ... frame 1 shows class 1 there
    heard = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)  # class 0 is heard in both
    assert heard_av_score(av, maps, heard) == pytest.approx([0.9, 0.0])
    with pytest.raises(ValueError, match="heard_av_score"):
        heard_av_score(av, maps[:, :, :2], heard)


def test_heard_class_is_the_peak_of_the_map_of_the_class_heard_most_wherever_the_av_map_fires():
    maps = np.zeros((2, 2, 3, 3), np.float32)
    maps[0, 0, 2, 2] = 0.99                             # frame 0 shows class 0 bottom-right
    maps[1, 1, 0, 0] = 0.99                             # frame 1 shows only class 1
    heard = np.array([[0.7, 0.3], [0.7, 0.3]], np.float32)  # class 0 is heard most in both
    assert heard_class_score(maps, heard) == pytest.approx([0.99, 0.0])
    with pytest.raises(ValueError, match="heard_class_score"):
        heard_class_score(maps[0], heard)


def test_the_export_stores_calibrated_rules(smoke_bundle):
    p = load_bundle(smoke_bundle, verify=False).manifest.postprocessing
    assert p.in_view_threshold is not None and -60.0 <= p.audio_gate_db <= -40.0
    assert (p.box_method, p.box_tau) in BOX_RULE_GRID
    report = p.calibration
    assert report["in_view"]["fpr"] <= report["max_fpr"] and report["scenes"] >= 4 * 40 + NEGATIVE_SCENES
    assert report["per_kind"]["offscreen"]["n"] == NEGATIVE_SCENES
    assert set(report["per_kind"]) == {"solo", "solo_distractor", "duet", "mosaic", "offscreen"}
    assert isinstance(report["warnings"], list)
    assert p.in_view_score in IN_VIEW_SCORES and report["in_view"]["score"] == p.in_view_score
    assert set(report["in_view_fits"]) == set(IN_VIEW_SCORES)
    for score, points in report["in_view_operating_points"].items():  # what --in-view-threshold could be
        at_bound = next(q for q in points if q["max_fpr"] == report["max_fpr"])
        assert at_bound["threshold"] == report["in_view_fits"][score]["threshold"]
    assert set(report["in_view_operating_points"]) == set(IN_VIEW_SCORES)
    chosen = report["in_view_fits"][p.in_view_score]
    assert chosen["threshold"] == p.in_view_threshold
    assert all(chosen["balanced_accuracy"] >= f["balanced_accuracy"] for f in report["in_view_fits"].values())
    rules = Rules.from_postprocessing(p)
    assert rules.in_view_threshold == p.in_view_threshold and rules.class_threshold == p.class_threshold
    assert rules.in_view_score == p.in_view_score
    assert Rules.from_postprocessing(p, box_tau=0.3).box_tau == 0.3
    assert rules.box_method == p.box_method and Rules.from_postprocessing(p, box_method="map").box_method == "map"
    assert set(report["box_hit_rates"]) == {"map", "grabcut"}
    assert report["box_hit_rates"][p.box_method][f"{p.box_tau:g}"] == report["box_hit_rate"]
    with pytest.raises(ValueError, match="box_method must be one of map, grabcut"):
        Rules(box_method="snake")
    with pytest.raises(TypeError, match="unknown rule overrides"):
        Rules.from_postprocessing(p, tau=0.3)
    with pytest.raises(ValueError, match="in_view_threshold must be a number in"):
        Rules(in_view_threshold=2.0)
    with pytest.raises(ValueError, match="in_view_score must be one of av_score, presence, heard_av, heard_class, combined"):
        Rules.from_postprocessing(p, in_view_score="loudness")
    # the combination is stored whichever score was kept, so a user can switch to it
    assert report["in_view_combination"] == p.in_view_combination and set(p.in_view_combination) == {
        "bias", *COMBINED_SCORES}
    switched = Rules.from_postprocessing(p, in_view_score="combined")
    assert switched.in_view_combination == p.in_view_combination
    for score, fit in report["in_view_fits"].items():  # a switched score comes with its own calibrated threshold
        assert Rules.from_postprocessing(p, in_view_score=score).in_view_threshold == fit["threshold"]
    assert Rules.from_postprocessing(p, in_view_score="presence", in_view_threshold=0.1).in_view_threshold == 0.1
    # a calibration from before a score has no threshold for it: an error that says so, not another score's
    fits = {k: f for k, f in report["in_view_fits"].items() if k != "heard_class"}
    older = dataclasses.replace(p, in_view_score="av_score", in_view_threshold=fits["av_score"]["threshold"],
                                calibration={**report, "in_view_fits": fits})
    with pytest.raises(RuleError, match="fitted av_score, combined, heard_av, presence but not heard_class"):
        Rules.from_postprocessing(older, in_view_score="heard_class")
    assert Rules.from_postprocessing(older, in_view_score="heard_class", in_view_threshold=0.9).in_view_threshold == 0.9
    # a bundle exported before the choice existed keeps its av_score rule
    old = dataclasses.replace(p, in_view_score=None, box_method=None, in_view_combination=None)
    assert Rules.from_postprocessing(old).in_view_score == "av_score"
    with pytest.raises(ValueError, match="'combined' needs the weights"):
        Rules.from_postprocessing(old, in_view_score="combined")
    assert Rules.from_postprocessing(old).box_method == "map"
