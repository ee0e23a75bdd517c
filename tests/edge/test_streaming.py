"""Streaming decisions: boxes held over short misses, and the figures that say how steady a stream is."""

from __future__ import annotations

import numpy as np
import pytest

import avsl_edge
from avsl_edge.metrics import onset_delay, state_changes_per_second
from avsl_edge.streaming import DecisionHold, HoldError

RNG = np.random.default_rng(1)
FRAME = (RNG.random((120, 160, 3)) * 255).astype(np.uint8)
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
SILENCE = np.zeros(16000, np.float32)


@pytest.fixture(scope="module")
def lit_and_dark(tiny_bundle):
    """A result that lights its classes (in-view rule off) and one of silence, from the same frame."""
    loc = avsl_edge.load(tiny_bundle).with_rules(in_view_threshold=0.0)
    lit, dark = loc.localize(FRAME, TONE), loc.localize(FRAME, SILENCE)
    assert lit.sounding and not dark.sounding
    return lit, dark


def test_a_class_named_once_stays_shown_with_its_box_for_the_hold_then_goes_dark(lit_and_dark):
    lit, dark = lit_and_dark
    hold = DecisionHold(0.5)
    assert hold.update(0.0, lit).sounding == lit.sounding
    kept = hold.update(0.4, dark)
    assert kept.sounding == lit.sounding and kept.held == lit.sounding
    assert [b.to_dict() for b in kept.boxes] == [b.to_dict() for b in lit.boxes]
    assert kept.to_dict()["held"] == list(lit.sounding)
    assert hold.update(0.6, dark).sounding == ()


def test_without_a_hold_every_frame_stands_on_its_own(lit_and_dark):
    lit, dark = lit_and_dark
    hold = DecisionHold(0.0)
    hold.update(0.0, lit)
    assert hold.update(0.04, dark) is dark


def test_a_time_before_the_last_starts_a_new_stream(lit_and_dark):
    lit, dark = lit_and_dark
    hold = DecisionHold(0.5)
    hold.update(5.0, lit)
    assert hold.update(0.0, dark).sounding == ()


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), 11.0, "0.5"])
def test_a_hold_that_is_not_a_few_seconds_is_refused(bad):
    with pytest.raises(HoldError, match="hold must be"):
        DecisionHold(bad)


def test_flicker_counts_each_class_toggle_per_second():
    times = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert state_changes_per_second([["bell"]] * 5, times) == 0.0
    assert state_changes_per_second([["bell"], [], ["bell"], [], ["bell"]], times) == 2.0
    assert state_changes_per_second([["bell"], ["drum"], ["bell"], ["bell"], ["bell"]], times) == 2.0


def test_onset_delay_is_the_time_to_the_first_frame_showing_the_class():
    shown, times = [[], [], ["bell"], ["bell"]], [0.0, 1.0, 1.25, 1.5]
    assert onset_delay(shown, times, "bell", onset=1.0) == pytest.approx(0.25)
    assert onset_delay(shown, times, "drum", onset=1.0) is None
    with pytest.raises(ValueError, match="one time per frame"):
        onset_delay(shown, times[:2], "bell", 0.0)


def test_a_frames_audio_window_is_the_second_of_sound_ending_at_it():
    from avsl_edge.streaming import window_ending_at

    sound = np.arange(48000, dtype=np.float32)  # 3 s at 16 kHz
    np.testing.assert_array_equal(window_ending_at(sound, 2.5), sound[24000:40000])
    assert window_ending_at(sound, 0.25).shape == (4000,)
    np.testing.assert_array_equal(window_ending_at(sound, 0.0), np.zeros(1, np.float32))
