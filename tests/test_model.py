"""Tests for training/model.py: shapes, K, backbone surgery, log-mel parity, weights, heads, losses, ONNX."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio
import torchvision

from training.model import (
    AudioBranch,
    AudioTeacher,
    ClassAwareHead,
    ImageBranch,
    LocalizationHead,
    LogMel,
    ModelConfig,
    ScalarAffine,
    StageOne,
    StageTwo,
    contrastive_loss_all_pairs,
    dilate_mask,
    global_score,
    load_imagenet_weights,
    localization_loss_all_pairs,
    localization_loss_stage_one,
    mel_filterbank,
    object_features,
    quadrant_scores,
    resnet18_s5,
    stage_two_losses,
)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _clips() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    t = torch.arange(16000, dtype=torch.float32) / 16000
    return {
        "noise": 0.1 * torch.randn(16000, generator=g),
        "quiet_noise": 1e-4 * torch.randn(16000, generator=g),
        "silence": torch.zeros(16000),
        "tone_440": 0.5 * torch.sin(2 * math.pi * 440 * t),
        "tone_3217": 0.3 * torch.sin(2 * math.pi * 3217.3 * t + 0.3),
        "chirp": 0.5 * torch.sin(2 * math.pi * (100 * t + 3000 * t * t)),
    }


def _torchaudio_logmel(waveform: torch.Tensor, dtype: torch.dtype, power: float = 1.0) -> torch.Tensor:
    """Reference: torchaudio Spectrogram + MelScale + AmplitudeToDB, one clip at a time (B,1,T,M).

    Each clip goes in as (1, 1, freq, time), so AmplitudeToDB's top_db clamp is per clip.
    """
    wkwargs = {"dtype": dtype}
    spec = torchaudio.transforms.Spectrogram(
        n_fft=160, hop_length=80, power=power, center=True, pad_mode="constant", wkwargs=wkwargs
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mel = torchaudio.transforms.MelScale(
            n_mels=64, sample_rate=16000, f_min=0.0, f_max=8000.0, n_stft=81, norm="slaney", mel_scale="slaney"
        ).to(dtype)
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80)
    out = [to_db(mel(spec(x.to(dtype)[None, None]))) for x in waveform]  # each (1, 1, 64, 201)
    return torch.cat(out).transpose(2, 3)  # (B, 1, 201, 64)


# --------------------------------------------------------------------------------------------- config


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_clusters"):
        ModelConfig(num_clusters=0)
    with pytest.raises(ValueError, match="power"):
        ModelConfig(power=1.5)
    with pytest.raises(ValueError, match="obj_affine_init"):
        ModelConfig(obj_affine_init="zeros")
    with pytest.raises(ValueError, match="f_max"):
        ModelConfig(f_max=9000.0)


# --------------------------------------------------------------------------------------------- log-mel


def test_logmel_shape_and_two_empty_filters():
    logmel = LogMel()
    assert logmel(torch.zeros(3, 16000)).shape == (3, 1, 201, 64)
    fb = mel_filterbank(ModelConfig())
    assert fb.shape == (81, 64)
    empty = torch.nonzero(fb.abs().sum(dim=0) == 0).flatten().tolist()
    assert empty == [0, 13]  # two dead filters at n_fft = 160 (docs/method.md §1.3)
    assert list(logmel.state_dict()) == []  # non-persistent buffers: nothing in checkpoints


def test_logmel_matches_torchaudio_in_float64_on_every_bin():
    """Algorithmic parity: same maths, no float32 round-off. Every bin, every clip, batched."""
    clips = _clips()
    x = torch.stack(list(clips.values())).double()
    ours = LogMel(dtype=torch.float64)(x)
    ref = _torchaudio_logmel(x, torch.float64)
    diff = (ours - ref).abs().amax(dim=(1, 2, 3))
    for name, d in zip(clips, diff):
        assert d < 1e-6, f"{name}: {d:.3g} dB"  # measured ~5e-8 dB


def test_logmel_matches_torchaudio_in_float32():
    """Deployed precision. Broadband clips: every bin within 1e-3 dB (measured ~5e-5 dB).

    Tones: the dB scale is 10*log10 of a MAGNITUDE (docs/method.md, 'magnitude log-mel'), so 80 dB
    spans a 1e8 magnitude ratio, the size of float32 round-off. The bottom of a tonal clip is
    round-off noise in ANY float32 implementation; torchaudio's own float32 output differs from
    float64 by up to ~1.6 dB there.
    Tonal bins are therefore checked within 30 dB of the clip max.
    """
    clips = _clips()
    x = torch.stack(list(clips.values()))
    ours = LogMel()(x)
    ref = _torchaudio_logmel(x, torch.float32)
    assert ours.dtype == torch.float32
    for i, name in enumerate(clips):
        diff = (ours[i] - ref[i]).abs()
        if name.startswith(("tone", "chirp")):
            near_peak = ref[i] > ref[i].max() - 30
            assert diff[near_peak].max() < 1e-3, f"{name}: {diff[near_peak].max():.3g} dB"
        else:
            assert diff.max() < 1e-3, f"{name}: {diff.max():.3g} dB"
    assert torch.all(ours[2] == -100.0)  # silence: 10*log10(1e-10)


def test_logmel_top_db_is_per_clip():
    clips = _clips()
    loud, quiet = clips["tone_440"], clips["quiet_noise"]
    logmel = LogMel()
    batch = logmel(torch.stack([loud, quiet]))
    alone = torch.cat([logmel(loud[None]), logmel(quiet[None])])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)
    for clip in batch:
        assert clip.max() - clip.min() <= 80.0 + 1e-4
    # the quiet clip keeps its own range instead of being floored to the loud clip's max - 80
    assert batch[1].min() < batch[0].max() - 80.0


def test_logmel_power_two_variant_matches_torchaudio():
    x = torch.stack([_clips()["noise"], _clips()["tone_440"]]).double()
    ours = LogMel(ModelConfig(power=2.0), dtype=torch.float64)(x)
    ref = _torchaudio_logmel(x, torch.float64, power=2.0)
    assert (ours - ref).abs().max() < 1e-6


def test_logmel_gradient_is_finite_on_silence():
    x = torch.zeros(1, 16000, requires_grad=True)
    LogMel()(x).sum().backward()
    assert torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------------------------- backbone


def test_backbone_shapes_image_and_audio():
    with torch.no_grad():
        assert resnet18_s5(3).eval()(torch.randn(2, 3, 128, 128)).shape == (2, 512, 8, 8)
        assert resnet18_s5(1).eval()(torch.randn(2, 1, 201, 64)).shape == (2, 512, 13, 4)


def test_backbone_layer4_has_stride_one_including_the_shortcut():
    net = resnet18_s5(3)
    block = net.layer4[0]
    assert block.conv1.stride == (1, 1) and block.downsample[0].stride == (1, 1)
    assert block.downsample[0].in_channels == 256 and block.downsample[0].out_channels == 512
    assert net.layer2[0].conv1.stride == (2, 2) and net.layer3[0].conv1.stride == (2, 2)
    sizes = {}
    for name in ("layer3", "layer4"):
        getattr(net, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[-2:]))
    with torch.no_grad():
        net.eval()(torch.randn(1, 3, 96, 96))
    assert sizes["layer3"] == sizes["layer4"] == (6, 6)


def test_backbone_keys_match_torchvision_and_init():
    reference = {k for k in torchvision.models.resnet18(weights=None).state_dict() if not k.startswith("fc.")}
    image, audio = resnet18_s5(3), resnet18_s5(1)
    assert set(image.state_dict()) == reference == set(audio.state_dict())
    assert audio.conv1.weight.shape == (64, 1, 7, 7) and image.conv1.weight.shape == (64, 3, 7, 7)
    for net in (image, audio):
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # Kaiming normal, fan_out, relu: std = sqrt(2 / (out_channels * kh * kw))
    for conv in (audio.conv1, image.layer3[0].conv2):
        expected = math.sqrt(2.0 / (conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]))
        assert abs(conv.weight.std().item() / expected - 1) < 0.1


# --------------------------------------------------------------------------------------------- weights


def test_load_imagenet_weights_round_trip(tmp_path):
    source = torchvision.models.resnet18(weights=None)  # random init, no download
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    backbone = resnet18_s5(3)
    load_imagenet_weights(backbone, path)
    src = source.state_dict()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, src[key]), key
    # old torchvision files (the resnet18-5c106cde era) have no num_batches_tracked keys
    old = {k: v for k, v in src.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    load_imagenet_weights(resnet18_s5(3), tmp_path / "old.pth")


def test_load_imagenet_weights_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights are downloaded; pass --visual-weights PATH"):
        load_imagenet_weights(resnet18_s5(3), tmp_path / "absent.pth")
    with pytest.raises(FileNotFoundError, match="no ImageNet weights path given"):
        load_imagenet_weights(resnet18_s5(3), None)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="corrupt.pth: cannot be read as a torch state dict"):
        load_imagenet_weights(resnet18_s5(3), corrupt)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="not a torchvision resnet18 state dict.*missing keys.*unexpected keys"):
        load_imagenet_weights(resnet18_s5(3), wrong)
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(ValueError, match="not a state dict"):
        load_imagenet_weights(resnet18_s5(3), tensor_file)
    good = tmp_path / "good.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), good)
    with pytest.raises(ValueError, match=r"shape mismatches \(e\.g\. conv1\.weight"):
        load_imagenet_weights(resnet18_s5(1), good)  # the audio stem has 1 input channel


# --------------------------------------------------------------------------------------------- branches


def test_stage_one_outputs_at_224():
    model = StageOne().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224), 0.1 * torch.randn(1, 16000))
    assert out.av_score.shape == (1,)
    assert out.av_map.shape == out.av_logits.shape == (1, 1, 14, 14)
    assert out.v_fea.shape == (1, 512, 14, 14)
    assert out.a_fea.shape == (1, 512)
    assert out.v_logits.shape == out.a_logits.shape == (1, 11)
    torch.testing.assert_close(out.av_map, torch.sigmoid(out.av_logits))
    assert out.av_score[0] == out.av_map.max()


@pytest.mark.parametrize("k", [7, 20])
def test_num_clusters_is_honoured(k):
    config = ModelConfig(num_clusters=k)
    one = StageOne(config).eval()
    two = StageTwo(config).eval()
    image, wave = torch.randn(2, 3, 64, 64), 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        out1 = one(image, wave)
        out2 = two(image, wave, torch.randn(k, 512))
    assert out1.v_logits.shape == out1.a_logits.shape == (2, k)
    assert out1.av_map.shape == (2, 1, 4, 4)
    assert out2.class_maps.shape == (2, k, 4, 4) and out2.sounding_objects.shape == (2, k)
    assert out2.a_logits.shape == (2, k)


def test_branch_outputs_and_logmel_entry_point():
    audio = AudioBranch().eval()
    wave = 0.1 * torch.randn(2, 16000)
    with torch.no_grad():
        a = audio(wave)
        a2 = audio.forward_logmel(audio.logmel(wave))
        v = ImageBranch().eval()(torch.randn(2, 3, 128, 128))
    assert a.a_fea.shape == (2, 512) and a.a_emb.shape == (2, 128) and a.a_logits.shape == (2, 11)
    torch.testing.assert_close(a, a2)
    assert v.v_fea.shape == (2, 512, 8, 8) and v.v_emb.shape == (2, 128, 8, 8) and v.v_logits.shape == (2, 11)


def test_reset_classifiers_and_parameter_split():
    model = StageOne()
    old = model.audio.classifier.weight
    model.reset_classifiers(20)
    for layer in (model.image.classifier, model.audio.classifier):
        assert layer.weight.shape == (20, 512) and torch.all(layer.bias == 0)
        assert abs(layer.weight.std().item() - 0.01) < 0.001
    assert model.audio.classifier.weight is not old
    main, cls = model.main_parameters(), model.classifier_parameters()
    assert len(cls) == 4
    assert {id(p) for p in main}.isdisjoint(id(p) for p in cls)
    assert len(main) + len(cls) == len(list(model.parameters()))


def test_reset_with_the_same_k_reinitialises_in_place():
    """Each classification round resets the classifiers; a DDP wrapper made before must keep
    synchronising them, so the parameters stay the same objects with fresh values."""
    model = StageOne()
    weight = model.image.classifier.weight
    with torch.no_grad():
        weight.fill_(1.0)
    model.reset_classifiers()
    assert model.image.classifier.weight is weight
    assert abs(weight.std().item() - 0.01) < 0.001 and torch.all(model.image.classifier.bias == 0)


def test_fusion_weight_starts_at_five_and_cosine_map():
    head = LocalizationHead()
    assert head.fusion.weight.item() == 5.0 and head.fusion.bias is None
    a_emb = torch.tensor([[3.0, 4.0]])
    v_emb = torch.zeros(1, 2, 1, 3)
    v_emb[0, :, 0, 0] = torch.tensor([6.0, 8.0])  # same direction: cos = 1
    v_emb[0, :, 0, 1] = torch.tensor([-0.3, -0.4])  # opposite: cos = -1
    # position 2 is the zero vector: eps-normalised to 0, cos = 0
    out = head(v_emb, a_emb)
    expected = torch.sigmoid(torch.tensor([5.0, -5.0, 0.0]))
    torch.testing.assert_close(out.av_map.flatten(), expected)
    torch.testing.assert_close(out.av_score, expected.max().reshape(1))
    torch.testing.assert_close(out.av_logits.flatten(), torch.tensor([5.0, -5.0, 0.0]))
    assert StageOne(ModelConfig(fusion_init=3.0)).localization.fusion.weight.item() == 3.0


def test_pooling_helpers():
    av = torch.zeros(2, 1, 4, 4)
    av[0, 0, 0, 1], av[0, 0, 1, 3], av[0, 0, 3, 0], av[0, 0, 2, 2] = 0.1, 0.2, 0.3, 0.4  # TL TR BL BR
    av[1, 0] = 0.5
    torch.testing.assert_close(quadrant_scores(av), torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5]))
    torch.testing.assert_close(global_score(av), torch.tensor([0.4, 0.5]))
    logits = torch.randn(3, 1, 14, 14)  # pooling commutes with the sigmoid
    torch.testing.assert_close(torch.sigmoid(quadrant_scores(logits)), quadrant_scores(torch.sigmoid(logits)))


# --------------------------------------------------------------------------------------------- object features


def _original_location_dilation(mask: np.ndarray) -> np.ndarray:
    """Straight port of location_dilation() of the original training_stage_one.py (reference)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    for i in range(h):
        for j in range(w):
            if mask[i, j] == 1:
                out[i, j] = 1
                if 0 < i < h - 1 and 0 < j < w - 1:
                    out[i + 1, j] = out[i - 1, j] = out[i, j - 1] = out[i, j + 1] = 1
    return out


