"""The training-throughput benchmark, as its users run it: one command, both layouts side by side,
and the first location steps' loss curves on real data."""

import json

from benchmarks import training_speed


def test_training_speed_prints_before_and_after_and_the_loss_curves(tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert training_speed.main(["--preset", "smoke", "--runs", "1", "--curve", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "before pairs/s" in printed and "after pairs/s" in printed and "run-to-run noise" in printed
    figures = json.loads(out.read_text())
    assert set(figures["steps"]) == {"location", "classification", "features", "stage_two"}
    for row in figures["steps"].values():
        assert row["gflop"] > 0
        for layout in ("before", "after"):
            assert row[layout]["pairs_per_s"] > 0 and 0 < row[layout]["of_peak"] < 2
    assert "convolution" in figures["profile_top"]["after"]
    runs = figures["curve"]["runs"]
    assert [len(r["loss"]) for r in runs.values()] == [3, 3, 3]
    # same seed, same data, same first step: the layout changes the float sums' order, not the maths
    assert abs(runs["before seed 0"]["loss"][0] - runs["after seed 0"]["loss"][0]) < 1e-3
    assert runs["before seed 0"]["loss"][0] != runs["before seed 1"]["loss"][0]
