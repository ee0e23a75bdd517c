"""What every streaming path shares (``avsl-edge run`` on a file, ``avsl-edge live`` on devices):
when the audio embedding is recomputed, how decisions are held over time, and the JSON line
written for each frame.

    hops, hold = HopSchedule(0.25), DecisionHold(0.5)
    for t, frame in frames:                        # t: the frame's media time, seconds
        if hops.due(t):
            state = loc.encode_audio(window_ending_at(sound, t), 16000)
        r = hold.update(t, loc.localize_frame(frame, state))
        out.write(json.dumps(frame_line(i, t, r)) + "\n")
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE
from .errors import UserError
from .result import Box, Result

MAX_HOLD_S = 10.0  # --hold: longer would keep a box on screen long after its sound stopped


class HoldError(UserError, ValueError):
    """A hold time that is not a number of seconds in [0, MAX_HOLD_S]."""


class HopSchedule:
    """When to recompute the audio embedding: on a grid ``hop`` seconds apart, starting at the first
    call. ``due(t)`` is True once per grid point reached; when the caller fell more than a hop
    behind, the missed points are skipped (one update, not a burst)."""

    def __init__(self, hop: float = 0.25):
        if not (hop > 0):
            raise ValueError(f"hop must be > 0 seconds, got {hop}")
        self.hop = float(hop)
        self.next: float | None = None

    def due(self, t: float) -> bool:
        if self.next is None:
            self.next = t + self.hop
            return True
        if t + 1e-6 < self.next:
            return False
        self.next += self.hop
        if self.next <= t:  # fell behind: restart the grid from now
            self.next = t + self.hop
        return True


class DecisionHold:
    """Decisions without flicker: a class that a frame names stays shown, with the box it had then,
    until ``hold`` seconds pass with no frame naming it. A class shows from the first frame that names
    it (no onset delay) and goes dark at most ``hold`` seconds after the last one; ``hold=0`` passes
    results through. Held classes are added to ``Result.sounding`` and ``boxes`` and listed in
    ``Result.held``. A time earlier than the last one (a new stream) starts afresh."""

    def __init__(self, hold: float = 0.5):
        if not (isinstance(hold, (int, float)) and math.isfinite(hold) and 0.0 <= hold <= MAX_HOLD_S):
            raise HoldError(f"hold must be a number of seconds in [0, {MAX_HOLD_S:g}], got {hold!r}")
        self.hold = float(hold)
        self._seen: dict[str, tuple[float, Box]] = {}  # class -> (last time named, its box then)
        self._t: float | None = None

    def update(self, t: float, result: Result) -> Result:
        if self._t is not None and t < self._t:
            self._seen.clear()
        self._t = t
        if self.hold <= 0:
            return result
        for box in result.boxes:
            self._seen[box.label] = (t, box)
        self._seen = {c: v for c, v in self._seen.items() if t - v[0] <= self.hold + 1e-9}
        held = tuple(c for c in result.classes if c in self._seen and c not in result.sounding)
        if not held:
            return result
        return dataclasses.replace(result, sounding=result.sounding + held,
                                   boxes=result.boxes + [self._seen[c][1] for c in held], held=held,
                                   _cache={})


def window_ending_at(sound: np.ndarray, t: float) -> np.ndarray:
    """The audio window of a file's frame at media time ``t``: the second of ``sound`` (16 kHz mono)
    that ends at ``t`` (shorter near the start; one zero sample before any sound, so the audio
    path always gets a clip)."""
    end = max(0, int(round(t * SAMPLE_RATE)))
    window = sound[max(0, end - SAMPLE_RATE):end]
    return window if window.size else np.zeros(1, np.float32)


def frame_line(frame: int, media_time: float, result: Result, **extra: Any) -> dict[str, Any]:
    """The JSON-lines record of one frame: its index in the output, its media time (seconds into the
    video, or since the stream started), what the caller adds (``live``: capture index, latency,
    audio level), then :meth:`Result.to_dict`."""
    return {"frame": frame, "media_time": round(float(media_time), 4), **extra, **result.to_dict()}
