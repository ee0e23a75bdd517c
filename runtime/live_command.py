"""``avsl-edge live``: a camera and a microphone -> live per-class overlays, with a HUD (the
``avsl_edge.commands`` entry point ``live``; see :mod:`avsl_edge.commands`).

    avsl-edge live --camera 0                                  # webcam 0 + default microphone, in a window
    avsl-edge live --camera 0 --mic USB --record out.mp4       # ... and record the overlay video with the sound
    avsl-edge live --camera rtsp://cam/stream --mic 3 --variant int8 --threads 2 --audio-worker
    avsl-edge live --camera clip.mp4 --mic clip.wav --no-display --max-frames 150 --json frames.jsonl
    avsl-edge live --list-devices                              # cameras and microphones

``--camera`` is an index, a device path, a video file (paced at its own frame rate, like a camera)
or a stream URL (RTSP/HTTP), as OpenCV takes them; ``--mic`` a sounddevice index or (part of a)
name, or an audio file replayed in real time. The streaming machinery is the rest of the ``runtime``
package (it loads with the CLI's parser, and needs nothing the CLI has not loaded already): a camera
thread keeping only the newest frame, a sounddevice ``InputStream`` whose callback only queues
blocks, a ring buffer with the stream's timestamps, and :class:`runtime.scheduler.StreamLoop`: the audio embedding is recomputed every
``--hop`` seconds on the last second of sound (optionally on a second thread, ``--audio-worker``),
the image path runs on every frame the loop gets, and frames that arrive while it is busy are
dropped, never queued, so latency stays bounded.

Window keys: ``q`` or Esc quits, ``s`` saves a snapshot PNG (``--snapshot-dir``). The HUD (a strip
along the bottom of the frame): the level meter (dBFS of the last 0.1 s, with the audio gate's
mark) and the classes heard; frame rate, end-to-end latency (camera capture -> overlay ready,
median and p90), dropped camera frames, microphone overflows; the median milliseconds of each
stage (audio embedding, preprocessing, image graph, head graph, post-processing, drawing).
Frames whose shorter side is below ``--display-min`` pixels (default 480) are drawn upscaled so
overlay and HUD stay readable; the model always sees the camera's own frame, and ``--json`` boxes
are in the camera's pixels.

Ends: ``--max-frames`` reached or a video file ended (exit 0; a file with fewer frames than its
header says gets a warning, also in the summary's ``warnings``), ``q``/Esc or the window closed
(0), Ctrl-C or SIGTERM (a clean stop, exit 130; further Ctrl-C are ignored until the recording,
JSON lines and summary are complete), a camera or microphone that cannot be opened or stops
delivering, or a video file damaged mid-way (a one-line message, exit 2). Every path closes the
devices, finalises the recording (a playable file with the captured sound) and prints the
summary. Microphone input overflows are counted and shown, never fatal. Outputs are checked
before the model loads (none may replace an input or another output; each must be writable).

Torch-free: numpy, OpenCV, ONNX Runtime (via the Localizer), sounddevice for the microphone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avsl_edge.audio import AudioError
from avsl_edge.commands import (MAX_SIDE, Command, UsageError, add_model_options, add_stream_options, check_outputs,
                                check_stream_options, model_input, open_localizer, write_json)
from avsl_edge.fileio import atomic_path
from avsl_edge.options import int_in
from avsl_edge.overlay import FONT, class_colour, scale_of
from avsl_edge.result import Box, Result
from avsl_edge.streaming import DecisionHold
from avsl_edge.variant_choice import AUTO_VARIANT

from .camera import CameraError, CameraSource, describe_cameras, list_cameras, parse_camera_spec
from .frame_steps import STAGE_ORDER, FrameSteps, truncation_warnings
from .microphone import MicrophoneError, find_input_device, list_devices, open_audio_source
from .scheduler import StopSignals, StreamLoop

# ---------------------------------------------------------------------------------------------------- HUD

MAX_DISPLAY_MIN = 2160  # --display-min: a 4K frame's shorter side (larger upscales cost memory, show nothing more)
LEVEL_FLOOR_DB = -60.0  # the level meter's empty end; its full end is 0 dBFS
STAGE_LABELS = {"preprocess": "pre", "postprocess": "post"}

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Hud:
    """What the HUD shows for one frame (every field has a neutral default)."""

    fps: float = 0.0
    latency_ms: float | None = None        # capture -> overlay ready, median of recent frames
    latency_p90_ms: float | None = None
    stages_ms: Mapping[str, float] = field(default_factory=dict)  # median ms per stage (STAGE_ORDER first)
    level_db: float = -120.0               # audio level of the newest 0.1 s, dBFS
    gate_db: float | None = None           # the audio gate (a mark on the meter)
    dropped: int = 0                       # camera frames dropped (the loop was busy)
    overflows: int = 0                     # microphone input overflows
    heard: tuple[tuple[str, float], ...] = ()  # sounding classes in view with their audio probability
    status: str = ""                       # shown when nothing is heard ("silence", "nothing sounding in view")
    colours: Mapping[str, Colour] = field(default_factory=dict)  # RGB colour per class name
    variant: str = ""                      # the precision variant running, and why when auto chose it


def level_fraction(db: float, floor_db: float = LEVEL_FLOOR_DB) -> float:
    """How full the level meter is: 0 at ``floor_db`` and below, 1 at 0 dBFS."""
    if not math.isfinite(db):
        return 0.0 if db < 0 else 1.0
    return float(min(1.0, max(0.0, (db - floor_db) / -floor_db)))


def level_colour(db: float) -> Colour:
    """RGB: green for normal levels, yellow from -20 dBFS, red from -6 dBFS (close to clipping)."""
    if db >= -6.0:
        return (235, 50, 40)
    if db >= -20.0:
        return (240, 210, 0)
    return (60, 200, 80)


def heard_text(hud: Hud) -> list[tuple[str, Colour | None]]:
    """The classes heard as (text, swatch colour), or the status line when none is."""
    if hud.heard:
        return [(f"{name} {score:.2f}", hud.colours.get(name, (255, 255, 255))) for name, score in hud.heard]
    return [(hud.status or "nothing heard", None)]


def perf_text(hud: Hud) -> str:
    lat = "-" if hud.latency_ms is None or not math.isfinite(hud.latency_ms) else f"{hud.latency_ms:.0f}"
    p90 = "" if hud.latency_p90_ms is None or not math.isfinite(hud.latency_p90_ms) else \
        f" (p90 {hud.latency_p90_ms:.0f})"
    variant = f"{hud.variant}  " if hud.variant else ""
    return f"{variant}{hud.fps:.1f} fps  latency {lat} ms{p90}  dropped {hud.dropped}  overflows {hud.overflows}"


def stages_text(hud: Hud) -> str:
    keys = [k for k in STAGE_ORDER if k in hud.stages_ms] + [k for k in hud.stages_ms if k not in STAGE_ORDER]
    parts = [f"{STAGE_LABELS.get(k, k)} {hud.stages_ms[k]:.1f}" for k in keys if math.isfinite(hud.stages_ms[k])]
    return "ms: " + "  ".join(parts) if parts else "ms: -"


def hud_lines(hud: Hud) -> list[str]:
    """The HUD as text, one string per row (what :func:`draw_hud` writes, without the meter bar)."""
    return [f"{hud.level_db:.0f} dB  " + "  ".join(t for t, _ in heard_text(hud)), perf_text(hud), stages_text(hud)]


def _bgr(c: Colour, rgb: bool) -> Colour:
    return c if rgb else (c[2], c[1], c[0])


def draw_hud(img: np.ndarray, hud: Hud, rgb: bool = True) -> tuple[int, int, int, int]:
    """In place: the HUD as a translucent strip along the bottom of ``img`` ((H, W, 3) uint8, RGB
    unless ``rgb=False``): level meter + classes heard, then performance, then per-stage times.
    Text scales with the frame and shrinks to fit its width. Returns the strip's (x0, y0, x1, y1)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"img must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    s = scale_of(h, w)
    pad, gap = max(3, round(5 * s)), max(2, round(4 * s))
    th = max(1, round(1.2 * s))
    heard = heard_text(hud)
    level = f"{hud.level_db:4.0f} dB" if hud.level_db > -100 else "-inf dB"
    perf, stages = perf_text(hud), stages_text(hud)
    fs = 0.55 * s
    meter_w = max(24, round(0.16 * w))

    def width(t: str, f: float) -> int:
        return cv2.getTextSize(t, FONT, f, th)[0][0]

    widest = max(width(perf, fs), width(stages, fs), meter_w + 3 * gap + width(level, fs) + width(heard[0][0], fs))
    if widest > w - 2 * pad:  # shrink to fit a narrow frame; never below a legible size
        fs = max(0.3, fs * (w - 2 * pad) / widest)
    (_, text_h), base = cv2.getTextSize("Ag", FONT, fs, th)
    line_h = text_h + base + gap
    strip_h = 3 * line_h - gap + 2 * pad
    y0 = max(0, h - strip_h)
    roi = img[y0:h]
    roi[:] = cv2.convertScaleAbs(roi, alpha=0.3)
    white = (255, 255, 255)

    def text(t: str, x: int, row: int, colour: Colour = white) -> int:
        baseline = y0 + pad + row * line_h + text_h
        cv2.putText(img, t, (x, baseline), FONT, fs, _bgr(colour, rgb), th, cv2.LINE_AA)
        return x + width(t, fs)

    # row 0: the level meter, its value, the classes heard (as many as fit, then "+N")
    x, top = pad, y0 + pad
    bar_h = text_h
    cv2.rectangle(img, (x, top), (x + meter_w, top + bar_h), (70, 70, 70), -1)
    fill = round(level_fraction(hud.level_db) * meter_w)
    if fill > 0:
        cv2.rectangle(img, (x, top), (x + fill, top + bar_h), _bgr(level_colour(hud.level_db), rgb), -1)
    if hud.gate_db is not None:
        gx = x + round(level_fraction(hud.gate_db) * meter_w)
        cv2.line(img, (gx, top - max(1, round(2 * s))), (gx, top + bar_h + max(1, round(2 * s))), white,
                 max(1, round(s)))
    cv2.rectangle(img, (x, top), (x + meter_w, top + bar_h), (200, 200, 200), 1)
    x = text(level, x + meter_w + gap, 0) + 2 * gap
    for i, (t, colour) in enumerate(heard):
        need = (text_h + gap if colour is not None else 0) + width(t, fs)
        more = f"+{len(heard) - i - 1}" if i < len(heard) - 1 else ""
        if i > 0 and x + need + (2 * gap + width(more, fs) if more else 0) > w - pad:
            text(f"+{len(heard) - i}", x, 0)
            break
        if colour is not None:
            cv2.rectangle(img, (x, top), (x + text_h, top + text_h), _bgr(colour, rgb), -1)
            x += text_h + gap
        x = text(t, x, 0) + 2 * gap
    # row 1: performance (overflows in orange once there are any); row 2: stages
    if hud.overflows:
        head, tail = perf.rsplit("  overflows", 1)
        text("overflows" + tail, text(head + "  ", pad, 1), 1, (255, 150, 0))
    else:
        text(perf, pad, 1)
    text(stages, pad, 2, (210, 210, 210))
    return (0, y0, w, h)


