"""The streaming loop: frames + audio windows -> overlays, live (bounded latency) or offline (every frame).

    loop = StreamLoop(CameraSource(0), MicSource(), encode_audio=model.encode_audio,
                    process_frame=lambda frame, state: model.localize_frame(frame.image, state),
                    hop=0.25, recorder="out.mp4", display=window.show, max_frames=None)
    result = loop.run()            # StreamResult(reason="interrupted", frames=..., stats=StreamStats(...))

Scheduling:
  * audio: the embedding is recomputed every ``hop`` seconds (default 0.25) on the last
    ``window_seconds`` (1 s) of audio, on a fixed grid (a late update never causes a burst of
    catch-up updates); in the main loop on the window ending at the frame's capture time, or, with
    ``audio_worker=True``, on a second thread on the newest window so the two paths overlap;
  * image: every frame the loop gets is processed with the newest audio state; the camera keeps
    only its newest frame, so when inference is slower than the camera, frames are dropped (and
    counted), never queued: latency stays one frame period + one inference;
  * ``workers=N`` (default 1): up to N frames are processed at once on a thread pool (ONNX Runtime
    and OpenCV's GrabCut release the GIL), while ``finish_frame`` (drawing, bookkeeping), the
    recorder and the display handle the results on the loop's thread in capture order. It raises
    the frame rate when one frame's work cannot use every core; latency stays about one inference;
  * a pump thread moves audio blocks from the source into the :class:`~runtime.ring.AudioRing`
    (and to the recorder) as they arrive.

Offline (``realtime=False``, what ``avsl-edge run`` does with a video file): the same steps on
the file's own timeline. The camera hands over every frame (``CameraSource(file, realtime=False)``)
and the audio source is read on the media timeline (``FileAudioSource(..., realtime=False,
start=0.0)``): before each frame the loop reads the audio up to the frame's ``media_time``, hops
fall on media time, nothing is dropped, and the output is the same however fast the machine is
(``latency`` is then from a frame's decoding to its overlay).

Exit paths (all close the sources, stop the threads and finalise the recording): ``max_frames``
reached, the camera file ended, ``stop`` set, SIGINT/SIGTERM (handled as a stop request when run
on the main thread, see :class:`StopSignals`: later ones are ignored, so a second Ctrl-C never cuts
the finalising of the recording short), the display callback returning False, or an error
(re-raised after the clean-up). Torch-free: the model is whatever the callables are.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from avsl_edge.audio import CLIP_SECONDS, SAMPLE_RATE
from avsl_edge.streaming import HopSchedule
from avsl_edge.timing import Timing, summary
from avsl_edge.media import VideoWriter

from .camera import CameraEnded, Frame
from .microphone import AudioBlock, AudioEnded
from .recording import LiveRecorder
from .ring import AudioRing

# ------------------------------------------------------------------------------- pure building blocks


class RollingStats:
    """Median / p90 / max of the last ``window`` durations (seconds in, milliseconds out); thread-safe.
    ``keep_all``: also keep every value, for an end-of-run summary (:meth:`summary_all`)."""

    def __init__(self, window: int = 100, keep_all: bool = False):
        if window <= 0:
            raise ValueError(f"window must be > 0, got {window}")
        self._values: collections.deque = collections.deque(maxlen=window)
        self._all: list[float] | None = [] if keep_all else None
        self._lock = threading.Lock()
        self.total = 0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(float(seconds))
            if self._all is not None:
                self._all.append(float(seconds))
            self.total += 1

    def summary(self) -> Timing:
        """The last ``window`` values."""
        with self._lock:
            seconds = list(self._values)
        return summary([1000.0 * v for v in seconds])

    def summary_all(self) -> Timing:
        """Every value since the start (``keep_all=True`` only)."""
        if self._all is None:
            raise ValueError("summary_all needs RollingStats(keep_all=True)")
        with self._lock:
            seconds = list(self._all)
        return summary([1000.0 * v for v in seconds])


class RateMeter:
    """Events per second over the last ``window`` seconds of event times."""

    def __init__(self, window: float = 2.0):
        self.window = float(window)
        self._times: collections.deque = collections.deque()
        self._lock = threading.Lock()

    def tick(self, t: float | None = None) -> None:
        t = time.monotonic() if t is None else t
        with self._lock:
            self._times.append(t)
            while self._times and self._times[0] < t - self.window:
                self._times.popleft()

    def rate(self) -> float:
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0


class StopSignals:
    """``with StopSignals(event):`` the first SIGINT or SIGTERM sets ``event`` (a stop request)
    and is remembered in ``signum``; every later one is ignored (with a one-line note) until the
    block ends, so the clean-up it asked for (closing devices, finalising a recording, writing
    the summary) runs to the end however often Ctrl-C is pressed. Ctrl-\\ (SIGQUIT) still kills.
    ``linger``: once stopped by a signal, keep ignoring these signals after the block too (for a
    program that exits right after it: a late Ctrl-C would otherwise replace its exit code).
    Off the main thread (where Python cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, event: threading.Event | None = None,
                 note: bytes = b"stopping: finishing the outputs first (Ctrl-C again is ignored)\n",
                 linger: bool = False):
        self.event = event if event is not None else threading.Event()
        self.note = note
        self.linger = linger
        self.signum: int | None = None
        self.repeats = 0
        self._old: dict = {}

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            self.event.set()
            return
        self.repeats += 1
        if self.repeats == 1 and self.note:
            try:
                os.write(2, self.note)  # not print(): a handler may run in the middle of a write to stderr
            except OSError:
                pass

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, signal.SIG_IGN if self.linger and self.signum is not None else handler)
        self._old = {}


