"""The last second (or so) of captured audio, with the stream's timestamps; thread-safe.

    ring = AudioRing(seconds=1.5)
    ring.push(block.samples, block.t_end)          # from the audio source, on any thread
    clip, t_end = ring.window(end_time=frame.timestamp)   # the 1 s the model hears for this frame
    ring.level_db()                                # -> e.g. -23.5 (dBFS of the last 0.1 s), for a meter

Time is ``time.monotonic()`` seconds, the same clock as the camera's frame timestamps, so a
window can end at the frame's capture time. Samples are contiguous: each block advances the
ring's clock by its length, and the block's reported ``t_end`` (which jitters by a few ms) pulls
the clock towards it by ``smoothing`` (so it also follows drift between the audio and system
clocks). A hole in the stream longer than ``gap_fill`` seconds (lost blocks) is filled with
silence so that sample positions keep matching time.
Torch-free, numpy only.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from avsl_edge.audio import CLIP_SECONDS, SAMPLE_RATE, SILENCE_DB, rms_db


class AudioRing:
    """A circular buffer of ``seconds`` of mono float32 audio at ``sample_rate``."""

    def __init__(self, seconds: float = 1.5, sample_rate: int = SAMPLE_RATE, gap_fill: float = 0.1,
                 smoothing: float = 0.05):
        if seconds <= 0 or sample_rate <= 0:
            raise ValueError(f"seconds and sample_rate must be > 0, got {seconds}, {sample_rate}")
        self.sample_rate = int(sample_rate)
        self.capacity = int(math.ceil(seconds * sample_rate))
        self.gap_fill = float(gap_fill)
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.smoothing = float(smoothing)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._written = 0  # samples ever written (position of the next sample)
        self._t_end: float | None = None  # monotonic time just after the newest sample
        self._cond = threading.Condition()
        self.gaps = 0  # holes filled with silence

    # ------------------------------------------------------------------------------------ writing

    def push(self, samples: np.ndarray, t_end: float) -> None:
        """Append a block whose last sample was captured just before ``t_end``."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = x.shape[0]
        if n == 0:
            return
        with self._cond:
            if self._t_end is None:
                self._t_end = float(t_end)
            else:
                # Contiguous blocks advance the clock by exactly their length; the reported times
                # jitter by a few ms (scheduling), so they only nudge it (and track clock drift).
                predicted = self._t_end + n / self.sample_rate
                err = float(t_end) - predicted
                if err > self.gap_fill:  # a hole in the stream (lost blocks): silence
                    hole = (t_end - n / self.sample_rate) - self._t_end
                    self._write(np.zeros(min(int(round(hole * self.sample_rate)), self.capacity), np.float32))
                    self.gaps += 1
                    self._t_end = float(t_end)
                elif err < -self.gap_fill:  # more audio than time: resync, never run backwards
                    self._t_end = max(float(t_end), self._t_end)
                else:
                    self._t_end = predicted + self.smoothing * err
            self._write(x)
            self._cond.notify_all()

    def push_block(self, block) -> None:
        """:meth:`push` for an ``AudioBlock`` (anything with ``samples`` and ``t_end``)."""
        self.push(block.samples, block.t_end)

    def _write(self, x: np.ndarray) -> None:
        skipped = max(0, x.shape[0] - self.capacity)  # older than the ring can hold
        self._written += skipped
        x = x[skipped:]
        n = x.shape[0]
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start:start + first] = x[:first]
        self._buf[: n - first] = x[first:]
        self._written += n

    # ------------------------------------------------------------------------------------ reading

    @property
    def latest_time(self) -> float | None:
        """Monotonic time just after the newest sample; None before the first push."""
        with self._cond:
            return self._t_end

    @property
    def total_samples(self) -> int:
        with self._cond:
            return self._written

    def wait_for(self, t: float, timeout: float | None) -> bool:
        """Wait until audio up to time ``t`` is in the ring; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._t_end is not None and self._t_end >= t, timeout)

    def window(self, end_time: float | None = None, seconds: float = CLIP_SECONDS,
               tolerance: float = 0.25) -> tuple[np.ndarray, float]:
        """``seconds`` of audio ending at ``end_time`` (default: the newest sample) and the time the
        window really ends at.

        ``end_time`` older than the newest sample: the window ends there (as far back as the ring
        holds; older requests get the oldest full window). Newer: audio that late is not captured
        yet; within ``tolerance`` seconds the newest window is returned, beyond it the missing
        time is silence (the source stopped). Samples from before the first push are zeros."""
        n = int(round(seconds * self.sample_rate))
        if n <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        out = np.zeros(n, dtype=np.float32)
        with self._cond:
            newest = self._t_end
            if newest is None:
                return out, (time.monotonic() if end_time is None else float(end_time))
            if end_time is None:
                end_time = newest
            delta = newest - end_time
            future = 0
            if delta >= 0:
                shift = min(int(round(delta * self.sample_rate)), max(0, self.capacity - n))
                t_out = newest - shift / self.sample_rate
            elif -delta <= tolerance:
                shift, t_out = 0, newest
            else:
                shift, t_out = 0, float(end_time)
                future = min(n, int(round(-delta * self.sample_rate)))
            end = self._written - shift  # absolute position just after the window's last real sample
            start = end - (n - future)
            lo = max(start, self._written - self.capacity, 0)
            if end > lo:
                idx = np.arange(lo, end) % self.capacity
                out[lo - start: end - start] = self._buf[idx]
        return out, t_out

    def level_db(self, seconds: float = 0.1) -> float:
        """RMS level of the newest ``seconds`` in dBFS (:func:`avsl_edge.audio.rms_db`: a
        full-scale sine is about -3 dB); SILENCE_DB for silence or an empty ring."""
        n = max(1, min(int(round(seconds * self.sample_rate)), self.capacity))
        with self._cond:
            have = min(n, self._written)
            if have == 0:
                return SILENCE_DB
            idx = np.arange(self._written - have, self._written) % self.capacity
            x = self._buf[idx]
        return rms_db(x)