def test_dilation_hand_made_including_border_cells():
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, 2, 2] = 1  # interior: spreads to its 4 neighbours
    mask[0, 0, 0, 4] = 1  # corner: stays alone
    mask[0, 0, 4, 1] = 1  # bottom border: stays alone
    expected = torch.tensor(
        [
            [0, 0, 0, 0, 1],
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
            [0, 1, 0, 0, 0],
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(dilate_mask(mask)[0, 0], expected)
    one = torch.zeros(1, 1, 4, 4)
    one[0, 0, 1, 1] = 1  # interior cell next to the border: spreads onto it, no cascade beyond
    expected_one = torch.zeros(4, 4)
    expected_one[1, 1] = expected_one[0, 1] = expected_one[2, 1] = expected_one[1, 0] = expected_one[1, 2] = 1
    torch.testing.assert_close(dilate_mask(one)[0, 0], expected_one)


def test_dilation_matches_the_original_loop_on_random_masks():
    masks = (torch.rand(20, 1, 14, 14) > 0.8).float()
    ours = dilate_mask(masks).numpy().astype(np.uint8)
    for m, o in zip(masks.numpy().astype(np.uint8), ours):
        np.testing.assert_array_equal(o[0], _original_location_dilation(m[0]))


def test_object_features_divides_by_all_positions():
    av_map = torch.zeros(2, 1, 5, 5)
    av_map[0, 0, 2, 2] = 0.9  # -> 5 cells after dilation
    av_map[0, 0, 0, 0] = 0.05  # not > 0.05: off
    av_map[1, 0, 4, 4] = 0.06  # border cell alone -> 1 cell
    v_fea = torch.arange(1, 4, dtype=torch.float32).view(1, 3, 1, 1).expand(2, 3, 5, 5)
    feats = object_features(v_fea, av_map, threshold=0.05)
    channel = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(feats, torch.stack([channel * 5 / 25, channel * 1 / 25]))
    with pytest.raises(ValueError, match="must be"):
        object_features(v_fea, torch.zeros(2, 1, 4, 4))


def test_relative_object_mask_follows_each_maps_own_peak():
    av_map = torch.full((2, 1, 5, 5), 0.3)
    av_map[0, 0, 2, 2] = 0.9   # peak 0.9: only it is > 0.45 -> 5 cells after dilation
    av_map[1] = 0.2
    av_map[1, 0, 0, 0] = 0.25  # a weak peak: 0.2 > 0.125 everywhere, so the whole map is on
    v_fea = torch.ones(2, 1, 5, 5)
    feats = object_features(v_fea, av_map, relative=0.5)
    # map 0: threshold 0.45 -> the peak, dilated to 5 cells; map 1: threshold 0.125 -> all 25 cells
    torch.testing.assert_close(feats, torch.tensor([[5 / 25], [25 / 25]]))
    # the absolute 0.05 of the original lights everything on both maps
    torch.testing.assert_close(object_features(v_fea, av_map), torch.ones(2, 1))


# --------------------------------------------------------------------------------------------- stage two


def test_class_aware_head_gating_and_gap():
    v_fea = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [1.0, 3.0]]]])  # (1, 2, 2, 2)
    dictionary = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # K = 3
    s = torch.einsum("bchw,kc->bkhw", v_fea, dictionary)
    av_map = torch.tensor([[[[1.0, 0.5], [0.0, 0.25]]]])
    ungated = ClassAwareHead(gate=False)(v_fea, dictionary)
    torch.testing.assert_close(ungated.class_maps, s)  # identity affine (docs/method.md, 'affine init a = 1, b = 0')
    torch.testing.assert_close(ungated.sounding_objects, s.mean(dim=(2, 3)))
    gated = ClassAwareHead()(v_fea, dictionary, av_map)
    torch.testing.assert_close(gated.class_maps, s * av_map)
    expected = torch.tensor([[(1 + 0 + 0 + 0.25) / 4, (0 + 1 + 0 + 1.5) / 4, (1 + 0.5 + 0 + 1) / 4]])
    torch.testing.assert_close(gated.sounding_objects, expected)
    with pytest.raises(ValueError, match="needs av_map"):
        ClassAwareHead()(v_fea, dictionary)
    with pytest.raises(ValueError, match="dictionary must be"):
        ClassAwareHead(gate=False)(v_fea, torch.zeros(3, 5))


