"""``avsl-edge run VIDEO``: an overlay video (with the original sound) and per-frame JSON lines from a
video file (the ``avsl_edge.commands`` command ``run``; see :mod:`avsl_edge.commands`).

    avsl-edge run clip.mp4 --out overlay.mp4 --json frames.jsonl
    avsl-edge run clip.mp4 --audio other.wav --out overlay.mkv --hold 0 --max-frames 300

The same :class:`runtime.scheduler.StreamLoop` and :class:`runtime.frame_steps.FrameSteps` as
``avsl-edge live``, offline: every frame of the file (``CameraSource(file, realtime=False)``), the
sound on the file's timeline, the audio embedding every ``--hop`` seconds of media time on the second
of sound ending at the frame, the decisions held ``--hold`` seconds. So a file gives the same frames,
boxes and JSON lines however fast the machine is, in the JSON-lines schema of ``live``.

The outputs appear only complete: damaged video data stops the run with nothing written (exit 2),
Ctrl-C or SIGTERM leaves nothing behind (exit 130), and a file that ends before its header says
gets a warning and the outputs of the frames read.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from avsl_edge.commands import (Command, UsageError, add_model_options, add_stream_options, check_outputs,
                                check_stream_options, model_input, open_localizer)
from avsl_edge.fileio import atomic_path
from avsl_edge.media import MediaError, VideoWriter, read_sound
from avsl_edge.result import Result
from avsl_edge.streaming import DecisionHold
from avsl_edge.variant_choice import AUTO_VARIANT

from .camera import CameraError, CameraSource
from .frame_steps import FrameSteps, RunLog, truncation_warnings
from .microphone import FileAudioSource
from .scheduler import StreamLoop

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


def configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", metavar="VIDEO", type=Path, help="a video file (any format FFmpeg reads)")
    p.add_argument("--audio", metavar="FILE", type=Path,
                   help="the sound to use instead of the video's own track (WAV/FLAC/OGG, or a media file)")
    p.add_argument("--out", metavar="OUT.mp4", type=Path, required=True, help="overlay video (.mp4, .mov or .mkv)")
    p.add_argument("--no-legend", action="store_true", help="no legend panel")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_stream_options(p)
    add_model_options(p, variant=AUTO_VARIANT)


@dataclass
class FileRun:
    """What :func:`run_file` did: frames written, the run's log, its warnings, and the overlay and
    result of the frame ``keep_frame`` asked for (None otherwise)."""

    frames: int
    log: RunLog
    warnings: list[str]
    kept: np.ndarray | None = None
    kept_result: Result | None = None


def run_file(loc: Any, video: Path, sound: np.ndarray, rate: int, out: Path, json_path: Path | None = None, *,
             hop: float = 0.25, hold: float = 0.5, style: str = "heat", legend: bool = True,
             max_frames: int | None = None, quiet: bool = True, keep_frame: int | None = None) -> FileRun:
    """Every frame of ``video`` with ``sound`` (mono at ``rate``) through the offline StreamLoop:
    the overlay video ``out`` (with the sound) and JSON lines ``json_path``, both complete or absent."""
    try:
        camera = CameraSource(video, realtime=False)
    except CameraError as exc:
        raise UsageError(str(exc)) from None
    audio = FileAudioSource(video, realtime=False, sample_rate=rate, start=0.0, samples=sound)
    total = camera.frame_count or None
    if max_frames:
        total = min(total or max_frames, max_frames)
    kept: list[tuple[np.ndarray, Result]] = []
    with contextlib.ExitStack() as stack:
        stack.callback(camera.close)
        bar = stack.enter_context(tqdm(total=total, desc="run", unit="frame", disable=quiet, leave=False,
                                       file=sys.stderr))
        json_file = stack.enter_context(open(stack.enter_context(atomic_path(json_path)), "w")) if json_path else None
        tmp_out = stack.enter_context(atomic_path(out))  # renamed to `out` only when everything succeeded

        def draw(frame: Any, r: Any, level: float) -> np.ndarray:
            bar.update(1)
            overlay = r.plot(style=style, legend=legend)
            if frame.index == keep_frame:
                kept.append((overlay, r))
            return overlay

        steps = FrameSteps(loc, DecisionHold(hold), draw, rate, json_file)
        loop = StreamLoop(camera, audio, steps.encode, steps.infer, finish_frame=steps.finish, hop=hop,
                          max_frames=max_frames, recorder=VideoWriter(tmp_out, camera.fps, sample_rate=rate),
                          record_fps=camera.fps, realtime=False, handle_signals=False, close_sources=True)
        steps.attach(loop)
        try:
            result = loop.run()
        except CameraError as exc:  # damaged video data: the with block removes every output
            raise UsageError(f"{exc}; nothing was written") from None
        if result.frames == 0:
            raise UsageError(f"{video}: no video frame could be decoded")
    overlay, held = kept[0] if kept else (None, None)
    return FileRun(result.frames, steps.log, truncation_warnings(camera, result.reason), overlay, held)


def cmd_run(args: argparse.Namespace) -> int:
    if not args.video.is_file():
        raise UsageError(f"{args.video}: no such video file")
    if args.out.suffix.lower() not in VIDEO_SUFFIXES:
        raise UsageError(f"--out {args.out}: the overlay video must end in .mp4, .mov or .mkv")
    rules = check_stream_options(args)
    check_outputs({"--out": args.out, "--json": args.json},
                  {"VIDEO": args.video, "--audio": args.audio, "--model": model_input(args)})
    try:
        sound, rate = read_sound(args.audio or args.video)
    except MediaError as exc:
        raise UsageError(f"{exc}{'' if args.audio else '; pass --audio FILE'}") from None
    loc = open_localizer(args, **rules)
    done = run_file(loc, args.video, sound, rate, args.out, args.json, hop=args.hop, hold=args.hold,
                    style=args.style, legend=not args.no_legend, max_frames=args.max_frames, quiet=args.quiet)
    for warning in done.warnings:
        print(f"warning: {warning}; the outputs cover the frames read", file=sys.stderr)
    print(f"{done.frames} frames -> {args.out}" + (f", {args.json}" if args.json else "")
          + f" ({loc.backend.description})")
    return 0


RUN = Command(
    "run", "overlay video (with its audio) and per-frame JSON lines from a video file", configure_run, cmd_run,
    "Localize every frame of VIDEO with the sound heard up to it (the 1 s ending at the frame, re-encoded every "
    "--hop seconds of the video's time), hold the decisions --hold seconds, and write the overlay video with the "
    "original sound (mono, at its own rate) muxed back, plus one JSON line per frame. The streaming loop of "
    "`avsl-edge live`, on the file's own timeline: nothing is dropped.")
