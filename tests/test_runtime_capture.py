"""The live runtime's capture path with real components, no mocks: a private PulseAudio server
(null sink) heard through ALSA's pulse plugin and PortAudio (sounddevice) for the microphone,
OpenCV's VideoCapture on SynthMUSIC video files for the camera, PyAV/FFmpeg for the recordings.

The ``pulse`` fixture (tests/conftest.py, shared with tests/test_live.py) needs the Debian packages
pulseaudio, pulseaudio-utils (pactl, paplay, parec), libasound2-plugins (ALSA's pulse plugin) and
libportaudio2; the tests that use it skip, saying what is missing or what failed, where those are
not there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from avsl_edge.audio import load_audio, save_audio
from avsl_edge.media import probe, read_audio_track
from runtime.camera import CameraEnded, CameraError, CameraSource, Frame
from runtime.microphone import (
    AudioEnded,
    FileAudioSource,
    MicrophoneError,
    MicSource,
    list_devices,
    open_audio_source,
)
from runtime.ring import AudioRing
from runtime.scheduler import StreamLoop
from training.data.synth import SynthMusic, write_scene_video

REPO = Path(__file__).resolve().parents[1]
FPS = 30.0
SCENE = ("duet", 11, 4.0)  # kind, seed, seconds


# ---------------------------------------------------------------------------------------- helpers


def log_spectrum(x: np.ndarray, n: int = 512) -> np.ndarray:
    """Mean log power spectrum (Hann frames of ``n``, hop n/2), 100 Hz - 7.5 kHz at 16 kHz."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2] * np.hanning(n)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    lo, hi = int(100 * n / 16000), int(7500 * n / 16000)
    return 10 * np.log10(power[lo:hi] + 1e-10)


def spectral_match(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(log_spectrum(a), log_spectrum(b))[0, 1])


def locate(needle: np.ndarray, hay: np.ndarray) -> tuple[int, float]:
    """Offset of ``needle`` in ``hay`` by FFT cross-correlation, and the normalised peak."""
    n = len(hay) + len(needle)
    size = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.fft.rfft(hay, size) * np.conj(np.fft.rfft(needle, size)), size)[: len(hay) - len(needle) + 1]
    k = int(np.argmax(c))
    seg = hay[k: k + len(needle)]
    return k, float(c[k] / (np.linalg.norm(needle) * np.linalg.norm(seg) + 1e-12))


def ffprobe_streams(path: Path) -> list[dict]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,nb_frames",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["streams"]


def assert_playable(path: Path) -> dict:
    """ffprobe sees H.264 video + AAC audio, and ffmpeg decodes the whole file without an error."""
    streams = {s["codec_type"]: s for s in ffprobe_streams(path)}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "aac"
    dec = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True)
    assert dec.returncode == 0 and dec.stderr.strip() == "", dec.stderr
    assert not list(path.parent.glob(f".{path.stem}.*")), "the writer's temporary file was left behind"
    return streams


def level_overlay(ring: AudioRing):
    """A trivial process_frame: the frame with a bar as long as the audio level (the HUD meter)."""

    def process(frame: Frame, state) -> np.ndarray:
        img = frame.image.copy()
        db = ring.level_db()
        cv2.rectangle(img, (0, 0), (int((db + 120) / 120 * (img.shape[1] - 1)), 6), (255, 255, 0), -1)
        return img

    return process


