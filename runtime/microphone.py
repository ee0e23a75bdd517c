"""Audio for the live runtime: a microphone (PortAudio via ``sounddevice``) or an audio file
replayed in real time, both delivering timestamped 16 kHz mono blocks.

    with MicSource("USB") as mic:                  # index, name substring, or None = default input
        block = mic.read(timeout=0.1)               # AudioBlock(samples float32, t_end, sample_rate) or None
        mic.overflows                               # input overflows reported by PortAudio (never fatal)
    with FileAudioSource("take.wav") as src:        # same interface, paced by the clock
        ...
    src = open_audio_source("take.wav" or "USB" or 2 or None)
    print(list_devices())

The PortAudio callback only copies each block and its capture time into a queue (and counts
overflows); conversion to mono and resampling to 16 kHz (soxr, streaming) happen in :meth:`read`,
on the consumer's thread. Timestamps are ``time.monotonic()`` seconds: the stream's
``inputBufferAdcTime`` is converted with the callback's ``currentTime`` (both on PortAudio's clock)
so ``t_end`` is when the block's last sample reached the ADC.

``sounddevice`` is imported lazily (it is the ``live`` extra) so the rest of the runtime works
without it. Torch-free.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from avsl_edge.audio import SAMPLE_RATE, AudioError, libsndfile_rate, load_audio
from avsl_edge.errors import UserError
from avsl_edge.media import MediaError, read_audio_track


class MicrophoneError(UserError, RuntimeError):
    """An audio input that does not exist, cannot be opened (busy), or stopped delivering."""


class AudioEnded(EOFError):
    """A :class:`FileAudioSource` has replayed its whole file."""


@dataclass(frozen=True)
class AudioBlock:
    """Consecutive mono samples; ``t_end`` is the monotonic time just after the last sample."""

    samples: np.ndarray  # (n,) float32 in [-1, 1]
    t_end: float
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    @property
    def t_start(self) -> float:
        return self.t_end - self.duration


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: float
    is_default: bool

    def __str__(self) -> str:
        return f"{self.index} {self.name!r} ({self.hostapi}, {self.channels} in, {self.default_rate:g} Hz)"


def _sounddevice():
    try:
        import sounddevice
    except ImportError as exc:
        raise MicrophoneError("microphone input needs the sounddevice package: pip install 'avsl-edge[live]'") from exc
    except OSError as exc:  # sounddevice imports but the PortAudio library is missing
        raise MicrophoneError(f"microphone input needs the PortAudio library ({exc}); "
                              "Debian/Ubuntu: apt-get install libportaudio2") from exc
    return sounddevice


def input_devices() -> list[InputDevice]:
    """Every device PortAudio can record from, in index order."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise MicrophoneError(f"PortAudio cannot list audio devices ({exc})") from exc
    if default_in is None or default_in < 0:
        default_in = next((h["default_input_device"] for h in hostapis if h["default_input_device"] >= 0), -1)
    out = []
    for d in devices:
        if d["max_input_channels"] > 0:
            out.append(InputDevice(int(d["index"]), str(d["name"]), str(hostapis[d["hostapi"]]["name"]),
                                   int(d["max_input_channels"]), float(d["default_samplerate"]),
                                   int(d["index"]) == default_in))
    return out


def list_devices() -> str:
    """Audio inputs as text, one per line, the default marked with ``*``."""
    devs = input_devices()
    if not devs:
        return "audio inputs: none (PortAudio sees no capture device)"
    lines = ["audio inputs (--mic INDEX or a part of the name; * = default):"]
    lines += [f"{'*' if d.is_default else ' '} {d}" for d in devs]
    return "\n".join(lines)