def scaled_result(r: Result, height: int, width: int, image: np.ndarray | None = None) -> Result:
    """The same answer for a resized copy of its frame (boxes scaled; maps are upsampled to the new
    size when drawn), e.g. to draw a small camera frame's overlay at a readable size."""
    fy, fx = height / r.frame_size[0], width / r.frame_size[1]
    boxes = [Box(b.label, b.score, b.x * fx, b.y * fy, b.w * fx, b.h * fy) for b in r.boxes]
    return dataclasses.replace(r, boxes=boxes, frame_size=(int(height), int(width)), image=image, _cache={})


def display_size(height: int, width: int, minimum: int) -> tuple[int, int]:
    """(height, width) to draw at: the frame's size, scaled up so its shorter side is ``minimum``
    when it is smaller (0: never scale)."""
    short = min(height, width)
    if minimum <= 0 or short >= minimum:
        return height, width
    f = minimum / short
    return int(round(height * f)), int(round(width * f))


# ----------------------------------------------------------------------------------------------- window

QUIT_KEYS = frozenset({ord("q"), ord("Q"), 27})  # 27: Esc
SNAPSHOT_KEYS = frozenset({ord("s"), ord("S")})


def key_action(key: int) -> str | None:
    """``cv2.waitKey``'s answer -> "quit", "snapshot" or None."""
    if key is None or key < 0:
        return None
    key &= 0xFF
    if key in QUIT_KEYS:
        return "quit"
    if key in SNAPSHOT_KEYS:
        return "snapshot"
    return None


