"""What every streaming path shares (``avsl-edge run`` on a file, ``avsl-edge live`` on devices):
when the audio embedding is recomputed, and the JSON line written for each frame.

    hops = HopSchedule(0.25)
    for t, frame in frames:                        # t: the frame's media time, seconds
        if hops.due(t):
            state = loc.encode_audio(window_ending_at(t), 16000)
        r = loc.localize_frame(frame, state)
        out.write(json.dumps(frame_line(i, t, r)) + "\n")
"""

from __future__ import annotations

from typing import Any

from .result import Result


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


def frame_line(frame: int, media_time: float, result: Result, **extra: Any) -> dict[str, Any]:
    """The JSON-lines record of one frame: its index in the output, its media time (seconds into the
    video, or since the stream started), what the caller adds (``live``: capture index, latency,
    audio level), then :meth:`Result.to_dict`."""
    return {"frame": frame, "media_time": round(float(media_time), 4), **extra, **result.to_dict()}
