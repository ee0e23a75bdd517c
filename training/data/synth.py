"""SynthMUSIC: a synthetic audio-visual instrument data set, generated on the fly.

Every scene is a 224x224 RGB frame (instrument sprites on varied backgrounds) and a 1 s, 16 kHz
clip (notes from the sounding instruments' note banks), with tight boxes and a sounding flag per
instrument. Deterministic: the same (kind, seed) gives byte-identical image and audio.

    synth = SynthMusic()
    s = synth.scene("duet", seed=7)       # Scene(kind, seed, image, audio, objects)
    s.sounding_classes                     # ('flute', 'violin')
    for s in synth.stream(["solo", "mosaic"], seed=0): ...   # endless, e.g. inside a DataLoader
    img, objs = synth.render_image(["violin"], seed=3)       # a solo frame of a chosen class
    clip = synth.render_audio(["violin", "drum"], seed=3)    # a mix of chosen classes
    write_split("data/synth_val", ["solo", "duet"], n=200, seed=1)   # AV-COCO folder

Scene kinds:
  solo             one instrument, sounding
  solo_distractor  two instruments of different classes, one sounding, one silent
  duet             two instruments of different classes, both sounding (audio mixed)
  mosaic           2x2 grid of four solo tiles of four classes; two sounding (mixed), two silent
                   (the Music-Synthetic protocol)
  offscreen        one visible instrument, silent; the sound comes from a class not in view

CLI: ``python -m training.data.synth --help``. Torch-free (numpy, OpenCV).
"""

from __future__ import annotations

import argparse
import colorsys
import math
import os
import sys
import time
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np

from avsl_edge.audio import save_audio
from avsl_edge.avcoco import AVImage, AVObject, write_avcoco
from avsl_edge.errors import OutputExistsError, UserError
from avsl_edge.fileio import atomic_dir, atomic_path
from training.data.assets import Assets, load_assets
from training.data.classes import CLASSES, MONOPHONIC


class SynthError(UserError, ValueError):
    """A SynthMUSIC setting or request that cannot be rendered; names the value."""


KINDS: tuple[str, ...] = ("solo", "solo_distractor", "duet", "mosaic", "offscreen")
BACKGROUNDS: tuple[str, ...] = ("linear", "radial", "texture", "room", "pattern")
PACKS: tuple[str, ...] = ("v1", "v2")
_ALPHA_BOX = 0.5  # a pixel belongs to the object's box when the pasted sprite's alpha >= this


