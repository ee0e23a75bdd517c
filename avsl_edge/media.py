"""Video files with an audio track, through PyAV (FFmpeg's libraries). No torch.

    write_video("out.mp4", frames_rgb, fps=29.97, audio=clip, sample_rate=16000)
    info = probe("out.mp4")            # VideoInfo(fps=29.97, frames=..., has_audio=True, ...)
    sound = read_audio_track("out.mp4")  # float32 mono, 16 kHz
    sound, rate = read_sound("any.wav")  # an audio file or a media file's track, at its own rate
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from collections.abc import Iterable

import av
import numpy as np

from .errors import UserError
from .audio import SAMPLE_RATE, libsndfile_rate, load_audio, resample, to_mono_float32
from .fileio import commit, temp_sibling


class MediaError(UserError, ValueError):
    """A video file that cannot be read or written as asked."""


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frames: int
    duration: float
    width: int
    height: int
    has_audio: bool
    audio_rate: int | None


def _fps_fraction(fps: float) -> Fraction:
    if not (fps > 0):
        raise MediaError(f"fps must be > 0, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row/column when a side is odd."""
    h, w = frame.shape[:2]
    if h % 2:
        frame = np.concatenate([frame, frame[-1:]], axis=0)
    if w % 2:
        frame = np.concatenate([frame, frame[:, -1:]], axis=1)
    return frame


class VideoWriter:
    """Incremental mp4 writer (H.264 yuv420p + AAC mono). Written to a temporary file in the
    target folder and renamed on :meth:`close`, so a crash never leaves a half-written file under
    the final name. Use as a context manager; :meth:`abort` drops the output."""

    def __init__(self, path: str | os.PathLike, fps: float, sample_rate: int | None = SAMPLE_RATE,
                 crf: int = 20):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise MediaError(f"{self.path}: video output must end in .mp4, .mov or .mkv")
        self._tmp = temp_sibling(self.path)
        self._fps = _fps_fraction(fps)
        self._container = av.open(str(self._tmp), mode="w")
        self._video = None
        self._crf = crf
        self._audio = None
        self._audio_pts = 0
        self.sample_rate = sample_rate
        self.frames = 0
        if sample_rate:
            self._audio = self._container.add_stream("aac", rate=int(sample_rate))
            self._audio.layout = "mono"

    def write_frame(self, rgb: np.ndarray) -> None:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise MediaError(f"frames must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        rgb = _even(rgb)
        if self._video is None:
            self._video = self._container.add_stream("libx264", rate=self._fps)
            self._video.width, self._video.height = rgb.shape[1], rgb.shape[0]
            self._video.pix_fmt = "yuv420p"
            self._video.options = {"crf": str(self._crf), "preset": "veryfast"}
        elif (rgb.shape[1], rgb.shape[0]) != (self._video.width, self._video.height):
            raise MediaError(
                f"frame {self.frames} is {rgb.shape[1]}x{rgb.shape[0]}, earlier frames were "
                f"{self._video.width}x{self._video.height}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self._fps
        self._container.mux(self._video.encode(frame))
        self.frames += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono audio (any dtype accepted by ``to_mono_float32``) at ``sample_rate``."""
        if self._audio is None:
            raise MediaError("this writer was opened without an audio track (sample_rate=None)")
        mono = to_mono_float32(samples)
        step = self._audio.codec_context.frame_size or 1024
        for start in range(0, mono.shape[0], step):
            chunk = mono[start : start + step]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self._audio_pts
            self._audio_pts += chunk.shape[0]
            self._container.mux(self._audio.encode(frame))

    def close(self) -> Path:
        if self._container is None:
            return self.path
        try:
            if self._video is None:
                raise MediaError(f"{self.path}: no frame was written")
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                self._container.mux(self._audio.encode(None))
            self._container.close()
            self._container = None
            commit(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> Path:
    """Write RGB uint8 frames (and optional mono audio) to an mp4, atomically."""
    with VideoWriter(path, fps, sample_rate if audio is not None else None) as w:
        for f in frames:
            w.write_frame(f)
        if audio is not None:
            w.write_audio(audio)
    return Path(path)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count (counted by decoding when the header has none), size and audio."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise MediaError(f"{path}: has no video stream")
            v = c.streams.video[0]
            fps = float(v.average_rate or v.guessed_rate or 0)
            n = v.frames or sum(1 for _ in c.decode(video=0))
            a = c.streams.audio[0] if c.streams.audio else None
            duration = n / fps if fps else 0.0
            return VideoInfo(fps, int(n), duration, v.codec_context.width, v.codec_context.height,
                             a is not None, a.rate if a is not None else None)
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: unreadable video ({exc})") from exc


def read_audio_track(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of a media file as float32 mono at ``sample_rate``."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such media file")
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"{path}: has no audio track")
            stream = c.streams.audio[0]
            rate = stream.rate
            # The container's duration is the real length; the decoder also returns the encoder's
            # padding of the last AAC frame (up to 1023 samples of silence), cut below.
            known = None
            if stream.duration and stream.time_base:
                known = int(round(float(stream.duration * stream.time_base) * rate))
            chunks = []
            for f in c.decode(audio=0):
                arr = f.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
                arr = arr.T if f.format.is_planar else arr.reshape(-1, len(f.layout.channels))
                chunks.append(to_mono_float32(arr, layout_known=True))  # (frames, channels) by construction
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: unreadable audio track ({exc})") from exc
    if not chunks:
        raise MediaError(f"{path}: the audio track is empty")
    mono = np.concatenate(chunks)
    if known is not None and 0 < known < mono.shape[0]:
        mono = mono[:known]
    return resample(mono, rate, sample_rate)


def read_sound(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(float32 mono at the file's own rate, that rate) of an audio file (soundfile) or of a media
    file's first audio track (PyAV)."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such audio or video file")
    rate = libsndfile_rate(path)
    if rate:
        return load_audio(path, sample_rate=rate), rate
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"{path}: has no audio track")
            rate = int(c.streams.audio[0].rate)
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: unreadable audio ({exc})") from None
    return read_audio_track(path, rate), rate