@dataclass(frozen=True)
class StreamStats:
    """A snapshot of the loop. Stages (median/p90 ms): ``audio`` encode_audio, ``frame``
    process_frame, ``record``, ``display``, ``latency`` capture -> overlay ready, ``audio_lag``
    frame capture time - end of the audio window its state was computed from, ``capture`` audio
    block captured -> in the ring."""

    frames: int
    fps: float
    camera_frames: int
    camera_dropped: int
    audio_updates: int
    audio_blocks: int
    mic_overflows: int
    stages: dict[str, Timing] = field(default_factory=dict)

    def line(self) -> str:
        """One line for a HUD or a log."""
        s = self.stages
        parts = [f"{self.fps:5.1f} fps", f"latency {s['latency']}" if "latency" in s else "",
                 f"frame {s['frame']}" if "frame" in s else "", f"audio {s['audio']}" if "audio" in s else "",
                 f"dropped {self.camera_dropped}/{self.camera_frames}"]
        if self.mic_overflows:
            parts.append(f"mic overflows {self.mic_overflows}")
        return "  ".join(p for p in parts if p)


@dataclass(frozen=True)
class StreamResult:
    """How a run ended: ``reason`` is one of "max_frames", "camera_ended", "stopped", "interrupted",
    "display_closed" (an error is raised instead)."""

    reason: str
    frames: int
    stats: StreamStats
    recording: Path | None


class FrameSource(Protocol):
    fps: float

    def read(self, timeout: float | None = ...) -> Frame | None: ...

    def close(self) -> None: ...


class AudioSource(Protocol):
    sample_rate: int

    def read(self, timeout: float | None = ...) -> AudioBlock | None: ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------------------------ the loop

_STAGES = ("audio", "frame", "record", "display", "latency", "audio_lag", "capture")