def test_cosine_class_head_ignores_how_long_a_dictionary_key_is():
    # position 0 points along key 0; key 1 is a long, slanted key that wins the raw dot product
    v_fea = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)  # (1, C=2, 1, 2): two positions
    dictionary = torch.tensor([[1.0, 0.0], [6.0, 8.0]])
    dot = ClassAwareHead(gate=False)(v_fea, dictionary).class_maps
    assert dot[0, :, 0, 0].argmax() == 1  # the raw dot product (docs/method.md §4.1) picks the long key
    head = ClassAwareHead(gate=False, similarity="cosine", obj_affine_scale=20.0)
    cos = head(v_fea, dictionary).class_maps
    torch.testing.assert_close(cos[0, :, 0, :], 20.0 * torch.tensor([[1.0, 0.0], [0.6, 0.8]]))
    assert cos[0, :, 0, 0].argmax() == 0
    torch.testing.assert_close(head(v_fea, dictionary * torch.tensor([[3.0], [0.1]])).class_maps, cos)
    torch.testing.assert_close(head(5.0 * v_fea, dictionary).class_maps, cos)
    with pytest.raises(ValueError, match="similarity must be 'dot' or 'cosine'"):
        ClassAwareHead(similarity="l2")


def test_stage_two_builds_its_class_head_from_the_config():
    two = StageTwo(ModelConfig(num_clusters=3, similarity="cosine", obj_affine_scale=20.0))
    assert two.class_aware.similarity == "cosine" and two.class_aware.affine.weight.item() == 20.0
    assert StageTwo(ModelConfig(num_clusters=3)).class_aware.similarity == "dot"
    with pytest.raises(ValueError, match="similarity"):
        ModelConfig(similarity="euclid")
    with pytest.raises(ValueError, match="obj_affine_scale must be a positive number"):
        ModelConfig(obj_affine_scale=0.0)