def display_unavailable() -> str | None:
    """Why an OpenCV window cannot be shown here (None when it can)."""
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui is not None and gui.group(1).upper() == "NONE":
        return ("this OpenCV build has no GUI (opencv-python-headless?): install opencv-python, "
                "or run with --no-display")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display to open a window on ($DISPLAY is not set): run with --no-display (and --record FILE)"
    return None


class LiveWindow:
    """The display callback of the live loop: shows overlays in an OpenCV window; ``q``/Esc or
    closing the window stops the loop, ``s`` saves the shown frame as a PNG in ``snapshot_dir``."""

    def __init__(self, title: str = "avsl-edge live", snapshot_dir: Path = Path(".")):
        self.title = title
        self.snapshot_dir = Path(snapshot_dir)
        self.snapshots: list[Path] = []
        self._shown = False

    def __call__(self, overlay_rgb: np.ndarray, stats: Any) -> bool:
        bgr = cv2.cvtColor(np.asarray(overlay_rgb), cv2.COLOR_RGB2BGR)
        if not self._shown:
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE)
        cv2.imshow(self.title, bgr)
        action = key_action(cv2.waitKey(1))
        if self._shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return False  # closed with the mouse
        self._shown = True
        if action == "quit":
            return False
        if action == "snapshot":
            self.save(bgr, getattr(stats, "frames", len(self.snapshots)))
        return True

    def save(self, bgr: np.ndarray, frame_number: int) -> Path:
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.snapshot_dir / f"avsl-live-{time.strftime('%Y%m%d-%H%M%S')}-{frame_number:06d}.png"
        if not cv2.imwrite(str(path), bgr):
            print(f"live: could not write the snapshot {path}", file=sys.stderr)
        else:
            self.snapshots.append(path)
            print(f"live: snapshot {path}", file=sys.stderr, flush=True)
        return path

    def close(self) -> None:
        if self._shown:
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)


