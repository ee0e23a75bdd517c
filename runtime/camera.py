"""Camera frames for the live runtime: a reader thread that keeps only the newest frame.

    with CameraSource(0) as cam:                  # webcam index, "/dev/video2", "clip.mp4", "rtsp://..."
        frame = cam.read(timeout=1.0)             # Frame(image RGB uint8, timestamp, index, media_time) or None
        cam.frames_dropped                        # frames captured while the consumer was busy

A live source (device or stream URL) is read as fast as it delivers; the consumer always gets the
newest frame and older unconsumed frames are dropped (counted), so a slow consumer never builds up
a queue and latency stays bounded. A video file is paced at its own frame rate (``realtime=True``,
same semantics as a camera) or, with ``realtime=False``, handed over frame by frame with no drops
as fast as the consumer takes them (offline processing).

Errors: :class:`CameraError` when the source cannot be opened, stops delivering frames for
``stall_timeout`` seconds, or is a video file that fails to decode with frames after the failure
(damaged mid-way); :class:`CameraEnded` (an ``EOFError``, not a ``CameraError``) when a video file
has been read to its end (``frames_read`` below ``frame_count``: the file was cut short). Torch-free: OpenCV only.
"""

from __future__ import annotations

import glob
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avsl_edge.errors import UserError

DEFAULT_FPS = 30.0


class CameraError(UserError, RuntimeError):
    """A camera, stream or video file that cannot be opened or stopped delivering frames."""


class CameraEnded(EOFError):
    """The video file behind a :class:`CameraSource` has been read to its end."""


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``timestamp`` is ``time.monotonic()`` when the frame was captured (for a paced file: when it was
    released, i.e. its real-time presentation time); ``index`` counts every frame the source
    produced, dropped ones included (gaps in ``index`` are dropped frames); ``media_time`` is the
    position on the source's own timeline in seconds (file position, or seconds since the first
    frame of a live source)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    timestamp: float
    index: int
    media_time: float


@dataclass(frozen=True)
class CameraSpec:
    """What ``spec`` names: ``kind`` is "index", "device" (/dev/videoN), "file" or "url"."""

    kind: str
    target: int | str
    label: str


def parse_camera_spec(spec: int | str | os.PathLike) -> CameraSpec:
    """An index (``0``, ``"1"``), a device path, a video file path or a stream URL, as OpenCV takes."""
    if isinstance(spec, bool):
        raise CameraError(f"camera must be an index, a video file or a stream URL, got {spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise CameraError(f"camera index must be >= 0, got {spec}")
        return CameraSpec("index", spec, f"camera {spec}")
    text = os.fspath(spec).strip()
    if not text:
        raise CameraError("camera is empty; give an index (0), a video file or a stream URL")
    if text.isdigit():
        return CameraSpec("index", int(text), f"camera {int(text)}")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return CameraSpec("url", text, f"stream {_redact(text)}")
    if text.startswith("/dev/"):
        if not os.path.exists(text):
            raise CameraError(f"camera {text} does not exist; available: {describe_cameras()}")
        return CameraSpec("device", text, f"camera {text}")
    path = Path(text)
    if not path.is_file():
        raise CameraError(f"{text}: no such video file (and not a camera index or stream URL)")
    return CameraSpec("file", str(path), f"video {path}")


def _redact(url: str) -> str:
    """Hide a password in ``rtsp://user:pass@host`` before it goes into a message."""
    return re.sub(r"//([^/:@]+):[^/@]*@", r"//\1:***@", url)


def list_cameras() -> list[str]:
    """Video capture devices this machine shows (Linux: /dev/videoN with its V4L2 name); empty
    where none, or where the OS gives no cheap way to list them (then try indices 0, 1, ...)."""
    if not sys.platform.startswith("linux"):
        return []
    out = []
    for dev in sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p)):
        m = re.fullmatch(r"/dev/video(\d+)", dev)
        if not m:
            continue
        name = ""
        try:
            name = Path(f"/sys/class/video4linux/video{m.group(1)}/name").read_text().strip()
        except OSError:
            pass
        out.append(f"{m.group(1)} ({dev}{', ' + name if name else ''})")
    return out