@dataclass(frozen=True)
class SynthConfig:
    """Generator settings. Scales are fractions of the frame side (of the tile side in a mosaic)."""

    image_size: int = 224
    sample_rate: int = 16000
    duration: float = 1.0
    # --- audio
    snr_db: tuple[float, float] = (15.0, 40.0)  # instrument mix RMS over background-noise RMS
    noise_tilt: tuple[float, float] = (0.0, 1.5)  # noise spectrum ~ f^-tilt (0 white, 1 pink)
    peak: tuple[float, float] = (0.3, 0.95)  # peak level of the finished clip
    notes_per_second: tuple[float, float] = (2.0, 6.0)
    note_gain_db: tuple[float, float] = (-6.0, 0.0)
    class_gain_db: tuple[float, float] = (-4.0, 0.0)  # per sounding class in a mix (equal RMS first)
    min_note_seconds: float = 0.15
    # --- image
    solo_scale: tuple[float, float] = (0.40, 0.72)  # longer sprite side, one instrument in the frame
    pair_scale: tuple[float, float] = (0.32, 0.50)  # two instruments in the frame
    rotation_deg: float = 15.0
    flip_prob: float = 0.5
    max_overlap: float = 0.08  # between instruments: intersection / smaller box
    max_outside: float = 0.08  # fraction of a sprite's width/height that may fall outside the frame
    hue_jitter_deg: float = 10.0
    saturation: tuple[float, float] = (0.75, 1.25)
    brightness: tuple[float, float] = (0.75, 1.15)
    backgrounds: tuple[str, ...] = BACKGROUNDS  # any of BACKGROUNDS and "flat"
    clutter: tuple[int, int] = (0, 3)  # non-instrument sprites per frame (tile)
    clutter_scale: tuple[float, float] = (0.14, 0.30)
    shapes: tuple[int, int] = (0, 4)
    pixel_noise: tuple[float, float] = (0.0, 5.0)  # std of added grey noise, 0..255 scale
    clutter_overlap: float = 0.04  # a clutter item may cover this fraction of an instrument box
    # --- video
    motion: float = 0.03  # amplitude of the instruments' drift, fraction of the frame side
    # --- asset pack: "v1" (one look and one GM program per class; the default) or "v2" (many
    # sources; training/data/synth_v2.py). The fields below apply to v2 only.
    pack: str = "v1"
    hold_out_pictures: str | None = None  # picture source id(s), comma-separated: never in "train", alone in "eval"
    hold_out_sounds: str | None = None  # sound source id(s), the same
    split_role: str = "train"  # "train" or "eval" (validation/test): which side of a hold-out
    solo_scale_v2: tuple[float, float] = (0.12, 0.75)  # small objects too
    pair_scale_v2: tuple[float, float] = (0.10, 0.50)
    min_object_px: float = 10.0  # no object's longer side below this (a 64 px mosaic tile is 32 px)
    rotation_deg_v2: float = 30.0
    perspective: float = 0.08  # corner jitter, fraction of the sprite's longer side
    edge_cut_prob: float = 0.2  # a frame whose objects may be cut by its edge ...
    max_outside_v2: float = 0.35  # ... by up to this fraction of their width/height
    occlusion_prob: float = 0.25  # per instrument: a clutter sprite covers part of it
    greyscale_prob: float = 0.12  # style randomisation per sprite (exclusive choices) ...
    colour_swap_prob: float = 0.12  # RGB channel permutation
    texture_prob: float = 0.10  # multiplied by a random blocky or smooth texture
    posterize_prob: float = 0.08  # flat colour levels (edges kept)
    photo_background_prob: float = 0.4  # a photograph instead of a procedural background
    blur_prob: float = 0.25  # Gaussian or motion blur of the frame
    sensor_noise_prob: float = 0.5
    sensor_noise: tuple[float, float] = (0.0, 8.0)  # std (0..255) of shot + read noise
    jpeg_prob: float = 0.3
    jpeg_quality: tuple[int, int] = (30, 95)
    tempo: tuple[float, float] = (0.85, 1.18)  # playback rate of the clips (resampled)
    reverb_prob: float = 0.5  # synthetic room impulse response
    rt60: tuple[float, float] = (0.15, 1.0)  # seconds
    snr_db_v2: tuple[float, float] = (8.0, 35.0)  # mix over noise (coloured, hum, babble, crackle)

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise SynthError(f"image_size must be >= 32, got {self.image_size}")
        if self.sample_rate <= 0 or self.duration <= 0:
            raise SynthError("sample_rate and duration must be > 0")
        for name in ("snr_db", "noise_tilt", "peak", "notes_per_second", "note_gain_db", "class_gain_db",
                     "solo_scale", "pair_scale", "saturation", "brightness", "clutter", "clutter_scale",
                     "shapes", "pixel_noise"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise SynthError(f"SynthConfig.{name}: low {lo} > high {hi}")
        if not 0 < self.peak[1] < 1.0:
            raise SynthError(f"SynthConfig.peak must stay below 1.0, got {self.peak}")
        if self.pack not in PACKS:
            raise SynthError(f"SynthConfig.pack: unknown pack {self.pack!r}; choose from {', '.join(PACKS)}")
        if self.split_role not in ("train", "eval"):
            raise SynthError(f"SynthConfig.split_role must be 'train' or 'eval', got {self.split_role!r}")
        if self.pack == "v1" and (self.hold_out_pictures or self.hold_out_sounds):
            raise SynthError("SynthConfig.hold_out_pictures/hold_out_sounds need pack='v2' (v1 has one source each)")
        for name in ("solo_scale_v2", "pair_scale_v2", "sensor_noise", "jpeg_quality", "tempo", "rt60", "snr_db_v2"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise SynthError(f"SynthConfig.{name}: low {lo} > high {hi}")
        bad = [b for b in self.backgrounds if b not in BACKGROUNDS + ("flat",)]
        if bad or not self.backgrounds:
            raise SynthError(f"SynthConfig.backgrounds: unknown {bad}; choose from {BACKGROUNDS + ('flat',)}")

    @property
    def samples(self) -> int:
        return int(round(self.duration * self.sample_rate))


@dataclass
class SceneObject:
    category: str
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels (COCO), tight to alpha >= 0.5
    sounding: bool
    # full-frame uint8 alpha of the pasted sprite; only when asked for (masks=True)
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    source: str = ""  # the picture source of its look (v2 packs)


@dataclass
class Scene:
    kind: str
    seed: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    audio: np.ndarray  # (samples,) float32, peak < 1
    objects: list[SceneObject]
    audio_classes: tuple[str, ...] = ()  # every class heard in the clip (in view or not)
    sources: dict = field(default_factory=dict, compare=False)  # v2: which sources the scene used

    @property
    def sounding_classes(self) -> tuple[str, ...]:
        """Distinct classes of the visible sounding objects."""
        return tuple(dict.fromkeys(o.category for o in self.objects if o.sounding))

    @property
    def silent_classes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.category for o in self.objects if not o.sounding))

    @property
    def offscreen_classes(self) -> tuple[str, ...]:
        """Classes heard but not in view."""
        seen = {o.category for o in self.objects}
        return tuple(c for c in self.audio_classes if c not in seen)


@dataclass
class SceneVideo:
    kind: str
    seed: int
    fps: float
    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB
    audio: np.ndarray  # float32, seconds * sample_rate
    objects: list[list[SceneObject]]  # per frame
    audio_classes: tuple[str, ...]


# ------------------------------------------------------------------------------------------------
# image internals


@dataclass
class _Placement:
    category: str
    sounding: bool
    sprite: np.ndarray  # (h, w, 4) float32: RGB premultiplied (0..255), alpha 0..1
    cx: float  # centre, tile coordinates
    cy: float
    angle: float  # degrees, counter-clockwise
    motion: tuple[float, ...] = ()  # ax, ay, fx, fy, phx, phy, a_ang, f_ang (video only)
    source: str = ""  # v2: the picture source of the look


@dataclass
class _Tile:
    x: int  # origin in the frame
    y: int
    background: np.ndarray  # (h, w, 3) float32 0..255
    placements: list[_Placement]


def _premultiply(rgba: np.ndarray) -> np.ndarray:
    f = rgba.astype(np.float32)
    a = f[..., 3:4] * (1.0 / 255.0)
    return np.concatenate([f[..., :3] * a, a], axis=2)


def _affine(p: _Placement, dx: float = 0.0, dy: float = 0.0, dang: float = 0.0) -> np.ndarray:
    h, w = p.sprite.shape[:2]
    c = ((w - 1) / 2.0, (h - 1) / 2.0)
    m = cv2.getRotationMatrix2D(c, p.angle + dang, 1.0)
    m[0, 2] += p.cx + dx - c[0]
    m[1, 2] += p.cy + dy - c[1]
    return m


