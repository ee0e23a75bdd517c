"""Read the committed SynthMUSIC asset pack (built once by ``training.data.build_assets``).

    assets = load_assets()                       # the pack under training/data/assets/synthmusic
    bank = assets.classes["violin"]
    bank.notes[0]                                # float32 mono note at assets.sample_rate
    bank.band_hz, bank.centroid_hz, bank.sprite  # measured spectrum, RGBA uint8 sprite

Torch-free; needs numpy, OpenCV and soundfile only. Loaded packs are cached per folder.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from avsl_edge.errors import UserError
from avsl_edge.audio import AudioError, load_audio
from training.data.classes import CLASSES

DEFAULT_ASSET_DIR = Path(__file__).resolve().parent / "assets" / "synthmusic"
PACK_VERSION = 1


class AssetError(UserError, ValueError):
    """The asset pack is missing or inconsistent; the message names the file and the entry."""


@dataclass(frozen=True)
class ClassBank:
    """One class's note bank, its measured spectrum and its sprite."""

    name: str
    notes: tuple[np.ndarray, ...] = field(repr=False)  # float32 mono notes, peak-normalised
    keys: tuple[int, ...]  # MIDI key of each note (GM percussion key for drum)
    rms: np.ndarray = field(repr=False)  # float32 RMS of each note
    band_hz: tuple[float, float]  # 5 % .. 95 % points of the bank's cumulative power spectrum
    centroid_hz: float
    profile_db: np.ndarray = field(repr=False)  # mean power (dB re. max) per band of Assets.profile_edges_hz
    sprite: np.ndarray = field(repr=False)  # (h, w, 4) uint8 RGBA, straight alpha, tight to alpha


@dataclass(frozen=True)
class Assets:
    root: Path
    sample_rate: int
    classes: Mapping[str, ClassBank]
    clutter: tuple[np.ndarray, ...] = field(repr=False)  # RGBA uint8 non-instrument sprites
    clutter_names: tuple[str, ...]
    profile_edges_hz: np.ndarray = field(repr=False)
    index: Mapping[str, Any] = field(repr=False, compare=False)


def _read_rgba(path: Path, where: str) -> np.ndarray:
    if not path.is_file():
        raise AssetError(f"{where}: sprite {path} does not exist")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] != 4:
        raise AssetError(f"{where}: {path} is not a readable RGBA PNG")
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)


def _inside(root: Path, rel: Any, where: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise AssetError(f"{where}: expected a relative path, got {rel!r}")
    p = (root / rel).resolve()
    if root.resolve() not in p.parents:
        raise AssetError(f"{where}: path {rel!r} leaves the pack folder {root}")
    return p


def _load(root: Path) -> Assets:
    index_path = root / "index.json"
    if not index_path.is_file():
        raise AssetError(
            f"{index_path}: missing; the SynthMUSIC asset pack is committed under {DEFAULT_ASSET_DIR} "
            "(rebuild it with `python -m training.data.build_assets`)"
        )
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AssetError(f"{index_path}: not valid JSON ({e})") from e
    f = str(index_path)
    if index.get("version") != PACK_VERSION:
        raise AssetError(f"{f}: pack version {index.get('version')!r}, this code reads version {PACK_VERSION}")
    sr = index.get("sample_rate")
    if not isinstance(sr, int) or sr <= 0:
        raise AssetError(f"{f}: 'sample_rate' must be a positive integer, got {sr!r}")
    entries = index.get("classes")
    if not isinstance(entries, dict) or set(entries) != set(CLASSES):
        got = sorted(entries) if isinstance(entries, dict) else entries
        raise AssetError(f"{f}: 'classes' must hold exactly {list(CLASSES)}, got {got}")
    edges = np.asarray(index.get("profile_edges_hz", []), dtype=np.float64)
    classes: dict[str, ClassBank] = {}
    for name in CLASSES:
        e = entries[name]
        where = f"{f}: classes.{name}"
        audio_path = _inside(root, e.get("audio"), f"{where}.audio")
        try:
            bank = load_audio(audio_path, sample_rate=sr)
        except AudioError as exc:
            raise AssetError(f"{where}.audio: {exc}") from exc
        notes, keys, rms = [], [], []
        for j, n in enumerate(e.get("notes") or []):
            try:
                off, length, key = int(n["offset"]), int(n["length"]), int(n["key"])
            except (KeyError, TypeError, ValueError) as exc:
                raise AssetError(f"{where}.notes[{j}]: needs integer offset, length and key ({exc})") from exc
            if off < 0 or length <= 0 or off + length > len(bank):
                raise AssetError(
                    f"{where}.notes[{j}]: samples {off}..{off + length} outside {audio_path.name} ({len(bank)} samples)"
                )
            x = np.ascontiguousarray(bank[off : off + length], dtype=np.float32)
            notes.append(x)
            keys.append(key)
            rms.append(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))))
        if not notes:
            raise AssetError(f"{where}.notes: empty")
        if min(rms) <= 1e-5:
            raise AssetError(f"{where}.notes[{int(np.argmin(rms))}]: silent note")
        prof = np.asarray(e.get("profile_db", []), dtype=np.float32)
        if len(prof) != len(edges) - 1:
            raise AssetError(f"{where}.profile_db: {len(prof)} values for {len(edges) - 1} bands")
        band = e.get("band_hz")
        if not (isinstance(band, list) and len(band) == 2 and 0 <= band[0] < band[1]):
            raise AssetError(f"{where}.band_hz: expected [low, high] Hz, got {band!r}")
        classes[name] = ClassBank(
            name=name,
            notes=tuple(notes),
            keys=tuple(keys),
            rms=np.asarray(rms, dtype=np.float32),
            band_hz=(float(band[0]), float(band[1])),
            centroid_hz=float(e.get("centroid_hz", 0.0)),
            profile_db=prof,
            sprite=_read_rgba(_inside(root, e.get("sprite"), f"{where}.sprite"), f"{where}.sprite"),
        )
    clutter, clutter_names = [], []
    for j, c in enumerate(index.get("clutter") or []):
        where = f"{f}: clutter[{j}]"
        clutter.append(_read_rgba(_inside(root, c.get("sprite"), f"{where}.sprite"), where))
        clutter_names.append(str(c.get("name", j)))
    if not clutter:
        raise AssetError(f"{f}: 'clutter' is empty")
    return Assets(
        root=root,
        sample_rate=sr,
        classes=classes,
        clutter=tuple(clutter),
        clutter_names=tuple(clutter_names),
        profile_edges_hz=edges,
        index=index,
    )