def rms_state(window: np.ndarray) -> float:
    assert window.shape == (16000,) and window.dtype == np.float32
    return float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 4 s SynthMUSIC duet video (30 fps, with audio), its soundtrack as WAV, and the exact frames."""
    root = tmp_path_factory.mktemp("scene")
    kind, seed, seconds = SCENE
    video = write_scene_video(root / "scene.mp4", kind, seed, seconds, FPS)
    wav = save_audio(root / "scene.wav", read_audio_track(video))
    frames = SynthMusic().render_video(kind, seed, 0.1, FPS).frames
    return video, wav, frames


# ------------------------------------------------------------------------------------- microphone


def test_microphone_hears_what_pulseaudio_plays(pulse, tmp_path):
    """paplay a SynthMUSIC flute clip into the null sink; MicSource (ALSA pulse -> PortAudio) +
    AudioRing capture it: exact waveform found in the stream, a ring window timed by the stream's
    timestamps matches the clip there, and its spectrum is the flute's, not a drum's."""
    synth = SynthMusic()
    clip = synth.render_audio(["flute"], seed=3, duration=2.0)
    drum = synth.render_audio(["drum"], seed=3, duration=2.0)
    wav = save_audio(tmp_path / "flute.wav", clip)
    clip = load_audio(wav)  # what paplay really plays (16-bit)
    ring = AudioRing(seconds=4.0)
    blocks, lags = [], []

    with MicSource("pulse", block=0.02) as mic:
        assert mic.device_rate == 16000 and mic.sample_rate == 16000

        def pump(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                b = mic.read(timeout=0.05)
                if b is not None:
                    ring.push_block(b)
                    lags.append(time.monotonic() - b.t_end)
                    blocks.append(b)

        pump(0.4)
        assert blocks, "no audio block within 0.4 s of opening the microphone"
        silence_db = ring.level_db(0.2)
        t_launch = time.monotonic()
        player = pulse.play(wav)
        heard_at = None
        while player.poll() is None and time.monotonic() < t_launch + 10:
            pump(0.02)
            if heard_at is None and ring.level_db(0.02) > -50:
                heard_at = time.monotonic()
        assert player.wait(5) == 0, player.stderr.read().decode()
        pump(0.3)
        overflows, adc_lag = mic.overflows, mic.adc_lag

    assert silence_db < -90, f"the null sink's monitor should be silent before playing, got {silence_db:.1f} dB"
    assert heard_at is not None, "the played clip never reached the ring"
    stream = np.concatenate([b.samples for b in blocks])
    start, peak = locate(clip, stream)
    assert peak > 0.98, f"the clip is not in the captured stream (normalised correlation {peak:.3f})"

    # The stream's own timestamps (median over blocks: they jitter by ms) place the clip; the ring
    # window ending 1.5 s into it is clip[0.5:1.5].
    ends = np.cumsum([len(b.samples) for b in blocks])
    t_first = float(np.median([b.t_end - e / 16000 for b, e in zip(blocks, ends)]))  # time of sample 0
    t_clip = t_first + start / 16000
    window, t_end = ring.window(end_time=t_clip + 1.5)
    assert abs(t_end - (t_clip + 1.5)) <= 0.5 / 16000  # to the sample
    shift, w_peak = locate(window[2000:14000], clip)
    print(f"\nring window vs stream timestamps: {(shift - 10000) / 16:+.2f} ms")
    # PulseAudio's reported latency steps by 5-10 ms when a playback stream comes and goes, so the
    # timestamps themselves are good to a few ms (a video frame is 33 ms).
    assert w_peak > 0.98 and abs(shift - 10000) <= 160, (shift, w_peak)  # within 10 ms
    assert spectral_match(window, clip[8000:24000]) > 0.9
    assert spectral_match(window, clip[8000:24000]) > spectral_match(window, drum[8000:24000]) + 0.1
    assert overflows == 0
    lags_ms = np.array(lags) * 1000
    print(f"\nmic via PulseAudio: adc->callback {adc_lag * 1000:.1f} ms; block end -> ring median "
          f"{np.median(lags_ms):.1f} ms, p90 {np.percentile(lags_ms, 90):.1f} ms; paplay launch -> heard "
          f"{(heard_at - t_launch) * 1000:.0f} ms")
    assert np.median(lags_ms) < 100


def test_list_devices_names_the_pulse_inputs(pulse):
    text = list_devices()
    assert "'pulse' (ALSA" in text and "in," in text
    with open_audio_source("pulse") as src:  # a name, not a file
        assert isinstance(src, MicSource) and src.device.name == "pulse"


def test_missing_microphone_is_a_clear_error():
    with pytest.raises(MicrophoneError, match="no-such-microphone-xyz"):
        MicSource("no-such-microphone-xyz")
    with pytest.raises(MicrophoneError, match=r"no audio input device 97\b"):
        MicSource(97)
    with pytest.raises(MicrophoneError, match="missing.wav: no such audio file"):
        open_audio_source("missing.wav")


def test_file_audio_source_replays_in_real_time(scene):
    _, wav, _ = scene
    want = load_audio(wav, duration=1.0)
    part = save_audio(wav.parent / "one_second.wav", want)
    t0 = time.monotonic()
    blocks = []
    with open_audio_source(part) as src:
        assert isinstance(src, FileAudioSource)
        while True:
            try:
                b = src.read(timeout=None)
            except AudioEnded:
                break
            blocks.append((b, time.monotonic()))
    elapsed = time.monotonic() - t0
    assert 0.95 < elapsed < 1.15, f"1 s of audio took {elapsed:.3f} s"
    assert np.array_equal(np.concatenate([b.samples for b, _ in blocks]), want)
    assert len(blocks) == 50 and all(b.samples.shape == (320,) for b, _ in blocks)
    late = [got - b.t_end for b, got in blocks]  # a block arrives when its last sample is "captured"
    assert min(late) >= 0 and np.median(late) < 0.01


# ----------------------------------------------------------------------------------------- camera


def test_camera_reads_a_video_file_like_a_webcam(scene):
    video, _, truth = scene
    t0 = time.monotonic()
    with CameraSource(str(video)) as cam:
        assert cam.fps == FPS and cam.size == (224, 224) and cam.frame_count == 120
        frames = [cam.read(timeout=2.0)]
        while frames[-1].index < 14:
            frames.append(cam.read(timeout=2.0))
        # a consumer this fast misses nothing (unless the machine stalls it for a frame period)
        assert len(frames) == 15 - cam.frames_dropped and cam.frames_dropped <= 2
    elapsed = time.monotonic() - t0
    assert frames[0].index == 0 and all(np.diff([f.index for f in frames]) > 0)
    assert all(f.image.shape == (224, 224, 3) and f.image.dtype == np.uint8 for f in frames)
    ts = np.array([f.timestamp for f in frames])
    assert np.all(np.diff(ts) > 0) and abs((ts[-1] - ts[0]) - 14 / FPS) < 0.05  # paced at its own fps
    assert elapsed > 14 / FPS
    assert frames[-1].media_time == pytest.approx(14 / FPS)
    rgb = np.abs(frames[0].image.astype(int) - truth[0].astype(int)).mean()
    bgr = np.abs(frames[0].image[..., ::-1].astype(int) - truth[0].astype(int)).mean()
    assert rgb < 6 and rgb < bgr, (rgb, bgr)  # the generator's frame, in RGB order
    assert not cam.running  # closed: the reader thread released the capture


def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted(scene):
    video, _, _ = scene
    with CameraSource(video) as cam:
        prev = cam.read(timeout=2.0)
        for _ in range(3):
            time.sleep(0.3)  # a slow model: ~9 frames arrive meanwhile
            f = cam.read(timeout=2.0)
            age = time.monotonic() - f.timestamp
            assert age < 1 / FPS + 0.03, f"got a frame {age * 1000:.0f} ms old: frames are being queued"
            assert f.index - prev.index >= 6
            backlog = cam.frames_read - cam.frames_delivered - cam.frames_dropped
            assert backlog in (0, 1)  # at most the one newest frame waits, never a queue
            prev = f
        assert cam.frames_dropped >= 18


def test_unpaced_file_hands_over_every_frame_then_ends(scene):
    video, _, _ = scene
    t0 = time.monotonic()
    with CameraSource(video, realtime=False) as cam:
        got = []
        with pytest.raises(CameraEnded, match="ended after 120 frames"):
            while True:
                time.sleep(0.002 if len(got) % 10 == 0 else 0)  # an uneven consumer loses nothing
                got.append(cam.read(timeout=2.0).index)
        assert cam.ended
    assert got == list(range(120)) and cam.frames_dropped == 0
    assert time.monotonic() - t0 < 3.0  # 4 s of video, not paced


def test_camera_errors_are_clear_and_quick(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(CameraError, match="camera 7 could not be opened; available: "):
        CameraSource(7)
    assert time.monotonic() - t0 < 3.0
    with pytest.raises(CameraError, match="nope.mp4: no such video file"):
        CameraSource(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(CameraError, match="junk.mp4"):
        CameraSource(junk)
    with pytest.raises(CameraError, match="realtime=False only applies to video files"):
        CameraSource(0, realtime=False)
    t0 = time.monotonic()
    with pytest.raises(CameraError, match=r"stream rtsp://viewer:\*\*\*@127.0.0.1:9/live could not be opened") as err:
        CameraSource("rtsp://viewer:secret@127.0.0.1:9/live", open_timeout=2.0)  # nothing listens on port 9
    assert "secret" not in str(err.value) and time.monotonic() - t0 < 3.0


# -------------------------------------------------------------------------------------- live loop


def test_live_loop_records_max_frames_with_audio(scene, tmp_path):
    """``--max-frames 45 --record out.mp4`` on a video file + its soundtrack replayed as the mic:
    a playable mp4 with the frames and the captured audio, in sync."""
    video, wav, _ = scene
    cam, mic = CameraSource(video), FileAudioSource(wav)
    ring = AudioRing()
    out = tmp_path / "out.mp4"
    loop = StreamLoop(cam, mic, rms_state, level_overlay(ring), ring=ring, max_frames=45, recorder=out)
    res = loop.run()
    assert res.reason == "max_frames" and res.frames == 45 and res.recording == out
    assert not cam.running
    info = probe(out)
    rec = loop.recorder
    assert info.frames == rec.frames == 45 + rec.frames_repeated and rec.frames_repeated <= 10
    assert info.has_audio and info.fps == FPS
    streams = assert_playable(out)
    assert int(streams["video"]["nb_frames"]) == info.frames
    sound = read_audio_track(out)
    assert abs(len(sound) / 16000 - info.frames / FPS) < 0.07
    # In sync: the recorded audio is the soundtrack from the first frame on (AAC: +-1 ms, small loss).
    src = load_audio(wav)
    shift, peak = locate(sound[4000:20000], src)
    assert peak > 0.95 and abs(shift - 4000) < 16 * 20, (shift, peak)  # < 20 ms
    # The overlay (the level bar) is in the recording.
    first = cv2.VideoCapture(str(out)).read()[1]
    assert first[:6, :, :].mean() > 100
    st = res.stats
    assert st.audio_updates >= 5 and st.stages["latency"].p90_ms < 100
    print(f"\nlive loop (file camera + file mic): {st.line()}  capture->ring {st.stages['capture']}")


def test_slow_inference_drops_frames_instead_of_queueing(scene, tmp_path):
    video, wav, _ = scene

    def slow(frame: Frame, state) -> np.ndarray:
        time.sleep(0.1)  # 10 fps of inference against a 30 fps camera
        return frame.image

    out = tmp_path / "slow.mp4"
    loop = StreamLoop(CameraSource(video), FileAudioSource(wav), rms_state, slow, max_frames=10, recorder=out)
    res = loop.run()
    st = res.stats
    assert res.frames == 10 and st.camera_dropped >= 10
    assert st.stages["latency"].max_ms < 100 + 2 * 1000 / FPS + 60, st.stages["latency"]  # bounded
    info = probe(out)  # dropped slots repeat the last overlay: the video keeps real time
    assert info.frames == loop.recorder.frames and info.frames >= 25
    assert abs(len(read_audio_track(out)) / 16000 - info.frames / FPS) < 0.07
    print(f"\nslow inference: {st.line()}")


def test_two_workers_keep_up_where_one_drops_frames_and_results_stay_in_capture_order(scene, tmp_path):
    """``workers=2``: two frames are processed at once (the work here, like ONNX Runtime and GrabCut,
    releases the GIL), finished on the loop's thread in capture order."""
    video, wav, _ = scene
    period = 1.0 / FPS
    work_threads, finished = set(), []

    def work(frame: Frame, state) -> tuple[int, np.ndarray]:  # 1.6 frame periods: one worker falls behind
        work_threads.add(threading.current_thread().name)
        time.sleep(1.6 * period)
        return frame.index, frame.image

    def finish(frame: Frame, done: tuple[int, np.ndarray]) -> np.ndarray:
        assert threading.current_thread() is threading.main_thread() and done[0] == frame.index
        finished.append(frame.index)
        return done[1]

    one = StreamLoop(CameraSource(video), FileAudioSource(wav), rms_state, work, finish_frame=finish,
                   max_frames=30).run()
    order_one, finished[:] = list(finished), []
    two = StreamLoop(CameraSource(video), FileAudioSource(wav), rms_state, work, finish_frame=finish, workers=2,
                   max_frames=30, recorder=tmp_path / "two.mp4").run()
    assert one.frames == two.frames == 30 and len(finished) == 30
    assert finished == sorted(finished) and order_one == sorted(order_one)  # capture order, no frame twice
    assert one.stats.camera_dropped >= 10                 # one worker: about every other frame dropped
    assert two.stats.camera_dropped <= 3, two.stats.line()  # two: they keep up with the camera
    assert any(name.startswith("live:frame") for name in work_threads)
    assert two.stats.stages["latency"].max_ms < 1000 * (1.6 + 2) * period + 60  # still bounded
    assert probe(tmp_path / "two.mp4").frames >= 30
    cam = CameraSource(video)
    try:
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            StreamLoop(cam, None, rms_state, work, workers=0)
    finally:
        cam.close()


