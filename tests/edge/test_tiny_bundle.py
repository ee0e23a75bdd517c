"""The edge library as a user on an edge box calls it: no torch, a bundle on disk, frames and sound."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import soundfile as sf

import avsl_edge
from avsl_edge.bundle import BundleError, load_bundle
from tiny_bundle import CLASSES, IMAGE_SIZE

RNG = np.random.default_rng(0)
FRAME = (RNG.random((120, 160, 3)) * 255).astype(np.uint8)           # BGR, as OpenCV gives it
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype(np.float32)  # 1 s at 48 kHz


def test_a_bundle_written_with_onnx_helper_loads_and_verifies(tiny_bundle):
    b = load_bundle(tiny_bundle)
    assert b.classes == CLASSES
    assert b.dictionary.shape == (4, 512)
    assert b.manifest.preprocessing.image_size == IMAGE_SIZE


def test_localize_takes_a_bgr_frame_and_48k_int16_stereo(tiny_bundle):
    stereo = (np.stack([TONE, TONE], axis=1) * 32767).astype(np.int16)
    r = avsl_edge.load(tiny_bundle).localize(FRAME, stereo, sample_rate=48000)
    assert r.av_map.shape == (120, 160) and 0.0 <= r.av_score <= 1.0
    assert r.audio_db == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.5)  # a sine's RMS level
    assert r.classes == CLASSES and float(r.class_probs.sum()) == pytest.approx(1.0, abs=1e-5)
    assert r.av_map_lowres.shape == (4, 4)


def test_silence_lights_nothing_whatever_the_model(tiny_bundle):
    loc = avsl_edge.load(tiny_bundle).with_rules(in_view_threshold=0.0)
    r = loc.localize(FRAME, np.zeros(16000, np.float32))
    assert not r.sounding and r.boxes == []


def test_an_in_view_threshold_of_zero_lights_one_box_per_named_class(tiny_bundle):
    r = avsl_edge.load(tiny_bundle).with_rules(in_view_threshold=0.0).localize(FRAME, TONE, sample_rate=48000)
    assert r.sounding and r.boxes
    assert sorted(b.label for b in r.boxes) == sorted(set(b.label for b in r.boxes))
    for box in r.boxes:
        assert 0 <= box.x and 0 <= box.y and box.x + box.w <= 160 and box.y + box.h <= 120


def test_a_graph_changed_after_export_is_refused_naming_the_file(tiny_bundle_copy):
    graph = tiny_bundle_copy / "fp32" / "image.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="fp32/image.onnx"):
        avsl_edge.load(tiny_bundle_copy)


def test_importing_and_localizing_loads_no_torch(tiny_bundle):
    code = ("import sys, numpy as np, avsl_edge; loc = avsl_edge.load(sys.argv[1]); "
            "loc.localize(np.zeros((48, 64, 3), np.uint8), np.zeros(16000, np.float32)); "
            "print(sorted(m for m in ('torch', 'training', 'export', 'runtime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_bundle)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AVSL_EDGE_MODEL": ""}
    return subprocess.run([sys.executable, "-m", "avsl_edge", *args], capture_output=True, text=True, env=env)


def test_cli_info_describes_the_bundle(tiny_bundle):
    out = _cli("info", "--model", str(tiny_bundle), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["classes"] == list(CLASSES)


def test_cli_run_writes_an_overlay_video_and_a_json_line_per_frame(tiny_bundle, tmp_path):
    video, sound = tmp_path / "clip.mp4", tmp_path / "clip.wav"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for _ in range(10):
        writer.write(FRAME)
    writer.release()
    sf.write(sound, TONE, 48000)
    out = _cli("run", str(video), "--audio", str(sound), "--out", str(tmp_path / "overlay.mp4"),
               "--json", str(tmp_path / "frames.jsonl"), "--model", str(tiny_bundle), "--quiet")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == 10
    assert (tmp_path / "overlay.mp4").stat().st_size > 0


def test_cli_run_gives_the_same_lines_on_every_pass_in_the_live_schema(tiny_bundle, tmp_path):
    """`run` is the streaming loop of `live` on the file's own timeline: nothing depends on how fast
    the machine was, and each line carries the fields a `live --json` line has."""
    video, sound = tmp_path / "clip.mp4", tmp_path / "clip.wav"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for k in range(20):
        writer.write(np.roll(FRAME, 8 * k, axis=1))
    writer.release()
    sf.write(sound, np.concatenate([TONE, np.zeros(48000, np.float32)]), 48000)  # 1 s of tone, 1 s of silence
    passes = []
    for n in (1, 2):
        jsonl = tmp_path / f"frames{n}.jsonl"
        out = _cli("run", str(video), "--audio", str(sound), "--out", str(tmp_path / f"o{n}.mp4"), "--json",
                   str(jsonl), "--model", str(tiny_bundle), "--quiet", "--hop", "0.3", "--in-view-threshold", "0")
        assert out.returncode == 0, out.stderr
        passes.append([json.loads(x) for x in jsonl.read_text().splitlines()])
    timing = {"elapsed", "latency_ms", "speed"}
    assert [{k: v for k, v in d.items() if k not in timing} for d in passes[0]] == \
           [{k: v for k, v in d.items() if k not in timing} for d in passes[1]]
    lines = passes[0]
    assert [d["camera_index"] for d in lines] == list(range(20))
    assert [d["media_time"] for d in lines] == pytest.approx([k / 10 for k in range(20)])
    assert set(lines[0]) >= {"frame", "media_time", "camera_index", "elapsed", "latency_ms", "audio_level_db",
                             "audio_class", "sounding", "boxes", "scores"}
    assert lines[5]["audio_level_db"] > -20 and lines[-1]["audio_level_db"] < -60  # the tone, then silence


def test_cli_on_a_missing_bundle_exits_2_and_names_it(tmp_path):
    out = _cli("info", "--model", str(tmp_path / "nowhere"))
    assert out.returncode == 2
    assert "nowhere" in out.stderr
