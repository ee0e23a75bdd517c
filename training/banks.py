"""Scene banks: fixed, seeded SynthMUSIC splits held in memory as uint8 frames + waveforms.

A bank plays the part of MUSIC's pre-extracted frames and log-mel seconds: stage one clusters
over a fixed training split, so the split must be finite and indexable. Scenes are rendered once
(deterministically from ``(seed, split, index)``), augmentation is applied per batch on tensors.

    bank = build_bank("solo", n=1600, size=128, seed=0, split="train")
    x = augment(bank.images[idx], out_size=112, gen=g)      # train transforms (docs/method.md §1.2)
    x = eval_transform(bank.images[idx], out_size=112)      # val/test transforms
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from avsl_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD
from training.data.classes import CLASSES
from training.data.synth import SynthConfig, SynthMusic
from training.data.synth_v2 import HoldOutError, gentle, held_out

_SPLITS = {"train": 1, "val": 2, "stage_two": 3, "duet": 4, "calib": 5, "warmup": 6}
#: Which side of a v2 hold-out each split is on: training never sees a held-out source.
SPLIT_ROLES = {"train": "train", "warmup": "train", "val": "eval", "stage_two": "train", "duet": "train",
               "calib": "eval", "test": "eval"}


def synth_config(data, size: int, split: str) -> SynthConfig:
    """The generator settings of ``split`` under a run's data config (None: v1 defaults)."""
    if data is None or data.pack == "v1":
        return SynthConfig(image_size=size)
    return SynthConfig(image_size=size, pack=data.pack, hold_out_pictures=data.hold_out_pictures,
                       hold_out_sounds=data.hold_out_sounds, split_role=SPLIT_ROLES[split])


def easy_scenes(data, n: int, split: str) -> int:
    """How many of a split's first scenes are drawn gentle: ``data.easy_share`` of the stage-one
    training split (validation and test stay as hard as the pack makes them)."""
    if data is None or split != "train" or not data.easy_share:
        return 0
    return int(round(data.easy_share * n))


def warmup_config(synth: SynthMusic) -> SynthConfig:
    """The warm-up split's generator settings (``data.warmup_epochs``): :func:`gentle` scenes with one
    picture and one sound source per class, the pack's first of each that the run does not hold out
    and that every class has (as v1 has one look and one sound per class)."""
    cfg, assets = synth.config, synth.assets

    def only_one(kind: str, spec: str | None, per_class: str) -> str:
        held = held_out(spec)
        full = [s for s in assets.sources_of(kind) if s not in held
                and all(s in getattr(b, per_class) for b in assets.classes.values())]
        if not full:
            raise HoldOutError(f"--data.warmup_epochs: no {kind} source that every class has is left "
                               f"under the hold-out {spec!r}")
        return ",".join(s for s in assets.sources_of(kind) if s != full[0])

    return gentle(dataclasses.replace(
        cfg, hold_out_pictures=only_one("picture", cfg.hold_out_pictures, "picture_sources"),
        hold_out_sounds=only_one("sound", cfg.hold_out_sounds, "sound_sources"), split_role="train"))


def scene_seed(seed: int, split: str, index: int) -> int:
    """Independent 32-bit seeds per (run seed, split, index): splits never share a scene."""
    return int(np.random.SeedSequence([seed, _SPLITS[split], index]).generate_state(1)[0])


@dataclass
class SceneBank:
    kind: str
    images: torch.Tensor      # (N, 3, R, R) uint8 RGB
    audio: torch.Tensor       # (N, samples) float32, 16 kHz
    labels: torch.Tensor      # (N,) class index of the sounding object (solo); -1 where not single
    sounding: torch.Tensor    # (N, C) bool: which classes are heard
    visible: torch.Tensor     # (N, C) bool: which classes are in view

    def __len__(self) -> int:
        return self.images.shape[0]


def build_bank(kind: str, n: int, size: int, seed: int, split: str, progress: bool = True,
               indices: range | None = None, data=None) -> SceneBank:
    """Render ``n`` scenes of ``kind`` at ``size`` px (or only ``indices`` of them: a DDP shard
    renders its own share; the rest stay zero). ``data``: the run's DataConfig (pack, hold-outs)."""
    synth = SynthMusic(synth_config(data, size, split))
    if split == "warmup":
        synth = SynthMusic(warmup_config(synth), assets=synth.assets)
    easy = easy_scenes(data, n, split)
    gentle_synth = SynthMusic(gentle(synth.config), assets=synth.assets) if easy else None
    c = len(CLASSES)
    images = torch.zeros((n, 3, size, size), dtype=torch.uint8)
    audio = torch.zeros((n, synth.config.samples), dtype=torch.float32)
    labels = torch.full((n,), -1, dtype=torch.long)
    sounding = torch.zeros((n, c), dtype=torch.bool)
    visible = torch.zeros((n, c), dtype=torch.bool)
    idx = indices if indices is not None else range(n)
    for i in tqdm(idx, desc=f"render {split}/{kind}", unit="scene", disable=not progress, leave=False):
        s = (gentle_synth if i < easy else synth).scene(kind, scene_seed(seed, split, i))
        images[i] = torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1)))
        audio[i] = torch.from_numpy(s.audio)
        heard = [CLASSES.index(o.category) for o in s.objects if o.sounding]
        for o in s.objects:
            visible[i, CLASSES.index(o.category)] = True
        for k in s.sounding_classes:
            sounding[i, CLASSES.index(k)] = True
        if len(heard) == 1 and len(s.sounding_classes) == 1:
            labels[i] = heard[0]
    return SceneBank(kind, images, audio, labels, sounding, visible)


