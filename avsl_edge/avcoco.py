"""AV-COCO: COCO detection JSON + one audio clip per image + a ``sounding`` flag per box.

The format is described in ``docs/avcoco.md``. This module reads and writes it without
torch, so the training side and the edge library's ``eval`` share one strict reader.

    coco = load_avcoco("data/synthmusic/test")
    img = coco.images[0]
    frame = read_frame(coco, img)          # (H, W, 3) uint8 RGB
    clip = read_clip(coco, img)            # float32 mono, 16 kHz
    [(o.category, o.bbox, o.sounding) for o in img.objects]

Class *names* (not ids) link a trained model and a data set.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from .errors import UserError
from .audio import SAMPLE_RATE, AudioError, load_audio
from .fileio import atomic_path, confined

FORMAT_VERSION = "1.0"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
AUDIO_SUFFIXES = (".wav", ".flac")
_BOX_TOLERANCE = 1e-3  # pixels: float round-off on boxes that touch the border


class AVCocoError(UserError, ValueError):
    """A problem in an AV-COCO folder; the message names the file and the offending entry."""


@dataclass(frozen=True)
class AVObject:
    bbox: tuple[float, float, float, float]  # x, y, width, height in pixels, top-left origin
    category: str
    sounding: bool = True

    def normalised(self, width: int, height: int) -> tuple[float, float, float, float]:
        x, y, w, h = self.bbox
        return (x / width, y / height, w / width, h / height)


@dataclass(frozen=True)
class AVImage:
    id: int
    file_name: str
    width: int
    height: int
    audio: str
    audio_offset: float = 0.0
    audio_duration: float = 1.0
    scene: str | None = None
    objects: tuple[AVObject, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sounding_categories(self) -> tuple[str, ...]:
        """Distinct classes of the sounding objects, in first-seen order."""
        return tuple(dict.fromkeys(o.category for o in self.objects if o.sounding))

    @property
    def silent_categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.category for o in self.objects if not o.sounding))


@dataclass(frozen=True)
class AVCoco:
    root: Path
    categories: tuple[str, ...]
    images: tuple[AVImage, ...]
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def image_path(self, image: AVImage) -> Path:
        return self.root / image.file_name

    def audio_path(self, image: AVImage) -> Path:
        return self.root / image.audio

    def scenes(self, *kinds: str) -> tuple[AVImage, ...]:
        """The images whose ``scene`` tag is one of ``kinds``."""
        return tuple(im for im in self.images if im.scene in kinds)

    def __len__(self) -> int:
        return len(self.images)


# --------------------------------------------------------------------------------------------
# reading


def _inside(root: Path, rel: Any, where: str) -> str:
    confined(root, rel, where, AVCocoError, "data folder")
    return rel


def _number(value: Any, where: str, name: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AVCocoError(f"{where}: '{name}' must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise AVCocoError(f"{where}: '{name}' must be > 0, got {value!r}")
    return float(value)


def _int_id(value: Any, where: str, name: str = "id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AVCocoError(f"{where}: '{name}' must be an integer, got {value!r}")
    return value


def _list(doc: Mapping[str, Any], key: str, where: str) -> list:
    value = doc.get(key)
    if not isinstance(value, list):
        raise AVCocoError(f"{where}: '{key}' must be a list, got {type(value).__name__}")
    return value


def _read_annotations(root: Path) -> tuple[dict, str]:
    """``<root>/annotations.json`` as a dict, and its path as the errors name it."""
    ann_path = root / "annotations.json"
    if not root.is_dir():
        raise AVCocoError(f"{root}: no such data folder")
    if not ann_path.is_file():
        raise AVCocoError(f"{ann_path}: missing (an AV-COCO folder needs annotations.json)")
    try:
        doc = json.loads(ann_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AVCocoError(f"{ann_path}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise AVCocoError(f"{ann_path}: nested too deeply to be AV-COCO annotations") from None
    if not isinstance(doc, dict):
        raise AVCocoError(f"{ann_path}: top level must be an object")
    return doc, str(ann_path)


def _categories(doc: dict, f: str) -> dict[int, str]:
    """Category id -> name; ids and names unique, at least one."""
    cat_names: dict[int, str] = {}
    for i, c in enumerate(_list(doc, "categories", f)):
        where = f"{f}: categories[{i}]"
        if not isinstance(c, dict):
            raise AVCocoError(f"{where}: must be an object")
        cid = _int_id(c.get("id"), where)
        name = c.get("name")
        if not isinstance(name, str) or not name:
            raise AVCocoError(f"{where}: 'name' must be a non-empty string")
        if cid in cat_names:
            raise AVCocoError(f"{where}: duplicate category id {cid}")
        if name in cat_names.values():
            raise AVCocoError(f"{where}: duplicate category name {name!r}")
        cat_names[cid] = name
    if not cat_names:
        raise AVCocoError(f"{f}: 'categories' is empty")
    return cat_names


def _raw_images(doc: dict, f: str, root: Path, check_files: bool) -> dict[int, dict]:
    """Image id -> its checked JSON object (paths inside ``root``, sizes, audio span, scene)."""
    raw_images: dict[int, dict] = {}
    for i, im in enumerate(_list(doc, "images", f)):
        where = f"{f}: images[{i}]"
        if not isinstance(im, dict):
            raise AVCocoError(f"{where}: must be an object")
        iid = _int_id(im.get("id"), where)
        where = f"{f}: images[{i}] (id {iid})"
        if iid in raw_images:
            raise AVCocoError(f"{where}: duplicate image id {iid}")
        for key in ("file_name", "audio"):
            _inside(root, im.get(key), f"{where} '{key}'")
        if Path(im["file_name"]).suffix.lower() not in IMAGE_SUFFIXES:
            raise AVCocoError(f"{where}: 'file_name' {im['file_name']!r} is not a PNG or JPEG")
        if Path(im["audio"]).suffix.lower() not in AUDIO_SUFFIXES:
            raise AVCocoError(f"{where}: 'audio' {im['audio']!r} is not a WAV or FLAC file")
        for key in ("width", "height"):
            if _int_id(im.get(key), where, key) <= 0:
                raise AVCocoError(f"{where}: '{key}' must be > 0")
        _number(im.get("audio_offset", 0.0), where, "audio_offset")
        if im.get("audio_offset", 0.0) < 0:
            raise AVCocoError(f"{where}: 'audio_offset' must be >= 0")
        _number(im.get("audio_duration", 1.0), where, "audio_duration", positive=True)
        if "scene" in im and im["scene"] is not None and not isinstance(im["scene"], str):
            raise AVCocoError(f"{where}: 'scene' must be a string")
        if check_files:
            for key in ("file_name", "audio"):
                if not (root / im[key]).is_file():
                    raise AVCocoError(f"{where}: {key} {im[key]!r} does not exist under {root}")
        raw_images[iid] = im
    return raw_images


def _objects(doc: dict, f: str, raw_images: dict[int, dict], cat_names: dict[int, str]) -> dict[int, list[AVObject]]:
    """Image id -> its annotated objects (boxes inside the image, known category, sounding flag)."""
    objects: dict[int, list[AVObject]] = {iid: [] for iid in raw_images}
    ann_ids: set[int] = set()
    for i, a in enumerate(_list(doc, "annotations", f)):
        where = f"{f}: annotations[{i}]"
        if not isinstance(a, dict):
            raise AVCocoError(f"{where}: must be an object")
        aid = _int_id(a.get("id"), where)
        where = f"{f}: annotations[{i}] (id {aid})"
        if aid in ann_ids:
            raise AVCocoError(f"{where}: duplicate annotation id {aid}")
        ann_ids.add(aid)
        iid = _int_id(a.get("image_id"), where, "image_id")
        if iid not in raw_images:
            raise AVCocoError(f"{where}: image_id {iid} is not in 'images'")
        cid = _int_id(a.get("category_id"), where, "category_id")
        if cid not in cat_names:
            raise AVCocoError(f"{where}: category_id {cid} is not in 'categories'")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise AVCocoError(f"{where}: 'bbox' must be [x, y, width, height]")
        x, y, w, h = (_number(v, where, "bbox") for v in bbox)
        im = raw_images[iid]
        t = _BOX_TOLERANCE
        if w <= 0 or h <= 0 or x < -t or y < -t or x + w > im["width"] + t or y + h > im["height"] + t:
            raise AVCocoError(
                f"{where}: bbox {bbox} is outside image {iid} ({im['width']}x{im['height']})"
            )
        sounding = a.get("sounding", True)
        if not isinstance(sounding, bool):
            raise AVCocoError(f"{where}: 'sounding' must be true or false, got {sounding!r}")
        objects[iid].append(AVObject((x, y, w, h), cat_names[cid], sounding))
    return objects


def load_avcoco(root: str | os.PathLike, check_files: bool = True) -> AVCoco:
    """Read and validate ``<root>/annotations.json``; every problem is an :class:`AVCocoError`.

    With ``check_files`` every referenced frame and audio file must exist (contents are read
    lazily by :func:`read_frame` and :func:`read_clip`, which raise the same error type).
    """
    root = Path(root)
    doc, f = _read_annotations(root)
    cat_names = _categories(doc, f)
    raw_images = _raw_images(doc, f, root, check_files)
    objects = _objects(doc, f, raw_images, cat_names)
    known = {"id", "file_name", "width", "height", "audio", "audio_offset", "audio_duration", "scene"}
    images = tuple(
        AVImage(
            id=iid,
            file_name=im["file_name"],
            width=im["width"],
            height=im["height"],
            audio=im["audio"],
            audio_offset=float(im.get("audio_offset", 0.0)),
            audio_duration=float(im.get("audio_duration", 1.0)),
            scene=im.get("scene"),
            objects=tuple(objects[iid]),
            extra={k: v for k, v in im.items() if k not in known},
        )
        for iid, im in raw_images.items()
    )
    categories = tuple(cat_names[k] for k in sorted(cat_names))
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    return AVCoco(root=root, categories=categories, images=images, info=info)


def read_frame(coco: AVCoco, image: AVImage) -> np.ndarray:
    """The frame as (H, W, 3) uint8 RGB; an unreadable or mis-sized file is an AVCocoError."""
    path = coco.image_path(image)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise AVCocoError(f"{path}: unreadable image (image id {image.id})")
    if bgr.shape[:2] != (image.height, image.width):
        raise AVCocoError(
            f"{path}: image is {bgr.shape[1]}x{bgr.shape[0]} but image id {image.id} says "
            f"{image.width}x{image.height}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_clip(coco: AVCoco, image: AVImage, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The clip heard with ``image`` as float32 mono at ``sample_rate``."""
    path = coco.audio_path(image)
    try:
        return load_audio(path, image.audio_offset, image.audio_duration, sample_rate)
    except AudioError as exc:
        raise AVCocoError(f"{exc} (image id {image.id})") from exc


