"""scripts/edge_figures.py: what a user gets through localize on a test split, negatives included."""

from __future__ import annotations

import json

import pytest

import avsl_edge
from avsl_edge.backends import CPU_EP
from scripts.edge_figures import NEGATIVE_KINDS, figures, main, separation


def test_separation_is_perfect_for_separated_scores_and_chance_like_for_equal_ones():
    clean = separation([0.8, 0.9, 0.7], [0.1, 0.2, -1.0])
    assert clean["ap"] == pytest.approx(100.0) and clean["max_f1"] == pytest.approx(100.0)
    assert 0.2 < clean["threshold_at_max_f1"] <= 0.7
    tied = separation([0.5] * 4, [0.5] * 4)
    assert tied["ap"] == pytest.approx(50.0)


def test_the_figures_of_the_smoke_run_cover_every_kind_and_its_negatives(smoke_bundle, smoke_run):
    with avsl_edge.load(smoke_bundle, variant="fp32", providers=[CPU_EP], intra_op_threads=1) as loc:
        out = figures(loc, smoke_run / "data" / "test")
    assert {"solo", "duet", "mosaic", "solo_distractor", *NEGATIVE_KINDS, "in_view_vs_negatives"} <= set(out)
    assert out["silence"]["lit"] == 0.0 and out["silence"]["box_share_of_frame"] == 0.0  # the audio gate
    for kind in NEGATIVE_KINDS:
        row = out[kind]
        assert row["n"] == 12 and 0.0 <= row["box_share_of_frame"] <= 100.0
        assert row["lit"] > 0.0 or row["box_share_of_frame"] == 0.0  # boxes only where a class is named
        assert 0.0 <= row["av_map_max"] <= 1.0 and 0.0 <= row["av_map_share@0.5"] <= 100.0
    sep = out["in_view_vs_negatives"]
    assert set(sep) == {*NEGATIVE_KINDS, "all"}
    assert sep["silence"]["ap"] == pytest.approx(100.0)   # a closed gate ranks every silent clip last
    assert all(0.0 <= s["ap"] <= 100.0 and 0.0 <= s["max_f1"] <= 100.0 for s in sep.values())


def test_the_script_writes_its_json(smoke_bundle, smoke_run, tmp_path):
    out = tmp_path / "figures.json"
    assert main(["--model", str(smoke_bundle), "--data", str(smoke_run / "data" / "test"), "--variant", "fp32",
                 "--threads", "1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["rules"]["in_view_score"] in avsl_edge.localizer.IN_VIEW_SCORES
    assert saved["figures"]["offscreen"]["n"] == 12