# --------------------------------------------------------------------------------------------- command


def configure_live(p: argparse.ArgumentParser) -> None:
    p.add_argument("--camera", metavar="CAMERA",
                   help="camera index (0), device path, video file or stream URL (rtsp://, http://), as OpenCV takes it")
    p.add_argument("--mic", metavar="DEVICE",
                   help="microphone: a sounddevice index or (part of a) name, or an audio file replayed in real "
                        "time (default: the default input device; --list-devices shows them)")
    p.add_argument("--list-devices", action="store_true", help="list cameras and microphones, then exit")
    p.add_argument("--record", metavar="OUT.mp4", type=Path,
                   help="record the overlay video (with the HUD) and the captured sound (.mp4, .mov or .mkv)")
    p.add_argument("--no-display", action="store_true", help="no window (headless machines)")
    p.add_argument("--audio-worker", action="store_true",
                   help="compute the audio embedding on a second thread, overlapping the image path")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="process up to N frames at once (default 1); 2 keeps 30 fps on 2 cores with GrabCut boxes, "
                        "whose 20-30 ms a frame run on one core while the next frame's image net runs")
    p.add_argument("--summary-json", metavar="OUT.json", type=Path,
                   help="write the end-of-run summary (frames, FPS, latency, stages, drops, recording) as JSON")
    p.add_argument("--display-min", type=int_in(0, MAX_DISPLAY_MIN), default=480, metavar="PX",
                   help="draw frames whose shorter side is below PX upscaled to PX, so the HUD stays readable "
                        "(default 480; 0: the camera's size; at most 2160); applies to the window and the recording")
    p.add_argument("--camera-size", metavar="WxH", help="ask a live camera for this resolution (e.g. 1280x720)")
    p.add_argument("--snapshot-dir", metavar="DIR", type=Path, default=Path("."),
                   help="where the s key saves snapshots (default: the current folder)")
    add_stream_options(p)
    add_model_options(p, variant=AUTO_VARIANT)


def _print_devices() -> int:
    cams = list_cameras()
    print("cameras (--camera INDEX; a video file or a stream URL also work):")
    print("\n".join(f"  {c}" for c in cams) if cams else f"  {describe_cameras()}")
    try:
        print(list_devices())
    except MicrophoneError as exc:
        print(f"audio inputs: unavailable ({exc})")
    return 0


def _check_args(args: argparse.Namespace) -> tuple[int, int] | None:
    if args.camera is None:
        raise UsageError("--camera is required: an index (0), a video file or a stream URL (--list-devices shows "
                         "the cameras)")
    if not 1 <= args.workers <= 8:
        raise UsageError(f"--workers must be 1..8 frames processed at once, got {args.workers}")
    if args.record is not None and args.record.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise UsageError(f"--record {args.record}: the recording must end in .mp4, .mov or .mkv")
    if not args.no_display:
        why = display_unavailable()
        if why:
            raise UsageError(why)
    if args.camera_size is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", args.camera_size)
    if not m or not (1 <= int(m.group(1)) <= MAX_SIDE and 1 <= int(m.group(2)) <= MAX_SIDE):
        raise UsageError(f"--camera-size must be WIDTHxHEIGHT, each side 1..{MAX_SIDE}, e.g. 1280x720, "
                         f"got {args.camera_size!r}")
    return int(m.group(1)), int(m.group(2))


