"""Audio as users have it -> the 1 s, 16 kHz mono float32 clip the model hears.

Pure numpy; reading uses soundfile (libsndfile), resampling uses soxr. No torch.

    >>> import numpy as np
    >>> stereo = (np.random.default_rng(0).standard_normal((48000, 2)) * 1000).astype(np.int16)
    >>> clip = fit_clip(resample(to_mono_float32(stereo), 48000))
    >>> clip.shape, clip.dtype
    ((16000,), dtype('float32'))
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr

from .errors import UserError
from .fileio import atomic_path

SAMPLE_RATE = 16000
CLIP_SECONDS = 1.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)


class AudioError(UserError, ValueError):
    """Audio that cannot be turned into a model input (wrong shape, dtype, NaN, unreadable file)."""


MAX_CHANNELS = 8  # the most channels a 2-D array's second axis may have (7.1 surround)
FLOAT_PEAK_LIMIT = 2.0  # float audio is expected in [-1, 1]; louder is taken for unscaled integers
SILENCE_DB = -120.0     # the level reported for digital silence
LIST_PCM = np.int16  # the sample format of integers given as a Python list or tuple

# Full-scale convention of each integer sample format: (offset, scale), float = (x - offset) / scale.
# Signed PCM is two's complement (-2^(b-1) reads as -1); unsigned PCM is offset binary (the
# midpoint 2^(b-1) is silence), as in 8-bit WAV. 64-bit integers have no audio format: arrays of
# them nearly always hold smaller samples (``(x * 32767).astype(int)``) that at int64's own full
# scale would read as silence, so they are refused, not guessed.
PCM_FORMATS: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.int8): (0.0, 2.0**7), np.dtype(np.int16): (0.0, 2.0**15), np.dtype(np.int32): (0.0, 2.0**31),
    np.dtype(np.uint8): (2.0**7, 2.0**7), np.dtype(np.uint16): (2.0**15, 2.0**15),
    np.dtype(np.uint32): (2.0**31, 2.0**31),
}
SUPPORTED = "int8/16/32, uint8/16/32 PCM or float in [-1, 1]"


def as_audio_array(audio: Any) -> np.ndarray:
    """Audio as users pass it (a numpy array, or a list/tuple of numbers) -> a numpy array of a
    supported sample format, its shape not yet checked.

    A list or tuple holds plain numbers, not a sample format: integers are read as int16 PCM
    (:data:`LIST_PCM`; values outside its range are an error, not a guess at a wider format),
    floats (or a mix of floats and integers) as float audio in [-1, 1]."""
    if isinstance(audio, (list, tuple)):
        try:
            a = np.asarray(audio)
        except (ValueError, TypeError, OverflowError) as exc:  # ragged nesting, mixed types
            raise AudioError(f"audio list cannot be read as one array of samples ({exc}); pass a numpy "
                             "array, 1-D or (samples, channels)") from None
        if a.dtype.kind in "iu":
            lo, hi = np.iinfo(LIST_PCM).min, np.iinfo(LIST_PCM).max
            if a.size and (int(a.min()) < lo or int(a.max()) > hi):
                raise AudioError(f"a list of integers is read as int16 PCM, but its values span "
                                 f"{int(a.min())}..{int(a.max())}; pass a numpy array of the samples' format "
                                 "(e.g. np.asarray(x, np.int32)) or floats in [-1, 1]")
            a = a.astype(LIST_PCM)
        elif a.dtype.kind not in "f":
            raise AudioError(f"audio list holds {a.dtype} values, not numbers; pass integers (int16 PCM) "
                             "or floats in [-1, 1]")
        return a
    if not isinstance(audio, np.ndarray):
        raise AudioError(f"audio must be a numpy array, 1-D or (samples, channels), got {type(audio).__name__}")
    if audio.dtype not in PCM_FORMATS and audio.dtype.kind != "f":
        hint = (" (64-bit integers are no PCM format: cast to the samples' own, e.g. audio.astype(np.int16))"
                if audio.dtype.kind in "iu" else "")
        raise AudioError(f"audio dtype {audio.dtype} is not supported{hint}; use {SUPPORTED}")
    return audio


def check_layout(shape: tuple[int, ...]) -> None:
    """The one layout rule: audio is 1-D (mono), or 2-D as (samples, channels) with at most
    :data:`MAX_CHANNELS` channels and more samples than channels. Any other 2-D shape is an
    :class:`AudioError` naming it and how to pass it, never a guess: (2, 48000) or (2, 20) look
    like (channels, samples); (32, 32) has no channel axis; (4, 4) or (3, 5) read either way."""
    if len(shape) == 1:
        return
    if len(shape) != 2:
        raise AudioError(f"audio must be 1-D or (samples, channels), got shape {tuple(shape)}")
    samples, channels = shape
    if samples == 0 or channels == 0:
        raise AudioError(f"audio has an empty axis: shape {tuple(shape)}")
    if channels <= MAX_CHANNELS and samples > channels:
        return
    if channels > MAX_CHANNELS and samples <= MAX_CHANNELS:
        why = (f"looks like (channels, samples) ({samples} channels of {channels} samples); "
               "pass (samples, channels), e.g. audio.T")
    elif channels > MAX_CHANNELS:
        why = (f"has no channel axis: (samples, channels) allows at most {MAX_CHANNELS} channels; pass "
               "audio.reshape(-1) if it is one channel, audio.T if it is (channels, samples)")
    else:
        both = ("is square" if samples == channels else
                f"reads both as {samples} samples of {channels} channels and as {channels} samples of {samples} channels")
        why = (f"{both} ((samples, channels) needs more samples than channels); pass a 1-D array, or audio.T "
               "if it is (channels, samples)")
    raise AudioError(f"audio shape {tuple(shape)} {why}")


def to_mono_float32(audio: Any, *, layout_known: bool = False) -> np.ndarray:
    """1-D or (samples, channels) audio (see :func:`as_audio_array`, :func:`check_layout`) ->
    float32 mono in [-1, 1].

    Integer PCM is scaled by its format's full scale (:data:`PCM_FORMATS`); channels are averaged.
    Float input is kept as is (it is expected to be in [-1, 1]); NaN or infinite samples are an
    error. ``layout_known``: the array is a decoder's (frames, channels), whatever its shape, so
    the layout rule (made for arrays of unknown layout) is not applied."""
    a = as_audio_array(audio)
    if layout_known and a.ndim == 2:
        if 0 in a.shape:
            raise AudioError(f"audio has an empty axis: shape {a.shape}")
    else:
        check_layout(a.shape)
    if a.size == 0:
        raise AudioError("audio is empty (0 samples)")
    if a.dtype.kind == "f":
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused just below
            a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise AudioError("audio contains NaN or infinite samples")
    else:
        offset, scale = PCM_FORMATS[a.dtype]
        a = ((a.astype(np.float64) - offset) / scale).astype(np.float32)
    if a.ndim == 2:
        a = a.mean(axis=1, dtype=np.float32) if a.shape[1] > 1 else a[:, 0]
    return np.ascontiguousarray(a)


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample 1-D float32 audio with soxr (high quality); a no-op when the rates are equal."""
    if not all(_finite(r) and r > 0 and float(r) == int(r) for r in (rate_in, rate_out)):
        raise AudioError(f"sample rates must be positive whole numbers of Hz, got {rate_in!r} -> {rate_out!r}")
    if int(rate_in) == int(rate_out):
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), int(rate_in), int(rate_out)).astype(
        np.float32, copy=False
    )


