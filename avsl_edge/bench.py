"""Per-stage latency of a Localizer over warm runs (what ``avsl-edge bench`` prints).

    report = benchmark(avsl_edge.load("runs/cpu/bundle", variant="int8"), runs=50)
    report["stages"]["image"]      # {"median_ms": 4.4, "p90_ms": 4.9}
    report["fps"]                  # {"frames": ..., "frames_with_overlay": ..., "end_to_end": ...}

Stages: ``audio`` (resampling + the audio graph, whose log-mel front end is inside the graph),
``preprocess`` (frame resize + normalisation), ``image`` (image graph), ``head`` (head graph),
``postprocess`` (class maps, decisions, boxes), ``overlay`` (drawing). FPS: ``frames`` counts the
per-frame work when one audio embedding serves many frames (streaming), ``frames_with_overlay``
adds drawing, ``end_to_end`` also recomputes the audio embedding for every frame.
To time box extraction and drawing, the benchmark names classes whatever the input (the decision
thresholds are relaxed on a copy of the Localizer).
"""

from __future__ import annotations

import math
import platform
from typing import Any

import numpy as np

from .localizer import Localizer
from .timing import summary

STAGES: tuple[str, ...] = ("audio", "preprocess", "image", "head", "postprocess", "overlay")


def synthetic_inputs(width: int = 640, height: int = 480, sample_rate: int = 48000,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured BGR frame and 1 s of stereo int16 audio (a chord in noise): inputs as a camera and
    a microphone deliver them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(1, width) * 255, yy / max(1, height) * 255, np.full_like(xx, 96)], axis=-1)
    frame = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    t = np.arange(sample_rate) / sample_rate
    tone = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) + 0.01 * rng.standard_normal(t.size)
    audio = (np.stack([tone, tone], axis=1) * 32767 * 0.8).astype(np.int16)
    return frame, audio


def benchmark(localizer: Localizer, frame: np.ndarray | None = None, audio: np.ndarray | None = None,
              sample_rate: int = 48000, runs: int = 50, warmup: int = 5, rgb: bool = False) -> dict[str, Any]:
    """Median/p90 milliseconds per stage over ``runs`` warm runs (after ``warmup`` runs)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got {runs}, {warmup}")
    if frame is None or audio is None:
        f, a = synthetic_inputs(sample_rate=sample_rate)
        frame = f if frame is None else frame
        audio = a if audio is None else audio
    loc = localizer.with_rules(in_view_threshold=0.0, audio_gate_db=-200.0)
    samples: dict[str, list[float]] = {s: [] for s in STAGES}
    named = 0
    for i in range(warmup + runs):
        state = loc.encode_audio(audio, sample_rate)
        r = loc.localize_frame(frame, state, rgb=rgb)
        r.plot()
        if i >= warmup:
            for s in STAGES:
                samples[s].append(r.speed[s])
            named += len(r.boxes)
    stages = {s: summary(v).to_dict() for s, v in samples.items()}
    per_frame = [sum(samples[s][i] for s in ("preprocess", "image", "head", "postprocess")) for i in range(runs)]
    with_overlay = [p + samples["overlay"][i] for i, p in enumerate(per_frame)]
    total = [p + samples["audio"][i] for i, p in enumerate(with_overlay)]

    def fps(ms: list[float]) -> float:
        m = float(np.median(ms))
        return round(1000.0 / m, 1) if m > 0 else math.inf

    h, w = frame.shape[:2] if isinstance(frame, np.ndarray) else (frame.size[1], frame.size[0])
    return {
        "bundle": str(localizer.bundle.root), "variant": localizer.backend.variant,
        "backend": localizer.backend.info(), "frame": {"width": int(w), "height": int(h)},
        "audio": {"sample_rate": int(sample_rate), "shape": list(np.shape(audio)), "dtype": str(np.asarray(audio).dtype)},
        "runs": runs, "warmup": warmup, "boxes_per_frame": round(named / runs, 2), "stages": stages,
        "per_frame_ms": summary(per_frame).to_dict(), "end_to_end_ms": summary(total).to_dict(),
        "fps": {"frames": fps(per_frame), "frames_with_overlay": fps(with_overlay), "end_to_end": fps(total)},
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"{report['backend']['description']} | frame {report['frame']['width']}x{report['frame']['height']} | "
             f"{report['runs']} warm runs", "", "| stage | median ms | p90 ms |", "|---|---:|---:|"]
    for s, v in report["stages"].items():
        lines.append(f"| {s} | {v['median_ms']:.2f} | {v['p90_ms']:.2f} |")
    lines.append(f"| per frame (no audio, no overlay) | {report['per_frame_ms']['median_ms']:.2f} | "
                 f"{report['per_frame_ms']['p90_ms']:.2f} |")
    lines.append(f"| end to end | {report['end_to_end_ms']['median_ms']:.2f} | {report['end_to_end_ms']['p90_ms']:.2f} |")
    f = report["fps"]
    lines += ["", f"FPS: {f['frames']} per frame with a shared audio embedding, {f['frames_with_overlay']} with the "
                  f"overlay, {f['end_to_end']} end to end"]
    return "\n".join(lines)
