"""Build the SynthMUSIC asset pack (note banks + sprites) once; the result is committed.

    python -m training.data.build_assets [--out DIR] [--soundfont SF2] [--font TTF]
    python -m training.data.build_assets --pack v2 [--out DIR]   # see build_assets_v2.py

Needs (only here; the generator reads the committed pack):
  - FluidSynth: Debian package ``fluidsynth`` (libfluidsynth) and the Python bindings
    ``pyfluidsynth`` (``pip install 'avsl-edge[assets]'``);
  - the FluidR3_GM SoundFont: Debian package ``fluid-soundfont-gm``;
  - Noto Color Emoji: Debian package ``fonts-noto-color-emoji``;
  - Pillow.

Output (``training/data/assets/synthmusic/`` by default):
  index.json                  the pack index (see ``training/data/assets.py``)
  audio/<class>.flac          one 16 kHz mono PCM_16 FLAC per class: its notes one after another
  sprites/<class>.png         RGBA instrument sprite, cropped tight to alpha
  clutter/<name>.png          RGBA non-instrument sprites for backgrounds
  LICENSE-FluidR3_GM.txt      MIT (Debian copyright file of fluid-soundfont-gm)
  LICENSE-NotoColorEmoji.txt  OFL-1.1 (Debian copyright file of fonts-noto-color-emoji)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsl_edge.fileio import atomic_dir
from training.data.classes import (
    CLASSES,
    CLUTTER,
    DRUM_KIT,
    GM_PERCUSSION_BANK,
    GM_PERCUSSION_CHANNEL,
    INSTRUMENTS,
    Instrument,
)

SAMPLE_RATE = 16000
NOTES_PER_CLASS = 14
NOTE_SECONDS = 1.0  # each note including its release
HOLD_SECONDS = 0.7  # key held down; the rest is release
VELOCITY = 100
FONT_SIZE = 109  # the one bitmap strike of Noto Color Emoji
PACK_VERSION = 1

DEFAULT_OUT = Path(__file__).resolve().parent / "assets" / "synthmusic"
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SOUNDFONT_COPYRIGHT = Path("/usr/share/doc/fluid-soundfont-gm/copyright")
FONT_COPYRIGHT = Path("/usr/share/doc/fonts-noto-color-emoji/copyright")


class AssetBuildError(RuntimeError):
    """A build prerequisite is missing or a rendered asset is unusable."""


# ----------------------------------------------------------------------------------------------
# prerequisites


def _import_fluidsynth():
    try:
        import fluidsynth  # type: ignore[import-not-found]
    except ImportError as e:  # the bindings raise ImportError both when absent and when libfluidsynth is missing
        msg = str(e)
        if "FluidSynth library" in msg or "libfluidsynth" in msg:
            raise AssetBuildError(
                "the FluidSynth library (libfluidsynth) was not found: install the Debian package "
                "'fluidsynth' (apt-get install fluidsynth)"
            ) from e
        raise AssetBuildError(
            "the Python bindings for FluidSynth are missing: pip install pyfluidsynth "
            "(or pip install 'avsl-edge[assets]'); they also need the Debian package 'fluidsynth'"
        ) from e
    if not hasattr(fluidsynth, "Synth"):
        raise AssetBuildError(
            f"the module 'fluidsynth' imported from {getattr(fluidsynth, '__file__', '?')} is not pyfluidsynth "
            "(no Synth class): pip uninstall fluidsynth && pip install pyfluidsynth"
        )
    return fluidsynth


def _import_pillow():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as e:
        raise AssetBuildError("Pillow is missing: pip install pillow") from e
    return Image, ImageDraw, ImageFont


def check_soundfont(soundfont: Path = DEFAULT_SOUNDFONT) -> None:
    """Raise AssetBuildError naming the missing Debian package if the SoundFont or FluidSynth is absent."""
    if not Path(soundfont).is_file():
        raise AssetBuildError(
            f"SoundFont {soundfont} not found: install the Debian package 'fluid-soundfont-gm' "
            "(apt-get install fluid-soundfont-gm) or pass --soundfont"
        )
    _import_fluidsynth()


def check_font(font: Path = DEFAULT_FONT) -> None:
    """Raise AssetBuildError naming the missing Debian package if the emoji font or Pillow is absent."""
    if not Path(font).is_file():
        raise AssetBuildError(
            f"emoji font {font} not found: install the Debian package 'fonts-noto-color-emoji' "
            "(apt-get install fonts-noto-color-emoji) or pass --font"
        )
    _import_pillow()


def check_prerequisites(soundfont: Path = DEFAULT_SOUNDFONT, font: Path = DEFAULT_FONT) -> None:
    """Raise AssetBuildError naming the missing Debian package (or pip package) if anything is absent."""
    check_soundfont(soundfont)
    check_font(font)


# ----------------------------------------------------------------------------------------------
# audio


@dataclass(frozen=True)
class RenderedNote:
    key: int
    audio: np.ndarray  # float32 mono, peak-normalised
    peak_before: float  # peak of the raw render (before normalisation), full scale = 1


def bank_keys(inst: Instrument, n: int = NOTES_PER_CLASS) -> list[int]:
    """MIDI keys of the note bank: the kit pieces for percussion, else n keys spread over [low, high]."""
    if inst.keys:
        return list(inst.keys)
    keys = np.unique(np.round(np.linspace(inst.low, inst.high, n)).astype(int))
    return [int(k) for k in keys]


def _trim(audio: np.ndarray, sr: int) -> np.ndarray:
    """Drop leading silence (< -50 dB of the peak) and the tail below -60 dB; short fade-out."""
    peak = float(np.max(np.abs(audio)))
    if peak <= 0:
        return audio
    env = np.abs(audio)
    loud = np.nonzero(env > peak * 10 ** (-50 / 20))[0]
    start = max(0, int(loud[0]) - int(0.002 * sr))
    tail = np.nonzero(env > peak * 10 ** (-60 / 20))[0]
    end = min(len(audio), int(tail[-1]) + 1)
    out = audio[start:end].astype(np.float32, copy=True)
    fade = min(len(out), int(0.01 * sr))
    if fade > 1:
        out[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def render_class_notes(
    name: str,
    soundfont: Path = DEFAULT_SOUNDFONT,
    sample_rate: int = SAMPLE_RATE,
    keys: list[int] | None = None,
) -> list[RenderedNote]:
    """Render one class's note bank with FluidSynth (dry: no reverb/chorus), mono float32."""
    check_soundfont(soundfont)
    fluidsynth = _import_fluidsynth()
    inst = INSTRUMENTS[name]
    keys = bank_keys(inst) if keys is None else keys
    synth = fluidsynth.Synth(gain=0.5, samplerate=float(sample_rate))
    synth.setting("synth.reverb.active", 0)
    synth.setting("synth.chorus.active", 0)
    try:
        sfid = synth.sfload(str(soundfont))
        if sfid < 0:
            raise AssetBuildError(f"FluidSynth could not load the SoundFont {soundfont}")
        if inst.is_percussion:
            chan, bank, program = GM_PERCUSSION_CHANNEL, GM_PERCUSSION_BANK, 0
        else:
            chan, bank, program = 0, 0, int(inst.program)  # type: ignore[arg-type]
        if synth.program_select(chan, sfid, bank, program) != 0:
            raise AssetBuildError(f"{soundfont}: no preset bank {bank} program {program} for class {name!r}")
        hold = int(HOLD_SECONDS * sample_rate)
        total = int(NOTE_SECONDS * sample_rate)
        notes = []
        for key in keys:
            synth.noteon(chan, key, VELOCITY)
            a = synth.get_samples(hold)
            synth.noteoff(chan, key)
            b = synth.get_samples(total - hold)
            synth.all_sounds_off(chan)
            synth.get_samples(int(0.05 * sample_rate))  # flush
            stereo = np.concatenate([np.asarray(a), np.asarray(b)]).astype(np.float32).reshape(-1, 2) / 32768.0
            mono = stereo.mean(axis=1)
            peak = float(np.max(np.abs(mono)))
            if peak < 1e-3:
                raise AssetBuildError(f"class {name!r} key {key}: FluidSynth rendered silence")
            note = _trim(mono, sample_rate)
            note *= 0.9 / float(np.max(np.abs(note)))
            notes.append(RenderedNote(key=int(key), audio=note.astype(np.float32), peak_before=peak))
    finally:
        synth.delete()
    return notes


