"""``--channels_last`` (on by default): nets and frames in NHWC memory give the same step as the
contiguous layout, and checkpoints move between the layouts."""

import torch

from training.config import apply_overrides, preset
from training.model import StageOne
from training.stage_one import all_pairs_loss, build_model, place_frames, place_model

CPU = torch.device("cpu")


def _location_step(model: StageOne, images: torch.Tensor, clips: torch.Tensor, cfg) -> tuple[float, torch.Tensor]:
    loss, _ = all_pairs_loss(model, place_frames(images, cfg, CPU), clips, cfg)
    loss.backward()
    return loss.item(), model.image.backbone.conv1.weight.grad.clone()


def test_channels_last_gives_the_same_location_step_as_the_contiguous_layout():
    nhwc_cfg = apply_overrides(preset("smoke"), {"stage_one.nce_weight": "0.5"})
    assert nhwc_cfg.channels_last
    nchw_cfg = apply_overrides(nhwc_cfg, {"channels_last": "false"})
    torch.manual_seed(0)
    nchw = place_model(build_model(nchw_cfg), nchw_cfg, CPU)
    nhwc = place_model(StageOne(nhwc_cfg.model), nhwc_cfg, CPU)
    nhwc.load_state_dict(nchw.state_dict())
    assert nhwc.image.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, clips = torch.randn(6, 3, 64, 64), torch.randn(6, 16000) * 0.1
    assert place_frames(images, nhwc_cfg, CPU).is_contiguous(memory_format=torch.channels_last)
    loss_a, grad_a = _location_step(nchw.train(), images, clips, nchw_cfg)
    loss_b, grad_b = _location_step(nhwc.train(), images, clips, nhwc_cfg)
    assert abs(loss_a - loss_b) < 1e-4
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-3, atol=1e-5)
    back = StageOne(nchw_cfg.model)
    back.load_state_dict(nhwc.state_dict())  # an NHWC checkpoint loads into a contiguous model
    torch.testing.assert_close(back.image.backbone.conv1.weight, nchw.image.backbone.conv1.weight)