def _paste(canvas: np.ndarray, sprite: np.ndarray, m: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Composite a premultiplied sprite onto ``canvas`` (float32, in place) with affine ``m``.

    Returns ((x0, y0, x1, y1) of the warped region in canvas coordinates, its alpha), or None when
    nothing lands inside the canvas."""
    H, W = canvas.shape[:2]
    h, w = sprite.shape[:2]
    corners = m @ np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]]).T
    x0 = max(0, int(math.floor(corners[0].min())) - 1)
    y0 = max(0, int(math.floor(corners[1].min())) - 1)
    x1 = min(W, int(math.ceil(corners[0].max())) + 2)
    y1 = min(H, int(math.ceil(corners[1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    mr = m.copy()
    mr[0, 2] -= x0
    mr[1, 2] -= y0
    warped = cv2.warpAffine(sprite, mr, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    a = warped[..., 3:4]
    roi = canvas[y0:y1, x0:x1]
    roi *= 1.0 - a
    roi += warped[..., :3]
    return (x0, y0, x1, y1), warped[..., 3]


def _box_of(alpha: np.ndarray, x0: int, y0: int) -> tuple[float, float, float, float] | None:
    m = alpha >= _ALPHA_BOX
    rows = np.flatnonzero(m.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return (float(x0 + cols[0]), float(y0 + rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))


def _pasted_object(category: str, sounding: bool, res, tile, frame_hw: tuple[int, int], masks: bool,
                   source: str = "") -> SceneObject:
    """The SceneObject of a sprite that ``_paste`` put into ``tile`` (``res``: its result), in frame
    coordinates, with its full-frame alpha when ``masks``."""
    box = None if res is None else _box_of(res[1], res[0][0], res[0][1])
    if box is None:
        th, tw = tile.background.shape[:2]
        raise RuntimeError(f"{category} sprite fell outside its {tw}x{th} tile")
    bx, by, bw, bh = box
    mask = None
    if masks:
        mask = np.zeros(frame_hw, np.uint8)
        (x0, y0, x1, y1), alpha = res
        mask[tile.y + y0 : tile.y + y1, tile.x + x0 : tile.x + x1] = np.round(alpha * 255).astype(np.uint8)
    return SceneObject(category, (bx + tile.x, by + tile.y, bw, bh), sounding, mask, source=source)


def _rand_colour(rng: np.random.Generator, sat=(0.05, 0.65), val=(0.3, 0.98)) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b], dtype=np.float32) * 255.0


def _overlap(a, b) -> float:
    """Intersection area of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _area(a) -> float:
    return max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])


# ------------------------------------------------------------------------------------------------



