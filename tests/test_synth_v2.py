"""SynthMUSIC v2: the multi-source pack, tight boxes under the new augmentations, audibility,
leave-one-source-out splits, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from avsl_edge.avcoco import load_avcoco
from avsl_edge.errors import UserError
from training.data.assets import DEFAULT_ASSET_DIR_V2, load_assets_v2
from training.data.build_assets_v2 import PERMISSIVE, RESERVED
from training.data.classes import CLASSES
from training.data.synth import KINDS, SynthConfig, SynthMusic, main, write_split
from training.banks import scene_seed
from training.data.synth_v2 import HoldOutError, SynthMusicV2, _has_solid_core, gentle, held_out

V2 = SynthConfig(pack="v2")


@pytest.fixture(scope="module")
def assets():
    return load_assets_v2()


@pytest.fixture(scope="module")
def synth(assets) -> SynthMusicV2:
    return SynthMusic(V2, assets)


# ----------------------------------------------------------------------------------------- pack


def test_every_class_has_five_picture_sources_and_three_sound_sources(assets):
    for c in CLASSES:
        bank = assets.classes[c]
        assert len(bank.picture_sources) >= 5, (c, bank.picture_sources)
        assert len(bank.sound_sources) >= 3, (c, bank.sound_sources)
        assert {x.kind for x in bank.sounds} - {"note", "hit", "recording"}, f"{c}: only single notes"


def test_the_committed_pack_is_permissive_small_and_lists_every_file():
    index = json.loads((DEFAULT_ASSET_DIR_V2 / "index.json").read_text())
    assert index["committable"] is True
    for sid, src in index["sources"].items():
        for lic in src["license"].replace("/", " ").replace(" per file", "").split():
            assert lic in PERMISSIVE, (sid, src["license"])
        assert not any(r in (sid + src["origin"] + src["title"]).lower() for r in RESERVED), sid
    files = [f for f in DEFAULT_ASSET_DIR_V2.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 30e6
    listed = (DEFAULT_ASSET_DIR_V2 / "LICENSES.md").read_text()
    for f in files:
        rel = f.relative_to(DEFAULT_ASSET_DIR_V2).as_posix()
        if f.suffix in (".png", ".flac", ".jpg"):
            assert f"`{rel}`" in listed, rel


def test_the_training_config_selects_the_pack_and_its_hold_outs():
    from training.banks import synth_config
    from training.config import apply_overrides, check_config, preset

    cfg = check_config(apply_overrides(preset("smoke"), {"data.pack": "v2", "data.hold_out_sounds": "sonic-pi"}))
    train, test = synth_config(cfg.data, 96, "train"), synth_config(cfg.data, 224, "test")
    assert (train.pack, train.hold_out_sounds, train.split_role) == ("v2", "sonic-pi", "train")
    assert test.split_role == "eval" and synth_config(preset("cpu").data, 96, "val") == SynthConfig(image_size=96)
    with pytest.raises(ValueError, match="need --data.pack v2"):
        check_config(apply_overrides(preset("smoke"), {"data.hold_out_pictures": "noto"}))


def test_v1_stays_the_default():
    assert SynthConfig().pack == "v1"
    assert type(SynthMusic()) is SynthMusic
    with pytest.raises(ValueError, match="need pack='v2'"):
        SynthConfig(hold_out_pictures="fluent-3d")


def test_the_easy_share_draws_the_first_training_scenes_gentle_and_leaves_validation_hard(assets):
    from training.banks import build_bank
    from training.config import apply_overrides, check_config, preset

    cfg = check_config(apply_overrides(preset("smoke"), {"data.pack": "v2", "data.easy_share": "0.5"}))
    train = build_bank("solo", 4, 64, 0, "train", progress=False, data=cfg.data)
    hard, soft = SynthMusic(replace(V2, image_size=64), assets), SynthMusic(gentle(replace(V2, image_size=64)), assets)
    for i in range(4):
        expected = (soft if i < 2 else hard).scene("solo", scene_seed(0, "train", i))
        np.testing.assert_array_equal(train.images[i].permute(1, 2, 0).numpy(), expected.image)
        np.testing.assert_array_equal(train.audio[i].numpy(), expected.audio)
    val = build_bank("solo", 2, 64, 0, "val", progress=False, data=cfg.data)
    np.testing.assert_array_equal(val.audio[0].numpy(), hard.scene("solo", scene_seed(0, "val", 0)).audio)


def test_the_warm_up_split_shows_one_picture_and_one_sound_source_per_class(assets):
    from training.banks import synth_config, warmup_config
    from training.config import apply_overrides, check_config, preset

    cfg = check_config(apply_overrides(preset("smoke"), {"data.pack": "v2", "data.warmup_epochs": "1"}))
    warm = SynthMusic(warmup_config(SynthMusic(synth_config(cfg.data, 64, "warmup"), assets)), assets)
    used = [warm.scene("solo", seed).sources for seed in range(12)]
    assert {s for u in used for s in u["pictures"]} == {"noto"}
    assert {s for u in used for s in u["sounds"].values()} == {"fluidr3"}


def test_the_warm_up_split_never_shows_a_held_out_source(assets):
    from training.banks import synth_config, warmup_config
    from training.config import apply_overrides, check_config, preset

    cfg = check_config(apply_overrides(preset("smoke"), {"data.pack": "v2", "data.warmup_epochs": "1",
                                                          "data.hold_out_pictures": "noto",
                                                          "data.hold_out_sounds": "fluidr3"}))
    warm = warmup_config(SynthMusic(synth_config(cfg.data, 64, "warmup"), assets))
    assert "noto" in held_out(warm.hold_out_pictures) and "fluidr3" in held_out(warm.hold_out_sounds)
    assert warm.split_role == "train"


def test_gentle_scenes_keep_v1_scales_and_clean_sound(assets):
    soft = gentle(V2)
    assert soft.solo_scale_v2 == V2.solo_scale and soft.tempo == (1.0, 1.0) and soft.reverb_prob == 0.0
    assert soft.hold_out_pictures == V2.hold_out_pictures and soft.pack == "v2"


@pytest.mark.parametrize("overrides, message", [
    ({"data.easy_share": "0.5"}, "needs --data.pack v2"),
    ({"data.pack": "v2", "data.easy_share": "1.5"}, r"must be in \[0, 1\]"),
    ({"data.pack": "v2", "data.easy_share": "nan"}, r"must be in \[0, 1\]"),
    ({"data.warmup_epochs": "2"}, "needs --data.pack v2"),
    ({"data.pack": "v2", "data.warmup_epochs": "2"}, "leaves no stage-one epoch"),
    ({"data.pack": "v2", "data.warmup_epochs": "-1"}, "at least 0"),
    ({"data.pack": "v2", "stage_one.lr_after_warmup": "1e-4"}, "needs --data.warmup_epochs"),
    ({"data.pack": "v2", "data.warmup_epochs": "1", "stage_one.lr_after_warmup": "1e-4",
      "stage_one.lr_schedule": "cosine"}, "use it with --stage_one.lr_schedule constant"),
    ({"data.pack": "v2", "data.warmup_epochs": "1", "stage_one.lr_after_warmup": "-1"}, "finite number >= 0"),
])
def test_a_curriculum_that_cannot_apply_is_refused(overrides, message):
    from training.config import apply_overrides, check_config, preset

    with pytest.raises(ValueError, match=message):
        check_config(apply_overrides(preset("smoke"), overrides))


# ----------------------------------------------------------------------------------------- boxes


HARD = replace(V2, edge_cut_prob=1.0, occlusion_prob=1.0, perspective=0.15, solo_scale_v2=(0.08, 0.9),
               blur_prob=1.0, jpeg_prob=1.0)


@pytest.mark.parametrize("config", [V2, HARD], ids=["default", "hard"])
def test_boxes_are_tight_to_the_transformed_alpha_and_inside_the_frame(assets, config):
    synth = SynthMusic(config, assets)
    for kind in KINDS:
        for seed in range(6):
            s = synth.scene(kind, seed, masks=True)
            h, w = s.image.shape[:2]
            assert len(s.sources["pictures"]) == len(s.objects)
            for o in s.objects:
                ys, xs = np.nonzero(o.mask >= 128)  # alpha >= 0.5 of the object's own sprite
                x, y, bw, bh = o.bbox
                assert (x, y, bw, bh) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
                assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
                assert o.source in assets.classes[o.category].picture_sources


def test_small_frames_keep_every_object_visible(assets):
    small = SynthMusic(replace(V2, image_size=64), assets)  # 32 px mosaic tiles
    for kind in KINDS:
        for seed in range(25):
            s = small.scene(kind, seed)
            assert all(o.bbox[2] >= 2 and o.bbox[3] >= 2 for o in s.objects), (kind, seed)


def test_thin_line_art_shrunk_to_a_few_pixels_is_redrawn_not_left_without_a_box(assets):
    # Mosaic 271 of a 96 px stage-two bank drew a thin bell outline at 11 px whose alpha averaged
    # below the box threshold: the scene failed with "bell sprite fell outside its 48x48 tile".
    synth = SynthMusic(replace(V2, image_size=96), assets)
    for i in range(265, 275):
        s = synth.scene("mosaic", scene_seed(0, "stage_two", i))
        assert all(o.bbox[2] >= 3 and o.bbox[3] >= 3 for o in s.objects), i
    faint = np.zeros((11, 11, 4), np.float32)
    faint[5, 2:9, 3] = 0.55  # a one-pixel stroke: above the box alpha, but no solid 3x3 core
    assert not _has_solid_core(faint)
    faint[4:7, 4:7, 3] = 0.9
    assert _has_solid_core(faint)


def test_hard_settings_do_cut_objects_at_the_edge(assets):
    synth = SynthMusic(HARD, assets)
    touching = 0
    for seed in range(20):
        for o in synth.scene("solo", seed).objects:
            x, y, bw, bh = o.bbox
            touching += x == 0 or y == 0 or x + bw == 224 or y + bh == 224
    assert touching >= 2


# ----------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("kind", KINDS)
def test_heard_classes_are_audible_in_the_mix_and_silent_ones_are_not(synth, kind):
    for seed in range(6):
        s = synth.scene(kind, seed)
        mix, stems, noise = synth.render_stems(s.audio_classes, seed)
        assert np.array_equal(mix, synth.render_audio(s.audio_classes, seed))
        assert set(stems) == set(s.audio_classes) and not set(stems) & set(s.silent_classes)
        assert np.allclose(sum(stems.values()) + noise, mix, atol=1e-5)
        total = float(np.sum(mix.astype(np.float64) ** 2))
        for c, x in stems.items():
            share = float(np.sum(x.astype(np.float64) ** 2)) / total
            assert share >= 0.15, (kind, seed, c, share)
        snr = 10 * np.log10(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in stems.values())
                            / float(np.sum(noise.astype(np.float64) ** 2)))
        assert snr >= V2.snr_db_v2[0] - 1.0
        assert set(s.sources["sounds"]) == set(s.audio_classes)


# ----------------------------------------------------------------------------------------- hold-outs


@pytest.mark.parametrize("what,source", [("pictures", "fluent-3d"), ("sounds", "csound-gm")])
def test_a_held_out_source_never_reaches_training_and_is_alone_in_evaluation(assets, what, source):
    hold = {f"hold_out_{what}": source}
    train = SynthMusic(replace(V2, **hold), assets)
    evaluate = SynthMusic(replace(V2, split_role="eval", **hold), assets)
    for kind in KINDS:
        for seed in range(5):
            used = train.scene(kind, seed).sources
            seen = used["pictures"] + used["clutter"] if what == "pictures" else list(used["sounds"].values())
            assert source not in seen, (kind, seed, used)
            used = evaluate.scene(kind, seed).sources
            held = used["pictures"] if what == "pictures" else list(used["sounds"].values())
            assert held and set(held) == {source}, (kind, seed, used)


def test_a_family_of_styles_is_held_out_together(assets):
    fluent = "fluent-3d,fluent-color,fluent-flat,fluent-mono"
    train = SynthMusic(replace(V2, hold_out_pictures=fluent), assets)
    evaluate = SynthMusic(replace(V2, hold_out_pictures=fluent, split_role="eval"), assets)
    for seed in range(8):
        assert not any(p.startswith("fluent") for p in train.scene("duet", seed).sources["pictures"])
        assert all(p.startswith("fluent") for p in evaluate.scene("duet", seed).sources["pictures"])


def test_holding_out_a_source_that_lacks_classes_draws_only_the_classes_it_has(assets):
    evaluate = SynthMusic(replace(V2, hold_out_pictures="noto-v1", split_role="eval"), assets)
    assert set(evaluate.classes) == {c for c in CLASSES if "noto-v1" in assets.classes[c].picture_sources}
    assert {o.category for k in KINDS for o in evaluate.scene(k, 3).objects} <= set(evaluate.classes)


def test_an_unknown_hold_out_source_is_named(assets):
    with pytest.raises(HoldOutError, match="unknown picture source 'twemoji'"):
        SynthMusic(replace(V2, hold_out_pictures="twemoji"), assets)
    with pytest.raises(HoldOutError, match="unknown sound source 'fluent-3d'"):
        SynthMusic(replace(V2, hold_out_sounds="fluent-3d"), assets)
    assert issubclass(HoldOutError, UserError)


def test_cli_writes_leave_one_source_out_splits(tmp_path, capsys):
    out = tmp_path / "lofo"
    assert main(["--pack", "v2", "--hold-out-pictures", "game-icons", "--out", str(out), "--n", "10",
                 "--n-eval", "5", "--kinds", "solo,mosaic"]) == 0
    for split, n in (("train", 10), ("val", 5), ("test", 5)):
        coco = load_avcoco(out / split)
        assert len(coco) == n
        for im in coco.images:
            pics = im.extra["sources"]["pictures"]
            assert len(pics) == len(im.objects)
            assert ("game-icons" not in pics + im.extra["sources"]["clutter"]) if split == "train" else set(pics) == {"game-icons"}
    assert main(["--pack", "v2", "--hold-out-sounds", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown sound source 'nope'" in capsys.readouterr().err


def test_python_m_synth_runs_the_v2_pack(tmp_path):
    r = subprocess.run([sys.executable, "-m", "training.data.synth", "--pack", "v2", "--kinds", "duet", "--n", "3",
                        "--out", str(tmp_path / "d")], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr
    assert all(im.extra["sources"]["pack"] == "v2" for im in load_avcoco(tmp_path / "d").images)


# ----------------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes(assets, tmp_path):
    a, b = SynthMusic(V2, assets), SynthMusic(V2, assets)
    for kind in KINDS:
        x, y = a.scene(kind, 11), b.scene(kind, 11)
        assert x.image.tobytes() == y.image.tobytes() and x.audio.tobytes() == y.audio.tobytes()
        assert x.sources == y.sources and [o.bbox for o in x.objects] == [o.bbox for o in y.objects]
    assert a.scene("solo", 1).image.tobytes() != a.scene("solo", 2).image.tobytes()
    paths = [write_split(tmp_path / f"s{i}", KINDS, 10, 5, synth=s) for i, s in enumerate((a, b))]
    for rel in ["annotations.json", "frames/000003.png", "audio/000007.flac"]:
        assert (paths[0] / rel).read_bytes() == (paths[1] / rel).read_bytes()


def test_video_of_a_v2_scene(synth):
    v = synth.render_video("duet", 2, seconds=0.2, fps=10)
    assert len(v.frames) == 2 and all(len(o) == 2 for o in v.objects)
    assert Path(synth.assets.root).name == "synthmusic_v2"