def fit_clip(audio: np.ndarray, n: int = CLIP_SAMPLES) -> np.ndarray:
    """The last ``n`` samples; a shorter clip is zero-padded at the start (the past), so the
    newest sound always sits at the end of the window, as in a live ring buffer."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim != 1:
        raise AudioError(f"fit_clip expects 1-D audio, got shape {a.shape}")
    if a.shape[0] >= n:
        return np.ascontiguousarray(a[a.shape[0] - n :])
    out = np.zeros(n, dtype=np.float32)
    out[n - a.shape[0] :] = a
    return out


def libsndfile_rate(path: str | os.PathLike) -> int | None:
    """The sample rate of a file libsndfile reads (WAV, FLAC, OGG, ...), None for any other file
    (a video, say, whose sound PyAV reads: :func:`avsl_edge.media.read_sound`)."""
    try:
        return int(soundfile.info(str(path)).samplerate) or None
    except Exception:  # noqa: BLE001 - any failure means "not a format libsndfile knows"
        return None


def load_audio(
    path: str | os.PathLike,
    offset: float = 0.0,
    duration: float | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Read ``duration`` seconds from ``offset`` of a WAV/FLAC/OGG file as float32 mono at
    ``sample_rate``. Missing samples past the end of the file are an error, not silence."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if not (_finite(offset) and offset >= 0):
        raise AudioError(f"{path}: offset must be a number of seconds >= 0, got {offset!r}")
    if duration is not None and not (_finite(duration) and duration > 0):
        raise AudioError(f"{path}: duration must be a number of seconds > 0, got {duration!r}")
    try:
        info = soundfile.info(str(path))
    except Exception as exc:  # libsndfile's message says what is wrong with the file
        raise AudioError(f"{path}: unreadable audio file ({exc})") from exc
    start = int(round(offset * info.samplerate))
    frames = -1 if duration is None else int(round(duration * info.samplerate))
    if start > info.frames or (frames > 0 and start + frames > info.frames + 1):
        raise AudioError(
            f"{path}: asked for {offset:.3f}s + {duration}s but the file holds "
            f"{info.frames / info.samplerate:.3f}s"
        )
    try:
        data, rate = soundfile.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio file ({exc})") from exc
    try:
        mono = to_mono_float32(data, layout_known=True)
    except AudioError as exc:  # an empty file, NaN samples in a float WAV: say which file
        raise AudioError(f"{path}: {exc}") from None
    out = resample(mono, rate, sample_rate)
    if duration is not None:
        out = out[: int(round(duration * sample_rate))]
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def save_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write float audio in [-1, 1] as 16-bit PCM WAV or FLAC (by suffix), atomically."""
    path = Path(path)
    fmt = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: audio files must end in .wav or .flac")
    a = np.asarray(audio, dtype=np.float32)
    if not np.isfinite(a).all():
        raise AudioError(f"{path}: refusing to write NaN or infinite samples")
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), np.clip(a, -1.0, 1.0), sample_rate, subtype="PCM_16", format=fmt)
    return path


def rms_db(x: np.ndarray) -> float:
    """RMS level in dBFS, in [SILENCE_DB, 0]: a full-scale square wave is 0 dBFS, and so is
    anything louder (float audio may overshoot [-1, 1] up to FLOAT_PEAK_LIMIT, the resampler may
    ring a little past full scale); digital silence is SILENCE_DB."""
    if x.size == 0:
        return SILENCE_DB
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return min(0.0, max(SILENCE_DB, 20.0 * math.log10(rms))) if rms > 0 else SILENCE_DB
