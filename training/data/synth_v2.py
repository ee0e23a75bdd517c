"""SynthMUSIC v2 scenes: the v2 asset pack (many art and sound sources) and stronger augmentation.

Selected by ``SynthConfig(pack="v2")`` (``SynthMusic`` then builds a ``SynthMusicV2``); v1 stays
the default and byte-identical. The same scene kinds, the same determinism (same kind and seed,
same bytes), plus:

- each object is one random look of its class (its source recorded), painted when the look is
  a silhouette; scale down to small objects, rotation, perspective, colour/lighting, greyscale,
  colour swaps, texture and posterising (shape cues over colour cues);
- objects may be cut by the frame edge and partly hidden by clutter; boxes always come from the
  object's own transformed alpha (``_ALPHA_BOX``), inside the frame;
- photographs as backgrounds beside the procedural ones; whole-frame blur, JPEG and sensor noise;
- audio: one sound source per heard class and scene, tempo and level variation, synthesised
  room reverberation, several noise types at an SNR that keeps every heard class audible;
- hold-outs: ``hold_out_pictures`` / ``hold_out_sounds`` name a source (or several, comma-separated:
  the four Fluent styles share one design) that a ``split_role="train"`` generator never uses and
  that an ``"eval"`` generator uses alone.

``Scene.sources`` says which sources a scene used; ``write_split`` stores it in AV-COCO extra keys.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from avsl_edge.errors import UserError
from training.data.assets import AssetsV2, Look, load_assets_v2
from training.data.classes import CLASSES, MONOPHONIC
from training.data.synth import (
    KINDS,
    Scene,
    SceneObject,
    SynthConfig,
    SynthError,
    SynthMusic,
    _ALPHA_BOX,
    _pasted_object,
    _layout,
    _paste,
    _Placement,
    _premultiply,
    _rand_colour,
    _Tile,
)

NOISE_TYPES: tuple[str, ...] = ("coloured", "hum", "babble", "crackle")
_SOLID_TRIES = 8  # draws of looks and layout per tile before a tile is given up


def _has_solid_core(sprite: np.ndarray) -> bool:
    """Whether some 3x3 patch of the sprite is at least the box alpha: such a patch survives the
    rotation and bilinear resampling of the paste, so the drawn object always gets a box."""
    solid = (sprite[..., 3] >= _ALPHA_BOX).astype(np.uint8)
    return bool(cv2.erode(solid, np.ones((3, 3), np.uint8), borderValue=0).any())


def gentle(config: SynthConfig) -> SynthConfig:
    """``config`` with v1's geometry and clean sound on v2's sources: objects at v1's scales and
    rotation, no cuts, occlusion, restyling, photographs, blur, sensor noise, JPEG, tempo change or
    room, v1's SNR range. The easy scenes of the ``data.easy_share`` curriculum (docs/method.md §6)."""
    return dataclasses.replace(
        config, solo_scale_v2=config.solo_scale, pair_scale_v2=config.pair_scale,
        rotation_deg_v2=config.rotation_deg, perspective=0.0, edge_cut_prob=0.0, occlusion_prob=0.0,
        greyscale_prob=0.0, colour_swap_prob=0.0, texture_prob=0.0, posterize_prob=0.0,
        photo_background_prob=0.0, blur_prob=0.0, sensor_noise_prob=0.0, jpeg_prob=0.0,
        tempo=(1.0, 1.0), reverb_prob=0.0, snr_db_v2=config.snr_db)


class HoldOutError(UserError, ValueError):
    """A hold-out names a source the pack lacks, or leaves no class to draw."""


def held_out(spec: str | None) -> frozenset[str]:
    """The source ids of a hold-out: one id or several, comma-separated (a family of styles)."""
    return frozenset(s.strip() for s in (spec or "").split(",") if s.strip())


def _filtered(items, spec: str | None, role: str):
    held = held_out(spec)
    if not held:
        return tuple(items)
    keep = (lambda s: s not in held) if role == "train" else (lambda s: s in held)
    return tuple(x for x in items if keep(x.source))