def test_scalar_affine_is_the_original_conv3d():
    affine = ScalarAffine("default")
    assert -1 <= affine.weight.item() <= 1 and -1 <= affine.bias.item() <= 1
    conv3d = torch.nn.Conv3d(1, 1, kernel_size=1)
    with torch.no_grad():
        conv3d.weight.fill_(affine.weight.item())
        conv3d.bias.fill_(affine.bias.item())
    s = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(affine(s), conv3d(s.unsqueeze(1)).squeeze(1))
    identity = ScalarAffine()
    assert identity.weight.item() == 1.0 and identity.bias.item() == 0.0


def test_stage_two_from_stage_one_loads_all_shared_keys():
    config = ModelConfig(num_clusters=7)
    one = StageOne(config)
    state = one.state_dict()
    two = StageTwo.from_stage_one(state, config)
    two_state = two.state_dict()
    assert set(two_state) - set(state) == {"class_aware.affine.weight", "class_aware.affine.bias"}
    for key, value in state.items():
        assert torch.equal(two_state[key], value), key
    assert two.class_aware.affine.weight.item() == 1.0 and two.class_aware.gate is True
    with pytest.raises(ValueError, match="num_clusters"):
        StageTwo.from_stage_one(state, ModelConfig(num_clusters=11))
    broken = dict(state)
    del broken["localization.fusion.weight"]
    with pytest.raises(ValueError, match="localization.fusion.weight"):
        StageTwo.from_stage_one(broken, config)