def describe_cameras() -> str:
    cams = list_cameras()
    if cams:
        return ", ".join(cams)
    if sys.platform.startswith("linux"):
        return "none (no /dev/video* device on this machine)"
    return "unknown on this OS (try indices 0, 1, ...)"


class _QuietOpenCV:
    """OpenCV logs every backend it tries when a capture fails to open; the CameraError says it
    better, so keep the log quiet while opening."""

    def __enter__(self):
        self._level = None
        try:
            from cv2.utils import logging as cvlog

            self._level = cvlog.getLogLevel()
            cvlog.setLogLevel(cvlog.LOG_LEVEL_SILENT)
        except Exception:  # older builds without cv2.utils.logging
            pass
        return self

    def __exit__(self, *exc):
        if self._level is not None:
            from cv2.utils import logging as cvlog

            cvlog.setLogLevel(self._level)


class CameraSource:
    """Frames from a camera index, a device path, a video file or a stream URL, on a reader thread.

    ``realtime`` (files only; live sources are always real time): True paces the file at its own
    frame rate and keeps only the newest frame, like a camera; False hands over every frame, as fast
    as :meth:`read` is called. ``width``/``height``/``fps`` are requests to a live device (it may
    pick the nearest mode it has). ``stall_timeout``: seconds without a new frame after which
    :meth:`read` raises :class:`CameraError`. ``open_timeout``: for stream URLs.
    """

    def __init__(
        self,
        spec: int | str | os.PathLike,
        *,
        realtime: bool = True,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        stall_timeout: float = 5.0,
        open_timeout: float = 10.0,
        backend: int = cv2.CAP_ANY,
    ):
        self.spec = parse_camera_spec(spec)
        self.is_file = self.spec.kind == "file"
        if not realtime and not self.is_file:
            raise CameraError(f"{self.spec.label}: realtime=False only applies to video files")
        self.realtime = realtime
        if stall_timeout <= 0:
            raise ValueError(f"stall_timeout must be > 0, got {stall_timeout}")
        self.stall_timeout = float(stall_timeout)

        self._cap = self._open(backend, open_timeout)
        if not self.is_file:
            # Keep the driver's queue short so a read returns a fresh frame (ignored where unsupported).
            self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if width:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
            if height:
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
            if fps:
                self._cap.set(cv2.CAP_PROP_FPS, float(fps))
        reported = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = reported if 0.5 <= reported <= 1000 else DEFAULT_FPS
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if self.is_file else None

        self.frames_read = 0  # frames the reader got from OpenCV
        self.frames_dropped = 0  # frames replaced by a newer one before anyone read them
        self.frames_delivered = 0  # frames returned by read()
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._fresh = False  # _latest not yet returned by read()
        self._ended = False
        self._error: CameraError | None = None
        self._closed = False
        self._stop = threading.Event()
        self._last_frame_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"camera:{self.spec.label}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------ opening

    def _open(self, backend: int, open_timeout: float) -> cv2.VideoCapture:
        kind, target, label = self.spec.kind, self.spec.target, self.spec.label
        with _QuietOpenCV():
            try:
                if kind == "url":
                    ms = int(max(open_timeout, 0.1) * 1000)
                    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                              int(self.stall_timeout * 1000)]
                    cap = cv2.VideoCapture(target, backend if backend != cv2.CAP_ANY else cv2.CAP_FFMPEG, params)
                else:
                    cap = cv2.VideoCapture(target, backend)
            except cv2.error as exc:
                raise CameraError(f"{label} could not be opened ({exc})") from exc
        if cap.isOpened():
            return cap
        cap.release()
        if kind in ("index", "device"):
            raise CameraError(f"{label} could not be opened; available: {describe_cameras()}")
        if kind == "file":
            raise CameraError(f"{label}: OpenCV cannot decode this file (not a video, or an unsupported codec)")
        raise CameraError(f"{label} could not be opened (unreachable, wrong URL or credentials, "
                          f"or no answer within {open_timeout:g} s)")

    # ------------------------------------------------------------------------------- reader thread

    def _run(self) -> None:
        cap = self._cap
        first_ts: float | None = None
        failing_since: float | None = None
        try:
            while not self._stop.is_set():
                ok, bgr = cap.read()
                now = time.monotonic()
                if not ok or bgr is None:
                    if self.is_file:
                        if self._decodes_past_failure(cap):
                            self._fail(CameraError(
                                f"{self.spec.label}: decoding failed at frame {self.frames_read}"
                                + (f" of {self.frame_count}" if self.frame_count else "")
                                + " and frames follow it: the file is damaged"))
                            return
                        with self._cond:
                            self._ended = True
                            self._cond.notify_all()
                        return
                    failing_since = failing_since or now
                    if now - failing_since > self.stall_timeout:
                        self._fail(CameraError(
                            f"{self.spec.label} stopped delivering frames (no frame for {self.stall_timeout:g} s)"))
                        return
                    self._stop.wait(0.01)
                    continue
                failing_since = None
                index = self.frames_read
                self.frames_read += 1
                if self.is_file:
                    media_time = index / self.fps
                    if self.realtime:
                        if first_ts is None:
                            first_ts = now
                        due = first_ts + media_time
                        if due > now and self._stop.wait(due - now):
                            return
                        now = max(time.monotonic(), due)
                else:
                    if first_ts is None:
                        first_ts = now
                    media_time = now - first_ts
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
                self._publish(Frame(rgb, now, index, media_time))
        except Exception as exc:  # an OpenCV failure inside the thread: hand it to the reader
            self._fail(CameraError(f"{self.spec.label}: capture failed ({exc})"))
        finally:
            cap.release()

    @staticmethod
    def _decodes_past_failure(cap: cv2.VideoCapture, tries: int = 8) -> bool:
        """After a failed read of a file: True when one of the next ``tries`` reads gives a frame
        (damage inside the file, not its end; a cut-off file reads nothing more)."""
        for _ in range(tries):
            ok, bgr = cap.read()
            if ok and bgr is not None:
                return True
        return False

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self.realtime:
                if self._fresh:
                    self.frames_dropped += 1
            else:  # lossless hand-over: wait until the previous frame was taken
                while self._fresh and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
            self._latest, self._fresh = frame, True
            self._last_frame_at = time.monotonic()
            self._cond.notify_all()

    def _fail(self, error: CameraError) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------ consumer

    def read(self, timeout: float | None = 1.0) -> Frame | None:
        """The newest frame not returned before, waiting up to ``timeout`` seconds (None: until one
        arrives); None when no new frame came in time. Raises :class:`CameraEnded` once a file's
        last frame has been returned, :class:`CameraError` when the source failed or delivered
        nothing for ``stall_timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._closed:
                    raise CameraError(f"{self.spec.label} is closed")
                if self._fresh:
                    self._fresh = False
                    self.frames_delivered += 1
                    if not self.realtime:  # the reader was waiting for us: the stall clock restarts
                        self._last_frame_at = time.monotonic()
                    self._cond.notify_all()
                    return self._latest
                if self._error is not None:
                    raise self._error
                if self._ended:
                    raise CameraEnded(f"{self.spec.label} ended after {self.frames_read} frames")
                now = time.monotonic()
                if now - self._last_frame_at > self.stall_timeout:
                    raise CameraError(f"{self.spec.label} delivered no frame for {self.stall_timeout:g} s")
                wait = self.stall_timeout - (now - self._last_frame_at) + 0.01
                if deadline is not None:
                    if now >= deadline:
                        return None
                    wait = min(wait, deadline - now)
                self._cond.wait(wait)

    @property
    def running(self) -> bool:
        """True while the reader thread holds the device (False once closed and released)."""
        return self._thread.is_alive()

    @property
    def ended(self) -> bool:
        """True once a file source has been read to the end and its last frame returned."""
        with self._cond:
            return self._ended and not self._fresh

    def close(self, timeout: float = 10.0) -> None:
        """Stop the reader and release the device (idempotent). The reader thread releases the
        capture itself, so a read blocked in the driver never races with the release; waiting for
        it means no native capture thread outlives the program (that aborts at exit)."""
        with self._cond:
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"CameraSource({self.spec.label}, {self.size[0]}x{self.size[1]} @ {self.fps:g} fps, "
                f"read={self.frames_read}, dropped={self.frames_dropped})")