class SynthMusicV2(SynthMusic):
    """The v2 generator. ``SynthMusic(SynthConfig(pack="v2"))`` returns one."""

    def __init__(self, config: SynthConfig = SynthConfig(pack="v2"), assets: AssetsV2 | None = None):
        self.config = config
        self.assets = assets if assets is not None else load_assets_v2()
        a = self.assets
        if a.sample_rate != config.sample_rate:
            raise SynthError(f"asset pack {a.root} is at {a.sample_rate} Hz but the config asks for {config.sample_rate} Hz")
        for what, sid, kind in (("hold_out_pictures", config.hold_out_pictures, "picture"),
                                ("hold_out_sounds", config.hold_out_sounds, "sound")):
            for one in sorted(held_out(sid)):
                if one not in a.sources_of(kind):
                    raise HoldOutError(f"SynthConfig.{what}: unknown {kind} source {one!r}; "
                                       f"the pack has {', '.join(a.sources_of(kind))}")
        role = config.split_role
        self._looks = {c: _filtered(b.looks, config.hold_out_pictures, role) for c, b in a.classes.items()}
        self._sounds = {c: _filtered(b.sounds, config.hold_out_sounds, role) for c, b in a.classes.items()}
        self.classes = tuple(c for c in CLASSES if self._looks[c] and self._sounds[c])
        if len(self.classes) < 4:
            raise HoldOutError(f"only {len(self.classes)} classes ({', '.join(self.classes)}) have pictures and "
                               f"sounds under hold_out_pictures={config.hold_out_pictures!r}, "
                               f"hold_out_sounds={config.hold_out_sounds!r} ({role}); scenes need 4")
        self._look_pm = {c: tuple(_premultiply(x.sprite) for x in v) for c, v in self._looks.items()}
        clutter = _filtered(a.clutter, config.hold_out_pictures, "train")  # held-out art never in training frames
        if role == "eval" and config.hold_out_pictures is not None:
            clutter = _filtered(a.clutter, config.hold_out_pictures, "eval") or clutter
        self._clutter_looks: tuple[Look, ...] = clutter
        self._clutter_pm = tuple(_premultiply(x.sprite) for x in clutter)
        # unit-RMS clips, grouped by source
        self._clips: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
        for c, sounds in self._sounds.items():
            by: dict[str, list[np.ndarray]] = {}
            for s in sounds:
                rms = float(np.sqrt(np.mean(s.audio.astype(np.float64) ** 2)))
                by.setdefault(s.source, []).append(s.audio / np.float32(rms))
            self._clips[c] = {k: tuple(v) for k, v in by.items()}
        self._photos = tuple(b.image.astype(np.float32) for b in a.backgrounds)
        self._no_clutter = dataclasses.replace(config, clutter=(0, 0))
        self._shape_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -------------------------------------------------------------------------------- audio

    def render_audio(self, classes, seed: int, duration: float | None = None) -> np.ndarray:
        """A clip mixing the given classes, each from one of its sound sources, in a random room
        over one of several noise types."""
        audio, _ = self._render_audio(classes, seed, duration)
        return audio

    def render_stems(self, classes, seed: int, duration: float | None = None) -> tuple[np.ndarray, dict, np.ndarray]:
        """(mix, {class: its part of the mix}, noise part): mix == sum of the parts + noise, as
        ``render_audio(classes, seed)`` renders it (the parts carry the room and the final level)."""
        audio, info = self._render_audio(classes, seed, duration, stems=True)
        return audio, info["stems"], info["noise_part"]

    def _render_audio(self, classes, seed: int, duration: float | None = None,
                      stems: bool = False) -> tuple[np.ndarray, dict]:
        cfg = self.config
        for c in classes:
            self._check_class(c)
        if len(set(classes)) != len(classes):
            raise SynthError(f"render_audio: repeated class in {list(classes)}")
        rng = np.random.default_rng(seed)
        sr = cfg.sample_rate
        n = int(round((cfg.duration if duration is None else duration) * sr))
        used: dict[str, str] = {}
        parts: dict[str, np.ndarray] = {}
        for c in classes:
            srcs = sorted(self._clips[c])
            src = srcs[int(rng.integers(len(srcs)))]
            used[c] = src
            track = self._track(c, self._clips[c][src], rng, n)
            parts[c] = track * np.float32(10 ** (rng.uniform(*cfg.class_gain_db) / 20))
        if classes and rng.random() < cfg.reverb_prob:
            ir = self._room(rng)
            parts = {c: _convolve(x, ir) for c, x in parts.items()}
        mix = np.zeros(n, np.float32)
        for x in parts.values():
            mix += x
        noise_kind = NOISE_TYPES[int(rng.integers(len(NOISE_TYPES)))]
        noise = self._noise_v2(noise_kind, rng, n)
        if classes:
            sig = float(np.sqrt(np.mean(mix.astype(np.float64) ** 2)))
            noise *= np.float32(sig / 10 ** (rng.uniform(*cfg.snr_db_v2) / 20))
            out = mix + noise
            gain = np.float32(rng.uniform(*cfg.peak) / max(float(np.max(np.abs(out))), 1e-9))
            out *= gain
        else:
            gain = np.float32(10 ** (rng.uniform(-55.0, -45.0) / 20))
            out = noise * gain
        info = {"sounds": used, "noise": noise_kind}
        if stems:
            info["stems"] = {c: x * gain for c, x in parts.items()}
            info["noise_part"] = noise * gain
        return out.astype(np.float32, copy=False), info

    def _track(self, c: str, clips, rng: np.random.Generator, n: int) -> np.ndarray:
        """Clips one after another (overlapping for polyphonic classes), at a random tempo and level."""
        cfg = self.config
        sr = cfg.sample_rate
        track = np.zeros(n, np.float32)
        rate = rng.uniform(*cfg.tempo)  # > 1: faster (and higher), by resampling
        density = rng.uniform(*cfg.notes_per_second)
        t = int(rng.uniform(0.0, 0.2) * n)
        if rng.random() < 0.3:
            t = -int(rng.uniform(0.0, 0.5) * sr)  # entering mid-phrase
        min_len = int(cfg.min_note_seconds * sr)
        first = True
        while t < n:
            x = clips[int(rng.integers(len(clips)))]
            m = max(2, int(len(x) / rate))
            gap = int(sr / density * rng.uniform(0.5, 1.5))
            m_used = min(m, n - max(t, 0) - min(t, 0))  # resample only what lands in the clip
            seg = np.interp(np.arange(m_used) * (len(x) / m), np.arange(len(x)), x).astype(np.float32)
            length = len(seg)
            if c in MONOPHONIC:
                length = min(length, max(min_len, gap + int(0.01 * sr)))
            seg = seg[:length] * np.float32(10 ** (rng.uniform(*cfg.note_gain_db) / 20))
            fo = min(length, int(rng.uniform(0.01, 0.05) * sr))
            if fo > 1:
                seg[-fo:] *= np.linspace(1.0, 0.0, fo, dtype=np.float32)
            start = t
            if start < 0:
                seg, start = seg[-start:], 0
                fi = min(len(seg), int(0.005 * sr))
                if fi > 1:
                    seg[:fi] *= np.linspace(0.0, 1.0, fi, dtype=np.float32)
            end = min(n, start + len(seg))
            if end > start:
                track[start:end] += seg[: end - start]
            # phrases and recordings last long: the next clip follows them, notes follow the density
            t += max(gap, int(0.8 * len(seg))) if not first or t >= 0 else max(gap, len(seg) + t)
            first = False
        rms = float(np.sqrt(np.mean(track.astype(np.float64) ** 2)))
        return track / np.float32(max(rms, 1e-9))

    def _room(self, rng: np.random.Generator) -> np.ndarray:
        """A synthetic room impulse response: direct path, sparse early reflections and an
        exponentially decaying noise tail (RT60 drawn from the config)."""
        sr = self.config.sample_rate
        rt60 = rng.uniform(*self.config.rt60)
        m = int(min(rt60 / 2, 0.5) * sr)  # the tail past -30 dB is left out (cheaper, inaudible in the mix)
        t = np.arange(m) / sr
        ir = rng.standard_normal(m) * np.exp(-6.9 * t / rt60)
        ir[: int(0.004 * sr)] = 0.0
        for _ in range(6):
            ir[int(rng.uniform(0.003, 0.04) * sr)] += rng.uniform(-0.7, 0.7)
        ir *= rng.uniform(0.2, 0.8) / max(float(np.sqrt(np.sum(ir**2))), 1e-9)
        ir[0] = 1.0
        return ir

    def _shapes(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Per clip length: log(f / 1 kHz) (f >= 20 Hz) and the speech-band gain of babble noise."""
        if n not in self._shape_cache:
            f = np.fft.rfftfreq(n, 1.0 / self.config.sample_rate)
            logf = np.log(np.maximum(f, 20.0) / 1000.0)
            speech = np.exp(-0.5 * (np.log(np.maximum(f, 1.0) / 500.0) / 0.6) ** 2)
            self._shape_cache[n] = (logf, speech)
        return self._shape_cache[n]

    def _noise_v2(self, kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
        sr = self.config.sample_rate
        if kind == "coloured":  # white .. brown
            logf, _ = self._shapes(n)
            spec = np.fft.rfft(rng.standard_normal(n))
            spec *= np.exp(logf * (-rng.uniform(0.0, 2.0) / 2))
            x = np.fft.irfft(spec, n)
        elif kind == "hum":  # mains hum and its harmonics, with a little hiss
            f0 = 50.0 if rng.random() < 0.5 else 60.0
            block = int(round(sr / f0 * (1 if f0 == 50.0 else 3)))  # a whole number of periods (16 kHz)
            t = np.arange(block) / sr
            k = np.arange(1, 8)[:, None]
            amp, ph = rng.uniform(0.2, 1.0, (7, 1)) / k, rng.uniform(0, 6.3, (7, 1))
            x = np.resize((amp * np.sin(2 * np.pi * f0 * k * t + ph)).sum(axis=0), n)
            x = x + 0.1 * rng.standard_normal(n)
        elif kind == "babble":  # speech-band noise with a syllable-rate envelope
            x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * self._shapes(n)[1], n)
            env = cv2.resize(rng.uniform(0.2, 1.0, (1, max(2, int(n / sr * 5)))).astype(np.float32), (n, 1),
                             interpolation=cv2.INTER_CUBIC)[0]
            x = x * np.maximum(env, 0.05)
        else:  # crackle: sparse clicks over faint hiss
            x = 0.05 * rng.standard_normal(n)
            k = int(rng.integers(5, 40))
            x[rng.integers(0, n, k)] += rng.uniform(-1, 1, k) * 10
        x = np.asarray(x, np.float32)
        return x / np.float32(max(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1e-9))

    # -------------------------------------------------------------------------------- image

    def _sprite_v2(self, pm: np.ndarray, look: Look | None, long_side: float, rng: np.random.Generator,
                   style: bool = True, warp: bool = True) -> np.ndarray:
        """Scaled, painted (silhouettes), style-randomised, colour-jittered, maybe mirrored sprite."""
        cfg = self.config
        h, w = pm.shape[:2]
        s = long_side / max(h, w)
        nw, nh = max(2, int(round(w * s))), max(2, int(round(h * s)))
        out = cv2.resize(pm, (nw, nh), interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_LINEAR)
        a = out[..., 3:4]
        if look is not None and look.monochrome:  # paint the silhouette: flat colour or a gradient
            c1, c2 = _rand_colour(rng, sat=(0.0, 0.9), val=(0.05, 0.9)), _rand_colour(rng, sat=(0.0, 0.9), val=(0.05, 0.9))
            g = np.linspace(0.0, 1.0, nh, dtype=np.float32)[:, None, None] * float(rng.random() < 0.5)
            out[..., :3] = (c1 + g * (c2 - c1)) * a
        if style:
            r = rng.random()
            if r < cfg.greyscale_prob:
                out[..., :3] = (out[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            elif r < cfg.greyscale_prob + cfg.colour_swap_prob:
                out[..., :3] = out[..., :3][..., rng.permutation(3)]
            elif r < cfg.greyscale_prob + cfg.colour_swap_prob + cfg.texture_prob:
                g = int(rng.integers(3, 12))
                tex = cv2.resize(rng.uniform(0.55, 1.25, (g, g, 3)).astype(np.float32), (nw, nh),
                                 interpolation=cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_CUBIC)
                out[..., :3] *= tex
            elif r < cfg.greyscale_prob + cfg.colour_swap_prob + cfg.texture_prob + cfg.posterize_prob:
                levels = float(rng.integers(2, 5))
                straight = out[..., :3] / np.maximum(a, 1e-6)
                out[..., :3] = np.round(straight / 255.0 * levels) / levels * 255.0 * a
        out = cv2.transform(out, self._colour_matrix(rng))
        np.clip(out[..., :3], 0.0, None, out=out[..., :3])
        np.minimum(out[..., :3], out[..., 3:4] * 255.0, out=out[..., :3])
        if rng.random() < cfg.flip_prob:
            out = np.ascontiguousarray(out[:, ::-1])
        if warp and cfg.perspective > 0:  # perspective: jitter the four corners, warp into a padded canvas
            d = cfg.perspective * max(nw, nh)
            src = np.float32([[0, 0], [nw, 0], [nw, nh], [0, nh]])
            dst = src + rng.uniform(-d, d, (4, 2)).astype(np.float32)
            dst -= dst.min(axis=0)
            size = (int(math.ceil(dst[:, 0].max())) + 1, int(math.ceil(dst[:, 1].max())) + 1)
            out = cv2.warpPerspective(out, cv2.getPerspectiveTransform(src, dst), size, flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
        return np.ascontiguousarray(out, dtype=np.float32)

    def _tile(self, items, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> _Tile:
        cfg = self.config
        side = min(w, h)
        scale = cfg.solo_scale_v2 if len(items) == 1 else cfg.pair_scale_v2
        cut = rng.random() < cfg.edge_cut_prob
        outside = cfg.max_outside_v2 if cut else cfg.max_outside
        # Thin line art shrunk to a few pixels averages out below the box alpha: such an object would
        # be labelled in view with no pixel of it drawn solid. Draw other looks (and layout) instead.
        for _attempt in range(_SOLID_TRIES):
            chosen = [int(rng.integers(len(self._looks[c]))) for c, _ in items]
            sizes = [self._looks[c][j].sprite.shape[:2] for (c, _), j in zip(items, chosen)]
            layout = _layout(sizes, scale, cfg.rotation_deg_v2, outside, w, h, cfg.max_overlap, rng, cfg.min_object_px)
            boxes = [b[4] for b in layout]
            placements: list[_Placement] = []
            for (c, sounding), j, (long_side, ang, cx, cy, _) in zip(items, chosen, layout):
                motion = (*rng.uniform(0.3, 1.0, 2) * cfg.motion * side, *rng.uniform(0.2, 0.8, 2),
                          *rng.uniform(0, 2 * math.pi, 2), rng.uniform(0, 4.0), rng.uniform(0.2, 0.6))
                look = self._looks[c][j]
                sprite = self._sprite_v2(self._look_pm[c][j], look, long_side, rng)
                placements.append(_Placement(c, sounding, sprite, cx, cy, ang, motion, source=look.source))
            if all(_has_solid_core(p.sprite) for p in placements):
                break
        else:
            raise SynthError(f"no look of {[c for c, _ in items]} stays solid at {w}x{h} px after "
                             f"{_SOLID_TRIES} draws; raise min_object_px")
        background, bg_source, clutter_src = self._background_v2(rng, w, h, boxes)
        tile = _Tile(x, y, background, placements)
        tile.occluders = self._occluders(rng, placements, side, clutter_src)  # type: ignore[attr-defined]
        tile.sources = {"background": bg_source, "clutter": clutter_src}  # type: ignore[attr-defined]
        tile.camera_seed = int(rng.integers(0, 2**63 - 1))  # type: ignore[attr-defined]
        return tile

    def _occluders(self, rng: np.random.Generator, placements, side: int, used: list[str]) -> list[_Placement]:
        """Clutter sprites over part of some instruments (drawn after them: partial occlusion)."""
        cfg = self.config
        out = []
        for p in placements:
            if rng.random() >= cfg.occlusion_prob:
                continue
            j = int(rng.integers(len(self._clutter_pm)))
            ph, pw = p.sprite.shape[:2]
            long_side = rng.uniform(0.3, 0.6) * max(ph, pw)
            sprite = self._sprite_v2(self._clutter_pm[j], self._clutter_looks[j], long_side, rng)
            ang = rng.uniform(0, 2 * math.pi)
            r = 0.5 * max(ph, pw) * rng.uniform(0.55, 0.85)  # near the rim: covers a part, not the whole
            out.append(_Placement("", False, sprite, p.cx + r * math.cos(ang), p.cy + r * math.sin(ang),
                                  rng.uniform(-20, 20), p.motion, source=self._clutter_looks[j].source))
            used.append(self._clutter_looks[j].source)
        return out

    def _background_v2(self, rng: np.random.Generator, w: int, h: int, keep_clear):
        cfg = self.config
        used: list[str] = []
        if self._photos and rng.random() < cfg.photo_background_prob:
            photo = self._photos[int(rng.integers(len(self._photos)))]
            ph, pw = photo.shape[:2]
            k = rng.uniform(0.35, 1.0) * min(ph, pw)
            cw, ch = int(k * w / max(w, h)), int(k * h / max(w, h))
            x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
            bg = cv2.resize(photo[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_AREA)
            if rng.random() < 0.5:
                bg = bg[:, ::-1]
            bg = np.ascontiguousarray(bg * np.float32(rng.uniform(0.6, 1.2)))
            self._clutter_v2(bg, rng, keep_clear, used)
            np.clip(bg, 0, 255, out=bg)
            return bg, "wallpapers", used
        # the procedural backgrounds of v1, with their flat shapes but without v1's clutter (v2's next)
        self.config = self._no_clutter
        try:
            bg = SynthMusic._background(self, rng, w, h, keep_clear)
        finally:
            self.config = cfg
        self._clutter_v2(bg, rng, keep_clear, used)
        np.clip(bg, 0, 255, out=bg)
        return bg, "procedural", used

    def _clutter_v2(self, bg: np.ndarray, rng: np.random.Generator, keep_clear, used: list[str]) -> None:
        cfg = self.config
        h, w = bg.shape[:2]
        side = min(w, h)
        for _ in range(int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))):
            j = int(rng.integers(len(self._clutter_pm)))
            src = self._clutter_pm[j]
            long_side = rng.uniform(*cfg.clutter_scale) * side
            k = long_side / max(src.shape[:2])
            cw, ch = src.shape[1] * k, src.shape[0] * k
            for _try in range(10):
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                if self._free((cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2), keep_clear):
                    break
            else:
                continue
            sprite = self._sprite_v2(src, self._clutter_looks[j], long_side, rng, style=False, warp=False)
            _paste(bg, sprite, _affine_v2(sprite, cx, cy, rng.uniform(-15, 15)))
            used.append(self._clutter_looks[j].source)

    def _draw(self, tiles, width: int, height: int, t: float | None = None, masks: bool = False):
        canvas = np.empty((height, width, 3), np.float32)
        objects: list[SceneObject] = []
        for tile in tiles:
            th, tw = tile.background.shape[:2]
            view = canvas[tile.y : tile.y + th, tile.x : tile.x + tw]
            view[:] = tile.background
            for group in (tile.placements, getattr(tile, "occluders", [])):
                for p in group:
                    m = _affine_v2(p.sprite, p.cx, p.cy, p.angle)
                    if t is not None:
                        ax, ay, fx, fy, px, py, aa, fa = p.motion
                        m = _affine_v2(p.sprite, p.cx + ax * math.sin(2 * math.pi * fx * t + px),
                                       p.cy + ay * math.sin(2 * math.pi * fy * t + py),
                                       p.angle + aa * math.sin(2 * math.pi * fa * t + px + py))
                    res = _paste(view, p.sprite, m)
                    if not p.category:
                        continue  # an occluder: no box
                    objects.append(_pasted_object(p.category, p.sounding, res, tile, (height, width), masks,
                                                  source=p.source))
        quality = self._camera(canvas, np.random.default_rng(getattr(tiles[0], "camera_seed", 0)))
        image = (canvas + 0.5).astype(np.uint8)
        if quality is not None:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else image
        return image, objects

    def _camera(self, canvas: np.ndarray, rng: np.random.Generator) -> int | None:
        """Camera effects on the whole frame: blur, sensor noise (shot + read); the JPEG quality to
        encode the uint8 frame with (None: no JPEG)."""
        cfg = self.config
        if rng.random() < cfg.blur_prob:
            if rng.random() < 0.5:
                canvas[:] = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 1.6))
            else:  # motion blur along a random direction
                k = int(rng.integers(3, 8))
                ker = np.zeros((k, k), np.float32)
                ker[k // 2] = 1.0 / k
                ker = cv2.warpAffine(ker, cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), rng.uniform(0, 180), 1.0), (k, k))
                canvas[:] = cv2.filter2D(canvas, -1, ker / max(float(ker.sum()), 1e-6))
        sigma = rng.uniform(*cfg.sensor_noise) if rng.random() < cfg.sensor_noise_prob else 0.0
        if sigma > 0.5:  # read noise plus shot noise that grows with the brightness (one grey field: cheap)
            h, w = canvas.shape[:2]
            lum = canvas[..., 1:2] * np.float32(1.0 / 255.0)
            canvas += rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(sigma) * (0.5 + lum)
        np.clip(canvas, 0, 255, out=canvas)
        return int(rng.integers(*cfg.jpeg_quality)) if rng.random() < cfg.jpeg_prob else None

    # -------------------------------------------------------------------------------- scenes

    def scene(self, kind: str, seed: int, masks: bool = False) -> Scene:
        """As ``SynthMusic.scene``, plus ``Scene.sources``: the picture source of every object (in
        object order), the sound source of every heard class, the background and clutter sources."""
        if kind not in KINDS:
            raise SynthError(f"unknown scene kind {kind!r}; expected one of {', '.join(KINDS)}")
        if seed < 0:
            raise SynthError(f"seed must be >= 0, got {seed}")
        rng = np.random.default_rng([KINDS.index(kind), int(seed)])
        items, heard, mosaic = self._plan(kind, rng)
        image_seed, audio_seed = (int(v) for v in rng.integers(0, 2**63 - 1, size=2))
        size = self.config.image_size
        irng = np.random.default_rng(image_seed)
        tiles = self._mosaic_tiles(items, size, irng) if mosaic else [self._tile(items, 0, 0, size, size, irng)]
        image, objects = self._draw(tiles, size, size, masks=masks)
        audio, heard_src = self._render_audio(heard, audio_seed)
        sources = {
            "pack": "v2",
            "pictures": [o.source for o in objects],
            "sounds": heard_src["sounds"],
            "noise": heard_src["noise"],
            "backgrounds": [tl.sources["background"] for tl in tiles],
            "clutter": sorted({s for tl in tiles for s in tl.sources["clutter"]}),
        }
        return Scene(kind, int(seed), image, audio, objects, tuple(heard), sources=sources)


def _convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    need = len(x) + len(ir)
    size = min(s for s in (1 << int(math.ceil(math.log2(need))), 3 << int(math.ceil(math.log2(need / 3)))) if s >= need)
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)].astype(np.float32)


def _affine_v2(sprite: np.ndarray, cx: float, cy: float, angle: float) -> np.ndarray:
    h, w = sprite.shape[:2]
    c = ((w - 1) / 2.0, (h - 1) / 2.0)
    m = cv2.getRotationMatrix2D(c, angle, 1.0)
    m[0, 2] += cx - c[0]
    m[1, 2] += cy - c[1]
    return m

