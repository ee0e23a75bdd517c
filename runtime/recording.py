"""Recording what the live loop shows: overlay frames + the captured audio, in sync, in one mp4.

    rec = LiveRecorder("out.mp4", fps=30.0, sample_rate=16000)   # or LiveRecorder(VideoWriter(...), fps=30.0)
    rec.add_audio(block)           # every captured AudioBlock (any thread order, monotonic timestamps)
    rec.add_frame(overlay, frame)  # every processed frame (a camera Frame: media_time, timestamp)
    rec.close()                    # pads/trims the audio to the video's length and finalises the file

The file has a constant frame rate: frame ``i`` sits at ``i / fps`` seconds. A processed frame
goes to the slot of its capture time (``frame.media_time`` relative to the first frame), and slots
the loop skipped (frames dropped because inference was slower than the camera) repeat the
previous overlay, so the video keeps real time and stays in sync with the audio however fast the
loop ran. Audio starts at the first frame's capture time (``frame.timestamp``); holes in the
audio longer than ``gap`` seconds become silence. Torch-free (PyAV through avsl_edge.media).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np

from avsl_edge.media import VideoWriter


class LiveRecorder:
    def __init__(self, target: VideoWriter | str | os.PathLike, fps: float, sample_rate: int | None = 16000,
                 gap: float = 0.1):
        if not (fps > 0):
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        if isinstance(target, VideoWriter):
            self.writer = target
            self.sample_rate = target.sample_rate
            if sample_rate is not None and target.sample_rate not in (None, sample_rate):
                raise ValueError(f"the VideoWriter's audio runs at {target.sample_rate} Hz, not {sample_rate} Hz")
        else:
            self.writer = VideoWriter(target, self.fps, sample_rate)
            self.sample_rate = sample_rate
        self.path = Path(self.writer.path)
        self.gap = gap
        self.t0: float | None = None  # monotonic capture time of the first frame = 0 s in the file
        self._media0 = 0.0
        self._last: np.ndarray | None = None
        self._pending: collections.deque = collections.deque()
        self.audio_samples = 0  # audio samples written
        self.frames_repeated = 0  # slots filled with the previous overlay
        self.frames_skipped = 0  # processed frames that fell into an already written slot
        self._closed = False

    @property
    def frames(self) -> int:
        return self.writer.frames

    def add_frame(self, rgb: np.ndarray, frame, capture_time: float | None = None) -> None:
        """``frame``: the camera Frame the overlay was made from (``timestamp``, ``media_time``);
        ``capture_time``: its time on the audio blocks' clock (default ``frame.timestamp``; an
        offline run's audio is on the media timeline)."""
        if self.t0 is None:
            self.t0 = float(frame.timestamp if capture_time is None else capture_time)
            self._media0 = float(frame.media_time)
        slot = int(round((frame.media_time - self._media0) * self.fps))
        if slot < self.writer.frames:
            self.frames_skipped += 1
            return
        while self._last is not None and self.writer.frames < slot:
            self.writer.write_frame(self._last)
            self.frames_repeated += 1
        self.writer.write_frame(rgb)
        self._last = rgb
        self._flush_audio(self.writer.frames / self.fps)

    def add_audio(self, block) -> None:
        """An AudioBlock (``samples`` at this recorder's rate, ``t_end``)."""
        if self.sample_rate is None:
            return
        if block.sample_rate != self.sample_rate:
            raise ValueError(f"audio block at {block.sample_rate} Hz, the recording is {self.sample_rate} Hz")
        self._pending.append((np.asarray(block.samples, np.float32), float(block.t_end)))
        if self.t0 is not None:
            self._flush_audio(self.writer.frames / self.fps)
        else:  # before the first frame only the recent past can matter
            while self._pending and self._pending[0][1] < block.t_end - 2.0:
                self._pending.popleft()

    def _flush_audio(self, until: float) -> None:
        """Write the pending audio that falls before ``until`` seconds of the file."""
        if self.sample_rate is None or self.t0 is None:
            return
        sr = self.sample_rate
        target = int(round(until * sr))
        tol = int(round(self.gap * sr))
        written = self.audio_samples
        out = []
        while self._pending and written < target:
            x, t_end = self._pending[0]
            d = int(round((t_end - self.t0) * sr)) - x.shape[0] - written  # block start - write position
            # Block timestamps jitter by a few ms: within ``gap`` a block continues the last one.
            # The first block is placed exactly, so the file starts in sync.
            if written == 0 or abs(d) > tol:
                if d < 0:  # before t0, or overlapping what is written: cut that part
                    x = x[min(-d, x.shape[0]):]
                elif d > 0:  # a hole: silence
                    z = min(d, target - written)
                    out.append(np.zeros(z, np.float32))
                    written += z
                    if z < d:
                        break
            if x.shape[0] == 0:
                self._pending.popleft()
                continue
            room = target - written
            out.append(x[:room])
            written += min(room, x.shape[0])
            if x.shape[0] <= room:
                self._pending.popleft()
            else:
                self._pending[0] = (x[room:], t_end)
        if out:
            audio = np.concatenate(out)
            if audio.size:
                self.writer.write_audio(audio)
                self.audio_samples += audio.shape[0]

    def close(self) -> Path:
        """Write the rest (audio padded with silence or cut to the video's length) and finalise
        the file; returns its path. Idempotent."""
        if self._closed:
            return self.path
        self._closed = True
        if self.writer.frames == 0:
            self.writer.abort()
            raise ValueError(f"{self.path}: nothing was recorded (no frame reached the recorder)")
        try:
            end = self.writer.frames / self.fps
            self._flush_audio(end)
            if self.sample_rate is not None:
                missing = int(round(end * self.sample_rate)) - self.audio_samples
                if missing > 0:
                    self.writer.write_audio(np.zeros(missing, np.float32))
                    self.audio_samples += missing
        except BaseException:
            self.writer.abort()
            raise
        return self.writer.close()

    def abort(self) -> None:
        self._closed = True
        self.writer.abort()