def test_audio_teacher_is_audio_only_frozen_and_matches_stage_one():
    config = ModelConfig(num_clusters=7)
    one = StageOne(config).eval()
    teacher = AudioTeacher.from_stage_one(one.state_dict(), config)
    assert not hasattr(teacher, "image")
    assert all(k.startswith("audio.") for k in teacher.state_dict())
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.audio.backbone.bn1.training
    wave = (0.1 * torch.randn(2, 16000)).requires_grad_(True)
    p_a = teacher(wave)
    assert not p_a.requires_grad and p_a.shape == (2, 7)
    with torch.no_grad():
        logits = one.audio(wave).a_logits
    torch.testing.assert_close(p_a, torch.softmax(logits, dim=1))
    torch.testing.assert_close(p_a.sum(dim=1), torch.ones(2))
    hot = AudioTeacher.from_stage_one(one.state_dict(), config, temperature=2.0)
    torch.testing.assert_close(hot(wave), torch.softmax(logits / 2.0, dim=1))
    with pytest.raises(ValueError, match="num_clusters"):
        AudioTeacher.from_stage_one(one.state_dict(), ModelConfig(num_clusters=11))


# --------------------------------------------------------------------------------------------- losses


def test_stage_one_loss_values_and_logit_form():
    scores, labels = torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0])
    expected = -(math.log(0.9) + math.log(0.8)) / 2
    assert localization_loss_stage_one(scores, labels).item() == pytest.approx(expected, rel=1e-6)
    logits = torch.logit(scores)
    assert localization_loss_stage_one(logits, labels, from_logits=True).item() == pytest.approx(expected, rel=1e-5)


