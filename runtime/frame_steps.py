"""What the streaming commands (``avsl-edge run`` on a file, ``avsl-edge live`` on devices) do with
each frame of the one :class:`runtime.scheduler.StreamLoop`: encode the audio window, localize the
frame, hold the decisions over time, draw, keep the log, write the JSON line.

    steps = FrameSteps(loc, DecisionHold(0.5), draw=lambda frame, r, level_db: r.plot(),
                       sample_rate=audio.sample_rate, json_file=out)
    loop = StreamLoop(camera, audio, steps.encode, steps.infer, finish_frame=steps.finish, ...)
    steps.attach(loop)
    loop.run()
    steps.log.summary(...)

The two commands differ only in their sources (a camera and a microphone in real time, or a video
file and its sound on the media timeline), in ``draw`` (the HUD, or the plain overlay) and in what
they print at the end.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from avsl_edge.localizer import AudioState
from avsl_edge.result import Result
from avsl_edge.streaming import DecisionHold, frame_line

from .camera import Frame
from .scheduler import RollingStats

STAGE_ORDER = ("audio", "preprocess", "image", "head", "postprocess", "draw")
RESULT_STAGES = ("preprocess", "image", "head", "postprocess")  # the Result.speed entries kept per frame
RECENT_FRAMES = 60  # the HUD's medians are over the last 60 frames (~2 s at 30 fps)


def _stats() -> RollingStats:
    return RollingStats(RECENT_FRAMES, keep_all=True)


def _timing_or_none(stats: RollingStats) -> dict[str, float] | None:
    """A stage's entry of the run summary: its :class:`avsl_edge.timing.Timing`, None if it never ran."""
    return stats.summary_all().to_dict() if stats.total else None


@dataclass
class RunLog:
    """What a streaming run keeps for its HUD and its end-of-run summary."""

    stages: dict[str, RollingStats] = field(default_factory=lambda: {k: _stats() for k in STAGE_ORDER})
    latency: RollingStats = field(default_factory=_stats)
    heard: collections.Counter = field(default_factory=collections.Counter)          # frames per class shown
    audio_classes: collections.Counter = field(default_factory=collections.Counter)  # frames per top audio class
    ready_times: list[float] = field(default_factory=list)                          # when each overlay was ready

    def stage_medians_ms(self) -> dict[str, float]:
        return {k: v.summary().median_ms for k, v in self.stages.items()}

    def summary(self, reason: str, loc: Any, camera: Any, audio: Any, stats: Any, recorder: Any,
                recording: Path | None, snapshots: list[Path], warnings: list[str]) -> dict[str, Any]:
        """The end-of-run summary (``live`` prints it and writes it with ``--summary-json``)."""
        frames = len(self.ready_times)
        span = self.ready_times[-1] - self.ready_times[0] if frames > 1 else 0.0
        rec = recorder if recorder is not None and recording else None
        choice = loc.backend.variant_choice
        return {
            "reason": reason, "frames": frames, "seconds": round(span, 3),
            "fps": round((frames - 1) / span, 2) if span > 0 else 0.0,
            "latency_ms": _timing_or_none(self.latency),
            "stages_ms": {k: _timing_or_none(v) for k, v in self.stages.items()},
            "camera": camera.spec.label, "camera_frames": stats.camera_frames, "camera_dropped": stats.camera_dropped,
            "mic": audio.label, "audio_blocks": stats.audio_blocks, "audio_updates": stats.audio_updates,
            "mic_overflows": stats.mic_overflows, "mic_queue_drops": int(getattr(audio, "queue_drops", 0)),
            "heard": dict(self.heard.most_common()), "audio_classes": dict(self.audio_classes.most_common()),
            "model": str(loc.bundle.root), "variant": loc.backend.variant, "backend": loc.backend.description,
            "variant_choice": choice.to_dict() if choice is not None else None,
            "rules": loc.rules.to_dict(),
            "recording": str(recording) if recording else None,
            "recording_frames": rec.frames if rec is not None else None,
            "recording_repeated": rec.frames_repeated if rec is not None else None,
            "snapshots": [str(p) for p in snapshots],
            "warnings": warnings,
        }


Draw = Callable[[Frame, Result, float], np.ndarray]  # (frame, held result, audio level dBFS) -> overlay RGB


class FrameSteps:
    """The callables a :class:`~runtime.scheduler.StreamLoop` runs, for one Localizer.

    ``encode`` (every hop) and ``infer`` (every frame, on a worker thread with ``workers > 1``) are
    the model; ``finish`` (every frame, in capture order) applies the :class:`DecisionHold` on the
    frame's media time, calls ``draw``, logs the stages and writes the JSON line
    (:func:`avsl_edge.streaming.frame_line` with the frame's capture index, its time since
    ``t_open``, its latency, the audio level and the top audio class)."""

    def __init__(self, loc: Any, hold: DecisionHold, draw: Draw, sample_rate: int,
                 json_file: IO[str] | None = None, t_open: float | None = None):
        self.loc, self.hold, self.draw = loc, hold, draw
        self.sample_rate = int(sample_rate)
        self.json_file = json_file
        self.t_open = time.monotonic() if t_open is None else float(t_open)
        self.log = RunLog()
        self.loop: Any = None  # set by attach(): finish reads the audio level from its ring

    def attach(self, loop: Any) -> None:
        self.loop = loop

    def encode(self, window: np.ndarray) -> AudioState:
        state = self.loc.encode_audio(window, self.sample_rate)
        self.log.stages["audio"].add(state.ms / 1000.0)
        return state

    def infer(self, frame: Frame, state: AudioState) -> Result:
        return self.loc.localize_frame(frame.image, state, rgb=True)

    def finish(self, frame: Frame, r: Result) -> np.ndarray:
        t_draw = time.perf_counter()
        r = self.hold.update(frame.media_time, r)
        level = self.loop.ring.level_db(0.1)
        out = self.draw(frame, r, level)
        log = self.log
        for k in RESULT_STAGES:
            if k in r.speed:
                log.stages[k].add(r.speed[k] / 1000.0)
        log.stages["draw"].add(time.perf_counter() - t_draw)
        top = self.loc.classes[int(np.argmax(r.class_probs))] if r.gate_open else None
        log.heard.update(r.sounding)
        if top is not None:
            log.audio_classes[top] += 1
        ready = time.monotonic()
        log.latency.add(ready - frame.timestamp)
        log.ready_times.append(ready)
        if self.json_file is not None:
            line = frame_line(len(log.ready_times) - 1, frame.media_time, r, camera_index=frame.index,
                              elapsed=round(frame.timestamp - self.t_open, 4),
                              latency_ms=round((ready - frame.timestamp) * 1000.0, 2),
                              audio_level_db=round(level, 2), audio_class=top)
            self.json_file.write(json.dumps(line) + "\n")
        return out


def truncation_warnings(camera: Any, reason: str) -> list[str]:
    """What a run warns about at its end: a video file that ended well before its header said."""
    expected = getattr(camera, "frame_count", None)
    if reason == "camera_ended" and expected and camera.frames_read < expected - 1:
        return [f"{camera.spec.label} looks truncated: {camera.frames_read} frames read, {expected} "
                "expected from its header"]
    return []
