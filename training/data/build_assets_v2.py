"""Build the SynthMUSIC v2 asset pack (many looks and sounds per class); the result is committed.

    python -m training.data.build_assets --pack v2 [--out DIR] [--with-gpl] [--with-share-alike] [--with-openclipart]

v1 (``training/data/assets/synthmusic``) is one Noto emoji and one FluidR3 program per class: a
model can learn 11 sprites instead of 11 instruments. v2 keeps several art sets, soundfonts and
real recordings apart by *source id*, so that scenes can record what they used and splits can
hold a source out (``--hold-out-pictures`` / ``--hold-out-sounds`` of ``training.data.synth``).

Needs (only here; the generator reads the committed pack):
  - Debian packages (``scripts/setup.sh --asset-sources``): fluidsynth, fluid-soundfont-gm,
    csound-soundfont, sonic-pi-samples, fonts-noto-color-emoji, lomiri-wallpapers-16.04
    (and timgm6mb-soundfont for ``--with-gpl``);
  - Python: pyfluidsynth, Pillow, resvg-py, scipy (``pip install 'avsl-edge[assets]'``);
  - node's ``npm``: the npm packages in ``NPM_SOURCES`` are fetched with ``npm pack`` into a
    temporary folder during the build (never at run time) and checked against their licence.

Only permissive sources (MIT, Apache-2.0, CC0, CC-BY, public domain, OFL) go into the pack.
``--with-gpl`` (TimGM6mb, GPL-2) and ``--with-share-alike`` (OpenMoji, CC-BY-SA-4.0) add
those sources to a pack built for local use only: such a pack must not be committed. So does
``--with-openclipart`` (public domain, but see ``OPENCLIPART``: it may overlap a reserved set).

RESERVED for independent evaluation, never read here: Twemoji, the MuseScore General
soundfont, scikit-image's photographs, tuxpaint-stamps-default, gcompris-qt-data, lmms-common.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsl_edge.fileio import atomic_dir
from training.data.build_assets import (
    DRUM_KIT,
    FONT_COPYRIGHT,
    PROFILE_EDGES_HZ,
    SAMPLE_RATE,
    SOUNDFONT_COPYRIGHT,
    AssetBuildError,
    _import_fluidsynth,
    _trim,
    render_emoji,
    spectral_stats,
)
from training.data.classes import CLASSES, CLUTTER, GM_PERCUSSION_BANK, GM_PERCUSSION_CHANNEL, INSTRUMENTS

PACK_VERSION = 2
DEFAULT_OUT = Path(__file__).resolve().parent / "assets" / "synthmusic_v2"
SPRITE_SIDE = 160  # longest sprite side in a 224 px frame (solo scale <= 0.72)
BACKGROUND_SIDE = 320  # shorter side of the stored photographs (random crops are taken at run time)
PERMISSIVE = ("MIT", "Apache-2.0", "CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "public-domain", "OFL-1.1", "Expat")
RESERVED = ("twemoji", "musescore", "scikit-image", "tuxpaint", "gcompris", "lmms")

# Emoji codepoints per class: the v1 glyph plus other glyphs of the same instrument.
EMOJI: dict[str, tuple[int, ...]] = {c: (INSTRUMENTS[c].emoji,) for c in CLASSES}
EMOJI["drum"] = (0x1F941, 0x1FA98)  # drum, long drum


@dataclass(frozen=True)
class NpmSource:
    """An Iconify JSON icon set (or a folder of images) fetched with ``npm pack``."""

    id: str
    package: str
    version: str
    license: str
    title: str
    glyphs: dict[str, tuple[str, ...]]  # class -> icon names (Iconify) or codepoints (hex, file sets)
    monochrome: bool = False  # a silhouette in currentColor: the generator paints it
    layout: str = "iconify"  # iconify | webp (one <codepoint>.webp per glyph) | svg (<CODEPOINT>.svg)
    folder: str = ""  # inside the package, for webp/svg layouts
    committed: bool = True  # False: a share-alike source, only with --with-share-alike


_FLUENT = {
    "accordion": ("accordion",), "banjo": ("banjo",), "bell": ("bell",), "drum": ("drum", "long-drum"),
    "flute": ("flute",), "guitar": ("guitar",), "horn": ("postal-horn",), "piano": ("musical-keyboard",),
    "saxophone": ("saxophone",), "trumpet": ("trumpet",), "violin": ("violin",),
}
_OLD_SETS = {k: v for k, v in _FLUENT.items() if k not in ("accordion", "banjo", "flute")}  # pre-2020 emoji


def _hex(cps: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"{cp:x}" for cp in cps)


NPM_SOURCES: tuple[NpmSource, ...] = (
    NpmSource("fluent-3d", "@lobehub/fluent-emoji-3d", "1.1.0", "MIT", "Fluent Emoji 3D (Microsoft)",
              {c: _hex(EMOJI[c]) for c in CLASSES}, layout="webp", folder="assets"),
    NpmSource("fluent-color", "@iconify-json/fluent-emoji", "1.2.7", "MIT", "Fluent Emoji colour (Microsoft)", _FLUENT),
    NpmSource("fluent-flat", "@iconify-json/fluent-emoji-flat", "1.2.6", "MIT", "Fluent Emoji flat (Microsoft)", _FLUENT),
    NpmSource("fluent-mono", "@iconify-json/fluent-emoji-high-contrast", "1.2.6", "MIT",
              "Fluent Emoji high contrast (Microsoft)", _FLUENT, monochrome=True),
    NpmSource("noto-v1", "@iconify-json/noto-v1", "1.2.5", "Apache-2.0", "Noto Emoji, old design (Google)",
              {k: v for k, v in _OLD_SETS.items()}),
    NpmSource("emojione", "@iconify-json/emojione", "1.2.3", "CC-BY-4.0", "EmojiOne 2 (Ranks.com)", _OLD_SETS),
    NpmSource("fxemoji", "@iconify-json/fxemoji", "1.2.2", "Apache-2.0", "Firefox OS emoji (Mozilla)",
              {"bell": ("bell",), "guitar": ("guitar",), "horn": ("postalhorn",),  # ringingbell = bell
               "piano": ("musicalkeyboard",), "saxophone": ("saxophone",), "trumpet": ("trumpet",),
               "violin": ("violin",)}),
    NpmSource("streamline", "@iconify-json/streamline-emojis", "1.2.4", "CC-BY-4.0", "Streamline Emojis",
              {"bell": ("bell",), "piano": ("musical-keyboard",),  # its guitar has notes drawn round it
               "saxophone": ("saxophone",), "trumpet": ("trumpet",), "violin": ("violin",)}),
    NpmSource("game-icons", "@iconify-json/game-icons", "1.2.4", "CC-BY-3.0", "game-icons.net silhouettes",
              {"accordion": ("accordion",), "banjo": ("banjo",), "bell": ("ringing-bell",),
               "drum": ("drum", "drum-kit"), "flute": ("flute",), "guitar": ("guitar",),
               "horn": ("french-horn", "hunting-horn"), "piano": ("grand-piano", "piano-keys"),
               "saxophone": ("saxophone",), "trumpet": ("trumpet",), "violin": ("violin",)},
              monochrome=True),
    NpmSource("openmoji", "openmoji", "17.0.0", "CC-BY-SA-4.0", "OpenMoji",
              {c: tuple(h.upper() for h in _hex(EMOJI[c])) for c in CLASSES}, layout="svg",
              folder="color/svg", committed=False),
)

#: Icon-set names of the clutter objects where they differ from CLUTTER's (underscore -> hyphen).
_CLUTTER_ALIASES = {"framed_picture": ("framed-picture", "frame-with-picture", "frame-with-tiles"),
                    "couch_and_lamp": ("couch-and-lamp",), "hot_beverage": ("hot-beverage", "hotbeverage")}
#: Art sources the clutter is drawn from (besides the Noto font).
CLUTTER_SOURCES = ("fluent-3d", "fluent-flat", "noto-v1", "emojione")


@dataclass(frozen=True)
class SoundFontSource:
    id: str
    path: Path
    package: str
    license: str
    title: str
    committed: bool = True


SOUNDFONTS: tuple[SoundFontSource, ...] = (
    SoundFontSource("fluidr3", Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), "fluid-soundfont-gm", "MIT",
                    "FluidR3_GM SoundFont"),
    SoundFontSource("csound-gm", Path("/usr/share/sounds/sf2/sf_GMbank.sf2"), "csound-soundfont",
                    "public-domain", "Csound GM bank (sf_GMbank.sf2)"),
    SoundFontSource("timgm6mb", Path("/usr/share/sounds/sf2/TimGM6mb.sf2"), "timgm6mb-soundfont", "GPL-2",
                    "TimGM6mb SoundFont", committed=False),
)

#: GM programs per class (bank 0), or percussion kits (bank 128) for drum.
PROGRAMS: dict[str, tuple[int, ...]] = {
    "accordion": (21, 23), "banjo": (105,), "bell": (14, 112), "drum": (0, 16, 32, 40), "flute": (73,),
    "guitar": (24, 25, 26, 27), "horn": (60,), "piano": (0, 1, 2), "saxophone": (64, 65, 66, 67),
    "trumpet": (56, 59), "violin": (40, 110),
}
#: Chords only for instruments that play them.
CHORDAL = frozenset({"accordion", "banjo", "guitar", "piano", "bell"})

SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")
SONIC_PI_COPYRIGHT = Path("/usr/share/doc/sonic-pi-samples/copyright")
#: CC0 recordings of sonic-pi-samples per class (file stems).
SONIC_PI: dict[str, tuple[str, ...]] = {
    "drum": ("drum_bass_hard", "drum_bass_soft", "drum_heavy_kick", "drum_snare_hard", "drum_snare_soft",
             "drum_tom_hi_hard", "drum_tom_hi_soft", "drum_tom_mid_hard", "drum_tom_mid_soft", "drum_tom_lo_hard",
             "drum_tom_lo_soft", "drum_cymbal_closed", "drum_cymbal_open", "drum_cymbal_pedal", "drum_cymbal_soft",
             "drum_splash_soft", "drum_roll"),
    "guitar": ("guit_e_fifths", "guit_em9", "guit_e_slide", "guit_harmonics"),
    "bell": ("perc_bell",),
    "piano": ("ambi_piano",),
}

#: Open Clip Art Library drawings of instruments (Debian openclipart-svg, public domain), one object
#: per picture. Opt-in only (``--with-openclipart``): Tux Paint's stamps, reserved for evaluation,
#: took many drawings from the same library, so a committed pack could leak evaluation pictures.
OPENCLIPART_DIR = Path("/usr/share/openclipart/svg/recreation/music")
OPENCLIPART: dict[str, tuple[str, ...]] = {
    "drum": ("africandrum_benji_park1", "africandrum_benji_park2", "drums_jarno_vasamaa_", "djambf_ganson"),
    "guitar": ("electric_guitar_andrea__01r", "guitar_ganson", "guitar_jarno_vasamaa1", "guitar_jarno_vasamaa2"),
    "flute": ("flute_ganson",), "horn": ("french_horn_ganson",), "piano": ("piano_geraint_luff_01",),
    "saxophone": ("saxophone_jarno_vasamaa_",),
    "trumpet": ("trumpet_b_flat__ganson", "trumpet_b_flat_colour_ganso", "trumpet_pocket_colour_ganso"),
    "violin": ("violin_colour_ganson", "violin_ganson"),
}

WALLPAPER_DIR = Path("/usr/share/backgrounds")
WALLPAPER_PACKAGES = ("lomiri-wallpapers-16.04",)

NOTE_SECONDS, HOLD_SECONDS = 1.0, 0.7
CHORD_SECONDS, CHORD_HOLD = 1.3, 0.9
PHRASE_NOTES, PHRASE_STEP = 6, 0.26  # a phrase: 6 notes, one every 0.26 s, each held 0.22 s (1.9 s in all)
NOTES_PER_PROGRAM = 5
MAX_CLIP_SECONDS = 2.0


# ----------------------------------------------------------------------------------------------
# licences and fetching


def dep5_licenses(copyright_file: Path) -> dict[str, tuple[str, str]]:
    """``Files:`` pattern -> (License, Copyright) of a Debian machine-readable copyright file."""
    out: dict[str, tuple[str, str]] = {}
    for para in re.split(r"\n\s*\n", copyright_file.read_text(errors="replace")):
        f = re.search(r"^Files:\s*(.+)$", para, re.M)
        lic = re.search(r"^License:\s*(\S+)", para, re.M)
        cr = re.search(r"^Copyright:\s*(.+)$", para, re.M)
        if f and lic:
            for pattern in f.group(1).split():
                out[pattern] = (lic.group(1), cr.group(1).strip() if cr else "")
    return out


def _license_of(table: dict[str, tuple[str, str]], name: str) -> tuple[str, str] | None:
    for pattern, v in table.items():
        if pattern.endswith("/" + name) or pattern == name:
            return v
    return None


def npm_fetch(source: NpmSource, into: Path) -> Path:
    """``npm pack`` one package into ``into``, unpack it, check its declared licence; the package root."""
    if any(r in source.package.lower() for r in RESERVED):
        raise AssetBuildError(f"{source.package} is reserved for independent evaluation")
    spec = f"{source.package}@{source.version}"
    try:
        r = subprocess.run(["npm", "pack", spec, "--silent"], cwd=into, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as e:
        raise AssetBuildError("npm not found: install node and npm (Debian package 'npm')") from e
    if r.returncode != 0:
        raise AssetBuildError(f"npm pack {spec} failed: {r.stderr.strip()[-300:]}")
    tgz = into / r.stdout.strip().splitlines()[-1]
    dest = into / source.id
    with tarfile.open(tgz) as t:
        t.extractall(dest, filter="data")
    root = dest / "package"
    declared = json.loads((root / "package.json").read_text()).get("license")
    if declared != source.license:
        raise AssetBuildError(f"{spec}: package.json declares licence {declared!r}, expected {source.license!r}")
    return root


# ----------------------------------------------------------------------------------------------
# pictures


def _crop_alpha(rgba: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(rgba[..., 3] > 0)
    if len(ys) == 0:
        raise AssetBuildError("empty sprite")
    return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _fit(rgba: np.ndarray, side: int = SPRITE_SIDE) -> np.ndarray:
    """Crop to alpha and shrink (premultiplied, area filter) so the longer side is <= ``side``."""
    import cv2

    rgba = _crop_alpha(rgba)
    h, w = rgba.shape[:2]
    k = side / max(h, w)
    if k < 1.0:
        f = rgba.astype(np.float32)
        a = f[..., 3:4] / 255.0
        pm = np.concatenate([f[..., :3] * a, f[..., 3:4]], axis=2)
        pm = cv2.resize(pm, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        a = pm[..., 3:4] / 255.0
        rgb = np.where(a > 0, pm[..., :3] / np.maximum(a, 1e-6), 0.0)
        rgba = np.concatenate([np.clip(rgb, 0, 255), pm[..., 3:4]], axis=2).round().astype(np.uint8)
        rgba = _crop_alpha(rgba)
    return np.ascontiguousarray(rgba)


def _decode(data: bytes) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] != 4:
        raise AssetBuildError("not an RGBA image")
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)


def render_svg(svg: str, side: int = 2 * SPRITE_SIDE) -> np.ndarray:
    """RGBA uint8 of an SVG rendered by resvg with its longer side ``side`` px."""
    try:
        import resvg_py  # type: ignore[import-not-found]
    except ImportError as e:
        raise AssetBuildError("resvg-py is missing: pip install resvg-py (or 'avsl-edge[assets]')") from e
    m = re.search(r'viewBox="([-\d.eE\s,]+)"', svg)
    if m:
        vw, vh = (float(v) for v in re.split(r"[\s,]+", m.group(1).strip())[2:4])
    else:  # no viewBox (older clip art): user units are px of its width and height attributes
        head = re.search(r"<svg\b[^>]*>", svg)
        dims = [re.search(rf'\s{a}="([\d.]+)\s*(pt|px|)"', head.group(0)) if head else None for a in ("width", "height")]
        if not head or not all(dims):
            raise AssetBuildError("SVG without viewBox, width or height")
        vw, vh = (float(d.group(1)) * (1.25 if d.group(2) == "pt" else 1.0) for d in dims)
        tag = re.sub(r'\s(width|height)="[^"]*"', "", head.group(0))
        svg = svg.replace(head.group(0), tag[:-1].rstrip("/") + f' viewBox="0 0 {vw} {vh}">', 1)
    k = side / max(vw, vh)
    png = resvg_py.svg_to_bytes(svg_string=svg, width=max(1, round(vw * k)), height=max(1, round(vh * k)))
    return _decode(bytes(png))


def iconify_svg(icon_set: dict, name: str) -> str | None:
    """The SVG of one icon of an Iconify JSON set (aliases followed), or None when absent."""
    icons, aliases = icon_set.get("icons", {}), icon_set.get("aliases", {})
    seen = 0
    while name not in icons and name in aliases and seen < 8:
        name, seen = aliases[name]["parent"], seen + 1
    if name not in icons:
        return None
    icon = icons[name]
    left, top = icon.get("left", icon_set.get("left", 0)), icon.get("top", icon_set.get("top", 0))
    w, h = icon.get("width", icon_set.get("width", 16)), icon.get("height", icon_set.get("height", 16))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {w} {h}">{icon["body"]}</svg>')


def source_glyph(source: NpmSource, root: Path, glyph: str) -> np.ndarray | None:
    """One glyph of a fetched art source as an RGBA sprite, or None when the set lacks it."""
    if source.layout == "iconify":
        svg = iconify_svg(_icon_set(root), glyph)
        return None if svg is None else _fit(render_svg(svg))
    path = root / source.folder / (f"{glyph}.webp" if source.layout == "webp" else f"{glyph}.svg")
    if not path.is_file():
        return None
    if source.layout == "webp":
        return _fit(_decode(path.read_bytes()))
    return _fit(render_svg(path.read_text()))


_ICON_SETS: dict[str, dict] = {}


def _icon_set(root: Path) -> dict:
    key = str(root)
    if key not in _ICON_SETS:
        _ICON_SETS[key] = json.loads((root / "icons.json").read_text())
    return _ICON_SETS[key]


def _clutter_glyphs(source: NpmSource, root: Path, name: str, cp: int) -> str | None:
    """The glyph name of a clutter object in an art set."""
    if source.layout == "webp":
        hits = [g for g in (f"{cp:x}", f"{cp:x}-fe0f") if (root / source.folder / f"{g}.webp").is_file()]
        return hits[0] if hits else None
    icons = _icon_set(root)
    chars = root / "chars.json"
    if chars.is_file():
        hit = json.loads(chars.read_text()).get(f"{cp:x}")
        if hit:
            return hit
    for cand in (name.replace("_", "-"), name.replace("_", ""), *_CLUTTER_ALIASES.get(name, ())):
        if cand in icons.get("icons", {}) or cand in icons.get("aliases", {}):
            return cand
    return None


def _save_png(path: Path, rgba: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path, optimize=True)


# ----------------------------------------------------------------------------------------------
# sounds


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray  # float32 mono, peak 0.9
    kind: str  # note | chord | phrase | hit | recording
    program: int | None
    keys: tuple[int, ...]
    label: str = ""


def _finish(x: np.ndarray, what: str) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak < 1e-3:
        raise AssetBuildError(f"{what}: rendered silence")
    x = _trim(x.astype(np.float32), SAMPLE_RATE)[: int(MAX_CLIP_SECONDS * SAMPLE_RATE)]
    fade = min(len(x), int(0.02 * SAMPLE_RATE))
    x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return (x * (0.9 / float(np.max(np.abs(x))))).astype(np.float32)


def _spread(inst, n: int) -> list[int]:
    return [int(k) for k in np.unique(np.round(np.linspace(inst.low + 2, inst.high - 2, n)).astype(int))]


def _events(name: str, rng: np.random.Generator) -> list[tuple[str, list[tuple[float, float, int]]]]:
    """(kind, [(onset s, duration s, key), ...]) of every clip rendered per program of a class."""
    inst = INSTRUMENTS[name]
    out: list[tuple[str, list[tuple[float, float, int]]]] = []
    if inst.is_percussion:
        for key in inst.keys:
            out.append(("hit", [(0.0, HOLD_SECONDS, key)]))
        for _ in range(2):  # a beat: kick and snare on alternate beats, hi-hats between
            beat = [(t * 0.25, 0.2, (36 if t % 4 == 0 else 38 if t % 4 == 2 else int(rng.choice([42, 42, 46]))))
                    for t in range(7)]
            if rng.random() < 0.5:
                beat.append((1.5, 0.3, int(rng.choice([45, 47, 50]))))
            out.append(("phrase", beat))
        return out
    for key in _spread(inst, NOTES_PER_PROGRAM):
        out.append(("note", [(0.0, HOLD_SECONDS, key)]))
    lo, hi = inst.low + 5, inst.high - 12
    if name in CHORDAL:
        for quality in ((0, 4, 7), (0, 3, 7, 12)):
            root = int(rng.integers(lo, max(lo + 1, hi)))
            out.append(("chord", [(0.0, CHORD_HOLD, root + q) for q in quality]))
    scale = (0, 2, 4, 5, 7, 9, 11, 12)
    root = int(rng.integers(lo, max(lo + 1, hi)))
    steps = np.cumsum(rng.choice([-2, -1, 1, 1, 2], size=PHRASE_NOTES))
    keys = [root + scale[int(s) % 8] + 12 * (int(s) // 8) for s in steps]
    out.append(("phrase", [(i * PHRASE_STEP, PHRASE_STEP * 0.85, int(np.clip(k, inst.low, inst.high)))
                           for i, k in enumerate(keys)]))
    return out


def render_soundfont(sf: SoundFontSource, name: str) -> list[Clip]:
    """Notes, chords and a phrase (kit hits and beats for drum) per GM program of a class."""
    fluidsynth = _import_fluidsynth()
    if not sf.path.is_file():
        raise AssetBuildError(f"SoundFont {sf.path} not found: install the Debian package '{sf.package}'")
    inst = INSTRUMENTS[name]
    synth = fluidsynth.Synth(gain=0.5, samplerate=float(SAMPLE_RATE))
    synth.setting("synth.reverb.active", 0)
    synth.setting("synth.chorus.active", 0)
    clips: list[Clip] = []
    try:
        sfid = synth.sfload(str(sf.path))
        if sfid < 0:
            raise AssetBuildError(f"FluidSynth could not load {sf.path}")
        for program in PROGRAMS[name]:
            chan, bank = (GM_PERCUSSION_CHANNEL, GM_PERCUSSION_BANK) if inst.is_percussion else (0, 0)
            if not synth.sfpreset_name(sfid, bank, program):
                continue  # this bank lacks the program (a percussion kit most often)
            synth.program_select(chan, sfid, bank, program)
            rng = np.random.default_rng([CLASSES.index(name), program, 2])
            for kind, events in _events(name, rng):
                end = max(t + d for t, d, _ in events) + (NOTE_SECONDS - HOLD_SECONDS)
                marks = sorted([(t, 1, k) for t, _, k in events] + [(t + d, 0, k) for t, d, k in events])
                pos, parts = 0, []
                vel = int(rng.integers(80, 118))
                for t, on, k in marks:
                    at = int(t * SAMPLE_RATE)
                    if at > pos:
                        parts.append(np.asarray(synth.get_samples(at - pos)))
                        pos = at
                    if on:
                        synth.noteon(chan, k, vel)
                    else:
                        synth.noteoff(chan, k)
                parts.append(np.asarray(synth.get_samples(int(end * SAMPLE_RATE) - pos)))
                synth.all_sounds_off(chan)
                synth.get_samples(int(0.05 * SAMPLE_RATE))
                mono = np.concatenate(parts).astype(np.float32).reshape(-1, 2).mean(axis=1) / 32768.0
                what = f"{sf.id} {name} program {program} {kind}"
                label = DRUM_KIT.get(events[0][2], "") if kind == "hit" else ""
                if float(np.max(np.abs(mono))) < 1e-3:
                    continue  # a preset without samples that high or low (baritone sax above its range)
                clips.append(Clip(_finish(mono, what), kind, program, tuple(k for _, _, k in events), label))
    finally:
        synth.delete()
    if not clips:
        raise AssetBuildError(f"{sf.path}: none of the programs {PROGRAMS[name]} for class {name!r}")
    return clips


def _adsr(n: int, a: float, d: float, s: float, r: float) -> np.ndarray:
    sr = SAMPLE_RATE
    na, nd, nr = int(a * sr), int(d * sr), int(r * sr)
    ns = max(0, n - na - nd - nr)
    env = np.concatenate([np.linspace(0, 1, na), np.linspace(1, s, nd), np.full(ns, s), np.linspace(s, 0, nr)])
    return np.pad(env, (0, max(0, n - len(env))))[:n]


def synth_voice(name: str, key: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One note of the project's own procedural instrument models (no samples).

    Plucked strings: Karplus-Strong; bowed, blown and reed voices: additive partials with the
    instrument's spectral envelope, vibrato and breath noise; bell and piano: inharmonic decaying
    partials; drum: pitched-down sine plus filtered noise."""
    sr = SAMPLE_RATE
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 440.0 * 2 ** ((key - 69) / 12)
    if name in ("guitar", "banjo"):
        period = max(2, int(round(sr / f0)))
        buf = rng.uniform(-1, 1, period)
        out = np.empty(n)
        damp = 0.996 if name == "guitar" else 0.985
        for i in range(n):  # Karplus-Strong: averaged delay line
            out[i] = buf[i % period]
            buf[i % period] = damp * 0.5 * (buf[i % period] + buf[(i + 1) % period])
        if name == "banjo":
            out += 0.3 * np.sin(2 * np.pi * f0 * 2 * t) * np.exp(-t * 9)
        return out
    if name == "drum":
        piece = DRUM_KIT.get(key, "")
        noise = rng.standard_normal(n)
        if "hi-hat" in piece or "clap" in piece or "stick" in piece:
            noise = np.diff(noise, prepend=0.0)
            return noise * np.exp(-t * (40 if "closed" in piece or "stick" in piece else 8))
        f = (55 if "bass" in piece else 180 if "snare" in piece else 90 + 10 * (key - 41)) * (1 + np.exp(-t * 30))
        body = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t * (9 if "bass" in piece else 14))
        snare = 0.6 * noise * np.exp(-t * 18) if "snare" in piece else 0.05 * noise * np.exp(-t * 30)
        return body + snare
    if name in ("bell", "piano"):
        ratios = (0.5, 1.0, 1.19, 1.56, 2.0, 2.51, 2.66, 3.01, 4.1) if name == "bell" else tuple(
            k * np.sqrt(1 + 0.0004 * k * k) for k in range(1, 12))
        out = np.zeros(n)
        for j, r in enumerate(ratios):
            if f0 * r >= sr / 2:
                break
            decay = (1.2 + 0.9 * j) if name == "bell" else (2.0 + 1.5 * j)
            amp = (1.0 / (1 + 0.3 * j)) if name == "bell" else (1.0 / (1 + j) ** 1.2)
            out += amp * np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 2 * np.pi)) * np.exp(-t * decay)
        return out * np.minimum(1.0, t / 0.003)
    # sustained voices: partial amplitudes per harmonic k
    spectra = {
        "flute": lambda k: 1.0 / k ** 2.5 * (1.0 if k < 5 else 0.2),
        "violin": lambda k: 1.0 / k ** 0.9,
        "horn": lambda k: np.exp(-0.45 * k),
        "trumpet": lambda k: np.exp(-((k - 3.5) / 3.0) ** 2),
        "saxophone": lambda k: (1.0 / k ** 0.7) * (1.0 if k % 2 else 0.6),
        "accordion": lambda k: 1.0 / k ** 0.8,
    }
    vib = 1 + (0.006 if name in ("violin", "flute", "saxophone") else 0.002) * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t)
    phase = 2 * np.pi * f0 * np.cumsum(vib) / sr
    out = np.zeros(n)
    for k in range(1, 30):
        if f0 * k >= sr / 2 - 200:
            break
        out += spectra[name](k) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        if name == "accordion":  # two reeds, slightly detuned: beating
            out += spectra[name](k) * np.sin(k * phase * 1.004 + rng.uniform(0, 2 * np.pi))
    # breath (bow) noise: low-passed, tens of dB under the tone (flute the breathiest)
    from scipy.signal import lfilter

    breath = {"flute": 0.06, "saxophone": 0.02, "violin": 0.015}.get(name, 0.004)
    noise = lfilter([0.25], [1.0, -0.75], rng.standard_normal(n))
    out += breath * float(np.sqrt(np.mean(out**2))) / float(np.sqrt(np.mean(noise**2))) * noise
    attack = {"flute": 0.06, "violin": 0.08, "horn": 0.05, "trumpet": 0.03, "saxophone": 0.04, "accordion": 0.05}[name]
    return out * _adsr(n, attack, 0.1, 0.8, 0.12)


