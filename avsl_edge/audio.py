"""Audio as users have it -> the 1 s, 16 kHz mono float32 clip the model hears.

Pure numpy; reading uses soundfile (libsndfile), resampling uses soxr. No torch.

    >>> import numpy as np
    >>> stereo = (np.random.default_rng(0).standard_normal((48000, 2)) * 1000).astype(np.int16)
    >>> clip = fit_clip(resample(to_mono_float32(stereo), 48000))
    >>> clip.shape, clip.dtype
    ((16000,), dtype('float32'))
"""

from __future__ import annotations

import os
from pathlib import Path

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


def to_mono_float32(audio: np.ndarray) -> np.ndarray:
    """1-D or (samples, channels) int16/int32/uint8/float audio -> float32 mono in [-1, 1].

    Integer PCM is scaled by its full-scale value; channels are averaged. Float input is kept as is
    (it is expected to be in [-1, 1]); NaN or infinite samples are an error.
    """
    a = np.asarray(audio)
    if a.ndim == 2:
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise AudioError(f"audio has an empty axis: shape {a.shape}")
        if a.shape[1] > 32:
            raise AudioError(
                f"audio shape {a.shape} looks like (channels, samples); pass (samples, channels) "
                "or a 1-D array"
            )
    elif a.ndim != 1:
        raise AudioError(f"audio must be 1-D or (samples, channels), got shape {a.shape}")
    if a.size == 0:
        raise AudioError("audio is empty (0 samples)")
    if a.dtype == np.uint8:
        a = (a.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(a.dtype, np.signedinteger):
        a = a.astype(np.float32) / float(-np.iinfo(a.dtype).min)
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise AudioError("audio contains NaN or infinite samples")
    else:
        raise AudioError(f"audio dtype {a.dtype} is not supported (use int16, int32, uint8 or float)")
    if a.ndim == 2:
        a = a.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(a)


def resample(audio: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample 1-D float32 audio with soxr (high quality); a no-op when the rates are equal."""
    if int(rate_in) <= 0 or int(rate_out) <= 0:
        raise AudioError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
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
    try:
        info = soundfile.info(str(path))
    except Exception as exc:  # libsndfile's message says what is wrong with the file
        raise AudioError(f"{path}: unreadable audio file ({exc})") from exc
    start = int(round(offset * info.samplerate))
    frames = -1 if duration is None else int(round(duration * info.samplerate))
    if offset < 0 or start > info.frames or (frames > 0 and start + frames > info.frames + 1):
        raise AudioError(
            f"{path}: asked for {offset:.3f}s + {duration}s but the file holds "
            f"{info.frames / info.samplerate:.3f}s"
        )
    try:
        data, rate = soundfile.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: unreadable audio file ({exc})") from exc
    mono = to_mono_float32(data)
    out = resample(mono, rate, sample_rate)
    if duration is not None:
        out = out[: int(round(duration * sample_rate))]
    return out


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
