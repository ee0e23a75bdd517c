"""A torch Dataset over an AV-COCO folder (docs/avcoco.md), for evaluation and fine-tuning.

Frames go through :func:`avsl_edge.preprocess.preprocess_frame` (docs/method.md §1.2, val/test:
Resize((S, S)) without keeping the aspect ratio -> ToTensor -> ImageNet Normalize), the same
function the edge runtime calls, so training and deployment inputs are byte-identical. Audio is
the image's clip, mixed to mono, resampled and fitted to exactly ``clip_seconds``
(:func:`avsl_edge.audio.fit_clip`: the last samples; a short clip is zero-padded at the start).

    ds = AVCocoDataset("data/synthmusic/test", classes=CLASSES, scenes=["duet"])
    loader = DataLoader(ds, batch_size=8, collate_fn=collate)
    batch = next(iter(loader))
    batch["image"].shape, batch["waveform"].shape    # (8, 3, 224, 224), (8, 16000)
    batch["boxes"][0], batch["labels"][0]            # (N0, 4) normalised xywh, (N0,) class indices

Classes link a model and a data set by NAME: ``labels`` index into ``classes`` (the model's class
list), whatever ids the annotation file uses.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from avsl_edge.audio import SAMPLE_RATE, fit_clip
from avsl_edge.avcoco import AVCoco, AVCocoError, AVImage, load_avcoco, read_clip, read_frame
from avsl_edge.preprocess import preprocess_frame


class AVCocoDataset(Dataset):
    """Items are dicts:

    - ``image``: float32 (3, S, S), ImageNet-normalised;
    - ``waveform``: float32 (round(clip_seconds * sample_rate),), mono;
    - ``boxes``: float32 (N, 4) normalised ``x, y, w, h`` (top-left origin, 0..1);
    - ``labels``: int64 (N,) indices into ``classes``;
    - ``sounding``: bool (N,);
    - ``image_id``: int; ``scene``: str ("" when the image has no scene tag).

    ``classes=None`` uses the file's own categories (in id order). An object whose class is not
    in ``classes`` is an error naming the class and the folder, unless ``ignore_unknown=True``,
    which drops such objects.
    """

    def __init__(
        self,
        root_or_coco: str | os.PathLike | AVCoco,
        classes: Sequence[str] | None = None,
        image_size: int = 224,
        scenes: Sequence[str] | None = None,
        sample_rate: int = SAMPLE_RATE,
        clip_seconds: float = 1.0,
        ignore_unknown: bool = False,
    ):
        coco = root_or_coco if isinstance(root_or_coco, AVCoco) else load_avcoco(root_or_coco)
        self.coco = coco
        where = str(coco.root / "annotations.json")
        if int(image_size) <= 0:
            raise ValueError(f"image_size must be > 0, got {image_size}")
        if int(sample_rate) <= 0 or not clip_seconds > 0:
            raise ValueError(f"sample_rate and clip_seconds must be > 0, got {sample_rate}, {clip_seconds}")
        self.image_size = int(image_size)
        self.sample_rate = int(sample_rate)
        self.clip_seconds = float(clip_seconds)
        self.clip_samples = int(round(self.clip_seconds * self.sample_rate))

        if not coco.images:
            raise AVCocoError(f"{where}: the data folder has no images")
        images: tuple[AVImage, ...] = coco.images
        if scenes is not None:
            if isinstance(scenes, str):
                scenes = [scenes]
            images = coco.scenes(*scenes)
            if not images:
                present = sorted({str(im.scene) for im in coco.images})
                raise AVCocoError(
                    f"{where}: no image has a scene in {list(scenes)} (scenes present: {present})"
                )
        self.images = images

        self.classes: tuple[str, ...] = tuple(coco.categories if classes is None else classes)
        if not self.classes:
            raise ValueError("classes is empty")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes has duplicate names: {list(self.classes)}")
        self.class_index = {name: i for i, name in enumerate(self.classes)}
        used = {o.category for im in images for o in im.objects}
        unknown = sorted(used - set(self.class_index))
        if unknown and not ignore_unknown:
            first = next(im for im in images for o in im.objects if o.category in unknown)
            raise AVCocoError(
                f"{where}: class(es) {unknown} are not among the model's classes "
                f"{list(self.classes)} (first in image id {first.id}); pass ignore_unknown=True "
                "to drop those objects"
            )
        self.unknown_classes: tuple[str, ...] = tuple(unknown)

    def __len__(self) -> int:
        return len(self.images)

    def targets(self, index: int) -> dict[str, Any]:
        """Boxes, labels and sounding flags of item ``index`` without reading any file."""
        im = self.images[index]
        objs = [o for o in im.objects if o.category in self.class_index]
        boxes = np.asarray([o.normalised(im.width, im.height) for o in objs], np.float32).reshape(-1, 4)
        return {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([self.class_index[o.category] for o in objs], dtype=torch.int64),
            "sounding": torch.tensor([o.sounding for o in objs], dtype=torch.bool),
            "image_id": im.id,
            "scene": im.scene or "",
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        im = self.images[index]
        image = preprocess_frame(read_frame(self.coco, im), self.image_size)
        clip = fit_clip(read_clip(self.coco, im, self.sample_rate), self.clip_samples)
        return {"image": torch.from_numpy(image), "waveform": torch.from_numpy(clip), **self.targets(index)}


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack images and waveforms; keep per-image boxes, labels and sounding flags as lists (their
    lengths differ); ``image_id`` becomes an int64 tensor, ``scene`` a list of strings."""
    if not batch:
        raise ValueError("collate got an empty batch")
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "waveform": torch.stack([b["waveform"] for b in batch]),
        "boxes": [b["boxes"] for b in batch],
        "labels": [b["labels"] for b in batch],
        "sounding": [b["sounding"] for b in batch],
        "image_id": torch.tensor([b["image_id"] for b in batch], dtype=torch.int64),
        "scene": [b["scene"] for b in batch],
    }