def _check_outputs(args: argparse.Namespace, camera_file: str | None) -> None:
    mic_file = args.mic if args.mic is not None and Path(args.mic).is_file() else None
    outputs = {"--record": args.record, "--json": args.json, "--summary-json": args.summary_json}
    if not args.no_display:  # the s key saves snapshots there
        outputs["--snapshot-dir"] = args.snapshot_dir
    check_outputs(outputs, {"--camera": camera_file, "--mic": mic_file, "--model": model_input(args)},
                  folders=("--snapshot-dir",))


def _check_mic(spec: str | None) -> None:
    """Fail before the model loads: a missing audio file, or no input device matching ``spec``."""
    if spec is not None and Path(spec).is_file():
        return
    if spec is not None and (os.sep in spec or Path(spec).suffix.lower() in (".wav", ".flac", ".ogg", ".mp3")):
        raise UsageError(f"--mic {spec}: no such audio file")
    try:
        find_input_device(spec)
    except MicrophoneError as exc:
        raise UsageError(f"--mic: {exc}") from None


def cmd_live(args: argparse.Namespace) -> int:
    if args.list_devices:
        return _print_devices()
    rules = check_stream_options(args)  # a bad --hop, --hold or rule fails here, before the model and devices
    camera_size = _check_args(args)
    try:
        spec = parse_camera_spec(args.camera)  # a missing file or device fails here, before the model loads
    except CameraError as exc:
        raise UsageError(str(exc)) from None
    _check_mic(args.mic)
    _check_outputs(args, str(spec.target) if spec.kind == "file" else None)
    loc = open_localizer(args, **rules)
    camera = mic = None
    window = None if args.no_display else LiveWindow(snapshot_dir=args.snapshot_dir)
    # From here on Ctrl-C / SIGTERM is a stop request; later ones are ignored until the recording,
    # the JSON lines and the summary are complete and every device thread has been joined.
    with StopSignals(note=b"live: stopping: finishing the recording, JSON lines and summary first "
                          b"(Ctrl-C again is ignored)\n", linger=True) as signals:
        try:
            # Camera and microphone are opened together: a video file and an audio file start playing
            # when opened, so this keeps them in sync.
            try:
                w_h = dict(width=camera_size[0], height=camera_size[1]) if camera_size else {}
                t_open = time.monotonic()
                camera = CameraSource(args.camera, **w_h)
                mic = open_audio_source(args.mic)
            except (CameraError, MicrophoneError, AudioError) as exc:
                raise UsageError(str(exc)) from None
            return _run(args, loc, camera, mic, window, t_open, signals)
        finally:
            for src in (camera, mic):
                if src is not None:
                    with contextlib.suppress(Exception):
                        src.close()
            if window is not None:
                window.close()


def hud_status(r: Result) -> str:
    """The HUD's status line for a frame's result: why nothing is drawn, if nothing is."""
    if not r.gate_open:
        return "silence"
    return "" if r.sounding else "nothing sounding in view"


def variant_label(backend: Any) -> str:
    """The HUD's variant text: "int8-cpu (auto, 2.6x fp32)" when auto chose it, else the variant."""
    choice = getattr(backend, "variant_choice", None)
    return f"{backend.variant} ({choice.short})" if choice is not None else backend.variant