def test_an_error_on_a_worker_is_raised_by_the_loop(scene, tmp_path):
    video, wav, _ = scene

    def broken(frame: Frame, state) -> np.ndarray:
        if frame.index == 5:
            raise RuntimeError("model failed on frame 5")
        return frame.image

    out = tmp_path / "err.mp4"
    cam = CameraSource(video)
    with pytest.raises(RuntimeError, match="frame 5"):
        StreamLoop(cam, FileAudioSource(wav), rms_state, broken, workers=2, recorder=out).run()
    assert not cam.running and 4 <= probe(out).frames <= 8
    assert_playable(out)


def test_audio_worker_thread_updates_every_hop(scene):
    video, wav, _ = scene
    threads = set()

    def encode(window: np.ndarray) -> float:
        threads.add(threading.current_thread().name)
        return rms_state(window)

    res = StreamLoop(CameraSource(video), FileAudioSource(wav), encode, lambda f, s: f.image,
                   hop=0.25, audio_worker=True, max_frames=45).run()
    assert threads == {"MainThread", "live:audio-encode"}  # the initial state, then the worker
    assert 4 <= res.stats.audio_updates <= 9  # 1.5 s / 0.25 s + the initial one
    assert res.stats.stages["audio_lag"].p90_ms < 300


def test_error_in_the_loop_still_finalises_the_recording(scene, tmp_path):
    video, wav, _ = scene
    cam, mic = CameraSource(video), FileAudioSource(wav)

    def broken(frame: Frame, state) -> np.ndarray:
        if frame.index == 8:
            raise RuntimeError("model failed on frame 8")
        return frame.image

    out = tmp_path / "err.mp4"
    with pytest.raises(RuntimeError, match="frame 8"):
        StreamLoop(cam, mic, rms_state, broken, recorder=out).run()
    assert not cam.running
    info = probe(out)
    assert 8 <= info.frames <= 10 and info.has_audio
    assert_playable(out)