def spectral_stats(notes: list[np.ndarray], sample_rate: int = SAMPLE_RATE, n_fft: int = 4096) -> dict:
    """Long-term power spectrum of a class's notes (each note weighted equally).

    band_hz: [5 %, 95 %] points of the cumulative power; centroid_hz: power-weighted mean frequency;
    profile_db: mean power (dB re. the max) in ``PROFILE_EDGES_HZ`` bands.
    """
    win = np.hanning(n_fft).astype(np.float64)
    hop = n_fft // 2
    total = np.zeros(n_fft // 2 + 1)
    for x in notes:
        x = np.asarray(x, np.float64)
        if len(x) < n_fft:
            x = np.pad(x, (0, n_fft - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
        p = (np.abs(np.fft.rfft(frames * win, axis=1)) ** 2).mean(axis=0)
        total += p / p.sum()
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    cum = np.cumsum(total) / total.sum()
    lo = float(freqs[np.searchsorted(cum, 0.05)])
    hi = float(freqs[min(len(freqs) - 1, np.searchsorted(cum, 0.95))])
    centroid = float((freqs * total).sum() / total.sum())
    edges = PROFILE_EDGES_HZ
    prof = []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (freqs >= a) & (freqs < b)
        prof.append(float(total[m].mean()) if m.any() else 0.0)
    prof_arr = np.asarray(prof)
    prof_db = 10 * np.log10(np.maximum(prof_arr / prof_arr.max(), 1e-12))
    return {
        "band_hz": [round(lo, 1), round(hi, 1)],
        "centroid_hz": round(centroid, 1),
        "profile_db": [round(float(v), 2) for v in prof_db],
    }


#: Band edges (Hz) of the per-class spectral profile in the index: 24 log-spaced bands, 40 Hz .. 8 kHz.
PROFILE_EDGES_HZ: tuple[float, ...] = tuple(float(round(v, 1)) for v in np.geomspace(40.0, 8000.0, 25))


# ----------------------------------------------------------------------------------------------
# sprites


def render_emoji(codepoint: int, font_path: Path = DEFAULT_FONT, size: int = FONT_SIZE) -> np.ndarray:
    """RGBA uint8 (straight alpha) of one emoji, cropped tight to alpha > 0."""
    check_font(font_path)
    Image, ImageDraw, ImageFont = _import_pillow()
    font = ImageFont.truetype(str(font_path), size)
    ch = chr(codepoint)
    x0, y0, x1, y1 = font.getbbox(ch)
    w, h = x1 - x0 + 8, y1 - y0 + 8
    # On a transparent black canvas Pillow blends the glyph's colour with black: RGB comes out
    # premultiplied by alpha. Undo it to store a straight-alpha PNG.
    canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((4 - x0, 4 - y0), ch, font=font, embedded_color=True)
    arr = np.asarray(canvas).astype(np.float32)
    alpha = arr[..., 3]
    if not (alpha > 0).any():
        raise AssetBuildError(f"{font_path} has no glyph for U+{codepoint:04X}")
    ys, xs = np.nonzero(alpha > 0)
    arr = arr[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    a = arr[..., 3:4]
    rgb = np.where(a > 0, arr[..., :3] * 255.0 / np.maximum(a, 1), 0.0)
    out = np.concatenate([np.clip(np.round(rgb), 0, 255), a], axis=2).astype(np.uint8)
    return out


def _save_png(path: Path, rgba: np.ndarray) -> None:
    Image, _, _ = _import_pillow()
    Image.fromarray(rgba, "RGBA").save(path, optimize=True)


# ----------------------------------------------------------------------------------------------
# pack


def build(
    out: Path = DEFAULT_OUT,
    soundfont: Path = DEFAULT_SOUNDFONT,
    font: Path = DEFAULT_FONT,
    force: bool = True,
    log=print,
) -> Path:
    """Render the whole pack into ``out`` (written to a temp folder, then swapped in)."""
    import soundfile as sf

    check_prerequisites(soundfont, font)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and any(out.iterdir()) and not force:
        raise AssetBuildError(f"{out} exists and is not empty (use --force to rebuild)")
    with atomic_dir(out) as tmp:
        (tmp / "audio").mkdir()
        (tmp / "sprites").mkdir()
        (tmp / "clutter").mkdir()
        classes = {}
        for name in CLASSES:
            inst = INSTRUMENTS[name]
            notes = render_class_notes(name, soundfont)
            offsets, entries, pos = [], [], 0
            for n in notes:
                offsets.append(pos)
                rms = float(np.sqrt(np.mean(n.audio.astype(np.float64) ** 2)))
                entry = {"key": n.key, "offset": pos, "length": int(len(n.audio)), "rms": round(rms, 5)}
                if inst.is_percussion:
                    entry["piece"] = DRUM_KIT[n.key]
                else:
                    entry["f0_hz"] = round(440.0 * 2 ** ((n.key - 69) / 12), 2)
                entries.append(entry)
                pos += len(n.audio)
            audio = np.concatenate([n.audio for n in notes])
            sf.write(tmp / "audio" / f"{name}.flac", audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
            # measure the spectrum from the stored (16-bit) notes
            stored, _ = sf.read(tmp / "audio" / f"{name}.flac", dtype="float32")
            stats = spectral_stats([stored[e["offset"] : e["offset"] + e["length"]] for e in entries])
            sprite = render_emoji(inst.emoji, font)
            _save_png(tmp / "sprites" / f"{name}.png", sprite)
            classes[name] = {
                "gm_program": inst.program,
                "gm_bank": GM_PERCUSSION_BANK if inst.is_percussion else 0,
                "midi_channel": (GM_PERCUSSION_CHANNEL if inst.is_percussion else 0) + 1,
                "key_range": [inst.low, inst.high],
                "audio": f"audio/{name}.flac",
                "notes": entries,
                **stats,
                "emoji": f"U+{inst.emoji:04X}",
                "sprite": f"sprites/{name}.png",
                "sprite_size": [int(sprite.shape[1]), int(sprite.shape[0])],
            }
            log(
                f"{name:10s} {len(notes):2d} notes {pos / SAMPLE_RATE:5.2f} s  band {stats['band_hz'][0]:6.0f}-"
                f"{stats['band_hz'][1]:6.0f} Hz  centroid {stats['centroid_hz']:6.0f} Hz  sprite {sprite.shape[1]}x{sprite.shape[0]}"
            )
        clutter = []
        for cname, cp in CLUTTER.items():
            sprite = render_emoji(cp, font)
            _save_png(tmp / "clutter" / f"{cname}.png", sprite)
            clutter.append({"name": cname, "emoji": f"U+{cp:04X}", "sprite": f"clutter/{cname}.png"})
        index = {
            "version": PACK_VERSION,
            "sample_rate": SAMPLE_RATE,
            "soundfont": soundfont.name,
            "font": font.name,
            "font_size": FONT_SIZE,
            "velocity": VELOCITY,
            "note_seconds": NOTE_SECONDS,
            "hold_seconds": HOLD_SECONDS,
            "profile_edges_hz": list(PROFILE_EDGES_HZ),
            "classes": classes,
            "clutter": clutter,
        }
        (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
        _copy_license(SOUNDFONT_COPYRIGHT, tmp / "LICENSE-FluidR3_GM.txt", "fluid-soundfont-gm", "MIT")
        _copy_license(FONT_COPYRIGHT, tmp / "LICENSE-NotoColorEmoji.txt", "fonts-noto-color-emoji", "OFL-1.1")
        (tmp / "README.md").write_text(_README)
    return out


def _copy_license(src: Path, dst: Path, package: str, spdx: str) -> None:
    if not src.is_file():
        raise AssetBuildError(f"{src} not found: install the Debian package '{package}' (its {spdx} licence text)")
    dst.write_text(f"SPDX-License-Identifier: {spdx}\nCopied from {src} (Debian package {package}).\n\n" + src.read_text())


_README = """\
# SynthMUSIC asset pack

Built by `python -m training.data.build_assets` (do not edit by hand); read by
`training/data/assets.py`.

- `audio/<class>.flac`: 16 kHz mono PCM_16; the class's note bank (single notes or drum-kit
  hits, each about 1 s with its release, peak-normalised), one after another. Note offsets and
  lengths (samples), MIDI keys and each class's measured spectrum are in `index.json`.
  Rendered with FluidSynth from the FluidR3_GM SoundFont (MIT, see LICENSE-FluidR3_GM.txt).
- `sprites/<class>.png`, `clutter/<name>.png`: RGBA sprites cropped tight to alpha, rendered
  from Noto Color Emoji at its native 109 px strike (OFL-1.1, see LICENSE-NotoColorEmoji.txt).
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data.build_assets", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--soundfont", type=Path, default=DEFAULT_SOUNDFONT)
    p.add_argument("--font", type=Path, default=DEFAULT_FONT)
    p.add_argument("--pack", choices=("v1", "v2"), default="v1",
                   help="v1: the original pack (default); v2: many art, sound and background sources "
                        "(training/data/build_assets_v2.py; --soundfont/--font do not apply)")
    p.add_argument("--with-gpl", action="store_true",
                   help="v2: also render TimGM6mb (GPL-2); the pack is then for local use, never committed")
    p.add_argument("--with-share-alike", action="store_true",
                   help="v2: also draw OpenMoji (CC-BY-SA-4.0); the pack is then for local use, never committed")
    p.add_argument("--with-openclipart", action="store_true",
                   help="v2: also draw Open Clip Art instruments (Debian openclipart-svg); local use only, never "
                        "committed (Tux Paint's reserved stamps share that library)")
    args = p.parse_args(argv)
    try:
        if args.pack == "v2":
            from training.data import build_assets_v2

            out = build_assets_v2.build(args.out if args.out != DEFAULT_OUT else build_assets_v2.DEFAULT_OUT,
                                        with_gpl=args.with_gpl, with_share_alike=args.with_share_alike,
                                        with_openclipart=args.with_openclipart)
        else:
            out = build(args.out, args.soundfont, args.font)
    except AssetBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