def render_procedural(name: str) -> list[Clip]:
    """The procedural source's clips: the same notes, chords and phrases as a soundfont program."""
    rng = np.random.default_rng([CLASSES.index(name), 7])
    clips = []
    for kind, events in _events(name, rng):
        end = max(t + d for t, d, _ in events) + (NOTE_SECONDS - HOLD_SECONDS)
        out = np.zeros(int(end * SAMPLE_RATE) + 1)
        for t, d, k in events:
            ring = d + (0.6 if name in ("guitar", "banjo", "bell", "piano", "drum") else 0.12)
            v = synth_voice(name, k, min(ring, end - t), rng) * rng.uniform(0.7, 1.0)
            a = int(t * SAMPLE_RATE)
            out[a : a + len(v)] += v[: len(out) - a]
        label = DRUM_KIT.get(events[0][2], "") if kind == "hit" else ""
        clips.append(Clip(_finish(out.astype(np.float32), f"procedural {name} {kind}"), kind, None,
                          tuple(k for _, _, k in events), label))
    return clips


def render_sonic_pi(name: str) -> list[Clip]:
    """CC0 recordings of sonic-pi-samples (resampled to 16 kHz; long ones cut into 2 s clips)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    table = dep5_licenses(SONIC_PI_COPYRIGHT)
    clips = []
    for stem in SONIC_PI.get(name, ()):
        path = SONIC_PI_DIR / f"{stem}.flac"
        lic = _license_of(table, path.name)
        if lic is None or lic[0] != "CC0":
            raise AssetBuildError(f"{path}: not listed as CC0 in {SONIC_PI_COPYRIGHT} (got {lic})")
        x, sr = sf.read(path, dtype="float64", always_2d=True)
        x = x.mean(axis=1)
        g = np.gcd(int(sr), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sr) // g)
        seg = int(MAX_CLIP_SECONDS * SAMPLE_RATE)
        for j in range(min(3, max(1, len(x) // seg))):
            part = x[j * seg : (j + 1) * seg]
            if np.max(np.abs(part)) < 1e-3 * np.max(np.abs(x)):
                continue
            clips.append(Clip(_finish(part.astype(np.float32), str(path)), "recording", None, (), stem))
    return clips


# ----------------------------------------------------------------------------------------------
# backgrounds


def wallpapers() -> list[tuple[Path, str, str, str]]:
    """(path, package, licence, copyright) of every permissive photograph of WALLPAPER_PACKAGES."""
    out = []
    for pkg in WALLPAPER_PACKAGES:
        cfile = Path(f"/usr/share/doc/{pkg}/copyright")
        listing = Path(f"/var/lib/dpkg/info/{pkg}.list")
        if not cfile.is_file() or not listing.is_file():
            raise AssetBuildError(f"Debian package '{pkg}' is not installed (apt-get install {pkg})")
        table = dep5_licenses(cfile)
        for line in listing.read_text().split():
            p = Path(line)
            if p.suffix.lower() not in (".jpg", ".png") or not p.is_file():
                continue
            lic = _license_of(table, p.name)
            if lic is not None and lic[0] in PERMISSIVE:
                out.append((p, pkg, lic[0], lic[1]))
    if not out:
        raise AssetBuildError(f"no permissive photographs found in {WALLPAPER_PACKAGES}")
    return sorted(out)


def _background(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise AssetBuildError(f"{path}: unreadable image")
    h, w = img.shape[:2]
    k = BACKGROUND_SIDE / min(h, w)
    return cv2.resize(img, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------------------------
# pack


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def build(out: Path = DEFAULT_OUT, with_gpl: bool = False, with_share_alike: bool = False,
          with_openclipart: bool = False, log=print) -> Path:
    """Fetch, render and write the v2 pack into ``out`` (temp folder, then swapped in)."""
    import cv2
    import soundfile as sf

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sources: dict[str, dict] = {}
    looks: dict[str, list[dict]] = {c: [] for c in CLASSES}
    sounds: dict[str, list[dict]] = {c: [] for c in CLASSES}
    clutter: list[dict] = []
    licence_rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="synthmusic-npm-") as npm_dir, atomic_dir(out) as tmp:
        # --- pictures: the Noto font (as v1), then the npm art sets
        sources["noto"] = {"kind": "picture", "title": "Noto Color Emoji (Google)", "license": "OFL-1.1",
                           "origin": "Debian package fonts-noto-color-emoji", "monochrome": False}
        for c in CLASSES:
            for cp in EMOJI[c]:
                try:
                    rgba = render_emoji(cp)
                except AssetBuildError:
                    continue
                rel = f"sprites/noto/{c}-{cp:x}.png"
                _save_png(tmp / rel, rgba)
                looks[c].append({"file": rel, "source": "noto", "glyph": f"U+{cp:04X}"})
        for name, cp in CLUTTER.items():
            rel = f"clutter/noto/{name}.png"
            _save_png(tmp / rel, render_emoji(cp))
            clutter.append({"file": rel, "source": "noto", "name": name})
        for src in NPM_SOURCES:
            if not src.committed and not with_share_alike:
                continue
            root = npm_fetch(src, Path(npm_dir))
            sources[src.id] = {"kind": "picture", "title": src.title, "license": src.license,
                               "origin": f"npm {src.package}@{src.version}", "monochrome": src.monochrome}
            lic_file = next((root / f for f in ("LICENSE", "LICENSE.txt", "LICENSE.md") if (root / f).is_file()), None)
            info = json.loads((root / "info.json").read_text()) if (root / "info.json").is_file() else {}
            author = info.get("author", {})
            note = (f"SPDX-License-Identifier: {src.license}\nFrom npm {src.package}@{src.version}"
                    f" ({src.title}; author: {author.get('name', 'see the package')} {author.get('url', '')}).\n"
                    f"Licence text: {info.get('license', {}).get('url', 'https://spdx.org/licenses/' + src.license)}\n")
            (tmp / f"LICENSE-{src.id}.txt").write_text(note + ("\n" + lic_file.read_text() if lic_file else ""))
            for c, glyphs in src.glyphs.items():
                for g in glyphs:
                    rgba = source_glyph(src, root, g)
                    if rgba is None:
                        log(f"  {src.id}: no glyph {g!r} for {c}")
                        continue
                    rel = f"sprites/{src.id}/{c}-{_slug(g)}.png"
                    _save_png(tmp / rel, rgba)
                    looks[c].append({"file": rel, "source": src.id, "glyph": g})
            if src.id in CLUTTER_SOURCES:
                for name, cp in CLUTTER.items():
                    g = _clutter_glyphs(src, root, name, cp)
                    rgba = source_glyph(src, root, g) if g else None
                    if rgba is not None:
                        rel = f"clutter/{src.id}/{name}.png"
                        _save_png(tmp / rel, rgba)
                        clutter.append({"file": rel, "source": src.id, "name": name})
            log(f"{src.id:12s} {sum(1 for c in CLASSES for x in looks[c] if x['source'] == src.id):3d} looks "
                f"({src.license}, {src.package}@{src.version})")
        if with_openclipart:
            if not OPENCLIPART_DIR.is_dir():
                raise AssetBuildError(f"{OPENCLIPART_DIR} not found: install the Debian package 'openclipart-svg'")
            sources["openclipart"] = {"kind": "picture", "title": "Open Clip Art Library (instrument drawings)",
                                      "license": "public-domain", "origin": "Debian package openclipart-svg",
                                      "monochrome": False}
            for c, stems in OPENCLIPART.items():
                for stem in stems:
                    rel = f"sprites/openclipart/{c}-{_slug(stem)}.png"
                    _save_png(tmp / rel, _fit(render_svg((OPENCLIPART_DIR / f"{stem}.svg").read_text())))
                    looks[c].append({"file": rel, "source": "openclipart", "glyph": stem})
        # --- sounds
        for sfs in SOUNDFONTS:
            if not sfs.committed and not with_gpl:
                continue
            sources[sfs.id] = {"kind": "sound", "title": sfs.title, "license": sfs.license,
                               "origin": f"Debian package {sfs.package} ({sfs.path.name})"}
            for c in CLASSES:
                sounds[c].append(_write_clips(tmp, sfs.id, c, render_soundfont(sfs, c), sf))
            log(f"{sfs.id:12s} rendered")
        sources["sonic-pi"] = {"kind": "sound", "title": "Sonic Pi samples (recordings)", "license": "CC0-1.0",
                               "origin": "Debian package sonic-pi-samples"}
        for c in SONIC_PI:
            sounds[c].append(_write_clips(tmp, "sonic-pi", c, render_sonic_pi(c), sf))
        sources["procedural"] = {"kind": "sound", "title": "procedural instrument models (this project's code)",
                                 "license": "CC0-1.0", "origin": "training/data/build_assets_v2.py synth_voice"}
        for c in CLASSES:
            sounds[c].append(_write_clips(tmp, "procedural", c, render_procedural(c), sf))
        log("sonic-pi, procedural rendered")
        # --- backgrounds
        backgrounds = []
        for path, pkg, lic, cr in wallpapers():
            rel = f"backgrounds/{_slug(path.stem)}.jpg"
            (tmp / "backgrounds").mkdir(exist_ok=True)
            cv2.imwrite(str(tmp / rel), _background(path), [cv2.IMWRITE_JPEG_QUALITY, 85])
            backgrounds.append({"file": rel, "source": "wallpapers", "name": path.name, "license": lic,
                                "copyright": cr})
            licence_rows.append((rel, f"Debian package {pkg} ({path.name}), {cr}", lic))
        sources["wallpapers"] = {"kind": "background", "title": "Lomiri desktop wallpapers (photographs)",
                                 "license": "CC-BY-4.0 / CC0-1.0 per file", "origin": f"Debian {', '.join(WALLPAPER_PACKAGES)}"}
        # --- index
        classes = {}
        for c in CLASSES:
            stored = []
            for entry in sounds[c]:
                audio, _ = sf.read(tmp / entry["file"], dtype="float32")
                stored += [audio[x["offset"] : x["offset"] + x["length"]] for x in entry["clips"]]
            classes[c] = {"looks": looks[c], "sounds": sounds[c], **spectral_stats(stored)}
            per_src = lambda xs: sorted({x["source"] for x in xs})  # noqa: E731
            log(f"{c:10s} looks {len(looks[c]):2d} from {per_src(looks[c])}; sounds {per_src(sounds[c])}")
        for c in CLASSES:
            for x in looks[c]:
                licence_rows.append((x["file"], f"{sources[x['source']]['origin']} glyph {x['glyph']}",
                                     sources[x["source"]]["license"]))
            for x in sounds[c]:
                licence_rows.append((x["file"], sources[x["source"]]["origin"], sources[x["source"]]["license"]))
        for x in clutter:
            licence_rows.append((x["file"], f"{sources[x['source']]['origin']} ({x['name']})",
                                 sources[x["source"]]["license"]))
        committed = not (with_gpl or with_share_alike or with_openclipart)
        index = {
            "version": PACK_VERSION,
            "sample_rate": SAMPLE_RATE,
            "committable": committed,
            "profile_edges_hz": list(PROFILE_EDGES_HZ),
            "sources": sources,
            "classes": classes,
            "clutter": clutter,
            "backgrounds": backgrounds,
        }
        (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        _licence_texts(tmp)
        rows = "\n".join(f"| `{f}` | {o} | {lic} |" for f, o, lic in licence_rows)
        (tmp / "LICENSES.md").write_text(
            "# Sources and licences of every file\n\n" + _README + "\n| file | source | licence |\n| --- | --- | --- |\n"
            + rows + "\n")
    return out


def _write_clips(tmp: Path, source: str, c: str, clips: list[Clip], sf) -> dict:
    rel = f"audio/{source}/{c}.flac"
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    entries, pos = [], 0
    for clip in clips:
        e = {"offset": pos, "length": int(len(clip.audio)), "kind": clip.kind, "program": clip.program,
             "keys": list(clip.keys)}
        if clip.label:
            e["label"] = clip.label
        entries.append(e)
        pos += len(clip.audio)
    sf.write(tmp / rel, np.concatenate([x.audio for x in clips]), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return {"file": rel, "source": source, "clips": entries}


def _licence_texts(tmp: Path) -> None:
    for src, dst, pkg, spdx in (
        (SOUNDFONT_COPYRIGHT, "LICENSE-fluidr3.txt", "fluid-soundfont-gm", "MIT"),
        (FONT_COPYRIGHT, "LICENSE-noto.txt", "fonts-noto-color-emoji", "OFL-1.1"),
        (Path("/usr/share/doc/csound-soundfont/copyright"), "LICENSE-csound-gm.txt", "csound-soundfont", "public-domain"),
        (SONIC_PI_COPYRIGHT, "LICENSE-sonic-pi.txt", "sonic-pi-samples", "CC0-1.0"),
        *((Path(f"/usr/share/doc/{p}/copyright"), f"LICENSE-wallpapers-{p}.txt", p, "CC-BY-4.0/CC0-1.0")
          for p in WALLPAPER_PACKAGES),
    ):
        if not src.is_file():
            raise AssetBuildError(f"{src} not found: install the Debian package '{pkg}' (its {spdx} licence text)")
        text = src.read_text(errors="replace")
        if pkg == "csound-soundfont":  # only the SoundFont's paragraph
            m = re.search(r"Files: samples/sf_GMbank\.sf2.*?(?=\n\n)", text, re.S)
            text = m.group(0) if m else text
        (tmp / dst).write_text(f"SPDX-License-Identifier: {spdx}\nCopied from {src} (Debian package {pkg}).\n\n{text}")


_README = """\
Built by `python -m training.data.build_assets --pack v2` (do not edit by hand); read by
`training/data/assets.py` (`load_assets_v2`). Every file below carries its source id in
`index.json`; `sources` there gives each id's title, origin and licence.

- `sprites/<source>/<class>-<glyph>.png`: RGBA looks, cropped tight to alpha, longer side <= 160 px.
  Sources marked `monochrome` are silhouettes that the generator paints.
- `clutter/<source>/<name>.png`: non-instrument sprites from the same art sets.
- `audio/<source>/<class>.flac`: 16 kHz mono PCM_16 clips (notes, chords, phrases, kit hits, beats,
  recordings), offsets and lengths in `index.json`.
- `backgrounds/*.jpg`: photographs (shorter side 320 px).
"""