class StreamLoop:
    """Run ``process_frame(frame, encode_audio(window))`` on a live camera + audio source.

    ``encode_audio(window: (16000,) float32) -> state``; ``process_frame(frame: Frame, state) ->
    overlay`` (H, W, 3) uint8 RGB, or, with ``finish_frame(frame, processed) -> overlay``, whatever
    that takes. ``workers``: frames processed at once (module docstring); ``process_frame`` must then
    be thread-safe, ``finish_frame`` need not be. ``recorder``: an output path (a :class:`LiveRecorder` is made at
    ``record_fps``, default the camera's fps) or a ``VideoWriter`` (then ``record_fps`` is
    required); it gets the overlays and the captured audio. ``display(overlay, stats) -> bool |
    None``: False stops the loop. ``stop``: an Event another thread may set. ``close_sources``:
    close the camera and audio source when the run ends (on every path)."""

    def __init__(
        self,
        camera: FrameSource,
        audio: AudioSource | None,
        encode_audio: Callable[[np.ndarray], Any],
        process_frame: Callable[[Frame, Any], Any],
        *,
        finish_frame: Callable[[Frame, Any], np.ndarray] | None = None,
        workers: int = 1,
        hop: float = 0.25,
        window_seconds: float = CLIP_SECONDS,
        stop: threading.Event | None = None,
        max_frames: int | None = None,
        recorder: VideoWriter | LiveRecorder | str | os.PathLike | None = None,
        record_fps: float | None = None,
        display: Callable[[np.ndarray, StreamStats], bool | None] | None = None,
        audio_worker: bool = False,
        ring: AudioRing | None = None,
        stats_window: int = 100,
        handle_signals: bool = True,
        close_sources: bool = True,
        realtime: bool = True,
    ):
        if max_frames is not None and max_frames <= 0:
            raise ValueError(f"max_frames must be > 0, got {max_frames}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not realtime and audio_worker:
            raise ValueError("audio_worker needs realtime=True: offline, audio is read in step with the frames")
        self.realtime = bool(realtime)
        self.camera, self.audio = camera, audio
        self.encode_audio, self.process_frame = encode_audio, process_frame
        self.finish_frame, self.workers = finish_frame, workers
        self.hop, self.window_seconds = float(hop), float(window_seconds)
        HopSchedule(self.hop)  # validates hop
        self.stop = stop if stop is not None else threading.Event()
        self.max_frames = max_frames
        self.display = display
        self.audio_worker = audio_worker
        self.handle_signals = handle_signals
        self.close_sources = close_sources
        rate = audio.sample_rate if audio is not None else SAMPLE_RATE
        self.ring = ring if ring is not None else AudioRing(max(1.5, self.window_seconds + 0.5), rate)
        self._recorder_spec = recorder
        self._record_fps = record_fps
        self.recorder: LiveRecorder | None = None
        self._stats = {k: RollingStats(stats_window) for k in _STAGES}
        self._fps = RateMeter()
        self.frames = 0
        self.audio_updates = 0
        self.audio_blocks = 0
        self._rec_audio: collections.deque = collections.deque()
        self._errors: list[BaseException] = []
        self._state_lock = threading.Lock()
        self._state: Any = None
        self._state_t_end = 0.0
        self._threads: list[threading.Thread] = []
        self._halt = threading.Event()  # stops the helper threads
        self.audio_ended = False
        self._ran = False

    # ------------------------------------------------------------------------------------- stats

    def stats(self) -> StreamStats:
        cam = self.camera
        return StreamStats(
            frames=self.frames, fps=self._fps.rate(),
            camera_frames=int(getattr(cam, "frames_read", self.frames)),
            camera_dropped=int(getattr(cam, "frames_dropped", 0)),
            audio_updates=self.audio_updates, audio_blocks=self.audio_blocks,
            mic_overflows=int(getattr(self.audio, "overflows", 0)) if self.audio is not None else 0,
            stages={k: v.summary() for k, v in self._stats.items() if v.total},
        )

    # ----------------------------------------------------------------------------- helper threads

    def _pump(self) -> None:
        """Audio source -> ring (+ recorder queue), as blocks arrive."""
        try:
            while not self._halt.is_set():
                block = self.audio.read(timeout=0.05)
                if block is None:
                    continue
                self.ring.push(block.samples, block.t_end)
                self._stats["capture"].add(time.monotonic() - block.t_end)
                self.audio_blocks += 1
                if self.recorder is not None:
                    self._rec_audio.append(block)
        except AudioEnded:
            self.audio_ended = True
        except BaseException as exc:
            self._errors.append(exc)

    def _audio_loop(self) -> None:
        """The audio path on its own thread: a new state every hop of captured audio."""
        sched = HopSchedule(self.hop)
        sched.due(self._state_t_end)  # the grid starts at the initial state's window
        try:
            while not self._halt.is_set():
                if self.audio is not None and not self.audio_ended:
                    if not self.ring.wait_for(sched.next, timeout=0.1):
                        continue
                    t, end = self.ring.latest_time, None
                else:  # no audio (none, or the file ended): hop on the clock; windows fade to silence
                    now = time.monotonic()
                    if now < sched.next:
                        self._halt.wait(min(0.1, sched.next - now))
                        continue
                    t = end = now
                if sched.due(t):
                    self._update_audio(end_time=end)
        except BaseException as exc:
            self._errors.append(exc)

    def _pull_audio(self, until: float) -> None:
        """Offline: read the audio source (on the media timeline) until the ring reaches ``until``."""
        while self.audio is not None and not self.audio_ended:
            newest = self.ring.latest_time
            if newest is not None and newest >= until:
                return
            try:
                block = self.audio.read(timeout=0.0)
            except AudioEnded:
                self.audio_ended = True
                return
            if block is None:
                continue
            self.ring.push(block.samples, block.t_end)
            self.audio_blocks += 1
            if self.recorder is not None:
                self._rec_audio.append(block)

    def clock(self, frame: Frame) -> float:
        """A frame's time on the loop's clock: capture time live, media time offline (the audio
        source's timestamps are on the same clock)."""
        return frame.timestamp if self.realtime else frame.media_time

    def _update_audio(self, end_time: float | None) -> None:
        window, t_end = self.ring.window(end_time=end_time, seconds=self.window_seconds)
        t = time.monotonic()
        state = self.encode_audio(window)
        self._stats["audio"].add(time.monotonic() - t)
        with self._state_lock:
            self._state, self._state_t_end = state, t_end
            self.audio_updates += 1

    def _start(self, target, name: str) -> None:
        th = threading.Thread(target=target, name=name, daemon=True)
        th.start()
        self._threads.append(th)

    # ------------------------------------------------------------------------------------ running


    def _open_recorder(self) -> None:
        spec = self._recorder_spec
        if spec is None:
            return
        sr = self.ring.sample_rate if self.audio is not None else None
        if isinstance(spec, LiveRecorder):
            self.recorder = spec
        elif isinstance(spec, VideoWriter):
            fps = self._record_fps or getattr(spec, "fps", None)
            if not fps:
                raise ValueError("record_fps is required with a VideoWriter recorder (the file's frame rate)")
            self.recorder = LiveRecorder(spec, float(fps), sr)
        else:
            fps = self._record_fps or getattr(self.camera, "fps", None) or 30.0
            self.recorder = LiveRecorder(spec, float(fps), sr)

    def _raise_errors(self) -> None:
        if self._errors:
            raise self._errors[0]

    def run(self) -> StreamResult:
        """Run until a stop condition; returns how it ended. Call once per StreamLoop."""
        if self._ran:
            raise RuntimeError("a StreamLoop runs once (its sources are closed afterwards); make a new one")
        self._ran = True
        signals = StopSignals(self.stop) if self.handle_signals else None
        if signals is not None:
            signals.__enter__()
        reason = "stopped"
        failed = False
        try:
            self._open_recorder()
            if self.audio is not None and self.realtime:
                self._start(self._pump, "live:audio-pump")
            schedule = HopSchedule(self.hop)
            if self.audio_worker:
                self._update_audio(end_time=None)  # the first frame never waits for the worker
                self._start(self._audio_loop, "live:audio-encode")
            pool = ThreadPoolExecutor(self.workers, "live:frame") if self.workers > 1 else None
            inflight: collections.deque = collections.deque()  # (frame, state_t_end, started, future)
            submitted = 0
            try:
                while True:
                    if self.stop.is_set():
                        reason = "interrupted" if signals is not None and signals.signum is not None else "stopped"
                        break
                    self._raise_errors()
                    if inflight and (len(inflight) >= self.workers or inflight[0][3].done()
                                     or (self.max_frames is not None and submitted >= self.max_frames)):
                        reason = self._handle(*inflight.popleft())
                        if reason:
                            break
                        continue
                    try:  # with frames in flight, look back at them every few ms: a finished one is shown at once
                        frame = self.camera.read(timeout=0.005 if inflight else 0.1)
                    except CameraEnded:
                        reason = "camera_ended"
                        while inflight and reason == "camera_ended":  # the frames already taken are shown
                            reason = self._handle(*inflight.popleft()) or "camera_ended"
                        break
                    if frame is None:
                        continue
                    t_frame = self.clock(frame)
                    if not self.realtime:
                        self._pull_audio(t_frame)
                    if not self.audio_worker and schedule.due(t_frame):
                        self._update_audio(end_time=t_frame)
                    with self._state_lock:
                        state, state_t_end = self._state, self._state_t_end
                    t = time.monotonic()
                    if pool is None:
                        done: Future = Future()
                        done.set_result(self.process_frame(frame, state))
                    else:
                        done = pool.submit(self.process_frame, frame, state)
                    inflight.append((frame, state_t_end, t, done))
                    submitted += 1
            finally:
                if pool is not None:
                    for *_, fut in inflight:
                        fut.cancel()
                    pool.shutdown(wait=True)
        except BaseException:  # an error, or KeyboardInterrupt (a second Ctrl-C): clean up, re-raise
            failed = True
            raise
        finally:
            try:
                recording = self._shutdown(failed)
            finally:
                if signals is not None:
                    signals.__exit__(None, None, None)
        return StreamResult(reason, self.frames, self.stats(), recording)

    def _handle(self, frame: Frame, state_t_end: float, started: float, done: Future) -> str | None:
        """Finish one processed frame (in capture order): overlay, stats, recorder, display. Returns
        why the loop ends after it, or None."""
        processed = done.result()  # an error in process_frame is raised here
        overlay = self.finish_frame(frame, processed) if self.finish_frame is not None else processed
        ready = time.monotonic()
        self._stats["frame"].add(ready - started)
        self._stats["latency"].add(ready - frame.timestamp)
        self._stats["audio_lag"].add(self.clock(frame) - state_t_end)
        self._fps.tick(ready)
        self.frames += 1
        if self.recorder is not None:
            t = time.monotonic()
            self._feed_recorder_audio()
            self.recorder.add_frame(np.asarray(overlay), frame, capture_time=self.clock(frame))
            self._stats["record"].add(time.monotonic() - t)
        if self.display is not None:
            t = time.monotonic()
            keep = self.display(overlay, self.stats())
            self._stats["display"].add(time.monotonic() - t)
            if keep is False:
                return "display_closed"
        if self.max_frames is not None and self.frames >= self.max_frames:
            return "max_frames"
        return None

    def _feed_recorder_audio(self) -> None:
        while self._rec_audio:
            self.recorder.add_audio(self._rec_audio.popleft())

    def _shutdown(self, failed: bool) -> Path | None:
        """Stop the helper threads, finalise the recording (kept, playable, on every path) and close
        the sources. Errors here are raised only when the run itself did not fail."""
        self._halt.set()
        self.stop.set()
        for th in self._threads:
            th.join(timeout=2.0)
        path = None
        errors: list[BaseException] = []
        if self.recorder is not None:
            try:
                if not self.realtime and not failed:  # the sound of the last frame's slot too
                    self._pull_audio(float("inf"))
                self._feed_recorder_audio()
                if self.recorder.frames:
                    path = self.recorder.close()
                else:
                    self.recorder.abort()
            except BaseException as exc:
                errors.append(exc)
        if self.close_sources:
            for src in (self.camera, self.audio):
                if src is None:
                    continue
                try:
                    src.close()
                except BaseException as exc:
                    errors.append(exc)
        if errors and not failed:
            raise errors[0]
        return path
