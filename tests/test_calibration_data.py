"""What the export calibrates on when it renders its own scenes: the run's training distribution
(its asset pack, without the sources it held out), for the INT8 samples and the rules alike."""

from __future__ import annotations

import pytest

from training.config import apply_overrides, preset
from training.data.synth import SynthError

from export.calibrate import calibration_scenes
from export.to_onnx import load_samples, synth_options


def test_a_v1_run_calibrates_on_v1_and_a_v2_run_on_v2_without_its_held_out_source():
    assert synth_options(preset("smoke")) == {"pack": "v1"}
    v2 = apply_overrides(preset("smoke"), {"data.pack": "v2", "data.hold_out_pictures": "noto-v1"})
    options = synth_options(v2)
    assert options == {"pack": "v2", "hold_out_pictures": "noto-v1", "hold_out_sounds": None}
    assert synth_options(v2, "v1") == {"pack": "v1"}  # --calibration-pack v1: the v1 pack has no sources to hold out
    on_v2 = calibration_scenes(per_kind=1, negatives=1, synth_options=options)
    on_v1 = calibration_scenes(per_kind=1, negatives=1)
    assert [s.kind for s in on_v2] == [s.kind for s in on_v1] and len(on_v2) == 5
    assert all((a.image != b.image).any() for a, b in zip(on_v2, on_v1))  # the same seeds, another generator
    with pytest.raises(SynthError, match="need pack='v2'"):  # the options reach the generator
        calibration_scenes(per_kind=1, negatives=1, synth_options={"pack": "v1", "hold_out_pictures": "noto-v1"})
    samples = load_samples(None, 64, 4, synth_options=options)
    assert samples.images.shape == (4, 3, 64, 64) and samples.source.startswith("SynthMUSIC v2, 4 scenes")
