"""Any audio a user can pass, of every numeric dtype and small shapes, as an array or a Python
list: the window is either valid, at the level its samples have at their format's full scale,
or an AudioError. Never another exception, never a level that a wrong scale or layout made up."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from avsl_edge.audio import MAX_CHANNELS, AudioError
from avsl_edge.audio import SILENCE_DB
from avsl_edge.localizer import audio_window

DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
          np.float16, np.float32, np.float64, np.complex64, np.bool_]


@st.composite
def user_audio(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 64), min_size=0, max_size=3)))
    if dtype.kind == "f" and draw(st.booleans()):  # mostly audio-like floats; sometimes anything at all
        elements = st.floats(-1.0, 1.0, width=dtype.itemsize * 8)
    else:
        elements = None
    a = draw(hnp.arrays(dtype, shape, elements=elements))
    return a.tolist() if draw(st.booleans()) else a


def full_scale(a: np.ndarray) -> np.ndarray | None:
    """The documented reading of an array, written out independently: float samples in [-1, 1]
    per channel, or None where the input must be refused."""
    if a.ndim not in (1, 2) or a.size == 0:
        return None
    if a.ndim == 2 and not (a.shape[1] <= MAX_CHANNELS and a.shape[0] > a.shape[1]):
        return None
    if a.dtype.kind == "f":
        x = a.astype(np.float64)
        if not (np.isfinite(x).all() and np.abs(x).max() <= 2.0):
            return None
        return x
    bits = a.dtype.itemsize * 8
    if a.dtype.kind not in "iu" or bits > 32:
        return None
    offset = 2.0 ** (bits - 1) if a.dtype.kind == "u" else 0.0
    return (a.astype(np.float64) - offset) / 2.0 ** (bits - 1)


def expected(audio) -> np.ndarray | None:
    if isinstance(audio, list):
        try:
            a = np.asarray(audio)
        except ValueError:
            return None
        if a.dtype.kind in "iu":  # integers in a list are int16 PCM, if they fit
            if a.size and (a.min() < -32768 or a.max() > 32767):
                return None
            a = a.astype(np.int16)
        elif a.dtype.kind != "f":
            return None
        return full_scale(a)
    return full_scale(audio) if isinstance(audio, np.ndarray) else None  # a bare number is no audio


def level(x: np.ndarray) -> float:
    mono = x.mean(axis=1) if x.ndim == 2 else x
    rms = math.sqrt(float(np.mean(mono ** 2)))
    return min(0.0, max(SILENCE_DB, 20 * math.log10(rms))) if rms > 0 else SILENCE_DB


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(audio=user_audio())
def test_fuzz_audio_is_read_at_its_full_scale_or_refused(audio):
    want = expected(audio)
    try:
        clip, got = audio_window(audio, 16000)
    except AudioError:
        assert want is None, "refused audio that the documented rules read"
        return
    assert want is not None, "accepted audio that the documented rules refuse"
    assert clip.shape == (16000,) and clip.dtype == np.float32 and np.isfinite(clip).all()
    assert SILENCE_DB <= got <= 0.0
    # the same level, to float32 resolution (compared as amplitudes: near silence dB are coarse)
    assert 10 ** (got / 20) == pytest.approx(10 ** (level(want) / 20), rel=1e-3, abs=1e-6)


def test_fuzz_full_scale_int64_noise_is_no_silence():
    noise = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 16000, dtype=np.int64)
    with pytest.raises(AudioError, match="int64"):  # refused: never read as silence, never guessed
        audio_window(noise)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(audio=user_audio(), rate=st.sampled_from([8000, 16000, 44100, 48000]))
def test_fuzz_encode_audio_gives_a_state_or_an_audio_error(fuzz_loc, audio, rate):
    try:
        s = fuzz_loc.encode_audio(audio, sample_rate=rate)
    except AudioError:
        assert expected(audio) is None
        return
    assert expected(audio) is not None
    assert np.isfinite(s.a_emb).all() and SILENCE_DB <= s.audio_db <= 0.0
    assert abs(float(s.class_probs.sum()) - 1.0) < 1e-4


@pytest.fixture(scope="module")
def fuzz_loc(smoke_bundle):
    import avsl_edge

    return avsl_edge.load(smoke_bundle, backend="onnxruntime", intra_op_threads=1, inter_op_threads=1)