def find_input_device(device: int | str | None) -> InputDevice:
    """The input device for an index, a (case-insensitive) name or name substring, or None for the
    default input. Raises :class:`MicrophoneError` naming ``device`` and listing what exists."""
    devs = input_devices()

    def listing() -> str:
        return "; ".join(str(d) for d in devs) if devs else "none (PortAudio sees no capture device)"

    if device is None:
        for d in devs:
            if d.is_default:
                return d
        if devs:
            return devs[0]
        raise MicrophoneError(f"no default microphone: there is no audio input device; available: {listing()}")
    if isinstance(device, bool):
        raise MicrophoneError(f"microphone must be an index or a name, got {device!r}")
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        idx = int(device)
        for d in devs:
            if d.index == idx:
                return d
        sd = _sounddevice()
        try:
            info = sd.query_devices(idx)
            raise MicrophoneError(f"audio device {idx} ({info['name']!r}) has no input channels; "
                                  f"audio inputs: {listing()}")
        except (ValueError, sd.PortAudioError):
            raise MicrophoneError(f"no audio input device {idx}; available: {listing()}") from None
    name = str(device).strip().lower()
    exact = [d for d in devs if d.name.lower() == name]
    if exact:
        return exact[0]
    matches = [d for d in devs if name in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise MicrophoneError(f"no audio input device matching {device!r}; available: {listing()}")
    raise MicrophoneError(f"microphone {device!r} is ambiguous, it matches: "
                          + "; ".join(str(d) for d in matches) + " (give the index)")


class MicSource:
    """A live microphone through ``sounddevice.InputStream``.

    ``block``: seconds per callback block (0.02 = 320 samples at 16 kHz). The stream is opened at
    ``sample_rate`` when the device takes it, else at the device's own rate and resampled (soxr).
    ``max_queue``: seconds of blocks kept when nobody reads (older ones are then not added:
    counted in ``queue_drops``). ``stall_timeout``: seconds without a block after which
    :meth:`read` raises :class:`MicrophoneError` (a device that vanished)."""

    def __init__(
        self,
        device: int | str | None = None,
        sample_rate: int = SAMPLE_RATE,
        block: float = 0.02,
        *,
        latency: str | float = "low",
        max_queue: float = 5.0,
        stall_timeout: float = 2.0,
    ):
        if block <= 0 or sample_rate <= 0:
            raise ValueError(f"block and sample_rate must be > 0, got {block}, {sample_rate}")
        sd = self._sd = _sounddevice()
        self.device = find_input_device(device)
        self.label = f"microphone {self.device.index} ({self.device.name!r})"
        self.sample_rate = int(sample_rate)
        self.device_rate, self.channels = self._pick_settings(sd)
        self.block_frames = max(1, int(round(block * self.device_rate)))
        self.stall_timeout = float(stall_timeout)
        self.overflows = 0  # PortAudio input overflows (audio lost in the driver)
        self.queue_drops = 0  # blocks not queued because nobody read them for max_queue seconds
        self.blocks = 0  # blocks delivered by the callback
        self.adc_lag = 0.0  # seconds from the newest block's first sample at the ADC to its callback
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, math.ceil(max_queue / block)))
        self._resampler = (soxr.ResampleStream(self.device_rate, self.sample_rate, 1, dtype="float32")
                           if self.device_rate != self.sample_rate else None)
        self._closed = False
        self._lock = threading.Lock()
        self._last_block_at = time.monotonic()
        try:
            self._stream = sd.InputStream(device=self.device.index, samplerate=self.device_rate,
                                          channels=self.channels, dtype="float32",
                                          blocksize=self.block_frames, latency=latency,
                                          callback=self._callback)
            self._stream.start()
        except sd.PortAudioError as exc:
            stream = getattr(self, "_stream", None)
            if stream is not None:
                stream.close(ignore_errors=True)
            raise MicrophoneError(f"{self.label} could not be opened ({exc}); is it in use by another "
                                  "program, or unplugged?") from exc
        self.latency = float(self._stream.latency)

    def _pick_settings(self, sd) -> tuple[int, int]:
        for rate in (self.sample_rate, int(round(self.device.default_rate))):
            for ch in sorted({1, min(2, self.device.channels)}):
                try:
                    sd.check_input_settings(device=self.device.index, channels=ch, dtype="float32", samplerate=rate)
                    return rate, ch
                except (ValueError, sd.PortAudioError):
                    continue
        raise MicrophoneError(f"{self.label} accepts neither {self.sample_rate} Hz nor its default "
                              f"{self.device.default_rate:g} Hz with 1-2 float32 channels")

    # PortAudio's thread: copy the block and its capture time, count overflows; nothing else.
    def _callback(self, indata, frames, time_info, status) -> None:
        now = time.monotonic()
        lag = time_info.currentTime - time_info.inputBufferAdcTime
        if not (0.0 <= lag < 1.0) or time_info.inputBufferAdcTime <= 0:
            lag = frames / self.device_rate  # host API without ADC times: the block just completed
        self.adc_lag = lag
        t_end = min(now, now - lag + frames / self.device_rate)
        if status.input_overflow:
            self.overflows += 1
        self.blocks += 1
        try:
            self._queue.put_nowait((indata.copy(), t_end))
        except queue.Full:
            self.queue_drops += 1

    def read(self, timeout: float | None = 0.0) -> AudioBlock | None:
        """The next block as 16 kHz mono float32 (None if none arrived within ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.stall_timeout if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                data, t_end = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                self._check_alive()
                if deadline is None:
                    continue
                return None
            self._last_block_at = time.monotonic()
            mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
            if self._resampler is not None:
                mono = self._resampler.resample_chunk(np.ascontiguousarray(mono))
                if mono.shape[0] == 0:  # the resampler is still filling its delay line
                    continue
            return AudioBlock(np.ascontiguousarray(mono, dtype=np.float32), t_end, self.sample_rate)

    def drain(self) -> list[AudioBlock]:
        """Every block available now, without waiting."""
        out = []
        while (b := self.read(0.0)) is not None:
            out.append(b)
        return out

    def _check_alive(self) -> None:
        if self._closed:
            raise MicrophoneError(f"{self.label} is closed")
        if not self._stream.active:
            raise MicrophoneError(f"{self.label} stopped (the stream is no longer active)")
        if time.monotonic() - self._last_block_at > self.stall_timeout:
            raise MicrophoneError(f"{self.label} delivered no audio for {self.stall_timeout:g} s")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._stream.stop(ignore_errors=True)
        finally:
            self._stream.close(ignore_errors=True)

    def __del__(self) -> None:
        # A stream left running after its owner is gone would call back into freed memory.
        if getattr(self, "_stream", None) is not None and not getattr(self, "_closed", True):
            self.close()

    def __enter__(self) -> MicSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MicSource({self.label}, {self.device_rate} Hz x{self.channels} -> {self.sample_rate} Hz, "
                f"blocks={self.blocks}, overflows={self.overflows})")


class FileAudioSource:
    """An audio file replayed as if it were a microphone: block ``k`` becomes available when its
    last sample "has been captured", ``block`` seconds apart on the monotonic clock from the moment
    the source is created (or from ``start`` on that clock: ``start=0.0`` puts the timestamps on
    the file's own timeline, for offline runs). ``realtime=False`` makes every block available at
    once. ``loop`` restarts at the end instead of ending. ``samples``: the sound already decoded
    (mono float32 at ``sample_rate``; ``path`` then only names it)."""

    overflows = 0  # same counters as MicSource; a file never overflows
    queue_drops = 0

    def __init__(self, path: str | os.PathLike, realtime: bool = True, sample_rate: int = SAMPLE_RATE,
                 block: float = 0.02, *, loop: bool = False, start: float | None = None,
                 samples: np.ndarray | None = None):
        if block <= 0:
            raise ValueError(f"block must be > 0, got {block}")
        self.path = Path(path)
        self.label = f"audio file {self.path}"
        if samples is None:
            try:
                samples = load_audio(self.path, sample_rate=sample_rate)  # AudioError names the file
            except AudioError as exc:  # not an audio file: a video's sound track (clip.mp4 as --mic)
                if libsndfile_rate(self.path):
                    raise
                try:
                    samples = read_audio_track(self.path, sample_rate)
                except MediaError:
                    raise exc from None
        self.audio = np.asarray(samples, np.float32)
        self.sample_rate = int(sample_rate)
        self.realtime = realtime
        self.loop = loop
        self.block_frames = max(1, int(round(block * sample_rate)))
        self.duration = self.audio.shape[0] / self.sample_rate
        self.blocks = 0
        self._t0 = time.monotonic() if start is None else float(start)
        self._closed = False

    def read(self, timeout: float | None = 0.0) -> AudioBlock | None:
        """The next block once it is due (None if not due within ``timeout``); raises
        :class:`AudioEnded` after the last one (unless ``loop``)."""
        if self._closed:
            raise MicrophoneError(f"{self.label} is closed")
        n, total = self.block_frames, self.audio.shape[0]
        start = self.blocks * n  # position on the endless (looped) timeline
        if not self.loop and start >= total:
            raise AudioEnded(f"{self.label} ended after {self.duration:.2f} s")
        end = start + n if self.loop else min(start + n, total)
        t_end = self._t0 + end / self.sample_rate
        if self.realtime:
            wait = t_end - time.monotonic()
            if wait > 0:
                if timeout is not None and wait > timeout:
                    time.sleep(max(0.0, timeout))
                    return None
                time.sleep(wait)
        if self.loop:
            idx = np.arange(start, end) % total
            samples = self.audio[idx]
        else:
            samples = self.audio[start:end]
        self.blocks += 1
        return AudioBlock(np.ascontiguousarray(samples, dtype=np.float32), t_end, self.sample_rate)

    def drain(self) -> list[AudioBlock]:
        out = []
        try:
            while (b := self.read(0.0)) is not None:
                out.append(b)
        except AudioEnded:
            if not out:
                raise
        return out

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> FileAudioSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_audio_source(spec: int | str | os.PathLike | None, sample_rate: int = SAMPLE_RATE,
                      block: float = 0.02, *, realtime: bool = True) -> MicSource | FileAudioSource:
    """``--mic`` as the user gives it: an existing audio file -> :class:`FileAudioSource`, anything
    else (None, an index, a name) -> :class:`MicSource`."""
    if spec is not None and not isinstance(spec, int):
        text = os.fspath(spec)
        if Path(text).is_file():
            return FileAudioSource(text, realtime=realtime, sample_rate=sample_rate, block=block)
        if os.sep in text or Path(text).suffix.lower() in (".wav", ".flac", ".ogg", ".mp3"):
            raise MicrophoneError(f"{text}: no such audio file")
    return MicSource(spec, sample_rate=sample_rate, block=block)