def _layout(sizes: Sequence[tuple[int, int]], scale: tuple[float, float], rotation_deg: float, max_outside: float,
            w: int, h: int, max_overlap: float, rng: np.random.Generator, min_px: float = 0.0) -> list[tuple]:
    """(long side, angle, cx, cy, conservative box) of each sprite of (height, width) ``sizes`` in a
    (w, h) frame. The whole layout is sampled at once (all sizes and positions), retrying with slowly
    shrinking sizes until no two conservative (rotated-rectangle) boxes overlap by more than
    ``max_overlap`` of the smaller one; at most ``max_outside`` of an object may leave the frame."""
    side = min(w, h)
    for attempt in range(400):
        shrink = 0.95 ** (attempt // 20)
        layout = []
        for sh, sw in sizes:
            long_side = max(min_px, rng.uniform(*scale) * side * shrink)
            ang = rng.uniform(-rotation_deg, rotation_deg)
            k = long_side / max(sw, sh)
            t = math.radians(ang)
            bw = abs(sw * k * math.cos(t)) + abs(sh * k * math.sin(t))
            bh = abs(sw * k * math.sin(t)) + abs(sh * k * math.cos(t))
            m = 0.5 - max_outside
            cx = rng.uniform(bw * m, w - bw * m) if w - bw * m > bw * m else w / 2
            cy = rng.uniform(bh * m, h - bh * m) if h - bh * m > bh * m else h / 2
            box = (max(0.0, cx - bw / 2), max(0.0, cy - bh / 2), min(w, cx + bw / 2), min(h, cy + bh / 2))
            layout.append((long_side, ang, cx, cy, box))
        boxes = [b[4] for b in layout]
        if all(_overlap(a, b) <= max_overlap * min(_area(a), _area(b))
               for i, a in enumerate(boxes) for b in boxes[i + 1 :]):
            return layout
    raise RuntimeError(f"could not place {len(sizes)} instruments without overlap in a {w}x{h} frame")


class SynthMusic:
    """The SynthMUSIC generator. Loads the asset pack once; every method is deterministic in its seed.

    ``SynthMusic(SynthConfig(pack="v2"))`` gives the v2 generator (``training.data.synth_v2``)."""

    def __new__(cls, config: SynthConfig = SynthConfig(), assets: Assets | None = None):
        if cls is SynthMusic and config.pack == "v2":
            from training.data.synth_v2 import SynthMusicV2

            obj = super().__new__(SynthMusicV2)
            if not isinstance(obj, cls):  # run as __main__ (python -m): another SynthMusic class, so
                obj.__init__(config, assets)  # Python would skip __init__
            return obj
        return super().__new__(cls)

    def __init__(self, config: SynthConfig = SynthConfig(), assets: Assets | None = None):
        self.config = config
        self.assets = assets if assets is not None else load_assets()
        if self.assets.sample_rate != config.sample_rate:
            raise SynthError(
                f"asset pack {self.assets.root} is at {self.assets.sample_rate} Hz but the config asks for "
                f"{config.sample_rate} Hz"
            )
        self.classes: tuple[str, ...] = CLASSES
        # per class: notes scaled to unit RMS
        self._notes = {c: tuple(n / r for n, r in zip(b.notes, b.rms)) for c, b in self.assets.classes.items()}
        self._premultiplied = {c: _premultiply(b.sprite) for c, b in self.assets.classes.items()}
        self._clutter_pm = tuple(_premultiply(x) for x in self.assets.clutter)

    # -------------------------------------------------------------------------------- audio

    def render_audio(self, classes: Sequence[str], seed: int, duration: float | None = None) -> np.ndarray:
        """A clip mixing the given classes (each a random phrase from its note bank) over low noise.

        Empty ``classes`` gives background noise only (about -50 dBFS)."""
        cfg = self.config
        for c in classes:
            self._check_class(c)
        if len(set(classes)) != len(classes):
            raise SynthError(f"render_audio: repeated class in {list(classes)}")
        rng = np.random.default_rng(seed)
        n = int(round((cfg.duration if duration is None else duration) * cfg.sample_rate))
        mix = np.zeros(n, np.float32)
        for c in classes:
            track = self._class_track(c, rng, n)
            mix += track * np.float32(10 ** (rng.uniform(*cfg.class_gain_db) / 20))
        noise = self._noise(rng, n)
        if classes:
            sig = float(np.sqrt(np.mean(mix.astype(np.float64) ** 2)))
            noise *= np.float32(sig / 10 ** (rng.uniform(*cfg.snr_db) / 20))
            out = mix + noise
            out *= np.float32(rng.uniform(*cfg.peak) / max(float(np.max(np.abs(out))), 1e-9))
        else:
            out = noise * np.float32(10 ** (rng.uniform(-55.0, -45.0) / 20))
        return out.astype(np.float32, copy=False)

    def _class_track(self, c: str, rng: np.random.Generator, n: int) -> np.ndarray:
        cfg = self.config
        sr = cfg.sample_rate
        notes = self._notes[c]
        dur = n / sr
        k = max(1, int(rng.poisson(rng.uniform(*cfg.notes_per_second) * dur)))
        onsets = rng.uniform(-0.3, 0.9, size=k) * n
        onsets[0] = rng.uniform(0.0, 0.25) * n  # something is heard early in every clip
        onsets = np.sort(onsets).astype(np.int64)
        choice = rng.integers(len(notes), size=k)
        gains = 10 ** (rng.uniform(*cfg.note_gain_db, size=k) / 20)
        frac = rng.uniform(0.0, 1.0, size=k)
        fades = rng.uniform(0.01, 0.05, size=k)
        track = np.zeros(n, np.float32)
        min_len = int(cfg.min_note_seconds * sr)
        for i in range(k):
            note = notes[choice[i]]
            length = len(note) if len(note) <= min_len else int(min_len + frac[i] * (len(note) - min_len))
            if c in MONOPHONIC and i + 1 < k:  # legato: the next note takes over
                length = min(length, max(min_len, int(onsets[i + 1] - onsets[i] + 0.01 * sr)))
            seg = note[:length] * np.float32(gains[i])
            fo = min(length, int(fades[i] * sr))
            if fo > 1:
                seg[-fo:] *= np.linspace(1.0, 0.0, fo, dtype=np.float32)
            start = int(onsets[i])
            if start < 0:  # the note began before the clip: enter mid-note with a short fade-in
                seg = seg[-start:]
                start = 0
                fi = min(len(seg), int(0.005 * sr))
                if fi > 1:
                    seg[:fi] *= np.linspace(0.0, 1.0, fi, dtype=np.float32)
            end = min(n, start + len(seg))
            if end > start:
                track[start:end] += seg[: end - start]
        rms = float(np.sqrt(np.mean(track.astype(np.float64) ** 2)))
        return track / np.float32(max(rms, 1e-9))

    def _noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        white = rng.standard_normal(n).astype(np.float32)
        tilt = rng.uniform(*self.config.noise_tilt)
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, 1.0 / self.config.sample_rate)
        spec *= (np.maximum(f, 20.0) / 1000.0) ** (-tilt / 2)
        x = np.fft.irfft(spec, n).astype(np.float32)
        return x / np.float32(max(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1e-9))

    # -------------------------------------------------------------------------------- image

    def render_image(
        self,
        objects: Sequence[str | tuple[str, bool]],
        seed: int,
        size: int | None = None,
        masks: bool = False,
    ) -> tuple[np.ndarray, list[SceneObject]]:
        """One frame showing ``objects`` (class names, or (class, sounding) pairs; plain names are
        sounding) on a random background. Returns (RGB uint8 image, objects with tight boxes)."""
        items = self._items(objects)
        size = self.config.image_size if size is None else int(size)
        rng = np.random.default_rng(seed)
        tile = self._tile(items, 0, 0, size, size, rng)
        return self._draw([tile], size, size, masks=masks)

    def render_mosaic(
        self,
        tiles: Sequence[str | tuple[str, bool]],
        seed: int,
        size: int | None = None,
        masks: bool = False,
    ) -> tuple[np.ndarray, list[SceneObject]]:
        """A 2x2 grid of four one-instrument tiles (row-major: top-left, top-right, bottom-left,
        bottom-right), each with its own background."""
        items = self._items(tiles)
        if len(items) != 4:
            raise SynthError(f"render_mosaic needs 4 tiles, got {len(items)}")
        size = self.config.image_size if size is None else int(size)
        rng = np.random.default_rng(seed)
        return self._draw(self._mosaic_tiles(items, size, rng), size, size, masks=masks)

    def _mosaic_tiles(self, items, size: int, rng: np.random.Generator) -> list[_Tile]:
        h0 = size // 2
        spans = [(0, h0), (h0, size)]
        tiles = []
        for i, item in enumerate(items):
            (y0, y1), (x0, x1) = spans[i // 2], spans[i % 2]
            tiles.append(self._tile([item], x0, y0, x1 - x0, y1 - y0, rng))
        return tiles

    def _items(self, objects) -> list[tuple[str, bool]]:
        items = []
        for o in objects:
            c, s = (o, True) if isinstance(o, str) else (str(o[0]), bool(o[1]))
            self._check_class(c)
            items.append((c, s))
        return items

    def _check_class(self, c: str) -> None:
        if c not in self.assets.classes:
            raise SynthError(f"unknown SynthMUSIC class {c!r}; expected one of {', '.join(CLASSES)}")

    def _colour_matrix(self, rng: np.random.Generator) -> np.ndarray:
        """4x4 matrix for cv2.transform on premultiplied RGBA: hue rotation about the grey axis,
        saturation and brightness. All three are linear in RGB, so they commute with premultiplying."""
        cfg = self.config
        a = math.radians(rng.uniform(-cfg.hue_jitter_deg, cfg.hue_jitter_deg))
        k = np.full(3, 1 / math.sqrt(3))
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        rot = math.cos(a) * np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * np.outer(k, k)
        sat = rng.uniform(*cfg.saturation)
        lum = np.array([0.299, 0.587, 0.114])
        smat = sat * np.eye(3) + (1 - sat) * np.outer(np.ones(3), lum)
        m = np.eye(4, dtype=np.float32)
        m[:3, :3] = rng.uniform(*cfg.brightness) * smat @ rot
        return m

    def _sprite(self, c: str, long_side: float, rng: np.random.Generator, jitter: bool = True,
                source: np.ndarray | None = None) -> np.ndarray:
        """A premultiplied float32 RGBA sprite scaled so its longer side is ``long_side`` px,
        colour-jittered and maybe mirrored."""
        pm = self._premultiplied[c] if source is None else source
        h, w = pm.shape[:2]
        s = long_side / max(h, w)
        nw, nh = max(2, int(round(w * s))), max(2, int(round(h * s)))
        out = cv2.resize(pm, (nw, nh), interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR)
        if jitter:
            out = cv2.transform(out, self._colour_matrix(rng))
            a255 = out[..., 3:4] * 255.0
            np.clip(out[..., :3], 0.0, None, out=out[..., :3])
            np.minimum(out[..., :3], a255, out=out[..., :3])
        if rng.random() < self.config.flip_prob:
            out = np.ascontiguousarray(out[:, ::-1])
        return out

    def _tile(self, items, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> _Tile:
        """Lay out one frame (or mosaic tile) of size (w, h): instruments, then background + clutter."""
        cfg = self.config
        side = min(w, h)
        scale = cfg.solo_scale if len(items) == 1 else cfg.pair_scale
        sizes = [self.assets.classes[c].sprite.shape[:2] for c, _ in items]
        layout = _layout(sizes, scale, cfg.rotation_deg, cfg.max_outside, w, h, cfg.max_overlap, rng)
        boxes = [b[4] for b in layout]
        placements: list[_Placement] = []
        for (c, sounding), (long_side, ang, cx, cy, _) in zip(items, layout):
            motion = (*rng.uniform(0.3, 1.0, 2) * cfg.motion * side, *rng.uniform(0.2, 0.8, 2),
                      *rng.uniform(0, 2 * math.pi, 2), rng.uniform(0, 4.0), rng.uniform(0.2, 0.6))
            placements.append(_Placement(c, sounding, self._sprite(c, long_side, rng), cx, cy, ang, motion))
        background = self._background(rng, w, h, boxes)
        return _Tile(x, y, background, placements)

    def _background(self, rng: np.random.Generator, w: int, h: int, keep_clear) -> np.ndarray:
        cfg = self.config
        kind = cfg.backgrounds[int(rng.integers(len(cfg.backgrounds)))]
        c1, c2 = _rand_colour(rng), _rand_colour(rng)
        if kind == "flat":
            return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
        ys = np.arange(h, dtype=np.float32)[:, None]
        xs = np.arange(w, dtype=np.float32)[None, :]
        if kind == "linear":
            a = rng.uniform(0, 2 * math.pi)
            t = (xs - w / 2) * math.cos(a) + (ys - h / 2) * math.sin(a)
            t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
            bg = c1 + t[..., None] * (c2 - c1)
        elif kind == "radial":
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            t = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
            t = (t / max(float(t.max()), 1e-6)) ** rng.uniform(0.6, 1.6)
            bg = c1 + t[..., None] * (c2 - c1)
        elif kind == "texture":
            g = int(rng.integers(2, 9))
            cells = rng.random((g, g, 1)).astype(np.float32)
            cells = c1 + cells * (c2 - c1) + rng.normal(0, 12, (g, g, 3)).astype(np.float32)
            bg = cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC)
        elif kind == "room":
            horizon = rng.uniform(0.45, 0.8) * h
            wall = c1 * (1.0 - 0.25 * ys / h)[..., None]
            floor = c2 * (0.75 + 0.25 * (ys - horizon) / max(h - horizon, 1))[..., None]
            bg = np.where((ys < horizon)[..., None], wall, floor) * np.ones((1, w, 1), np.float32)
            yb = int(horizon)
            bg[max(0, yb - 2) : yb + 2] *= 0.7  # skirting board
        else:  # pattern: stripes or checks, low contrast
            period = rng.uniform(6, 32)
            contrast = rng.uniform(0.05, 0.2)
            mode = int(rng.integers(3))
            if mode == 0:
                p = (xs // period % 2) + 0 * ys
            elif mode == 1:
                p = (ys // period % 2) + 0 * xs
            else:
                p = (xs // period + ys // period) % 2
            bg = c1 * (1.0 - contrast * p)[..., None]
        bg = np.ascontiguousarray(bg, dtype=np.float32)
        self._clutter(bg, rng, keep_clear)
        sigma = rng.uniform(*cfg.pixel_noise)
        if sigma > 0.5:
            bg += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(sigma)
        np.clip(bg, 0, 255, out=bg)
        return bg

    def _free(self, box, keep_clear) -> bool:
        a = _area(box)
        lim = self.config.clutter_overlap
        return all(_overlap(box, b) <= lim * _area(b) and _overlap(box, b) <= 0.25 * a for b in keep_clear)

    def _clutter(self, bg: np.ndarray, rng: np.random.Generator, keep_clear) -> None:
        """Non-instrument sprites and flat shapes, kept (almost) clear of the instruments' boxes."""
        cfg = self.config
        h, w = bg.shape[:2]
        side = min(w, h)
        n_shapes = int(rng.integers(cfg.shapes[0], cfg.shapes[1] + 1))
        for _ in range(n_shapes):
            sw, sh = rng.uniform(0.1, 0.4) * side, rng.uniform(0.1, 0.4) * side
            x0, y0 = rng.uniform(-0.1 * w, w - 0.5 * sw), rng.uniform(-0.1 * h, h - 0.5 * sh)
            box = (x0, y0, x0 + sw, y0 + sh)
            colour = _rand_colour(rng, sat=(0.0, 0.8), val=(0.15, 1.0))
            alpha = rng.uniform(0.3, 0.9)
            kind = int(rng.integers(4))
            if not self._free(box, keep_clear):
                continue
            xa, ya, xb, yb = (int(max(0, v)) for v in (x0, y0, min(w - 1, x0 + sw), min(h - 1, y0 + sh)))
            if xb <= xa or yb <= ya:
                continue
            roi = bg[ya : yb + 1, xa : xb + 1]
            over = roi.copy()
            col = tuple(float(v) for v in colour)
            rw, rh = xb - xa, yb - ya
            if kind == 0:
                cv2.rectangle(over, (0, 0), (rw, rh), col, -1)
            elif kind == 1:
                cv2.ellipse(over, (rw // 2, rh // 2), (max(1, rw // 2), max(1, rh // 2)), 0, 0, 360, col, -1,
                            lineType=cv2.LINE_AA)
            elif kind == 2:
                pts = np.array([[rng.uniform(0, rw), rng.uniform(0, rh)] for _ in range(3)], np.int32)
                cv2.fillPoly(over, [pts], col, lineType=cv2.LINE_AA)
            else:
                cv2.line(over, (0, int(rng.uniform(0, rh))), (rw, int(rng.uniform(0, rh))), col,
                         int(rng.integers(2, 7)), lineType=cv2.LINE_AA)
            roi *= 1.0 - alpha
            roi += over * alpha
        n_clutter = int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))
        for _ in range(n_clutter):
            j = int(rng.integers(len(self.assets.clutter)))
            src = self._clutter_pm[j]
            long_side = rng.uniform(*cfg.clutter_scale) * side
            k = long_side / max(src.shape[:2])
            cw, ch = src.shape[1] * k, src.shape[0] * k
            for _try in range(10):
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
                if self._free(box, keep_clear):
                    break
            else:
                continue
            sprite = self._sprite("", long_side, rng, source=src)
            p = _Placement("", False, sprite, cx, cy, rng.uniform(-10, 10))
            _paste(bg, sprite, _affine(p))

    def _draw(self, tiles: list[_Tile], width: int, height: int, t: float | None = None,
              masks: bool = False) -> tuple[np.ndarray, list[SceneObject]]:
        canvas = np.empty((height, width, 3), np.float32)
        objects: list[SceneObject] = []
        for tile in tiles:
            th, tw = tile.background.shape[:2]
            view = canvas[tile.y : tile.y + th, tile.x : tile.x + tw]
            view[:] = tile.background
            for p in tile.placements:
                if t is None:
                    m = _affine(p)
                else:
                    ax, ay, fx, fy, px, py, aa, fa = p.motion
                    m = _affine(p, ax * math.sin(2 * math.pi * fx * t + px), ay * math.sin(2 * math.pi * fy * t + py),
                                aa * math.sin(2 * math.pi * fa * t + px + py))
                res = _paste(view, p.sprite, m)
                objects.append(_pasted_object(p.category, p.sounding, res, tile, (height, width), masks))
        np.clip(canvas, 0, 255, out=canvas)
        image = (canvas + 0.5).astype(np.uint8)
        return image, objects

    # -------------------------------------------------------------------------------- scenes

    def _plan(self, kind: str, rng: np.random.Generator) -> tuple[list[tuple[str, bool]], tuple[str, ...], bool]:
        """(visible (class, sounding) items, heard classes, is_mosaic) for a scene kind."""
        pick = [self.classes[i] for i in rng.permutation(len(self.classes))[:4]]
        if kind == "solo":
            return [(pick[0], True)], (pick[0],), False
        if kind == "solo_distractor":
            items = [(pick[0], True), (pick[1], False)]
            if rng.random() < 0.5:
                items.reverse()
            return items, (pick[0],), False
        if kind == "duet":
            return [(pick[0], True), (pick[1], True)], (pick[0], pick[1]), False
        if kind == "mosaic":
            sounding = set(rng.permutation(4)[:2].tolist())
            items = [(c, i in sounding) for i, c in enumerate(pick)]
            return items, tuple(c for c, s in items if s), True
        if kind == "offscreen":
            return [(pick[0], False)], (pick[1],), False
        raise SynthError(f"unknown scene kind {kind!r}; expected one of {', '.join(KINDS)}")

    def scene(self, kind: str, seed: int, masks: bool = False) -> Scene:
        """One scene of ``kind`` (see KINDS); same (kind, seed) -> byte-identical image and audio."""
        if kind not in KINDS:
            raise SynthError(f"unknown scene kind {kind!r}; expected one of {', '.join(KINDS)}")
        if seed < 0:
            raise SynthError(f"seed must be >= 0, got {seed}")
        rng = np.random.default_rng([KINDS.index(kind), int(seed)])
        items, heard, mosaic = self._plan(kind, rng)
        image_seed, audio_seed = (int(v) for v in rng.integers(0, 2**63 - 1, size=2))
        if mosaic:
            image, objects = self.render_mosaic(items, image_seed, masks=masks)
        else:
            image, objects = self.render_image(items, image_seed, masks=masks)
        audio = self.render_audio(heard, audio_seed)
        return Scene(kind, int(seed), image, audio, objects, tuple(heard))

    def stream(self, kinds: Sequence[str] = KINDS, seed: int = 0, start: int = 0, step: int = 1,
               masks: bool = False) -> Iterator[Scene]:
        """Endless scenes: item i (i = start, start+step, ...) is ``scene(kinds[i % len(kinds)],
        scene_seed(seed, i))``. Give DataLoader worker w of W ``start=w, step=W``."""
        kinds = _check_kinds(kinds)
        for i in count(start, step):
            yield self.scene(kinds[i % len(kinds)], scene_seed(seed, i), masks=masks)

    # -------------------------------------------------------------------------------- video

    def render_video(self, kind: str, seed: int, seconds: float, fps: float = 30.0) -> SceneVideo:
        """A short clip of one scene layout: the instruments drift and sway a little from frame to
        frame (boxes per frame), and a fresh 1 s phrase of the same heard classes plays every second."""
        if kind not in KINDS:
            raise SynthError(f"unknown scene kind {kind!r}; expected one of {', '.join(KINDS)}")
        if seconds <= 0 or fps <= 0:
            raise SynthError(f"seconds and fps must be > 0, got {seconds}, {fps}")
        cfg = self.config
        rng = np.random.default_rng([KINDS.index(kind), int(seed), 1])
        items, heard, mosaic = self._plan(kind, rng)
        size = cfg.image_size
        tiles = self._mosaic_tiles(items, size, rng) if mosaic else [self._tile(items, 0, 0, size, size, rng)]
        n_frames = max(1, int(round(seconds * fps)))
        frames, objects = [], []
        for i in range(n_frames):
            img, objs = self._draw(tiles, size, size, t=i / fps)
            frames.append(img)
            objects.append(objs)
        n_sec = int(math.ceil(seconds))
        audio = np.concatenate(
            [self.render_audio(heard, int(v)) for v in rng.integers(0, 2**63 - 1, size=n_sec)]
        )[: int(round(seconds * cfg.sample_rate))]
        return SceneVideo(kind, int(seed), float(fps), frames, audio, objects, tuple(heard))


def scene_seed(seed: int, index: int) -> int:
    """The seed of item ``index`` of a stream/split with base ``seed`` (non-negative, < 2**63)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _check_kinds(kinds: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    kinds = tuple(kinds)
    if not kinds:
        raise SynthError("no scene kinds given")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SynthError(f"unknown scene kind(s) {bad}; expected some of {', '.join(KINDS)}")
    return kinds


# ------------------------------------------------------------------------------------------------
# writing


def write_split(
    root: str | os.PathLike,
    kinds: Sequence[str] | str,
    n: int,
    seed: int,
    image_size: int = 224,
    *,
    force: bool = False,
    synth: SynthMusic | None = None,
    log=None,
) -> Path:
    """Write ``n`` scenes (kinds round-robin, item i seeded by ``scene_seed(seed, i)``) as an
    AV-COCO folder: frames/NNNNNN.png, audio/NNNNNN.flac, annotations.json (scene tag = kind).

    Written into a temporary sibling folder and renamed, so ``root`` is never half-written. A
    non-empty ``root`` is an error unless ``force`` (then it is replaced)."""
    kinds = _check_kinds(kinds)
    if n <= 0:
        raise SynthError(f"n must be > 0, got {n}")
    root = Path(root)
    if root.exists():
        if not root.is_dir():
            raise OutputExistsError(f"{root} exists and is not a folder")
        if any(root.iterdir()) and not force:
            raise OutputExistsError(f"{root} is not empty; pass force=True (--force) to replace it")
    if synth is None:
        synth = SynthMusic(SynthConfig(image_size=image_size))
    elif synth.config.image_size != image_size:
        raise SynthError(f"synth renders {synth.config.image_size}px images but image_size={image_size}")
    with atomic_dir(root) as tmp:
        (tmp / "frames").mkdir()
        (tmp / "audio").mkdir()
        images = []
        width = len(str(n)) if n >= 1_000_000 else 6
        for i, s in enumerate(synth.stream(kinds, seed)):
            if i >= n:
                break
            stem = f"{i + 1:0{width}d}"
            frame, audio = f"frames/{stem}.png", f"audio/{stem}.flac"
            if not cv2.imwrite(str(tmp / frame), cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {tmp / frame}")
            save_audio(tmp / audio, s.audio, synth.config.sample_rate)
            images.append(AVImage(
                id=i + 1, file_name=frame, width=s.image.shape[1], height=s.image.shape[0], audio=audio,
                audio_offset=0.0, audio_duration=synth.config.duration, scene=s.kind,
                objects=tuple(AVObject(tuple(o.bbox), o.category, o.sounding) for o in s.objects),
                extra={"seed": s.seed, "audio_classes": list(s.audio_classes),
                       **({"sources": s.sources} if s.sources else {})},
            ))
            if log is not None and (i + 1) % 500 == 0:
                log(f"{i + 1}/{n}")
        write_avcoco(tmp, CLASSES, images,
                     description=f"SynthMUSIC kinds={','.join(kinds)} n={n} seed={seed} size={image_size}")
    return root


#: Base-seed offsets of the splits that write_holdout_splits writes (train keeps the given seed).
HOLDOUT_SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}


def write_holdout_splits(
    root: str | os.PathLike,
    kinds: Sequence[str] | str,
    n_train: int,
    n_eval: int,
    seed: int,
    image_size: int = 224,
    *,
    train: SynthMusic,
    evaluate: SynthMusic,
    force: bool = False,
) -> list[Path]:
    """``root/train`` from the ``train`` generator (a hold-out's training side) and ``root/val``,
    ``root/test`` from ``evaluate`` (the held-out source alone); each split seeded by
    ``seed + HOLDOUT_SPLIT_SEEDS[name]``."""
    if train.config.split_role != "train" or evaluate.config.split_role != "eval":
        raise SynthError("write_holdout_splits needs a split_role='train' and a split_role='eval' generator")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, synth, n in (("train", train, n_train), ("val", evaluate, n_eval), ("test", evaluate, n_eval)):
        out.append(write_split(root / name, kinds, n, seed + HOLDOUT_SPLIT_SEEDS[name], image_size,
                               force=force, synth=synth))
    return out


def write_scene_video(
    path: str | os.PathLike,
    kind: str,
    seed: int,
    seconds: float,
    fps: float = 30.0,
    *,
    synth: SynthMusic | None = None,
) -> Path:
    """An mp4 (H.264 + AAC) of ``SynthMusic.render_video(kind, seed, seconds, fps)``."""
    from avsl_edge.media import write_video

    synth = synth if synth is not None else SynthMusic()
    v = synth.render_video(kind, seed, seconds, fps)
    return write_video(path, v.frames, fps, audio=v.audio, sample_rate=synth.config.sample_rate)


def contact_sheet(scenes: Iterable[Scene], path: str | os.PathLike, cols: int = 6, tile: int = 224) -> Path:
    """A PNG grid of scenes: green boxes on sounding objects, red on silent ones, class labels, and
    per tile the scene kind and what is heard."""
    scenes = list(scenes)
    if not scenes:
        raise SynthError("contact_sheet: no scenes")
    cols = max(1, min(cols, len(scenes)))
    rows = math.ceil(len(scenes) / cols)
    head = 16
    pad = 4
    sheet = np.full((rows * (tile + head + pad) + pad, cols * (tile + pad) + pad, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, s in enumerate(scenes):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (tile + pad), pad + r * (tile + head + pad)
        h, w = s.image.shape[:2]
        k = tile / max(h, w)
        img = cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR)
        img = cv2.resize(img, (int(round(w * k)), int(round(h * k))),
                         interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        for o in s.objects:
            bx, by, bw, bh = (v * k for v in o.bbox)
            colour = (0, 190, 0) if o.sounding else (0, 0, 230)
            p0 = (int(round(bx)), int(round(by)))
            p1 = (int(round(bx + bw)) - 1, int(round(by + bh)) - 1)
            cv2.rectangle(img, p0, p1, colour, 1)
            (tw, th), _ = cv2.getTextSize(o.category, font, 0.35, 1)
            ty = p0[1] + th + 2 if p0[1] + th + 2 < img.shape[0] else p1[1] - 2
            cv2.rectangle(img, (p0[0], ty - th - 2), (p0[0] + tw + 2, ty + 2), colour, -1)
            cv2.putText(img, o.category, (p0[0] + 1, ty), font, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        sheet[y0 + head : y0 + head + img.shape[0], x0 : x0 + img.shape[1]] = img
        off = s.offscreen_classes
        heard = "+".join(s.audio_classes) or "-"
        label = f"{s.kind}: hears {heard}" + (" (off-screen)" if off else "")
        cv2.putText(sheet, label[:48], (x0, y0 + head - 4), font, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    with atomic_path(path.with_suffix(path.suffix or ".png")) as tmp:
        if not cv2.imwrite(str(tmp), sheet):
            raise OSError(f"could not write {path}")
    return path.with_suffix(path.suffix or ".png")


# ------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.data.synth",
        description="Generate SynthMUSIC scenes: an AV-COCO folder, a contact sheet and/or a short video.",
    )
    p.add_argument("--out", type=Path, help="AV-COCO output folder (written atomically)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated scene kinds (default: all of {','.join(KINDS)})")
    p.add_argument("--n", type=int, default=24, help="number of scenes (default 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--contact-sheet", type=Path, metavar="PNG", help="also draw the scenes into this PNG grid")
    p.add_argument("--cols", type=int, default=6, help="contact sheet columns")
    p.add_argument("--video", type=Path, metavar="PATH", help="also write an mp4 of one scene")
    p.add_argument("--video-kind", default=None, help="scene kind of the video (default: the first of --kinds)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--pack", choices=PACKS, default="v1",
                   help="asset pack: v1 (one look and sound per class, the default) or v2 (many sources)")
    p.add_argument("--hold-out-pictures", metavar="SOURCE", default=None,
                   help="v2: write --out/train without this picture source (or comma-separated sources) and --out/val, --out/test with it alone")
    p.add_argument("--hold-out-sounds", metavar="SOURCE", default=None,
                   help="v2: the same for a sound source")
    p.add_argument("--n-eval", type=int, default=None,
                   help="with a hold-out: scenes in each of val and test (default --n // 4, at least 1)")
    args = p.parse_args(argv)
    try:
        kinds = _check_kinds(args.kinds)
        if args.n <= 0:
            raise SynthError(f"--n must be > 0, got {args.n}")
        hold = {"hold_out_pictures": args.hold_out_pictures, "hold_out_sounds": args.hold_out_sounds}
        synth = SynthMusic(SynthConfig(image_size=args.size, pack=args.pack, **hold))
        held_out = any(v is not None for v in hold.values())
        if held_out and args.out is None:
            raise SynthError("--hold-out-pictures/--hold-out-sounds write train/val/test splits: give --out")
        t0 = time.perf_counter()
        scenes = []
        for i, s in enumerate(synth.stream(kinds, args.seed)):
            if i >= args.n:
                break
            scenes.append(s)
        dt = time.perf_counter() - t0
        print(f"generated {args.n} scenes ({','.join(kinds)}, {args.size}px) in {dt:.2f} s: "
              f"{args.n / dt:.1f} scenes/s")
        if args.out is not None and held_out:
            n_eval = args.n_eval if args.n_eval is not None else max(1, args.n // 4)
            evaluate = SynthMusic(SynthConfig(image_size=args.size, pack=args.pack, split_role="eval", **hold))
            paths = write_holdout_splits(args.out, kinds, args.n, n_eval, args.seed, args.size, force=args.force,
                                         train=synth, evaluate=evaluate)
            print(f"wrote {', '.join(str(x) for x in paths)} ({args.n} train, {n_eval} val, {n_eval} test scenes; "
                  f"held out: {', '.join(f'{k}={v}' for k, v in hold.items() if v is not None)})")
        elif args.out is not None:
            t0 = time.perf_counter()
            write_split(args.out, kinds, args.n, args.seed, args.size, force=args.force, synth=synth)
            dt = time.perf_counter() - t0
            print(f"wrote {args.out} ({args.n} scenes, {args.n / dt:.1f} scenes/s with PNG+FLAC writing)")
        if args.contact_sheet is not None:
            contact_sheet(scenes[:96], args.contact_sheet, cols=args.cols)
            print(f"wrote {args.contact_sheet}")
        if args.video is not None:
            kind = args.video_kind or kinds[0]
            write_scene_video(args.video, kind, args.seed, args.seconds, args.fps, synth=synth)
            print(f"wrote {args.video} ({kind}, {args.seconds:g} s at {args.fps:g} fps)")
    except (ValueError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
