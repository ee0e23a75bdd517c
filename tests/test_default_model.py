"""The default model shipped in the package, how one is packaged, and `avsl-edge demo` on the
built-in clips: what a user gets from `pip install` before training anything."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import avsl_edge
from avsl_edge import cli, registry
from avsl_edge.bundle import BundleError, load_bundle
from avsl_edge.media import probe, read_sound
from avsl_edge.rules import combined_score
from export.package_default import CARD_NAME, package_bundle
from runtime.demo_command import demo_folder

SHIPPED = registry.PACKAGED_BUNDLE
REPO = Path(__file__).resolve().parents[1]


def test_packaging_keeps_only_the_chosen_variants_and_the_card(smoke_bundle, tmp_path):
    card = tmp_path / "card.md"
    card.write_text("# the smoke model\n")
    out = package_bundle(smoke_bundle, tmp_path / "default", ["int8-cpu"], card)
    b = load_bundle(out)  # every file checksummed, the card too
    assert list(b.manifest.variants) == ["int8-cpu"] and b.manifest.engines == []
    assert b.manifest.export["packaged"]["left_out"] == ["fp32", "fp16", "int8"]
    assert str(tmp_path.parent) not in (out / "manifest.json").read_text()  # no machine's folders ship
    assert (out / CARD_NAME).read_text() == "# the smoke model\n" and CARD_NAME in b.manifest.files
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        CARD_NAME, "dictionary.npy", "fp32/head.onnx", "int8-cpu/audio.onnx", "int8-cpu/image.onnx", "manifest.json"]
    loc = avsl_edge.load(out, intra_op_threads=1)  # auto: the one variant it holds
    assert loc.backend.variant == "int8-cpu"
    with pytest.raises(BundleError, match=r"has no 'fp32' variant \(it has \['int8-cpu'\]\)"):
        avsl_edge.load(out, variant="fp32")


def test_packaging_refuses_a_variant_the_export_lacks_and_leaves_nothing(smoke_bundle, tmp_path):
    with pytest.raises(BundleError, match=r"has no variant \['int4'\]"):
        package_bundle(smoke_bundle, tmp_path / "default", ["int8-cpu", "int4"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not (SHIPPED / "manifest.json").is_file(), reason="this tree ships no default model")
def test_the_shipped_model_is_found_without_naming_one_and_localizes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no pipeline run registered
    monkeypatch.delenv(registry.ENV_MODEL, raising=False)
    assert registry.resolve_model() == SHIPPED
    b = load_bundle(SHIPPED)  # checksums verified
    assert set(b.manifest.variants) <= {"int8", "int8-cpu"}
    assert (SHIPPED / CARD_NAME).read_text() == (REPO / "docs" / "model_card.md").read_text()  # the card beside it
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 60e6
    assert cli.main(["info", "--no-verify"]) == 0
    assert "the default model shipped in the package, see its MODEL_CARD.md" in capsys.readouterr().out
    video = demo_folder() / "solo_a.mp4"
    sound, rate = read_sound(video)
    frame = np.full((240, 320, 3), 90, np.uint8)
    r = avsl_edge.load(intra_op_threads=1).localize(frame, sound[:rate], rate, rgb=True)
    assert r.frame_size == (240, 320) and r.classes == b.classes
    # its calibrated combination of the in-view scores is there to switch to, with that score's threshold
    combined = avsl_edge.load(intra_op_threads=1, in_view_score="combined")
    fits = b.manifest.postprocessing.calibration["in_view_fits"]
    assert combined.rules.in_view_threshold == fits["combined"]["threshold"] != b.manifest.postprocessing.in_view_threshold
    r = combined.localize(frame, sound[:rate], rate, rgb=True)
    assert r.combined == pytest.approx(float(combined_score(combined.rules.in_view_combination, av_score=r.av_score,
                                                            presence=r.presence, heard_av=r.heard_av)))


def test_demo_writes_an_overlay_per_clip_a_grid_and_a_line_per_clip(smoke_bundle, tmp_path, capsys):
    clips = json.loads((demo_folder() / "clips.json").read_text())["clips"]
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--model", str(smoke_bundle), "--threads", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    for clip in clips:
        stem = clip["file"].removesuffix(".mp4")
        info = probe(out / f"{stem}_overlay.mp4")
        assert info.has_audio and info.frames == probe(demo_folder() / clip["file"]).frames
        assert len((out / f"{stem}.jsonl").read_text().splitlines()) == info.frames
        line = next(x for x in printed if x.startswith(clip["file"] + ":"))
        assert "sounds like" in line and f"The clip shows {', '.join(clip['shown'])}" in line
    grid = cv2.imread(str(out / "grid.png"))
    assert grid is not None and grid.shape[0] >= 2 * 256  # two rows of three clips