_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def normalize(x01: torch.Tensor) -> torch.Tensor:
    return (x01 - _MEAN.to(x01.device)) / _STD.to(x01.device)


def eval_transform(images: torch.Tensor, out_size: int) -> torch.Tensor:
    """uint8 (B,3,R,R) -> normalised float (B,3,S,S): Resize((S,S)) -> /255 -> Normalize."""
    x = images.float() / 255.0
    if x.shape[-1] != out_size or x.shape[-2] != out_size:
        x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    return normalize(x.clamp_(0, 1))


def augment(images: torch.Tensor, out_size: int, gen: torch.Generator, crop: bool = True) -> torch.Tensor:
    """Train transforms of docs/method.md §1.2 on a uint8 batch: horizontal flip (p=0.5), brightness
    and saturation factors ~ U[0.7, 1.3], then (``crop``) a random ``out_size`` crop of the
    frame (frames are rendered at out_size*256/224, as Resize(256) -> RandomCrop(224)), or
    (no ``crop``, stage-two mosaics) a plain resize."""
    b = images.shape[0]
    x = images.float() / 255.0
    flip = torch.rand(b, generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    bright = torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3, generator=gen).to(x.device)
    x = (x * bright).clamp_(0, 1)
    sat = torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3, generator=gen).to(x.device)
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (grey + sat * (x - grey)).clamp_(0, 1)
    r = x.shape[-1]
    if crop and r > out_size:
        offs = torch.randint(0, r - out_size + 1, (b, 2), generator=gen)
        x = torch.stack([x[i, :, oy:oy + out_size, ox:ox + out_size] for i, (oy, ox) in enumerate(offs.tolist())])
    elif r != out_size:
        x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    return normalize(x)


def train_transform(images: torch.Tensor, out_size: int, gen: torch.Generator, augmented: bool,
                    crop: bool = True) -> torch.Tensor:
    """A training batch's transform: :func:`augment` when ``augmented`` (``--data.augment``), else
    :func:`eval_transform`."""
    return augment(images, out_size, gen, crop) if augmented else eval_transform(images, out_size)


def shrink_into_mosaics(frames: torch.Tensor, fill: torch.Tensor, chosen: torch.Tensor,
                        gen: torch.Generator) -> torch.Tensor:
    """Stage-one scale augmentation (the ``mosaic_prob`` deviation): each ``chosen`` frame of the
    (B, 3, S, S) batch is shrunk into a random quadrant of a 2x2 mosaic, like a Music-Synthetic
    tile, whose other three quadrants are the next three rows of ``fill`` (3 per chosen frame,
    scenes whose clips are not in the batch, so the mosaic stays the negative of every other clip).
    Works on normalised frames: resizing commutes with the per-channel normalisation."""
    count = int(chosen.sum())
    if fill.shape[0] != 3 * count:
        raise ValueError(f"shrink_into_mosaics: {count} chosen frames need {3 * count} fill frames, got {fill.shape[0]}")
    if count == 0:
        return frames
    s = frames.shape[-1]
    h = s // 2
    tiles = torch.cat([frames[chosen], fill])
    tiles = F.interpolate(tiles, size=(h, h), mode="bilinear", antialias=True, align_corners=False)
    own, others = tiles[:count], tiles[count:].reshape(count, 3, 3, h, h)
    out = frames.clone()
    where = torch.randint(0, 4, (count,), generator=gen).tolist()
    for k, row in enumerate(torch.nonzero(chosen).flatten().tolist()):
        quads = list(others[k].unbind(0))
        quads.insert(where[k], own[k])
        top, bottom = torch.cat(quads[:2], dim=-1), torch.cat(quads[2:], dim=-1)
        out[row] = F.pad(torch.cat([top, bottom], dim=-2), (0, s - 2 * h, 0, s - 2 * h), mode="replicate")
    return out


def outside(n: int, exclude: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` random scene indices in [0, n) that are not in ``exclude``."""
    allowed = torch.ones(n, dtype=torch.bool)
    allowed[exclude] = False
    pool = torch.nonzero(allowed).flatten()
    if count and not len(pool):
        raise ValueError(f"no scene left outside the batch: the split has {n} scenes")
    return pool[torch.randint(0, len(pool), (count,), generator=gen)]


def render_size(image_size: int) -> int:
    """Train frames are rendered at size*256/224 so a random crop of ``image_size`` plays the
    part of the original Resize(256) -> RandomCrop(224)."""
    return int(round(image_size * 256 / 224))


def negatives(n: int, count: int, gen: torch.Generator, labels: torch.Tensor | None = None,
              index: torch.Tensor | None = None) -> torch.Tensor:
    """For each of ``index`` (positions into a bank of ``n``), a different scene; with
    ``labels``, one whose label differs too (docs/method.md, 'negatives of any other scene')."""
    idx = index if index is not None else torch.arange(count)
    neg = (idx + torch.randint(1, n, (len(idx),), generator=gen)) % n
    if labels is not None:
        for _ in range(32):
            same = labels[neg] == labels[idx]
            if not same.any():
                break
            neg[same] = (neg[same] + torch.randint(1, n, (int(same.sum()),), generator=gen)) % n
    return neg
