"""The live runtime's pure parts: the audio ring's timing, the hop schedule, rolling stats, and the
recorder's A/V sync. (The capture path with real devices: tests/test_runtime_capture.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from avsl_edge.media import probe, read_audio_track
from runtime.camera import Frame
from runtime.microphone import AudioBlock
from runtime.recording import LiveRecorder
from runtime.ring import AudioRing
from runtime.scheduler import HopSchedule, RateMeter, RollingStats

SR = 16000
T0 = 100.0  # an arbitrary monotonic time


def ramp_ring(seconds_pushed: float, block: int = 320, jitter: float = 0.0, seed: int = 0) -> AudioRing:
    """A ring fed with sample value = sample number / 1e5, block k ending at T0 + (k+1)*block/SR."""
    rng = np.random.default_rng(seed)
    ring = AudioRing(seconds=1.5)
    n = int(seconds_pushed * SR)
    for start in range(0, n, block):
        x = np.arange(start, start + block, dtype=np.float32) / 1e5
        ring.push(x, T0 + (start + block) / SR + (rng.uniform(-jitter, jitter) if jitter else 0.0))
    return ring


def test_window_ends_at_the_requested_time():
    ring = ramp_ring(2.0)
    assert ring.latest_time == pytest.approx(T0 + 2.0)
    clip, t_end = ring.window(end_time=T0 + 1.8)  # e.g. a frame captured 0.2 s ago
    assert t_end == pytest.approx(T0 + 1.8) and clip.shape == (16000,) and clip.dtype == np.float32
    np.testing.assert_allclose(clip * 1e5, np.arange(12800, 28800), atol=0.01)
    newest, t_new = ring.window()
    np.testing.assert_allclose(newest * 1e5, np.arange(16000, 32000), atol=0.01)
    assert t_new == pytest.approx(T0 + 2.0)


def test_window_edges_too_old_future_and_empty():
    ring = ramp_ring(2.0)  # holds 1.5 s: samples 8000..32000
    old, t_old = ring.window(end_time=T0 + 0.2)  # older than held: the oldest full window
    assert t_old == pytest.approx(T0 + 1.5) and old[0] * 1e5 == pytest.approx(8000, abs=0.01)
    near, t_near = ring.window(end_time=T0 + 2.1)  # not captured yet but within tolerance: newest
    assert t_near == pytest.approx(T0 + 2.0) and near[-1] * 1e5 == pytest.approx(31999, abs=0.01)
    late, t_late = ring.window(end_time=T0 + 2.5)  # the source stopped: the missing 0.5 s is silence
    assert t_late == pytest.approx(T0 + 2.5)
    assert np.all(late[8000:] == 0) and late[7999] * 1e5 == pytest.approx(31999, abs=0.01)
    empty = AudioRing()
    clip, _ = empty.window(end_time=5.0)
    assert not clip.any() and empty.level_db() == -120.0
    short = ramp_ring(0.5)  # less than a second so far: zeros in front (the past), like fit_clip
    clip, _ = short.window()
    assert not clip[:8000].any() and clip[-1] * 1e5 == pytest.approx(7999, abs=0.01)


def test_lost_blocks_become_silence_and_jitter_is_smoothed():
    ring = AudioRing(seconds=1.5)
    ring.push(np.ones(3200, np.float32), T0 + 0.2)
    ring.push(np.ones(3200, np.float32), T0 + 0.7)  # 0.3 s of blocks never arrived
    assert ring.gaps == 1
    clip, _ = ring.window(seconds=0.7)
    assert clip[:3200].all() and not clip[3200:8000].any() and clip[8000:].all()
    jittery = ramp_ring(2.0, jitter=0.004)  # +-4 ms scheduling noise on every block
    assert abs(jittery.latest_time - (T0 + 2.0)) < 0.0015


def test_level_db_is_the_rms_in_dbfs():
    ring = AudioRing()
    t = np.arange(SR) / SR
    ring.push((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), T0 + 1.0)
    assert ring.level_db() == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)  # -9.03 dB


def test_hop_schedule_keeps_a_grid_and_never_bursts():
    h = HopSchedule(0.25)
    assert [h.due(t) for t in (0.0, 0.1, 0.2, 0.25, 0.3, 0.5)] == [True, False, False, True, False, True]
    assert h.due(1.6) and h.next == pytest.approx(1.85)  # a second behind: one update, then on
    assert not h.due(1.7) and h.due(1.85)
    with pytest.raises(ValueError, match="hop must be > 0"):
        HopSchedule(0)


def test_rolling_stats_and_rate():
    s = RollingStats(window=100)
    for ms in range(1, 201):  # only the last 100 (101..200 ms) count
        s.add(ms / 1000)
    summ = s.summary()
    assert summ.runs == 100 and summ.median_ms == pytest.approx(150.5) and summ.p90_ms == pytest.approx(190.1)
    assert summ.max_ms == pytest.approx(200) and str(summ) == "150.5/190.1 ms"
    assert RollingStats().summary().runs == 0
    every = RollingStats(window=10, keep_all=True)  # the end-of-run summary keeps every value
    for ms in range(1, 201):
        every.add(ms / 1000)
    assert every.summary().runs == 10 and every.summary_all().runs == 200
    assert every.summary_all().median_ms == pytest.approx(100.5)
    with pytest.raises(ValueError, match="keep_all"):
        s.summary_all()
    r = RateMeter(window=2.0)
    for k in range(61):
        r.tick(k / 30)
    assert r.rate() == pytest.approx(30.0)


def test_recorder_repeats_dropped_slots_and_keeps_audio_in_sync(tmp_path):
    fps = 10.0
    rec = LiveRecorder(tmp_path / "rec.mp4", fps=fps, sample_rate=SR)
    # Audio: sample value encodes its capture time; blocks of 0.05 s from T0 - 0.2 s (before the
    # first frame: cut) to T0 + 1.0 s.
    for k in range(24):
        t_end = T0 - 0.2 + (k + 1) * 0.05
        t = t_end - 0.05 + np.arange(800) / SR
        rec.add_audio(AudioBlock(((t - T0) / 10).astype(np.float32), t_end, SR))
    colours = {}
    for i in (0, 1, 4, 5, 9):  # frames 2, 3, 6, 7, 8 were dropped by the camera
        img = np.full((32, 32, 3), 20 * i, np.uint8)
        colours[i] = 20 * i
        rec.add_frame(img, Frame(img, T0 + i / fps, i, i / fps))
    assert rec.frames == 10 and rec.frames_repeated == 5
    path = rec.close()
    info = probe(path)
    assert info.frames == 10 and info.has_audio
    sound = read_audio_track(path)
    assert abs(sound.shape[0] - SR) < 300  # 1 s of video, 1 s of audio
    # Audio at file time s was captured at T0 + s: the value ramps from 0 to 0.1 (AAC: approximately).
    mid = sound[4000:12000]
    want = np.arange(4000, 12000) / SR / 10
    assert np.abs(mid - want).mean() < 0.003