def test_all_pairs_forward_is_every_clip_against_every_image():
    model = StageOne(ModelConfig()).eval()
    images, waves = torch.randn(3, 3, 64, 64), torch.randn(3, 16000) * 0.1
    with torch.no_grad():
        pairs = model(images, waves, all_pairs=True)
        single = model(images, waves)  # one clip per image: the diagonal
    assert pairs.shape == (3, 3, 4, 4)
    torch.testing.assert_close(pairs[torch.arange(3), torch.arange(3)], single.av_logits[:, 0], rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        other = model(images[2:3], waves[0:1])  # clip 0 on image 2
    torch.testing.assert_close(pairs[0, 2], other.av_logits[0, 0], rtol=1e-4, atol=1e-5)


def test_stage_two_all_pairs_outputs_match_the_per_image_forward():
    model = StageTwo(ModelConfig(num_clusters=5)).eval()
    images, waves, dictionary = torch.randn(3, 3, 64, 64), torch.randn(3, 16000) * 0.1, torch.randn(5, 512)
    with torch.no_grad():
        own, pairs = model(images, waves, dictionary, all_pairs=True)
        single = model(images, waves, dictionary)
    assert pairs.shape == (3, 3, 4, 4)
    for a, b in zip(own, single):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_all_pairs_loss_balances_positives_and_negatives():
    positive = torch.eye(3, dtype=torch.bool)
    assert localization_loss_all_pairs(torch.zeros(3, 3), positive).item() == pytest.approx(math.log(2), rel=1e-6)
    logits = torch.where(positive, torch.tensor(math.log(9.0)), torch.tensor(-math.log(3.0)))  # p = 0.9 / 0.25
    expected = 0.5 * (-math.log(0.9) - math.log(0.75))  # not 1/3 : 2/3 weighted by counts
    assert localization_loss_all_pairs(logits, positive).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        localization_loss_all_pairs(torch.zeros(1, 1), torch.eye(1, dtype=torch.bool))
    with pytest.raises(ValueError, match="same"):
        localization_loss_all_pairs(torch.zeros(3, 2), positive)


def test_contrastive_loss_picks_each_clips_own_image_among_the_batch_both_ways():
    assert contrastive_loss_all_pairs(torch.zeros(4, 4)).item() == pytest.approx(math.log(4), rel=1e-6)
    matched = 20.0 * torch.eye(4) - 10.0  # w * cos with cos +1 on the diagonal, -1 elsewhere
    assert contrastive_loss_all_pairs(matched).item() < 1e-6
    # one clip that prefers another image costs in both directions: as a row and as a column
    swapped = matched.clone()
    swapped[0, 0], swapped[0, 1] = -10.0, 10.0
    row = torch.nn.functional.cross_entropy(swapped, torch.arange(4))
    column = torch.nn.functional.cross_entropy(swapped.t(), torch.arange(4))
    assert contrastive_loss_all_pairs(swapped).item() == pytest.approx(0.5 * (row + column).item(), rel=1e-6)
    assert 0 < column < row  # column 1 still prefers its own clip 1 (10 vs 10: a tie), column 0 has no match
    with pytest.raises(ValueError, match="square"):
        contrastive_loss_all_pairs(torch.zeros(3, 2))


def test_losses_stay_finite_when_the_sigmoid_saturates():
    scores = torch.tensor([1.0, 0.0], requires_grad=True)  # sigmoid(+-40) in float32
    loss = localization_loss_stage_one(scores, torch.tensor([0.0, 1.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(scores.grad).all()
    logits = torch.tensor([40.0, -40.0], requires_grad=True)
    loss = localization_loss_stage_one(logits, torch.tensor([0.0, 1.0]), from_logits=True)
    loss.backward()
    assert loss.item() == pytest.approx(40.0) and torch.isfinite(logits.grad).all()
    pos, neg = torch.tensor([1.0]), torch.tensor([0.0, 1.0, 0.0, 0.0])
    out = stage_two_losses(pos, neg, torch.zeros(1, 3), torch.ones(1, 3) / 3)
    assert all(torch.isfinite(v) for v in out.values())


def test_stage_two_loss_values():
    sounding = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    p_a = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    pos = torch.tensor([0.8, 0.6])
    neg = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.1, 0.1, 0.1, 0.1])
    out = stage_two_losses(pos, neg, sounding, p_a)
    log_q = torch.log_softmax(sounding, dim=1)
    kl = torch.where(p_a > 0, p_a * (torch.log(p_a) - log_q), torch.zeros(())).sum() / 6  # mean over B*K (docs/method.md)
    bce_pos = -torch.log(pos).mean()
    bce_neg = -torch.log(1 - neg).mean()
    torch.testing.assert_close(out["kl"], kl)
    torch.testing.assert_close(out["bce_pos"], bce_pos)
    torch.testing.assert_close(out["bce_neg"], bce_neg)
    torch.testing.assert_close(out["total"], kl + 0.25 * (bce_pos + bce_neg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(out["kl"], F.kl_div(log_q, p_a, reduction="mean"))  # today's legacy meaning
    from_logits = stage_two_losses(torch.logit(pos), torch.logit(neg), sounding, p_a, from_logits=True)
    torch.testing.assert_close(from_logits["total"], out["total"])
    heavier = stage_two_losses(pos, neg, sounding, p_a, loc_weight=1.0)
    torch.testing.assert_close(heavier["total"], kl + 0.5 * (bce_pos + bce_neg))


# --------------------------------------------------------------------------------------------- ONNX


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:Constant folding:UserWarning")
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_audio_branch_exports_to_onnx_with_dynamic_batch(tmp_path, exporter):
    ort = pytest.importorskip("onnxruntime")
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (not in the venv)")
    model = AudioBranch().eval()
    path = tmp_path / "audio.onnx"
    names = dict(input_names=["waveform"], output_names=["a_fea", "a_emb", "a_logits"])
    example = (0.1 * torch.randn(2, 16000),)
    if exporter == "torchscript":
        axes = {name: {0: "batch"} for name in ("waveform", "a_fea", "a_emb", "a_logits")}
        torch.onnx.export(model, example, path, dynamo=False, opset_version=17, dynamic_axes=axes, **names)
    else:
        batch = torch.export.Dim("batch", min=1, max=256)
        torch.onnx.export(model, example, path, dynamo=True, opset_version=18, dynamic_shapes=({0: batch},), **names)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wave = 0.1 * torch.randn(3, 16000)  # a batch size other than the exported one
    wave[2] = 0.0  # and a silent clip
    got = session.run(None, {"waveform": wave.numpy()})
    with torch.no_grad():
        want = model(wave)
    for name, g, w in zip(names["output_names"], got, want):
        w = w.numpy()
        assert g.shape == w.shape, name
        # relative to the output scale: log-mel dB inputs make untrained activations O(100)
        assert np.abs(g - w).max() <= 1e-4 * max(1.0, np.abs(w).max()), name


def test_one_clip_per_interleaved_pair_equals_duplicated_clips():
    """Training passes one clip per (positive, negative) pair; the audio net then runs once."""
    torch.manual_seed(0)
    model = StageOne(ModelConfig()).eval()
    images = torch.randn(4, 3, 64, 64)
    clips = torch.randn(2, 16000) * 0.1
    paired = model(images, clips)
    duplicated = model(images, clips.repeat_interleave(2, dim=0))
    torch.testing.assert_close(paired.av_map, duplicated.av_map)
    torch.testing.assert_close(paired.a_logits, duplicated.a_logits)
    with pytest.raises(ValueError, match="3 clips for 4 images"):
        model(images, torch.zeros(3, 16000))