# --------------------------------------------------------------------------------------------
# writing


def write_avcoco(
    root: str | os.PathLike,
    categories: Sequence[str],
    images: Sequence[AVImage],
    description: str = "",
) -> Path:
    """Write ``<root>/annotations.json`` atomically. Frame and audio files must already be there.

    Category ids are the 1-based positions in ``categories``; annotation ids are sequential.
    """
    root = Path(root)
    if len(set(categories)) != len(categories):
        raise AVCocoError(f"{root}: duplicate category names in {list(categories)}")
    cat_id = {name: i + 1 for i, name in enumerate(categories)}
    doc: dict[str, Any] = {
        "info": {"version": FORMAT_VERSION, "description": description},
        "categories": [{"id": i, "name": n} for n, i in cat_id.items()],
        "images": [],
        "annotations": [],
    }
    seen: set[int] = set()
    for im in images:
        if im.id in seen:
            raise AVCocoError(f"{root}: duplicate image id {im.id}")
        seen.add(im.id)
        entry = {
            "id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height,
            "audio": im.audio, "audio_offset": im.audio_offset, "audio_duration": im.audio_duration,
        }
        if im.scene is not None:
            entry["scene"] = im.scene
        entry.update({k: v for k, v in im.extra.items() if k not in entry})
        doc["images"].append(entry)
        for o in im.objects:
            if o.category not in cat_id:
                raise AVCocoError(f"{root}: image {im.id} has an object of unknown class {o.category!r}")
            x, y, w, h = (float(v) for v in o.bbox)
            doc["annotations"].append({
                "id": len(doc["annotations"]) + 1, "image_id": im.id,
                "category_id": cat_id[o.category], "bbox": [x, y, w, h], "area": w * h,
                "iscrowd": 0, "sounding": bool(o.sounding),
            })
    with atomic_path(root / "annotations.json") as tmp:
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return root / "annotations.json"
