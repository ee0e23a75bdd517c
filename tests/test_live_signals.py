"""Fault test: Ctrl-C twice in quick succession during `avsl-edge live` (a video file as the camera,
an audio file as the microphone). The first SIGINT asks for a clean stop; the second, 20-100 ms
later, lands while the recording is being finalised and must not cut that short: the recording
is complete and playable, every JSON line parses, the summary is complete, the exit code is 130,
and nothing aborts at exit (no native thread left running)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from avsl_edge.audio import save_audio

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"reason", "frames", "seconds", "fps", "latency_ms", "stages_ms", "camera", "camera_frames",
                "camera_dropped", "mic", "audio_blocks", "audio_updates", "mic_overflows", "mic_queue_drops", "heard", "audio_classes",
                "model", "variant", "variant_choice", "backend", "rules", "recording", "recording_frames", "recording_repeated",
                "snapshots", "warnings"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """A 20 s, 10 fps 64x64 test pattern (long enough never to end on its own here) and 20 s of tone."""
    root = tmp_path_factory.mktemp("signals")
    video, wav = root / "camera.mp4", root / "mic.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-t", "20",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)], check=True)
    save_audio(wav, 0.3 * np.sin(np.linspace(0, 2 * np.pi * 440 * 20, 16000 * 20)).astype(np.float32),
               sample_rate=16000)
    return video, wav


def wait_for_frames(folder: Path, proc: subprocess.Popen, timeout: float = 40.0) -> None:
    """Until the JSON lines have a line: they are written to a temporary sibling (``.J.*``) that
    becomes J.jsonl only once complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if any(p.stat().st_size > 0 for p in folder.glob(".J.*")):
            return
        time.sleep(0.01)
    raise AssertionError("live produced no frame in time")


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type:format=duration",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("repeat", range(2))
@pytest.mark.parametrize("gap_ms", [20, 50, 100])
def test_a_second_ctrl_c_during_shutdown_loses_nothing(gap_ms, repeat, sources, smoke_bundle, tmp_path):
    video, wav = sources
    rec, jsonl, summary = tmp_path / "R.mp4", tmp_path / "J.jsonl", tmp_path / "S.json"
    proc = subprocess.Popen([sys.executable, "-m", "avsl_edge", "live", "--camera", str(video), "--mic", str(wav),
                             "--record", str(rec), "--json", str(jsonl), "--summary-json", str(summary),
                             "--no-display", "--model", str(smoke_bundle), "--threads", "1"],
                            cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_frames(tmp_path, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(gap_ms / 1000)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "terminate called" not in stderr, stderr

    probed = ffprobe(rec)
    assert "video" in [s["codec_type"] for s in probed["streams"]] and float(probed["format"]["duration"]) > 0
    with av.open(str(rec)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert decoded >= 1

    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines and [d["frame"] for d in lines] == list(range(len(lines)))

    s = json.loads(summary.read_text())
    assert set(s) == SUMMARY_KEYS and s["reason"] == "interrupted"
    assert s["frames"] == len(lines) and s["recording"] == str(rec) and decoded == s["recording_frames"] >= 1
    assert "(interrupted)" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["J.jsonl", "R.mp4", "S.json"]  # no temporary leftovers
