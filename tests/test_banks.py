"""Scene banks and the stage-one frame transforms: what a location step actually sees."""

from __future__ import annotations

import pytest
import torch

from training.banks import build_bank, outside, render_size, shrink_into_mosaics
from training.config import apply_overrides, preset
from training.stage_one import train_frames


def _tile(value: float, s: int = 8) -> torch.Tensor:
    return torch.full((1, 3, s, s), value)


def test_a_chosen_frame_becomes_one_quadrant_of_a_mosaic_of_the_fill_frames():
    frames = torch.cat([_tile(1.0), _tile(9.0)])           # two frames, constant 1 and 9
    fill = torch.cat([_tile(2.0), _tile(3.0), _tile(4.0)])  # three other scenes for the chosen one
    out = shrink_into_mosaics(frames, fill, torch.tensor([True, False]), torch.Generator().manual_seed(0))
    quads = [out[0, :, :4, :4], out[0, :, :4, 4:], out[0, :, 4:, :4], out[0, :, 4:, 4:]]
    values = [q.unique().tolist() for q in quads]
    assert all(len(v) == 1 for v in values)                 # each quadrant is one whole shrunk frame
    assert sorted(v[0] for v in values) == [1.0, 2.0, 3.0, 4.0]
    assert torch.equal(out[1], frames[1])                   # frames not chosen are untouched
    assert torch.equal(frames[0], _tile(1.0)[0])            # and the input is not modified


def test_the_own_frame_lands_in_every_quadrant_over_many_draws():
    frames, fill = torch.zeros(1, 3, 8, 8), torch.ones(3, 3, 8, 8)
    seen = set()
    gen = torch.Generator().manual_seed(1)
    for _ in range(40):
        corners = shrink_into_mosaics(frames, fill, torch.tensor([True]), gen)[0, 0, ::4, ::4]  # one pixel a quadrant
        seen.add(int(corners.flatten().argmin()))
    assert len(seen) == 4


def test_odd_sizes_keep_the_frame_size_and_fill_counts_are_checked():
    out = shrink_into_mosaics(torch.zeros(2, 3, 95, 95), torch.ones(3, 3, 95, 95), torch.tensor([True, False]),
                              torch.Generator())
    assert out.shape == (2, 3, 95, 95)
    with pytest.raises(ValueError, match="need 3 fill frames, got 6"):
        shrink_into_mosaics(torch.zeros(2, 3, 8, 8), torch.ones(6, 3, 8, 8), torch.tensor([True, False]),
                            torch.Generator())


def test_fill_scenes_never_come_from_the_batch():
    gen = torch.Generator().manual_seed(0)
    batch = torch.tensor([0, 2, 4, 6, 8])
    picks = outside(10, batch, 500, gen)
    assert set(picks.tolist()) == {1, 3, 5, 7, 9}
    with pytest.raises(ValueError, match="no scene left outside the batch"):
        outside(3, torch.arange(3), 1, gen)


def test_location_frames_with_and_without_the_mosaic_augmentation():
    bank = build_bank("solo", 24, render_size(48), seed=0, split="train", progress=False)
    idx = torch.arange(8)
    plain = apply_overrides(preset("smoke"), {"data.image_size": "48"})
    every = apply_overrides(plain, {"stage_one.mosaic_prob": "1"})
    a = train_frames(bank, idx, idx, plain, torch.Generator().manual_seed(3))
    b = train_frames(bank, idx, idx, every, torch.Generator().manual_seed(3))
    assert a.shape == b.shape == (8, 3, 48, 48)
    # the same train transforms come first, so one quadrant of each mosaic is its own frame, shrunk
    small = torch.nn.functional.interpolate(a, size=(24, 24), mode="bilinear", antialias=True, align_corners=False)
    for i in range(8):
        quads = [b[i, :, :24, :24], b[i, :, :24, 24:], b[i, :, 24:, :24], b[i, :, 24:, 24:]]
        assert sum(torch.allclose(q, small[i], atol=1e-5) for q in quads) == 1


def test_mosaics_start_at_mosaic_from():
    bank = build_bank("solo", 24, render_size(48), seed=0, split="train", progress=False)
    idx = torch.arange(8)
    plain = apply_overrides(preset("smoke"), {"data.image_size": "48"})
    later = apply_overrides(plain, {"stage_one.mosaic_prob": "1", "stage_one.mosaic_from": "2"})
    frames = {epoch: train_frames(bank, idx, idx, later, torch.Generator().manual_seed(5), epoch) for epoch in (1, 2)}
    assert torch.equal(frames[1], train_frames(bank, idx, idx, plain, torch.Generator().manual_seed(5)))
    assert not torch.allclose(frames[2], frames[1])
