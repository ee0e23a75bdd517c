"""Audio as users pass it: every integer PCM format at its own full scale, Python lists, the one
(samples, channels) layout rule, and audio files of any shape. Torch-free; only the last tests
need the smoke run's bundle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile

import avsl_edge
from avsl_edge.audio import (
    MAX_CHANNELS,
    AudioError,
    check_layout,
    load_audio,
    to_mono_float32,
)
from avsl_edge.errors import UserError
from avsl_edge.localizer import audio_window
from runtime.microphone import FileAudioSource


def square(dtype, n: int = 1600) -> np.ndarray:
    """A full-scale square wave of an integer format: its lowest and highest values in turn."""
    info = np.iinfo(dtype)
    return np.resize(np.array([info.min, info.max], dtype), n)


def db(x: float) -> float:
    return 20 * math.log10(x)


# ------------------------------------------------------------------- sample formats


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32])
def test_every_pcm_format_reads_at_its_own_full_scale(dtype):
    bits = np.dtype(dtype).itemsize * 8
    mono = to_mono_float32(square(dtype))
    assert mono.dtype == np.float32
    assert mono[0] == -1.0 and mono[1] == pytest.approx(1.0, abs=2.0 ** (1 - bits))
    assert audio_window(square(dtype))[1] == pytest.approx(0.0, abs=0.05)  # full scale is 0 dBFS (int8: 127/128)
    silence = np.full(100, 0 if np.dtype(dtype).kind == "i" else 2 ** (bits - 1), dtype)  # offset binary
    assert not to_mono_float32(silence).any()


def test_the_same_sound_reads_the_same_level_in_every_format():
    x = np.sin(np.linspace(0, 200 * np.pi, 16000)) * 0.25
    want = db(0.25 / math.sqrt(2))
    for dtype in (np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32):
        bits = np.dtype(dtype).itemsize * 8
        pcm = np.round(x * 2 ** (bits - 1) + (2 ** (bits - 1) if np.dtype(dtype).kind == "u" else 0)).astype(dtype)
        assert audio_window(pcm)[1] == pytest.approx(want, abs=0.1), dtype


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integers_are_refused_not_read_as_silence(dtype):
    # (x * 32767).astype(int) is int64 on most platforms: at int64's own full scale that is -290 dB
    int16_in_int64 = (np.random.default_rng(0).uniform(-0.5, 0.5, 16000) * 32767).astype(dtype)
    with pytest.raises(AudioError, match=rf"{np.dtype(dtype).name} is not supported.*astype\(np.int16\)"):
        audio_window(int16_in_int64)


def test_float_louder_than_full_scale_reads_zero_dbfs_and_far_louder_is_refused():
    assert audio_window(np.full(1000, 1.5, np.float32))[1] == 0.0
    with pytest.raises(AudioError, match=r"\[-1, 1\] but peaks at 3"):
        audio_window(np.full(1000, 3.0))
    with pytest.raises(AudioError, match=r"peaks at 1e\+300"):
        audio_window(np.array([0.0, 1e300, 0.0]))  # beyond float32, but not to be read as infinite
    with pytest.raises(AudioError, match="NaN or infinite"):
        audio_window(np.array([0.0, -np.inf, 0.0]))


# ------------------------------------------------------------------- Python lists


def test_a_list_of_integers_is_int16_pcm():
    values = [1000, -1000] * 8000
    clip, level = audio_window(values)
    ref_clip, ref_level = audio_window(np.array(values, np.int16))
    np.testing.assert_array_equal(clip, ref_clip)
    assert level == ref_level == pytest.approx(db(1000 / 32768), abs=1e-3)  # not silence (2^63)
    assert audio_window(tuple(values))[1] == level


def test_a_list_of_integers_beyond_int16_is_a_clear_error():
    with pytest.raises(AudioError, match=r"read as int16 PCM.*-40000\.\.70000.*np\.int32"):
        audio_window([0, 70000, -40000])


def test_a_list_of_floats_is_float_audio():
    values = [0.25, -0.25] * 4000
    np.testing.assert_array_equal(audio_window(values)[0], audio_window(np.array(values, np.float32))[0])
    assert audio_window([1, 0.5])[1] == pytest.approx(db(math.sqrt((1 + 0.25) / 2)), abs=1e-4)  # a mix is float


@pytest.mark.parametrize("values,message", [
    ([[0.1, 0.2], [0.3]], "cannot be read as one array"),
    (["a", "b"], "not numbers"),
    ([True, False], "not numbers"),
    ([1j, 2j], "not numbers"),
    ([None, 1], "not numbers"),
    ([2**70], "not numbers"),
    ([], "empty"),
    ([[], []], "empty axis"),
])
def test_lists_that_are_not_samples_are_clear_errors(values, message):
    with pytest.raises(AudioError, match=message):
        audio_window(values)


# ------------------------------------------------------------------- the layout rule


@pytest.mark.parametrize("shape", [(16000, 1), (16000, 2), (16000, MAX_CHANNELS), (8, 6), (9, 8), (2, 1)])
def test_samples_channels_with_few_channels_and_more_samples_is_accepted(shape):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, shape).astype(np.float32)
    check_layout(shape)
    np.testing.assert_allclose(to_mono_float32(x), x.mean(axis=1), atol=1e-7)


@pytest.mark.parametrize("shape,message", [
    ((2, 20), r"\(2, 20\) looks like \(channels, samples\).*audio\.T"),
    ((2, 48000), r"\(2, 48000\) looks like \(channels, samples\)"),
    ((32, 32), r"\(32, 32\) has no channel axis.*at most 8 channels.*reshape\(-1\)"),
    ((16000, MAX_CHANNELS + 1), r"has no channel axis"),
    ((4, 4), r"\(4, 4\) is square \(\(samples, channels\) needs more samples than channels\)"),
    ((3, 5), r"\(3, 5\) reads both as 3 samples of 5 channels and as 5 samples of 3 channels.*audio\.T"),
    ((1, 1), r"is square"),
    ((0, 2), "empty axis"),
    ((100, 0), "empty axis"),
    ((10, 2, 2), r"1-D or \(samples, channels\)"),
    ((), r"1-D or \(samples, channels\), got shape \(\)"),
])
def test_shapes_the_rule_cannot_read_are_refused_with_the_shape_and_a_fix(shape, message):
    with pytest.raises(AudioError, match=message):
        audio_window(np.zeros(shape, np.int16))
    with pytest.raises(AudioError, match=message):
        to_mono_float32(np.zeros(shape, np.float32))


def test_the_rule_looks_at_the_whole_input_not_the_last_second():
    long_channels_first = np.zeros((2, 48000), np.float32)
    with pytest.raises(AudioError, match=r"\(2, 48000\)"):
        audio_window(long_channels_first, 48000)


def test_audio_error_is_a_user_error():
    assert issubclass(AudioError, UserError) and issubclass(AudioError, ValueError)


# ------------------------------------------------------------------- files (their layout is known)


@pytest.mark.parametrize("frames,channels", [(2, 2), (3, 5), (16000, 12), (1, 1)])
def test_files_of_any_shape_load_as_mono(tmp_path, frames, channels):
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)
    path = tmp_path / "multi.wav"
    soundfile.write(str(path), x, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), x.mean(axis=1), atol=1e-6)
    src = FileAudioSource(path, realtime=False)  # the live runtime's --mic FILE
    np.testing.assert_allclose(np.concatenate([b.samples for b in src.drain()]), x.mean(axis=1), atol=1e-6)


def test_a_video_files_sound_track_replays_as_a_microphone(tmp_path):
    """`live --camera clip.mp4 --mic clip.mp4`: the video's own sound is the microphone."""
    from avsl_edge.media import write_video

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32)
    video = write_video(tmp_path / "clip.mp4", [np.zeros((32, 32, 3), np.uint8)] * 20, fps=10, audio=tone)
    src = FileAudioSource(video, realtime=False)
    assert src.duration == pytest.approx(2.0, abs=0.05)
    assert np.sqrt(np.mean(np.concatenate([b.samples for b in src.drain()]) ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a media file")
    with pytest.raises(AudioError, match=r"junk\.mp4: unreadable audio file"):
        FileAudioSource(junk, realtime=False)


def test_bad_files_and_offsets_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(str(empty), np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav: audio has an empty axis"):
        load_audio(empty)
    nan = tmp_path / "nan.wav"
    soundfile.write(str(nan), np.array([0.0, np.nan, 0.0], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: audio contains NaN"):
        FileAudioSource(nan)
    good = tmp_path / "good.wav"
    soundfile.write(str(good), np.zeros(1600, np.float32), 16000)
    for offset in (float("nan"), -1.0, "0"):
        with pytest.raises(AudioError, match=r"good\.wav: offset must be a number of seconds >= 0"):
            load_audio(good, offset)
    for duration in (float("inf"), 0.0, -0.5):
        with pytest.raises(AudioError, match=r"good\.wav: duration must be a number of seconds > 0"):
            load_audio(good, 0.0, duration)


@pytest.mark.parametrize("rate", [0, -16000, float("nan"), 44100.5, "16000", True])
def test_file_sources_at_a_bad_rate_are_clear_errors(tmp_path, rate):
    good = tmp_path / "good.wav"
    soundfile.write(str(good), np.zeros(1600, np.float32), 8000)
    with pytest.raises(AudioError, match="sample rates must be positive whole numbers of Hz"):
        FileAudioSource(good, sample_rate=rate)


# ------------------------------------------------------------------- through the model


@pytest.fixture(scope="module")
def loc(smoke_bundle) -> avsl_edge.Localizer:
    return avsl_edge.load(smoke_bundle, backend="onnxruntime", variant="fp32", intra_op_threads=1,
                          inter_op_threads=1)  # the reference numerics: formats are compared at 5e-3


def test_encode_audio_reads_lists_and_formats_as_the_same_sound(loc):
    x = np.random.default_rng(3).uniform(-0.3, 0.3, 16000)
    as_int16 = np.round(x * 32767).astype(np.int16)
    ref = loc.encode_audio(as_int16)
    for form in (as_int16.tolist(), (x * 127 + 128).round().astype(np.uint8),
                 np.round(x * 2**31).astype(np.int32), np.round(x * 32767 + 32768).astype(np.uint16)):
        s = loc.encode_audio(form)
        assert s.audio_db == pytest.approx(ref.audio_db, abs=0.1)
        np.testing.assert_allclose(s.class_probs, ref.class_probs, atol=5e-3)


@pytest.mark.parametrize("audio,message", [
    (np.zeros(16000, np.int64), "int64 is not supported"),
    (np.zeros((2, 20), np.int16), "looks like"),
    (np.zeros((32, 32), np.float32), "no channel axis"),
    ([100000] * 10, "int16 PCM"),
])
def test_localize_refuses_what_it_cannot_read(loc, audio, message):
    with pytest.raises(AudioError, match=message):
        loc.localize(np.zeros((48, 64, 3), np.uint8), audio)