_SIGINT_SCRIPT = """
import sys
from runtime.camera import CameraSource
from runtime.microphone import FileAudioSource
from runtime.scheduler import StreamLoop

video, wav, out = sys.argv[1:4]
cam = CameraSource(video)
def show(overlay, stats):
    if stats.frames == 10:
        print("READY", flush=True)
res = StreamLoop(cam, FileAudioSource(wav), lambda w: float(abs(w).max()), lambda f, s: f.image,
               recorder=out, display=show).run()
print("RESULT", res.reason, res.frames, res.recording, cam.running, flush=True)
"""


def test_sigint_stops_cleanly_with_a_finalised_recording(scene, tmp_path):
    video, wav, _ = scene
    out = tmp_path / "sigint.mp4"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", _SIGINT_SCRIPT, str(video), str(wav), str(out)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    reason, frames, path, running = stdout.split()[1:5]
    assert reason == "interrupted" and Path(path) == out and running == "False"
    assert 15 <= int(frames) < 100  # stopped mid-run (the video has 120)
    info = probe(out)
    assert info.has_audio and info.frames >= int(frames)
    assert_playable(out)


def test_live_loop_with_the_pulseaudio_microphone(pulse, scene, tmp_path):
    """The full live path: camera (OpenCV on a file) + microphone (PulseAudio -> ALSA -> PortAudio)
    while paplay plays the scene's soundtrack; the recording carries what was played."""
    video, wav, _ = scene
    clip = load_audio(wav, duration=2.0)
    part = save_audio(tmp_path / "two_seconds.wav", clip)
    out = tmp_path / "live.mp4"
    cam, mic = CameraSource(video), MicSource("pulse")
    player = pulse.play(part)
    try:
        res = StreamLoop(cam, mic, rms_state, lambda f, s: f.image, max_frames=75, recorder=out).run()
    finally:
        player.wait(10)
    assert res.frames == 75 and res.stats.audio_blocks > 50 and res.stats.mic_overflows == 0
    assert not cam.running
    sound = read_audio_track(out)
    _, peak = locate(clip[8000:20000], sound)
    assert peak > 0.9, f"the played soundtrack is not in the recording (correlation {peak:.3f})"
    assert_playable(out)
    print(f"\nlive loop (file camera + PulseAudio mic): {res.stats.line()}  capture->ring {res.stats.stages['capture']}")


def test_runtime_never_imports_torch():
    code = ("import sys, runtime.camera, runtime.microphone, runtime.ring, runtime.recording, runtime.scheduler; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
