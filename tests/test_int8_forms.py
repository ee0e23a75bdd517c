"""The INT8-form study: AVX2's saturating pair sums emulated exactly, and every form built, timed and scored."""

import json

import numpy as np
import pytest

from benchmarks.int8_forms import PACKINGS, main, pair_saturation
from export.quantize import CPU_FORMS


def _full_scale(c=2, k=3, size=5):
    return np.full((1, c, size, size), 255, np.uint8), np.zeros((4, c, k, k), np.int8)


def test_two_full_range_products_clip_and_seven_bit_weights_never_do():
    x, w = _full_scale()
    w[:] = 127
    clipped = pair_saturation(x, w, zero_point=0)
    assert clipped["clipped_share"] == 1.0 and clipped["outputs_changed_share"] == 1.0
    w[:] = 63  # reduce_range: 255 x 63 x 2 = 32130 fits an int16
    assert pair_saturation(x, w, zero_point=0)["clipped_share"] == 0.0


def test_pairs_are_neighbouring_channels_of_one_tap_as_the_channels_last_kernel_packs_them():
    x, w = _full_scale()
    w[:, 0], w[:, 1] = 127, -127  # channel pairs cancel; pairs of taps of one channel would clip
    assert pair_saturation(x, w, zero_point=0)["clipped_share"] == 0.0


def test_a_layer_of_few_channels_pairs_across_taps_only_when_packed_flat():
    x, w = _full_scale(c=1)
    w[:] = 127
    assert pair_saturation(x, w, zero_point=0)["clipped_share"] > 0.5
    assert pair_saturation(x, w, zero_point=0, channel_block=4)["clipped_share"] == 0.0  # x, 0, 0, 0 per tap


def test_padding_takes_the_zero_point_and_the_change_is_measured_against_the_corrected_output():
    x, w = _full_scale()
    w[:] = 127
    padded = pair_saturation(x, w, zero_point=0, strides=(2, 2), pads=(1, 1, 1, 1))
    assert 0.0 < padded["clipped_share"] < 1.0  # border taps read zeros
    # with the zero point at 255 the corrected input is all zero, so any clip is an unbounded change
    assert pair_saturation(x, w, zero_point=255)["max_change_over_max_output"] > 1.0


def test_bad_operands_are_named():
    x, w = _full_scale()
    with pytest.raises(ValueError, match="uint8 N x C x H x W and int8"):
        pair_saturation(x.astype(np.int8), w, zero_point=0)


def test_every_form_is_built_timed_scored_and_checked_for_saturation(smoke_run, smoke_bundle, tmp_path, capsys):
    out = tmp_path / "forms.json"
    assert main(["--bundle", str(smoke_bundle), "--data", str(smoke_run / "data" / "test"), "--calibration-size", "2",
                 "--saturation-inputs", "1", "--repeat", "1", "--runs", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert set(figures["speed"]) == {"fp32", *CPU_FORMS} and set(figures["accuracy"]) == {"fp32", *CPU_FORMS}
    # u8u8 cannot clip and the QOperator file is u8s8's arithmetic: only the QDQ u8s8 forms are emulated
    assert set(figures["avx2_saturation"]) == {"u8s8", "u8s8-reduce-range", "u8s8-per-tensor"}
    assert set(figures["avx2_saturation"]["u8s8"]) == set(PACKINGS)
    assert all(r["clipped_share"] == 0.0 for r in figures["avx2_saturation"]["u8s8-reduce-range"].values())
    assert "ISA:" in capsys.readouterr().out


def test_a_bundle_without_the_cpu_variant_is_refused_before_any_work(tiny_bundle, smoke_run):
    with pytest.raises(SystemExit):
        main(["--bundle", str(tiny_bundle), "--data", str(smoke_run / "data" / "test")])