@functools.lru_cache(maxsize=4)
def _load_cached(root: str) -> Assets:
    return _load(Path(root))


def load_assets(path: str | os.PathLike | None = None) -> Assets:
    """Load (once per folder, cached) the asset pack at ``path`` (default: the committed pack)."""
    root = Path(path) if path is not None else DEFAULT_ASSET_DIR
    if not root.is_dir():
        raise AssetError(f"{root}: no such asset pack folder")
    return _load_cached(str(root.resolve()))


# ------------------------------------------------------------------------------------------------
# v2: several looks and sounds per class, each tagged with its source id

DEFAULT_ASSET_DIR_V2 = Path(__file__).resolve().parent / "assets" / "synthmusic_v2"
PACK_VERSION_V2 = 2


@dataclass(frozen=True)
class Look:
    """One picture of a class (or a clutter object) and the art source it comes from."""

    sprite: np.ndarray = field(repr=False)  # (h, w, 4) uint8 RGBA, straight alpha, tight to alpha
    source: str
    name: str  # glyph (instruments) or object name (clutter)
    monochrome: bool = False  # a silhouette: the generator paints it


@dataclass(frozen=True)
class Sound:
    """One clip (note, chord, phrase, kit hit, beat or recording) and the sound source it comes from."""

    audio: np.ndarray = field(repr=False)  # float32 mono, peak-normalised
    source: str
    kind: str
    program: int | None


@dataclass(frozen=True)
class ClassAssets:
    name: str
    looks: tuple[Look, ...]
    sounds: tuple[Sound, ...]
    band_hz: tuple[float, float]
    centroid_hz: float

    @property
    def picture_sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x.source for x in self.looks))

    @property
    def sound_sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x.source for x in self.sounds))


@dataclass(frozen=True)
class Background:
    image: np.ndarray = field(repr=False)  # (h, w, 3) uint8 RGB photograph
    source: str
    name: str


@dataclass(frozen=True)
class AssetsV2:
    root: Path
    sample_rate: int
    classes: Mapping[str, ClassAssets]
    clutter: tuple[Look, ...]
    backgrounds: tuple[Background, ...]
    sources: Mapping[str, Mapping[str, Any]] = field(repr=False)  # id -> kind, title, licence, origin
    index: Mapping[str, Any] = field(repr=False, compare=False)

    def sources_of(self, kind: str) -> tuple[str, ...]:
        """Source ids of one kind: "picture", "sound" or "background"."""
        return tuple(k for k, v in self.sources.items() if v.get("kind") == kind)


def _source(sources: Mapping[str, Any], sid: Any, where: str) -> str:
    if not isinstance(sid, str) or sid not in sources:
        raise AssetError(f"{where}: unknown source {sid!r}; the pack's sources are {sorted(sources)}")
    return sid


