"""The edge benchmark's own arithmetic: passes merged into one table, targets judged per ISA class."""

import json

import pytest

from benchmarks.run import auto_stand_in, isa_class, merge_passes, targets


def _t(median, p90=None):
    return {"median_ms": median, "p90_ms": p90 if p90 is not None else median * 1.1, "max_ms": median * 2, "runs": 30}


def _row(image, audio=5.0):
    small = {k: _t(0.5) for k in ("preprocess", "head", "postprocess")}
    return {"stages": {"image": _t(image), "audio": _t(audio), **small}, "per_frame_ms": _t(image + 1.5)}


def test_passes_merge_into_the_median_of_their_medians_with_its_range():
    passes = [{"onnxruntime fp32": _row(10.0)}, {"onnxruntime fp32": _row(14.0)}, {"onnxruntime fp32": _row(11.0)}]
    image = merge_passes(passes)["onnxruntime fp32"]["stages"]["image"]
    assert (image["median_ms"], image["range_ms"], image["passes"]) == (11.0, [10.0, 14.0], 3)
    assert merge_passes(passes)["onnxruntime fp32"]["per_frame_ms"]["range_ms"] == [11.5, 15.5]


@pytest.mark.parametrize("isa,cls", [
    (["amx_int8", "avx2", "avx512_vnni", "avx512f"], "AVX-512 VNNI"),
    (["avx2"], "AVX2"),
    ([], "other"),
])
def test_hosts_are_classed_by_the_isa_that_decides_int8s_gain(isa, cls):
    assert isa_class({"isa": isa}) == cls


@pytest.mark.parametrize("isa,met", [(["avx2"], True), (["avx2", "avx512_vnni"], False)])
def test_auto_must_beat_fp32_by_more_on_a_vnni_host(isa, met):
    out = {"machine": {"isa": isa}, "variants": ["fp32", "int8-cpu"], "image_bound_ms": 5.0,
           "stages_ms": {"pytorch eager": _row(20.0), "onnxruntime fp32": _row(12.0, 8.0),
                         "onnxruntime int8-cpu": _row(6.0, 4.0)},
           "auto": {"variant": "int8-cpu", "reason": "fastest here"}}
    rows = {t["target"].split(" (")[0]: t for t in targets(out)}
    assert rows["auto"]["value"] == 2.0 and rows["auto"]["met"] is met   # (12 + 8) / (6 + 4)
    assert rows["ORT fp32 image / PyTorch eager image"]["value"] == 0.6


def test_a_bundle_never_scored_measures_its_fastest_variant_for_auto():
    out = {"machine": {"isa": ["avx2"]}, "variants": ["fp32", "int8", "int8-cpu"], "image_bound_ms": 5.0,
           "stages_ms": {"pytorch eager": _row(20.0), "onnxruntime fp32": _row(12.0, 8.0),
                         "onnxruntime int8": _row(9.0, 6.0), "onnxruntime int8-cpu": _row(6.0, 4.0)},
           "auto": {"variant": "fp32", "reason": "no variant scored", "scored": False}}
    variant, note = auto_stand_in(out)
    assert variant == "int8-cpu" and "random weights" in note
    auto = next(t for t in targets(out) if t["target"].startswith("auto"))
    assert auto["target"].startswith("auto (int8-cpu)") and auto["value"] == 2.0
    out["auto"] = {"variant": "int8", "reason": "within the bound", "scored": True}
    assert auto_stand_in(out) == ("int8", "within the bound")


def test_the_flicker_benchmark_compares_holds_on_steady_scenes(tiny_bundle, tmp_path, capsys):
    from benchmarks.flicker import main as flicker

    out = tmp_path / "flicker.json"
    assert flicker(["--model", str(tiny_bundle), "--scenes", "1", "--seconds", "1.5", "--fps", "8",
                    "--holds", "0,0.5", "--in-view-threshold", "0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["hold_s"] for r in rows] == [0.0, 0.5] and all(r["scenes"] == 2 for r in rows)
    assert "| hold s | flicker /s" in capsys.readouterr().out
