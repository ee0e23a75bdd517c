"""SynthMUSIC generator: boxes, sounding bookkeeping, audibility, determinism, AV-COCO output, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.optimize import nnls

from avsl_edge.avcoco import load_avcoco, read_clip, read_frame
from training.data.assets import DEFAULT_ASSET_DIR, AssetError, load_assets
from training.data.classes import CLASSES
from training.data.synth import (
    KINDS,
    SynthConfig,
    SynthMusic,
    contact_sheet,
    main,
    scene_seed,
    write_scene_video,
    write_split,
)

REPO = Path(__file__).resolve().parents[1]
SEEDS = range(6)


@pytest.fixture(scope="module")
def synth() -> SynthMusic:
    return SynthMusic()


# ----------------------------------------------------------------------------------------- pack


def test_committed_pack_has_every_class_and_stays_small():
    assets = load_assets()
    assert assets.sample_rate == 16000
    assert tuple(assets.classes) == CLASSES
    for name, bank in assets.classes.items():
        assert 12 <= len(bank.notes) <= 16, name
        assert all(0.2 * 16000 < len(n) <= 16000 for n in bank.notes), name  # ~1 s with release (drum hits shorter)
        assert all(0.8 < np.abs(n).max() < 1.0 for n in bank.notes), name
        assert 0 < bank.band_hz[0] < bank.centroid_hz < bank.band_hz[1] <= 8000, name
        h, w, ch = bank.sprite.shape
        assert ch == 4 and min(h, w) >= 90
        alpha = bank.sprite[..., 3]
        # cropped tight to alpha: every border row/column holds some of the glyph
        assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()
    assert len(assets.clutter) >= 5
    size = sum(f.stat().st_size for f in DEFAULT_ASSET_DIR.rglob("*") if f.is_file())
    assert size < 8e6
    assert "MIT" in (DEFAULT_ASSET_DIR / "LICENSE-FluidR3_GM.txt").read_text()
    assert "SIL OPEN FONT LICENSE" in (DEFAULT_ASSET_DIR / "LICENSE-NotoColorEmoji.txt").read_text().upper()


def test_broken_pack_is_a_clear_error(tmp_path):
    pack = tmp_path / "pack"
    shutil.copytree(DEFAULT_ASSET_DIR, pack)
    (pack / "audio" / "horn.flac").unlink()
    with pytest.raises(AssetError, match=r"classes\.horn\.audio.*horn\.flac"):
        load_assets(pack)
    index = json.loads((pack / "index.json").read_text())
    del index["classes"]["drum"]
    (pack / "index.json").write_text(json.dumps(index))
    with pytest.raises(AssetError, match="index.json.*'classes' must hold exactly"):
        load_assets(pack)


# ----------------------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("kind", KINDS)
def test_boxes_are_tight_to_the_pasted_alpha_and_inside_the_frame(synth, kind):
    for seed in SEEDS:
        s = synth.scene(kind, seed, masks=True)
        H, W = s.image.shape[:2]
        assert s.image.shape == (224, 224, 3) and s.image.dtype == np.uint8
        for o in s.objects:
            x, y, w, h = o.bbox
            assert 0 <= x and 0 <= y and x + w <= W and y + h <= H, (kind, seed, o)
            assert min(w, h) >= 12, (kind, seed, o)
            solid = o.mask >= 128  # alpha >= 0.5
            ys, xs = np.nonzero(solid)
            # the sprite's solid alpha touches all four box edges (within 1 px)
            assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1, (kind, seed, o)
            assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1, (kind, seed, o)
            # and nothing visible of it lies more than 2 px outside the box
            ys, xs = np.nonzero(o.mask > 0)
            assert xs.min() >= x - 2 and ys.min() >= y - 2, (kind, seed, o)
            assert xs.max() + 1 <= x + w + 2 and ys.max() + 1 <= y + h + 2, (kind, seed, o)
        # instruments do not overlap heavily
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1 :]:
                iw = min(a.bbox[0] + a.bbox[2], b.bbox[0] + b.bbox[2]) - max(a.bbox[0], b.bbox[0])
                ih = min(a.bbox[1] + a.bbox[3], b.bbox[1] + b.bbox[3]) - max(a.bbox[1], b.bbox[1])
                smaller = min(a.bbox[2] * a.bbox[3], b.bbox[2] * b.bbox[3])
                assert max(iw, 0) * max(ih, 0) <= 0.1 * smaller, (kind, seed, a, b)


@pytest.mark.parametrize("kind", ["solo", "solo_distractor", "duet", "mosaic"])
def test_boxes_match_the_changed_pixels_on_a_flat_background(kind):
    """Independent of the masks: with plain backgrounds the instruments are the only changed pixels."""
    cfg = SynthConfig(backgrounds=("flat",), clutter=(0, 0), shapes=(0, 0), pixel_noise=(0.0, 0.0))
    synth = SynthMusic(cfg)
    for seed in SEEDS:
        s = synth.scene(kind, seed)
        img = s.image.astype(np.int16)
        tiles = [(0, 0, 224, 224)] if kind != "mosaic" else [(x, y, 112, 112) for y in (0, 112) for x in (0, 112)]
        changed = np.zeros(img.shape[:2], bool)
        for tx, ty, tw, th in tiles:
            t = img[ty : ty + th, tx : tx + tw].reshape(-1, 3)
            colours, counts = np.unique(t, axis=0, return_counts=True)
            bg = colours[counts.argmax()]
            changed[ty : ty + th, tx : tx + tw] = np.abs(img[ty : ty + th, tx : tx + tw] - bg).max(axis=2) > 0
        covered = np.zeros_like(changed)
        for o in s.objects:
            x, y, w, h = (int(v) for v in o.bbox)
            covered[max(0, y - 2) : y + h + 2, max(0, x - 2) : x + w + 2] = True
            inner = changed[y : y + h, x : x + w]
            # changed pixels reach each edge of the box
            assert inner[:2].any() and inner[-2:].any() and inner[:, :2].any() and inner[:, -2:].any(), (kind, seed, o)
        assert not (changed & ~covered).any(), f"{kind} seed {seed}: changed pixels outside every box"


# ----------------------------------------------------------------------------------------- bookkeeping


def test_solo(synth):
    for seed in SEEDS:
        s = synth.scene("solo", seed)
        assert len(s.objects) == 1 and s.objects[0].sounding
        assert s.audio_classes == s.sounding_classes == (s.objects[0].category,)


def test_solo_distractor(synth):
    for seed in SEEDS:
        s = synth.scene("solo_distractor", seed)
        assert len(s.objects) == 2 and len({o.category for o in s.objects}) == 2
        assert sorted(o.sounding for o in s.objects) == [False, True]
        assert s.audio_classes == s.sounding_classes and len(s.silent_classes) == 1


def test_duet(synth):
    for seed in SEEDS:
        s = synth.scene("duet", seed)
        assert len(s.objects) == 2 and all(o.sounding for o in s.objects)
        assert len(set(s.sounding_classes)) == 2 and set(s.audio_classes) == set(s.sounding_classes)


def test_mosaic_is_four_distinct_classes_in_four_quadrants_two_sounding(synth):
    for seed in SEEDS:
        s = synth.scene("mosaic", seed)
        assert len(s.objects) == 4 and len({o.category for o in s.objects}) == 4
        assert sum(o.sounding for o in s.objects) == 2
        assert set(s.audio_classes) == set(s.sounding_classes) and len(s.audio_classes) == 2
        quadrants = set()
        for o in s.objects:
            x, y, w, h = o.bbox
            qx, qy = int(x >= 112), int(y >= 112)
            assert x + w <= 112 * (qx + 1) and y + h <= 112 * (qy + 1), f"seed {seed}: {o} crosses a tile edge"
            quadrants.add((qx, qy))
        assert len(quadrants) == 4


def test_offscreen_sound_comes_from_a_class_not_in_view(synth):
    for seed in SEEDS:
        s = synth.scene("offscreen", seed)
        assert len(s.objects) == 1 and not s.objects[0].sounding
        assert s.sounding_classes == ()
        assert len(s.audio_classes) == 1 and s.audio_classes[0] != s.objects[0].category
        assert s.offscreen_classes == s.audio_classes


# ----------------------------------------------------------------------------------------- audio


class NoteDecomposer:
    """Explains a clip's long-term power spectrum as a non-negative sum of the pack's note spectra
    (each bank note in full and its first 0.25 s), and returns each class's share of the energy.

    Energy inside one class's measured band (band_hz in the pack index) cannot tell these
    instruments apart: the bands overlap (flute 312-2094 Hz lies inside violin 301-3902 Hz), so
    the check works note by note instead."""

    n_fft = 2048

    def __init__(self, assets):
        self.win = np.hanning(self.n_fft)
        cols, owner = [], []
        for ci, c in enumerate(CLASSES):
            for note in assets.classes[c].notes:
                for seg in (note[:4000], note):
                    p = self.spectrum(seg)
                    cols.append(p / p.sum())
                    owner.append(ci)
        self.templates = np.stack(cols, axis=1)
        self.owner = np.asarray(owner)

    def spectrum(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if len(x) < self.n_fft:
            x = np.pad(x, (0, self.n_fft - len(x)))
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.n_fft // 4]
        return (np.abs(np.fft.rfft(frames * self.win, axis=1)) ** 2).mean(axis=0)

    def shares(self, audio: np.ndarray) -> dict[str, float]:
        p = self.spectrum(audio)
        w, _ = nnls(self.templates, p / p.sum(), maxiter=3000)
        share = np.bincount(self.owner, w, minlength=len(CLASSES))
        share = share / share.sum()
        return dict(zip(CLASSES, share.tolist()))


@pytest.fixture(scope="module")
def decomposer(synth) -> NoteDecomposer:
    return NoteDecomposer(synth.assets)


@pytest.mark.parametrize("kind", KINDS)
def test_sounding_classes_are_audible_and_silent_ones_are_not(synth, decomposer, kind):
    for seed in range(8):
        s = synth.scene(kind, seed)
        assert s.audio.shape == (16000,) and s.audio.dtype == np.float32
        assert 0.25 < np.abs(s.audio).max() < 1.0
        share = decomposer.shares(s.audio)
        heard = [share[c] for c in s.audio_classes]
        silent = [share[c] for c in s.silent_classes]
        assert min(heard) >= 0.15, (kind, seed, s.audio_classes, share)
        assert all(v <= 0.15 for v in silent), (kind, seed, s.silent_classes, share)
        not_heard = [v for c, v in share.items() if c not in s.audio_classes]
        assert min(heard) > max(not_heard), (kind, seed, share)


def test_the_audibility_check_catches_a_silent_class_mixed_in(synth, decomposer):
    s = synth.scene("solo_distractor", 0)
    (silent,) = s.silent_classes
    leaked = synth.render_audio([*s.audio_classes, silent], seed=1)
    assert decomposer.shares(leaked)[silent] > 0.15


def test_render_audio_building_block(synth):
    a = synth.render_audio(["violin", "drum"], seed=4)
    assert a.shape == (16000,) and np.abs(a).max() < 1.0
    assert np.array_equal(a, synth.render_audio(["violin", "drum"], seed=4))
    quiet = synth.render_audio([], seed=4)
    assert np.abs(quiet).max() < 0.02  # background noise only
    assert synth.render_audio(["flute"], seed=0, duration=0.5).shape == (8000,)
    with pytest.raises(ValueError, match="unknown SynthMUSIC class 'kazoo'"):
        synth.render_audio(["kazoo"], seed=0)


def test_render_image_building_block(synth):
    img, objs = synth.render_image(["flute"], seed=3)
    assert img.shape == (224, 224, 3) and [(o.category, o.sounding) for o in objs] == [("flute", True)]
    img, objs = synth.render_image([("horn", False), ("piano", True)], seed=3, size=160)
    assert img.shape == (160, 160, 3)
    assert [(o.category, o.sounding) for o in objs] == [("horn", False), ("piano", True)]
    img, objs = synth.render_mosaic(["flute", ("bell", False), "drum", "banjo"], seed=3)
    assert [o.category for o in objs] == ["flute", "bell", "drum", "banjo"]


# ----------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_different_seed_different(synth, kind):
    a, b = synth.scene(kind, 11), SynthMusic().scene(kind, 11)
    assert a.image.tobytes() == b.image.tobytes() and a.audio.tobytes() == b.audio.tobytes()
    assert [o.bbox for o in a.objects] == [o.bbox for o in b.objects]
    c = synth.scene(kind, 12)
    assert a.image.tobytes() != c.image.tobytes() and a.audio.tobytes() != c.audio.tobytes()


def test_stream_is_endless_reproducible_and_shardable(synth):
    kinds = ["solo", "mosaic", "duet"]
    first = [s for _, s in zip(range(6), synth.stream(kinds, seed=5))]
    assert [s.kind for s in first] == kinds * 2
    assert first[4].image.tobytes() == synth.scene("mosaic", scene_seed(5, 4)).image.tobytes()
    shard = [s for _, s in zip(range(3), synth.stream(kinds, seed=5, start=1, step=2))]
    assert [s.seed for s in shard] == [first[1].seed, first[3].seed, first[5].seed]
    with pytest.raises(ValueError, match="unknown scene kind"):
        next(synth.stream(["solo", "trio"]))


# ----------------------------------------------------------------------------------------- writing


def test_write_split_round_trips_through_avcoco(tmp_path, synth):
    root = tmp_path / "split"
    write_split(root, KINDS, n=10, seed=3, image_size=224, synth=synth)
    coco = load_avcoco(root)
    assert coco.categories == CLASSES and len(coco) == 10
    expected = [s for _, s in zip(range(10), synth.stream(KINDS, seed=3))]
    for im, s in zip(coco.images, expected):
        assert im.scene == s.kind and im.extra["seed"] == s.seed
        assert [(o.category, o.sounding) for o in im.objects] == [(o.category, o.sounding) for o in s.objects]
        assert [o.bbox for o in im.objects] == [o.bbox for o in s.objects]
        assert im.extra["audio_classes"] == list(s.audio_classes)
        assert np.array_equal(read_frame(coco, im), s.image)  # PNG is lossless
        assert np.abs(read_clip(coco, im) - s.audio).max() < 1e-4  # 16-bit FLAC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]  # no temp folder left behind

    with pytest.raises(FileExistsError, match="not empty"):
        write_split(root, ["solo"], n=2, seed=0, synth=synth)
    write_split(root, ["solo"], n=2, seed=0, synth=synth, force=True)
    assert len(load_avcoco(root)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_video_moves_the_instruments_and_plays_every_second(tmp_path, synth):
    v = synth.render_video("duet", seed=2, seconds=2.0, fps=5.0)
    assert len(v.frames) == 10 and len(v.objects) == 10 and v.audio.shape == (32000,)
    assert all(len(objs) == 2 and all(o.sounding for o in objs) for objs in v.objects)
    assert v.objects[0][0].bbox != v.objects[3][0].bbox  # they move
    for objs in v.objects:
        for o in objs:
            x, y, w, h = o.bbox
            assert 0 <= x and 0 <= y and x + w <= 224 and y + h <= 224
    from avsl_edge.media import probe

    path = write_scene_video(tmp_path / "clip.mp4", "mosaic", seed=1, seconds=1.0, fps=10.0, synth=synth)
    info = probe(path)
    assert info.frames == 10 and info.has_audio and (info.width, info.height) == (224, 224)


def test_contact_sheet_and_cli(tmp_path, synth, capsys):
    sheet = contact_sheet([synth.scene(k, 0) for k in KINDS], tmp_path / "sheet.png", cols=3)
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[1] > 3 * 224 and img.shape[0] > 2 * 224

    out = tmp_path / "cli"
    rc = main(["--out", str(out), "--kinds", "solo,offscreen", "--n", "4", "--seed", "1", "--size", "128",
               "--contact-sheet", str(tmp_path / "cli.png")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "scenes/s" in text
    coco = load_avcoco(out)
    assert len(coco) == 4 and {im.width for im in coco.images} == {128}
    assert [im.scene for im in coco.images] == ["solo", "offscreen", "solo", "offscreen"]
    assert cv2.imread(str(tmp_path / "cli.png")) is not None
    assert main(["--out", str(out), "--n", "2"]) == 2  # refuses to overwrite
    assert "not empty" in capsys.readouterr().err
    assert main(["--kinds", "solo,trio"]) == 2

    help_text = subprocess.run([sys.executable, "-m", "training.data.synth", "--help"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    assert "--contact-sheet" in help_text and "mosaic" in help_text


def test_config_is_validated():
    with pytest.raises(ValueError, match="peak"):
        SynthConfig(peak=(0.5, 1.2))
    with pytest.raises(ValueError, match="backgrounds"):
        SynthConfig(backgrounds=("marble",))
    with pytest.raises(ValueError, match="image_size"):
        replace(SynthConfig(), image_size=8)


# ----------------------------------------------------------------------------------------- builder


def _builder_available() -> str | None:
    from training.data import build_assets as b

    try:
        b.check_prerequisites()
    except b.AssetBuildError as e:
        return str(e)
    return None


def test_builder_names_the_missing_debian_package(tmp_path):
    from training.data import build_assets as b

    with pytest.raises(b.AssetBuildError, match="fluid-soundfont-gm"):
        b.check_prerequisites(soundfont=tmp_path / "none.sf2")
    with pytest.raises(b.AssetBuildError, match="fonts-noto-color-emoji"):
        b.check_font(tmp_path / "none.ttf")


@pytest.mark.skipif(_builder_available() is not None,
                    reason=f"asset builder prerequisites absent: {_builder_available()}")
def test_builder_renders_one_class():
    from training.data import build_assets as b

    notes = b.render_class_notes("flute", keys=[60, 72, 84])
    assert [n.key for n in notes] == [60, 72, 84]
    for n in notes:
        assert n.audio.dtype == np.float32 and 0.5 * 16000 < len(n.audio) <= 16000
        assert abs(np.abs(n.audio).max() - 0.9) < 1e-3
    # the pitch is right: the spectrum peaks near the note's fundamental or a low harmonic
    spec = np.abs(np.fft.rfft(notes[1].audio[:8000] * np.hanning(8000)))
    f_peak = np.fft.rfftfreq(8000, 1 / 16000)[spec.argmax()]
    f0 = 440 * 2 ** ((72 - 69) / 12)
    assert min(abs(f_peak / (k * f0) - 1) for k in (1, 2, 3)) < 0.03
    sprite = b.render_emoji(0x1FA88)
    assert sprite.shape[2] == 4 and sprite[..., 3].max() == 255