def _load_v2(root: Path) -> AssetsV2:
    index_path = root / "index.json"
    if not index_path.is_file():
        raise AssetError(f"{index_path}: missing; rebuild the v2 pack with `python -m training.data.build_assets --pack v2`")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AssetError(f"{index_path}: not valid JSON ({e})") from e
    f = str(index_path)
    if index.get("version") != PACK_VERSION_V2:
        raise AssetError(f"{f}: pack version {index.get('version')!r}, this loader reads version {PACK_VERSION_V2}")
    sr = index.get("sample_rate")
    if not isinstance(sr, int) or sr <= 0:
        raise AssetError(f"{f}: 'sample_rate' must be a positive integer, got {sr!r}")
    sources = index.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise AssetError(f"{f}: 'sources' must map source ids to their descriptions")
    entries = index.get("classes")
    if not isinstance(entries, dict) or set(entries) != set(CLASSES):
        got = sorted(entries) if isinstance(entries, dict) else entries
        raise AssetError(f"{f}: 'classes' must hold exactly {list(CLASSES)}, got {got}")

    def look(e: Mapping[str, Any], where: str, name_key: str) -> Look:
        sid = _source(sources, e.get("source"), f"{where}.source")
        return Look(_read_rgba(_inside(root, e.get("file"), f"{where}.file"), where), sid, str(e.get(name_key, "")),
                    bool(sources[sid].get("monochrome", False)))

    classes: dict[str, ClassAssets] = {}
    for name in CLASSES:
        e, where = entries[name], f"{f}: classes.{name}"
        looks = tuple(look(x, f"{where}.looks[{j}]", "glyph") for j, x in enumerate(e.get("looks") or []))
        sounds: list[Sound] = []
        for j, s in enumerate(e.get("sounds") or []):
            w = f"{where}.sounds[{j}]"
            sid = _source(sources, s.get("source"), f"{w}.source")
            path = _inside(root, s.get("file"), f"{w}.file")
            try:
                bank = load_audio(path, sample_rate=sr)
            except AudioError as exc:
                raise AssetError(f"{w}.file: {exc}") from exc
            for k, c in enumerate(s.get("clips") or []):
                try:
                    off, length = int(c["offset"]), int(c["length"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise AssetError(f"{w}.clips[{k}]: needs integer offset and length ({exc})") from exc
                if off < 0 or length <= 0 or off + length > len(bank):
                    raise AssetError(f"{w}.clips[{k}]: samples {off}..{off + length} outside {path.name} ({len(bank)} samples)")
                x = np.ascontiguousarray(bank[off : off + length], dtype=np.float32)
                if float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) <= 1e-5:
                    raise AssetError(f"{w}.clips[{k}]: silent clip")
                sounds.append(Sound(x, sid, str(c.get("kind", "")), c.get("program")))
        if not looks or not sounds:
            raise AssetError(f"{where}: needs at least one look and one sound")
        band = e.get("band_hz")
        if not (isinstance(band, list) and len(band) == 2 and 0 <= band[0] < band[1]):
            raise AssetError(f"{where}.band_hz: expected [low, high] Hz, got {band!r}")
        classes[name] = ClassAssets(name, looks, tuple(sounds), (float(band[0]), float(band[1])),
                                    float(e.get("centroid_hz", 0.0)))
    clutter = tuple(look(c, f"{f}: clutter[{j}]", "name") for j, c in enumerate(index.get("clutter") or []))
    if not clutter:
        raise AssetError(f"{f}: 'clutter' is empty")
    backgrounds = []
    for j, b in enumerate(index.get("backgrounds") or []):
        where = f"{f}: backgrounds[{j}]"
        path = _inside(root, b.get("file"), f"{where}.file")
        img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if img is None:
            raise AssetError(f"{where}: {path} is not a readable image")
        backgrounds.append(Background(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), _source(sources, b.get("source"), where),
                                      str(b.get("name", j))))
    return AssetsV2(root, sr, classes, clutter, tuple(backgrounds), sources, index)


@functools.lru_cache(maxsize=2)
def _load_v2_cached(root: str) -> AssetsV2:
    return _load_v2(Path(root))


def load_assets_v2(path: str | os.PathLike | None = None) -> AssetsV2:
    """Load (once per folder, cached) the v2 asset pack at ``path`` (default: the committed v2 pack)."""
    root = Path(path) if path is not None else DEFAULT_ASSET_DIR_V2
    if not root.is_dir():
        raise AssetError(f"{root}: no such asset pack folder")
    return _load_v2_cached(str(root.resolve()))
