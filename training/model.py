"""DSOL model: every network piece of the method in one file (the method: docs/method.md, whose
sections the § numbers below are).

Read top to bottom:

1. ``ModelConfig``          - plain dataclass with every architectural knob.
2. ``LogMel``               - waveform (B, 16000) -> log-mel (B, 1, 201, 64), export-friendly (§1.3).
3. ``resnet18_s5``          - torchvision ResNet-18 with a stride-1 layer4, returns the layer4 map (§2).
   ``load_imagenet_weights`` - kept apart from the model: loads a LOCAL torchvision resnet18 state dict.
4. Branches, each usable (and exportable to ONNX) on its own:
   ``AudioBranch``  waveform -> (a_fea, a_emb, a_logits)        (§3.1)
   ``ImageBranch``  image    -> (v_fea, v_emb, v_logits)        (§3.1)
   ``LocalizationHead``  (v_emb, a_emb) -> av_map, av_score     (§3.1)
   ``ClassAwareHead``    (v_fea, dictionary, av_map) -> M, sounding_objects   (§4.1)
5. Composed models: ``StageOne``, ``StageTwo``, ``AudioTeacher`` (§3.1, §4.1, §4.2).
6. Pure functions: ``object_features`` (§3.3), ``quadrant_scores``/``global_score`` (§4.1) and the
   losses ``localization_loss_stage_one`` (§3.2), ``localization_loss_all_pairs`` and
   ``contrastive_loss_all_pairs`` (documented deviations) and ``stage_two_losses`` (§4.4).

Decisions worth knowing (all documented again where they live):

* The number of clusters K is a parameter everywhere (docs/method.md, 'clusters as a parameter');
  ``ClassAwareHead`` infers it from the dictionary it is given.
* The stage-two scalar affine ``a*S + b`` starts at a=1, b=0 by default (docs/method.md, 'affine init a = 1, b = 0');
  ``obj_affine_init="default"`` restores PyTorch's Conv3d init U(-1, 1), ``obj_affine_scale`` sets
  another starting a.
* ``similarity="dot"`` (default) is §4.1's raw dot product S = <v_fea, D_k>. ``"cosine"`` (a documented
  deviation) L2-normalises both sides first: a dictionary key is a masked mean divided by h*w (docs/method.md,
  'masked mean over all cells'),
  so its norm grows with the mask area of its cluster, and under the raw dot product the clusters
  with the largest keys win the per-position argmax whatever the object.
* ``object_features`` reproduces the original mask dilation exactly, including its border quirk, and
  divides by h*w rather than by the mask area (docs/method.md, 'masked mean over all cells').
* The KL term is the legacy ``reduce=True`` mean over all B*K elements (docs/method.md, 'KL mean over B·K').
* Every localization output also comes as pre-sigmoid logits (``av_logits``). Max pooling commutes
  with the (monotonic) sigmoid, so ``sigmoid(pool(av_logits)) == pool(av_map)``. The losses accept
  either form. Prefer ``from_logits=True``: it stays exact when the sigmoid saturates, and it is safe
  under autocast.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
import torchaudio
import torchvision
from torch import Tensor, nn

FEATURE_DIM = 512  # channels of the ResNet-18 layer4 map, i.e. of v_fea and a_fea

# ---------------------------------------------------------------------------------------------------
# 1. Configuration
# ---------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Architecture of both stages. The defaults are the MUSIC reference values (docs/method.md §9)."""

    num_clusters: int = 11  # K: classifier outputs = dictionary entries
    embed_dim: int = 128  # audio/visual embedding size used by the cosine map
    fusion_init: float = 5.0  # initial value of the scalar 1x1 fusion conv (av_map = sigmoid(w*cos))
    obj_affine_init: Literal["identity", "default"] = "identity"  # stage-two a*S+b: a=1,b=0 (docs/method.md) or U(-1,1)
    obj_affine_scale: float = 1.0  # the starting a of obj_affine_init="identity" (b starts at 0)
    similarity: Literal["dot", "cosine"] = "dot"  # stage-two S: raw dot product (§4.1) or cosine
    gate: bool = True  # stage two: M <- M * av_map (the original `minimize=True`)
    # log-mel front end (§1.3)
    sample_rate: int = 16000
    n_fft: int = 160
    hop_length: int = 80
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    top_db: float = 80.0
    power: float = 1.0  # 1 = magnitude (reference, docs/method.md §6.1); 2 = power (opt-in, NON-reference)

    def __post_init__(self) -> None:
        if not isinstance(self.num_clusters, int) or self.num_clusters < 1:
            raise ValueError(f"ModelConfig.num_clusters must be a positive int, got {self.num_clusters!r}")
        if self.embed_dim < 1:
            raise ValueError(f"ModelConfig.embed_dim must be positive, got {self.embed_dim!r}")
        if self.obj_affine_init not in ("identity", "default"):
            raise ValueError(
                f"ModelConfig.obj_affine_init must be 'identity' or 'default', got {self.obj_affine_init!r}"
            )
        if not (math.isfinite(self.obj_affine_scale) and self.obj_affine_scale > 0):
            raise ValueError(f"ModelConfig.obj_affine_scale must be a positive number, got {self.obj_affine_scale!r}")
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"ModelConfig.similarity must be 'dot' or 'cosine', got {self.similarity!r}")
        if self.power not in (1.0, 2.0):
            raise ValueError(f"ModelConfig.power must be 1.0 (magnitude) or 2.0 (power), got {self.power!r}")
        if self.n_fft < 2 or self.hop_length < 1 or self.n_mels < 1:
            raise ValueError(
                f"ModelConfig: bad STFT/mel sizes n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"n_mels={self.n_mels}"
            )
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"ModelConfig: need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        if self.top_db <= 0:
            raise ValueError(f"ModelConfig.top_db must be positive, got {self.top_db!r}")