def _run(args: argparse.Namespace, loc: Any, camera: Any, mic: Any, window: LiveWindow | None,
         t_open: float, signals: Any) -> int:
    colours = {c: class_colour(i) for i, c in enumerate(loc.classes)}
    variant = variant_label(loc.backend)
    gate_db = float(loc.rules.audio_gate_db)
    print(f"live: {camera.spec.label} ({camera.size[0]}x{camera.size[1]} @ {camera.fps:g} fps) + {mic.label} -> "
          f"{loc.bundle.root} ({loc.backend.description}); "
          + ("Ctrl-C stops" if window is None else "q or Esc quits, s saves a snapshot, Ctrl-C stops"),
          file=sys.stderr, flush=True)

    def draw(frame: Any, r: Result, level: float) -> np.ndarray:  # the overlay with the HUD
        h, w = display_size(*frame.image.shape[:2], args.display_min)
        if (h, w) != frame.image.shape[:2]:
            big = cv2.resize(frame.image, (w, h), interpolation=cv2.INTER_LINEAR)
            out = scaled_result(r, h, w, big).plot(style=args.style, legend=False)
        else:
            out = r.plot(style=args.style, legend=False)
        st = loop.stats()
        lat = st.stages.get("latency")
        hud = Hud(fps=st.fps, latency_ms=lat.median_ms if lat else None, latency_p90_ms=lat.p90_ms if lat else None,
                  stages_ms=steps.log.stage_medians_ms(), level_db=level, gate_db=gate_db,
                  dropped=st.camera_dropped, overflows=st.mic_overflows,
                  heard=tuple((b, r.scores[b]) for b in r.sounding), status=hud_status(r), colours=colours,
                  variant=variant)
        draw_hud(out, hud, rgb=True)
        return out

    failure: BaseException | None = None
    with contextlib.ExitStack() as stack:
        json_file = stack.enter_context(open(stack.enter_context(atomic_path(args.json)), "w")) if args.json else None
        steps = FrameSteps(loc, DecisionHold(args.hold), draw, mic.sample_rate, json_file, t_open)
        loop = StreamLoop(camera, mic, steps.encode, steps.infer, finish_frame=steps.finish, workers=args.workers,
                          hop=args.hop, max_frames=args.max_frames, recorder=args.record, display=window,
                          audio_worker=args.audio_worker, close_sources=True, stop=signals.event,
                          handle_signals=False)
        steps.attach(loop)
        try:
            res = loop.run()
            reason, recording = res.reason, res.recording
            if reason == "stopped" and signals.signum is not None:
                reason = "interrupted"
        except (CameraError, MicrophoneError) as exc:  # a device that failed mid-run: the loop has cleaned up already
            failure, reason = exc, "device_failed"
            rec = loop.recorder
            recording = rec.path if rec is not None and rec.path.is_file() else None
    warnings = truncation_warnings(camera, reason)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr, flush=True)
    run_summary = steps.log.summary(reason, loc, camera, mic, loop.stats(), loop.recorder, recording,
                                    window.snapshots if window is not None else [], warnings)
    frames = run_summary["frames"]
    if args.summary_json:
        write_json(args.summary_json, run_summary)
    print(summary_text(run_summary), flush=True)
    if failure is not None:
        saved = f"; the recording is saved: {recording}" if recording else ""
        raise UsageError(f"{failure} (stopped after {frames} frames{saved})")
    return 130 if reason == "interrupted" else 0


def summary_text(s: Mapping[str, Any]) -> str:
    """The end-of-run summary as printed."""
    lat = s["latency_ms"]
    lat_text = f"latency median {lat['median_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms" if lat else "no latency"
    lines = [f"live: {s['frames']} frames in {s['seconds']:.2f} s ({s['reason']}): {s['fps']:.1f} fps, {lat_text}"]
    parts = []
    for k, v in s["stages_ms"].items():
        if v:
            parts.append(f"{k} {v['median_ms']:.1f}")
    lines.append("  stages (median ms): " + ", ".join(parts))
    lines.append(f"  {s['camera']}: {s['camera_frames']} frames read, {s['camera_dropped']} dropped; {s['mic']}: "
                 f"{s['audio_blocks']} blocks, {s['mic_overflows']} overflows, {s['audio_updates']} audio updates")
    heard = ", ".join(f"{c} ({n})" for c, n in s["heard"].items()) or "nothing"
    audio = ", ".join(f"{c} ({n})" for c, n in s["audio_classes"].items()) or "none (silence)"
    lines.append(f"  heard in view (frames): {heard}; top audio class (frames): {audio}")
    if s["recording"]:
        lines.append(f"  recording: {s['recording']} ({s['recording_frames']} frames, "
                     f"{s['recording_repeated']} repeated for dropped camera frames, with the captured sound)")
    return "\n".join(lines)


LIVE = Command(
    "live", "camera + microphone -> live per-class overlays with a HUD (window, recording, JSON lines)",
    configure_live, cmd_live,
    "Localize the sounding objects of a live camera with a live microphone: the audio embedding every --hop "
    "seconds on the last second of sound, the image path on every frame, frames dropped (never queued) when "
    "inference falls behind. Shows the overlays with a HUD (q/Esc quits, s saves a snapshot), records them with "
    "the captured sound (--record), and prints a summary (frames, FPS, latency median/p90, drops, overflows). "
    "Exit codes: 0 done, 2 a device or input problem, 130 stopped by Ctrl-C/SIGTERM (recording finalised).")
