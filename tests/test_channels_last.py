"""``--channels_last``: stage one's nets in NHWC memory give the same step, and checkpoints move
between the layouts."""

import torch

from training.config import apply_overrides, preset
from training.model import StageOne
from training.stage_one import all_pairs_loss, build_model, place_model


def _location_grads(model: StageOne, images: torch.Tensor, clips: torch.Tensor) -> tuple[float, torch.Tensor]:
    loss, _ = all_pairs_loss(model, images, clips, apply_overrides(preset("smoke"), {"stage_one.nce_weight": "0.5"}))
    loss.backward()
    return loss.item(), model.image.backbone.conv1.weight.grad.clone()


def test_channels_last_gives_the_same_location_step_as_the_default_layout():
    cfg = apply_overrides(preset("smoke"), {"channels_last": "true"})
    torch.manual_seed(0)
    default = place_model(build_model(preset("smoke")), preset("smoke"), torch.device("cpu"))
    nhwc = place_model(StageOne(cfg.model), cfg, torch.device("cpu"))
    nhwc.load_state_dict(default.state_dict())
    assert nhwc.image.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, clips = torch.randn(6, 3, 64, 64), torch.randn(6, 16000) * 0.1
    loss_a, grad_a = _location_grads(default.train(), images, clips)
    loss_b, grad_b = _location_grads(nhwc.train(), images, clips)
    assert abs(loss_a - loss_b) < 1e-4
    torch.testing.assert_close(grad_a, grad_b, rtol=1e-3, atol=1e-5)
    back = StageOne(cfg.model)
    back.load_state_dict(nhwc.state_dict())  # an NHWC checkpoint loads into a default-layout model
    torch.testing.assert_close(back.image.backbone.conv1.weight, default.image.backbone.conv1.weight)