# ---------------------------------------------------------------------------------------------------
# 2. Log-mel front end
# ---------------------------------------------------------------------------------------------------


def dft_basis(n_fft: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Real/imaginary one-sided DFT rows, each multiplied by a periodic Hann window.

    Returns a conv1d weight (2 * (n_fft//2 + 1), 1, n_fft). Rows [0, F) are w[n]*cos(2*pi*k*n/N),
    rows [F, 2F) are -w[n]*sin(2*pi*k*n/N), so a stride-hop conv1d gives Re and Im of torch.stft.
    Computed in float64, then cast.
    """
    n_freqs = n_fft // 2 + 1
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_freqs, dtype=torch.float64)
    angle = 2.0 * math.pi * torch.outer(k, n) / n_fft
    basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window], dim=0)
    return basis.unsqueeze(1).to(dtype)


def mel_filterbank(config: ModelConfig, dtype: torch.dtype = torch.float32) -> Tensor:
    """Slaney-scale, Slaney-normalised mel filters (n_fft//2+1, n_mels), i.e. librosa's defaults.

    At n_fft=160 two of the 64 filters are all-zero (indices 0 and 13). That is a property of the
    reference front end (docs/method.md, 'magnitude log-mel'), so torchaudio's warning about it is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
        fb = torchaudio.functional.melscale_fbanks(
            config.n_fft // 2 + 1,
            f_min=float(config.f_min),
            f_max=float(config.f_max),
            n_mels=config.n_mels,
            sample_rate=config.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
    return fb.to(dtype)


class LogMel(nn.Module):
    """Waveform (B, samples) -> log-mel (B, 1, frames, n_mels); (B, 16000) -> (B, 1, 201, 64).

    The same maths as librosa in docs/method.md §1.3. The ops are limited to what ONNX and TensorRT run:
    no torch.stft and no complex tensors.
      centred STFT with zero padding -> F.pad(constant) + conv1d against the fixed DFT*window basis
      |X|       -> sqrt(max(re^2 + im^2, 1e-20)). The clamp keeps the sqrt gradient finite at 0
                   (the clamp passes no gradient where it is active). It changes no output:
                   every mel filter's weights sum to < 1, so a 1e-10 floor on |X| stays below the
                   1e-10 dB floor (amin) on the mel values.
      mel       -> matmul with the Slaney filterbank
      dB        -> 10*log10(max(mel, 1e-10)), ref = 1
      top_db    -> max(dB, per-clip max - 80). The max is taken over each clip's own (time, mel)
                   plane. torchaudio's AmplitudeToDB on a 3-D batch would take it over the batch.
    Buffers are non-persistent, so they never appear in a checkpoint. Run this graph in FP32
    (TensorRT too): in FP16 the 1e-10 floor underflows, and silence would give -inf.
    """

    def __init__(self, config: ModelConfig | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        config = config or ModelConfig()
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.n_freqs = config.n_fft // 2 + 1
        self.top_db = float(config.top_db)
        self.power = float(config.power)
        self.register_buffer("dft_basis", dft_basis(config.n_fft, dtype), persistent=False)
        self.register_buffer("mel_fb", mel_filterbank(config, dtype), persistent=False)

    def forward(self, waveform: Tensor) -> Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"LogMel expects a (batch, samples) waveform, got shape {tuple(waveform.shape)}")
        pad = self.n_fft // 2
        x = F.pad(waveform.unsqueeze(1), (pad, pad), mode="constant", value=0.0)  # (B, 1, S + n_fft)
        spec = F.conv1d(x, self.dft_basis, stride=self.hop_length)  # (B, 2F, frames)
        re, im = spec[:, : self.n_freqs], spec[:, self.n_freqs :]
        power = re * re + im * im
        spec = torch.sqrt(torch.clamp(power, min=1e-20)) if self.power == 1.0 else power
        mel = torch.matmul(spec.transpose(1, 2), self.mel_fb)  # (B, frames, n_mels)
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        peak = torch.amax(db, dim=(1, 2), keepdim=True)
        db = torch.maximum(db, peak - self.top_db)
        return db.unsqueeze(1)


# ---------------------------------------------------------------------------------------------------
# 3. Backbone: ResNet-18-S5 (§2) and ImageNet weight loading
# ---------------------------------------------------------------------------------------------------


class ResNet18S5(nn.Module):
    """torchvision ResNet-18 whose layer4 has stride 1 and which returns the layer4 map.

    The submodule names match torchvision's (conv1, bn1, layer1..layer4), so a torchvision resnet18
    state dict minus ``fc.*`` loads as is. avgpool and fc are not kept. Output stride: 16.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        # torchvision's constructor already uses Kaiming-normal(fan_out, relu) for convs and BN 1/0.
        net = torchvision.models.resnet18(weights=None)
        if in_channels != 3:  # audio: a 1-channel stem with the same geometry (the original `conv1_a`)
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        # layer4: stride 1 in the first block's 3x3 conv AND in its 1x1 downsample shortcut. The
        # shortcut itself stays, because the channel count still changes from 256 to 512.
        net.layer4[0].conv1.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet18_s5(in_channels: int) -> ResNet18S5:
    """ResNet-18-S5 backbone: 3 channels for images (224 -> 14x14), 1 for log-mel (201x64 -> 13x4)."""
    if in_channels < 1:
        raise ValueError(f"resnet18_s5: in_channels must be >= 1, got {in_channels}")
    return ResNet18S5(in_channels)


def _state_problems(
    expected: Mapping[str, Tensor], state: Mapping[str, Tensor], optional: Callable[[str], bool]
) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, shape mismatches) of ``state`` against ``expected``; keys for
    which ``optional`` is true may be missing."""
    missing = sorted(k for k in expected if k not in state and not optional(k))
    unexpected = sorted(k for k in state if k not in expected)
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    )
    return missing, unexpected, mismatched


def load_imagenet_weights(backbone: nn.Module, path: str | PathLike[str] | None) -> None:
    """Load a LOCAL torchvision resnet18 state dict (e.g. resnet18-f37072fd.pth) into ``backbone``.

    ``fc.*`` is ignored. Every other key must match in name and shape. BN ``num_batches_tracked``
    may be absent: old torchvision files lack it, and the loader then fills it in. Raises
    FileNotFoundError (missing file) or ValueError (unreadable file, not a state dict, or not a
    resnet18 state dict matching this backbone). Nothing is ever downloaded.
    """
    if path is None or str(path) == "":
        raise FileNotFoundError(
            "no ImageNet weights path given; no weights are downloaded; "
            "pass --visual-weights PATH to a torchvision resnet18 state dict"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: ImageNet weights file not found; no weights are downloaded; "
            "pass --visual-weights PATH to a torchvision resnet18 state dict"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt archive, pickled module, ... all mean "not a state dict file"
        raise ValueError(
            f"{path}: cannot be read as a torch state dict ({type(exc).__name__}: {exc}); "
            "expected a torchvision resnet18 state dict"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors); got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected, mismatched = _state_problems(
        backbone.state_dict(), state, optional=lambda k: k.endswith("num_batches_tracked"))
    if missing or unexpected or mismatched:
        parts = []
        problems = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        for name, items in problems:
            if items:
                parts.append(f"{len(items)} {name} (e.g. {', '.join(items[:4])})")
        raise ValueError(f"{path}: not a torchvision resnet18 state dict for this backbone: " + "; ".join(parts))
    backbone.load_state_dict(state, strict=False)  # strict=False only tolerates num_batches_tracked


# ---------------------------------------------------------------------------------------------------
# 4. Branches and heads
# ---------------------------------------------------------------------------------------------------


def _new_classifier(num_classes: int) -> nn.Linear:
    """Linear(512, K) with weight ~ N(0, 0.01) and zero bias (§3.1, §3.4)."""
    if num_classes < 1:
        raise ValueError(f"number of classes must be >= 1, got {num_classes}")
    return _init_classifier(nn.Linear(FEATURE_DIM, num_classes))


def _init_classifier(layer: nn.Linear) -> nn.Linear:
    nn.init.normal_(layer.weight, mean=0.0, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


def _replace_classifier(old: nn.Linear, num_classes: int | None) -> nn.Linear:
    """Fresh N(0, 0.01) / 0 class weights. With K unchanged the old layer is re-initialised in
    place, so a DistributedDataParallel wrapper keeps synchronising its gradients and optimisers
    keep their references; a new K needs a new layer (and a new DDP wrapper)."""
    if num_classes is None or num_classes == old.out_features:
        with torch.no_grad():
            return _init_classifier(old)
    new = _new_classifier(num_classes)
    return new.to(device=old.weight.device, dtype=old.weight.dtype)


class AudioOutput(NamedTuple):
    a_fea: Tensor  # (B, 512) global-max-pooled layer4 features
    a_emb: Tensor  # (B, embed_dim)
    a_logits: Tensor  # (B, K)


class ImageOutput(NamedTuple):
    v_fea: Tensor  # (B, 512, h, w) layer4 map (14x14 at 224 px)
    v_emb: Tensor  # (B, embed_dim, h, w)
    v_logits: Tensor  # (B, K) from the global-average-pooled v_fea


class AudioBranch(nn.Module):
    """Waveform -> LogMel -> ResNet-18-S5(1 ch) -> global max pool -> a_fea, a_emb, a_logits."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = config or ModelConfig()
        self.logmel = LogMel(config)
        self.backbone = resnet18_s5(1)
        self.embed = nn.Sequential(
            nn.Linear(FEATURE_DIM, config.embed_dim), nn.ReLU(), nn.Linear(config.embed_dim, config.embed_dim)
        )
        self.classifier = _new_classifier(config.num_clusters)

    def forward(self, waveform: Tensor) -> AudioOutput:
        return self.forward_logmel(self.logmel(waveform))

    def forward_logmel(self, logmel: Tensor) -> AudioOutput:
        """Same, from a precomputed (B, 1, 201, 64) log-mel."""
        a_fea = torch.amax(self.backbone(logmel), dim=(2, 3))
        return AudioOutput(a_fea, self.embed(a_fea), self.classifier(a_fea))

    def reset_classifier(self, num_classes: int | None = None) -> None:
        """Re-create the classifier (N(0, 0.01) weight, zero bias). K is kept unless a new one is given."""
        self.classifier = _replace_classifier(self.classifier, num_classes)


class ImageBranch(nn.Module):
    """Image -> ResNet-18-S5(3 ch) -> v_fea; 1x1 projection -> v_emb; GAP + Linear -> v_logits."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = config or ModelConfig()
        self.backbone = resnet18_s5(3)
        self.project = nn.Sequential(
            nn.Conv2d(FEATURE_DIM, config.embed_dim, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(config.embed_dim, config.embed_dim, kernel_size=1),  # no activation after it (§3.1)
        )
        self.classifier = _new_classifier(config.num_clusters)

    def forward(self, image: Tensor) -> ImageOutput:
        v_fea = self.backbone(image)
        return ImageOutput(v_fea, self.project(v_fea), self.classifier(v_fea.mean(dim=(2, 3))))

    def reset_classifier(self, num_classes: int | None = None) -> None:
        """Re-create the classifier (N(0, 0.01) weight, zero bias). K is kept unless a new one is given."""
        self.classifier = _replace_classifier(self.classifier, num_classes)


class LocalizationOutput(NamedTuple):
    av_map: Tensor  # (B, 1, h, w) sigmoid(w * cos)
    av_score: Tensor  # (B,) global max of av_map
    av_logits: Tensor  # (B, 1, h, w) w * cos, before the sigmoid


class LocalizationHead(nn.Module):
    """Cosine map between the audio embedding and every visual position -> scalar 1x1 conv -> sigmoid."""

    def __init__(self, fusion_init: float = 5.0) -> None:
        super().__init__()
        self.fusion = nn.Conv2d(1, 1, kernel_size=1, bias=False)  # one learnable scalar w
        nn.init.constant_(self.fusion.weight, fusion_init)

    def forward(self, v_emb: Tensor, a_emb: Tensor) -> LocalizationOutput:
        v = F.normalize(v_emb, dim=1, eps=1e-12)
        a = F.normalize(a_emb, dim=1, eps=1e-12)
        cos = torch.sum(v * a[:, :, None, None], dim=1, keepdim=True)  # (B, 1, h, w), in [-1, 1]
        av_logits = self.fusion(cos)
        av_map = torch.sigmoid(av_logits)
        return LocalizationOutput(av_map, global_score(av_map), av_logits)


class ScalarAffine(nn.Module):
    """y = a * x + b with two scalar parameters.

    This is exactly the original ``Conv3d(1, 1, kernel_size=1)`` applied over a dummy channel axis:
    one weight and one bias shared by every class and position. init="identity" gives a=scale
    (1 by default), b=0 (docs/method.md, 'affine init a = 1, b = 0'). init="default" gives Conv3d's
    default init, a, b ~ U(-1, 1) (fan_in = 1).
    """

    def __init__(self, init: Literal["identity", "default"] = "identity", scale: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((), float(scale)))
        self.bias = nn.Parameter(torch.zeros(()))
        if init == "default":
            nn.init.uniform_(self.weight, -1.0, 1.0)
            nn.init.uniform_(self.bias, -1.0, 1.0)
        elif init != "identity":
            raise ValueError(f"ScalarAffine init must be 'identity' or 'default', got {init!r}")

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight + self.bias


class ClassAwareOutput(NamedTuple):
    class_maps: Tensor  # M: (B, K, h, w)
    sounding_objects: Tensor  # (B, K) = GAP(M)


class ClassAwareHead(nn.Module):
    """Stage two (§4.1): class maps M from the raw v_fea and the fixed object dictionary D (K, 512).

    S[b,k] = <v_fea[b,:,y,x], D[k]> with no normalisation: einsum("bchw,kc->bkhw"), written as a
    matmul because TensorRT runs MatMul everywhere. ``similarity="cosine"``: both sides are
    L2-normalised first (every position of v_fea over its 512 channels, every key). M = a*S + b.
    If ``gate``: M = M * av_map, broadcast over K. sounding_objects = GAP(M). K comes from the
    dictionary, which is an input and not a parameter (no gradient reaches it). ``gate`` is a plain
    attribute, so a training loop can switch it off for a warm-up.
    """

    def __init__(self, obj_affine_init: Literal["identity", "default"] = "identity", gate: bool = True,
                 similarity: Literal["dot", "cosine"] = "dot", obj_affine_scale: float = 1.0) -> None:
        super().__init__()
        if similarity not in ("dot", "cosine"):
            raise ValueError(f"ClassAwareHead similarity must be 'dot' or 'cosine', got {similarity!r}")
        self.affine = ScalarAffine(obj_affine_init, obj_affine_scale)
        self.gate = gate
        self.similarity = similarity

    def forward(self, v_fea: Tensor, dictionary: Tensor, av_map: Tensor | None = None) -> ClassAwareOutput:
        if dictionary.dim() != 2 or dictionary.shape[1] != v_fea.shape[1]:
            raise ValueError(
                f"dictionary must be (K, {v_fea.shape[1]}) to match v_fea {tuple(v_fea.shape)}, "
                f"got {tuple(dictionary.shape)}"
            )
        b, c, h, w = v_fea.shape
        if self.similarity == "cosine":
            v_fea, dictionary = F.normalize(v_fea, dim=1, eps=1e-12), F.normalize(dictionary, dim=1, eps=1e-12)
        s = torch.matmul(dictionary, v_fea.reshape(b, c, h * w)).reshape(b, dictionary.shape[0], h, w)
        m = self.affine(s)
        if self.gate:
            if av_map is None:
                raise ValueError("ClassAwareHead with gate=True needs av_map")
            m = m * av_map
        return ClassAwareOutput(m, m.mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------------
# 5. Composed models
# ---------------------------------------------------------------------------------------------------


def paired_audio(audio: AudioBranch, waveform: Tensor, n_images: int) -> AudioOutput:
    """Run the audio branch once per clip. With ``n_images == 2 * len(waveform)`` each clip serves
    the interleaved rows 2i (its positive image) and 2i+1 (its negative image) of docs/method.md §3.2:
    the outputs are repeated instead of running the audio net twice on the same clip (identical
    values and gradients, half the audio compute)."""
    if waveform.shape[0] == n_images:
        return audio(waveform)
    if 2 * waveform.shape[0] != n_images:
        raise ValueError(f"{waveform.shape[0]} clips for {n_images} images: give one clip per image "
                         "or one per (positive, negative) pair")
    return AudioOutput(*(t.repeat_interleave(2, dim=0) for t in audio(waveform)))


class StageOneOutput(NamedTuple):
    av_score: Tensor  # (B,)
    av_map: Tensor  # (B, 1, h, w)
    v_fea: Tensor  # (B, 512, h, w)
    a_fea: Tensor  # (B, 512)
    v_logits: Tensor  # (B, K)
    a_logits: Tensor  # (B, K)
    av_logits: Tensor  # (B, 1, h, w) pre-sigmoid av_map; global_score(av_logits) is the score's logit


class StageOne(nn.Module):
    """Single-source localization + pseudo-label classification (§3.1)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.image = ImageBranch(self.config)
        self.audio = AudioBranch(self.config)
        self.localization = LocalizationHead(self.config.fusion_init)

    def forward(self, image: Tensor, waveform: Tensor, all_pairs: bool = False) -> StageOneOutput | Tensor:
        """``waveform`` has one clip per image, or one per interleaved pair (see :func:`paired_audio`).

        ``all_pairs=True`` (the ``all_pairs`` objective; one clip per image): instead, the
        (A, I, h, w) av logits of every clip against every image, ``w * cos`` (see
        :func:`localization_loss_all_pairs`). It is a forward mode, not a helper, so DDP sees it."""
        if all_pairs:
            v = F.normalize(self.image(image).v_emb, dim=1, eps=1e-12)
            a = F.normalize(self.audio(waveform).a_emb, dim=1, eps=1e-12)
            cos = torch.einsum("ac,ichw->aihw", a, v)
            return self.localization.fusion.weight.reshape(()) * cos
        v = self.image(image)
        a = paired_audio(self.audio, waveform, image.shape[0])
        loc = self.localization(v.v_emb, a.a_emb)
        return StageOneOutput(loc.av_score, loc.av_map, v.v_fea, a.a_fea, v.v_logits, a.a_logits, loc.av_logits)

    def classifier_parameters(self) -> list[nn.Parameter]:
        """The two class layers (their own Adam at lr 1e-3, re-created every classification phase)."""
        return [*self.image.classifier.parameters(), *self.audio.classifier.parameters()]

    def main_parameters(self) -> list[nn.Parameter]:
        """Everything except the two class layers (the main Adam at lr 1e-4, §3.5)."""
        skip = {id(p) for p in self.classifier_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def reset_classifiers(self, num_classes: int | None = None) -> None:
        """Fresh class layers (§3.4): re-initialised in place while K is unchanged (see
        _replace_classifier); build a new optimiser over them either way."""
        self.image.reset_classifier(num_classes)
        self.audio.reset_classifier(num_classes)


def _load_exact(module: nn.Module, state: Mapping[str, Tensor], what: str, allow_missing: str = "") -> None:
    """load_state_dict with a readable error. Keys under ``allow_missing`` may be absent."""
    missing, unexpected, mismatched = _state_problems(
        module.state_dict(), state, optional=lambda k: bool(allow_missing) and k.startswith(allow_missing))
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{what}: state dict does not match (missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}, shape mismatches {mismatched[:4]}); "
            "is ModelConfig.num_clusters the K the checkpoint was trained with?"
        )
    module.load_state_dict(state, strict=not allow_missing)


class StageTwoOutput(NamedTuple):
    av_map: Tensor  # (B, 1, h, w)
    class_maps: Tensor  # M: (B, K, h, w) (gated when config.gate)
    sounding_objects: Tensor  # (B, K) = GAP(M)
    a_logits: Tensor  # (B, K)
    av_logits: Tensor  # (B, 1, h, w) pre-sigmoid av_map


class StageTwo(nn.Module):
    """Class-aware localization (§4.1): the stage-one branches and head + ClassAwareHead.

    forward runs every row of the (interleaved) batch. The training loop takes
    global_score(out.av_map[::2]) and quadrant_scores(out.av_map[1::2]) for the localization loss.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.image = ImageBranch(self.config)
        self.audio = AudioBranch(self.config)
        self.localization = LocalizationHead(self.config.fusion_init)
        self.class_aware = ClassAwareHead(self.config.obj_affine_init, self.config.gate, self.config.similarity,
                                          self.config.obj_affine_scale)

    @classmethod
    def from_stage_one(cls, state_dict: Mapping[str, Tensor], config: ModelConfig | None = None) -> StageTwo:
        """Build a StageTwo and load every shared key from a StageOne state dict.

        Only ``class_aware.*`` (new in stage two) may be missing. Anything else missing, unexpected or
        of the wrong shape raises ValueError.
        """
        model = cls(config)
        _load_exact(model, state_dict, "StageTwo.from_stage_one", allow_missing="class_aware.")
        return model

    def forward(self, image: Tensor, waveform: Tensor, dictionary: Tensor,
                all_pairs: bool = False) -> StageTwoOutput | tuple[StageTwoOutput, Tensor]:
        """``waveform`` has one clip per image, or one per interleaved pair (see :func:`paired_audio`).

        ``all_pairs=True`` (one clip per image): also the (A, I, h, w) av logits of every clip on
        every image, as ``StageOne(..., all_pairs=True)``; the outputs are each clip on its own image."""
        v = self.image(image)
        if all_pairs:
            a = self.audio(waveform)
            cos = torch.einsum("ac,ichw->aihw", F.normalize(a.a_emb, dim=1, eps=1e-12),
                               F.normalize(v.v_emb, dim=1, eps=1e-12))
            pairs = self.localization.fusion.weight.reshape(()) * cos
            own = pairs[torch.arange(len(pairs)), torch.arange(len(pairs))].unsqueeze(1)  # (B, 1, h, w)
            av_map = torch.sigmoid(own)
            obj = self.class_aware(v.v_fea, dictionary, av_map)
            return StageTwoOutput(av_map, obj.class_maps, obj.sounding_objects, a.a_logits, own), pairs
        a = paired_audio(self.audio, waveform, image.shape[0])
        loc = self.localization(v.v_emb, a.a_emb)
        obj = self.class_aware(v.v_fea, dictionary, loc.av_map)
        return StageTwoOutput(loc.av_map, obj.class_maps, obj.sounding_objects, a.a_logits, loc.av_logits)


class AudioTeacher(nn.Module):
    """Frozen audio branch of a stage-one checkpoint (§4.2; docs/method.md, 'audio-only teacher': no visual path).

    forward(waveform) -> p_a = softmax(a_logits / T), shape (B, K). It always stays in eval mode,
    even if a parent module calls .train(), and it never builds a graph.
    """

    def __init__(self, config: ModelConfig | None = None, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"AudioTeacher temperature must be positive, got {temperature}")
        self.audio = AudioBranch(config or ModelConfig())
        self.temperature = float(temperature)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_stage_one(
        cls, state_dict: Mapping[str, Tensor], config: ModelConfig | None = None, temperature: float = 1.0
    ) -> AudioTeacher:
        """Strictly load the ``audio.*`` keys of a StageOne state dict; ``image.*`` and
        ``localization.*`` are ignored."""
        teacher = cls(config, temperature)
        audio_state = {k[len("audio.") :]: v for k, v in state_dict.items() if k.startswith("audio.")}
        _load_exact(teacher.audio, audio_state, "AudioTeacher.from_stage_one (keys 'audio.*')")
        return teacher

    def train(self, mode: bool = True) -> AudioTeacher:
        return super().train(False)

    @torch.no_grad()
    def forward(self, waveform: Tensor) -> Tensor:
        return torch.softmax(self.audio(waveform).a_logits / self.temperature, dim=1)

    @torch.no_grad()
    def forward_logmel(self, logmel: Tensor) -> Tensor:
        return torch.softmax(self.audio.forward_logmel(logmel).a_logits / self.temperature, dim=1)


# ---------------------------------------------------------------------------------------------------
# 6. Pure functions: pooling helpers, object features, losses
# ---------------------------------------------------------------------------------------------------


def global_score(av_map: Tensor) -> Tensor:
    """Global max of each (B, 1, h, w) map -> (B,). Works on av_map and on av_logits alike."""
    return torch.amax(av_map, dim=(1, 2, 3))


def quadrant_scores(av_map: Tensor) -> Tensor:
    """AdaptiveMaxPool2d(2) -> the maxima of the 4 quadrants, flattened to (4B,) in the order
    [b0: TL, TR, BL, BR, b1: ...], as the original ``view(-1)`` (§4.1)."""
    return F.adaptive_max_pool2d(av_map, 2).reshape(-1)


def dilate_mask(mask: Tensor) -> Tensor:
    """The original 4-neighbour (cross) dilation of a binary (B, 1, h, w) mask (docs/method.md,
    'masked mean over all cells').

    Every "on" cell stays on. Only "on" cells that are NOT on the border also switch on their 4
    neighbours. An "on" border cell does not spread. The result is computed from the input mask
    alone (no cascading), as in ``location_dilation`` of training_stage_one.py.
    """
    mask = (mask > 0).to(torch.float32)
    interior = torch.zeros_like(mask)
    interior[..., 1:-1, 1:-1] = mask[..., 1:-1, 1:-1]
    cross = mask.new_tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    spread = F.conv2d(interior, cross, padding=1)
    return ((mask + spread) > 0).to(torch.float32)


def object_features(v_fea: Tensor, av_map: Tensor, threshold: float = 0.05, relative: float = 0.0) -> Tensor:
    """Object feature per sample (§3.3): sum(v_fea * dilate(av_map > thr)) / (h*w) -> (B, 512).

    Faithful to the original (docs/method.md, 'masked mean over all cells'): the absolute threshold
    is applied to the sigmoid map; the border quirk of dilate_mask is kept; the divisor is every
    position h*w (196 at 14x14), NOT the mask area.
    ``relative > 0`` (a documented deviation) thresholds each map at ``relative * its max`` instead:
    the absolute 0.05 only isolates the object once the background has been pushed near 0.
    """
    if av_map.dim() != 4 or av_map.shape[1] != 1 or av_map.shape[2:] != v_fea.shape[2:]:
        raise ValueError(f"av_map {tuple(av_map.shape)} must be (B, 1, h, w) matching v_fea {tuple(v_fea.shape)}")
    if relative > 0:
        threshold = relative * torch.amax(av_map, dim=(1, 2, 3), keepdim=True)
    mask = dilate_mask(av_map > threshold).to(v_fea.dtype)
    return (v_fea * mask).mean(dim=(2, 3))


def _bce(scores: Tensor, target: Tensor | float, from_logits: bool) -> Tensor:
    """Mean BCE, in float32 with autocast off.

    from_logits: binary_cross_entropy_with_logits, which is exact for any logit. Otherwise the
    scores are probabilities: torch clamps log(p) at -100 and the gradient's denominator at 1e-12,
    so p = 0 or p = 1 give a finite loss and a finite gradient (autocast would refuse this op).
    """
    scores = scores.float()
    target = torch.as_tensor(target, dtype=scores.dtype, device=scores.device).expand_as(scores)
    with torch.autocast(device_type=scores.device.type, enabled=False):
        if from_logits:
            return F.binary_cross_entropy_with_logits(scores, target)
        return F.binary_cross_entropy(scores, target)


def localization_loss_stage_one(av_score: Tensor, labels: Tensor, *, from_logits: bool = False) -> Tensor:
    """BCE(mean) between av_score (B,) and the 1/0 pair labels (§3.2).

    Pass ``global_score(out.av_logits)`` with from_logits=True for the exact logit form.
    """
    if av_score.shape != labels.shape:
        raise ValueError(f"av_score {tuple(av_score.shape)} and labels {tuple(labels.shape)} must have the same shape")
    return _bce(av_score, labels, from_logits)


def localization_loss_all_pairs(pair_logits: Tensor, positive: Tensor) -> Tensor:
    """Balanced BCE over every (clip, image) pair of a batch (the ``all_pairs`` objective, a
    documented deviation from §3.2): ``pair_logits`` (A, I) are the global-max av logits of clip a
    on image i, ``positive`` (A, I) marks the clip's own image. The mean over positives and the
    mean over negatives are weighted 1/2 each, as the original's interleaved 1:1 batch; a batch of
    B scenes gives B(B-1) negatives for the price of B images instead of one."""
    if pair_logits.shape != positive.shape or pair_logits.dim() != 2:
        raise ValueError(f"pair_logits {tuple(pair_logits.shape)} and positive {tuple(positive.shape)} must be the same (A, I)")
    positive = positive.bool()
    if not positive.any() or positive.all():
        raise ValueError("all-pairs loss needs at least one positive and one negative pair")
    with torch.autocast(device_type=pair_logits.device.type, enabled=False):
        loss = F.binary_cross_entropy_with_logits(pair_logits.float(), positive.float(), reduction="none")
    return 0.5 * (loss[positive].mean() + loss[~positive].mean())


def contrastive_loss_all_pairs(pair_logits: Tensor) -> Tensor:
    """Symmetric InfoNCE over the (B, B) pair logits of :func:`localization_loss_all_pairs` whose
    diagonal holds the positives (clip b was recorded with image b): the mean of the cross-entropy
    that picks each clip's image among the batch's images and each image's clip among its clips
    (a documented deviation, ``--stage_one.nce_weight``). The logits are ``w * cos`` (w ~ 10), so
    the temperature is 1 / w. Unlike the BCE it asks only that a clip's own image beat the others,
    which gives a scratch net a signal from the first steps; the BCE keeps the absolute scale that
    the av map's 0.5 and 0.1 x max cuts read."""
    if pair_logits.dim() != 2 or pair_logits.shape[0] != pair_logits.shape[1] or pair_logits.shape[0] < 2:
        raise ValueError(f"pair_logits must be a square (B, B) matrix with B >= 2, got {tuple(pair_logits.shape)}")
    target = torch.arange(pair_logits.shape[0], device=pair_logits.device)
    with torch.autocast(device_type=pair_logits.device.type, enabled=False):
        logits = pair_logits.float()
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def stage_two_losses(
    pos_scores: Tensor,
    neg_quadrant_scores: Tensor,
    sounding_objects_pos: Tensor,
    p_a_pos: Tensor,
    loc_weight: float = 0.5,
    *,
    from_logits: bool = False,
) -> dict[str, Tensor]:
    """Stage-two objective (§4.4) -> dict(kl, bce_pos, bce_neg, total).

    kl      = KL(p_a || softmax(sounding_objects)) averaged over all B*K elements (legacy
              reduce=True; docs/method.md, 'KL mean over B·K'). It is written as sum/numel because
              F.kl_div(reduction="mean") warns that its meaning will change.
    bce_pos = BCE(pos_scores (B,), 1); bce_neg = BCE(neg_quadrant_scores (4B,), 0)
    total   = kl + loc_weight * 0.5 * (bce_pos + bce_neg)   (KL x1, BCEs x0.25 at the default)
    With from_logits=True, pos/neg scores are pre-sigmoid (pool the av_logits instead of av_map).
    """
    log_q = F.log_softmax(sounding_objects_pos.float(), dim=1)
    p_a = p_a_pos.to(log_q)
    kl = F.kl_div(log_q, p_a, reduction="sum") / p_a.numel()
    bce_pos = _bce(pos_scores, 1.0, from_logits)
    bce_neg = _bce(neg_quadrant_scores, 0.0, from_logits)
    total = kl + loc_weight * 0.5 * (bce_pos + bce_neg)
    return {"kl": kl, "bce_pos": bce_pos, "bce_neg": bce_neg, "total": total}
