"""MUSIC layout: preparation from raw mp4 (frames chosen by timestamp, docs/method.md §6.1), safe
.pkl reading, and the MusicSolo dataset (docs/method.md §1.4)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from avsl_edge.media import MediaError, read_audio_track, write_video
from training.data.music import (
    LOGMEL_SHAPE,
    MusicError,
    MusicSolo,
    load_labels,
    load_logmel,
    main,
    prepare,
    read_index,
    safe_load_pickled_array,
    scan_pairs,
    select_frames,
    video_id,
    write_index,
)
from training.model import LogMel

NTSC = Fraction(30000, 1001)
W, H = 128, 64


def scene_frame(k: int) -> np.ndarray:
    """Frame ``k``: its index in 8 black/white blocks on the top half (readable after H.264 and
    JPEG), and a red square moving across the bottom half."""
    rgb = np.zeros((H, W, 3), np.uint8)
    for bit in range(8):
        if (k >> bit) & 1:
            rgb[: H // 2, bit * 16 : (bit + 1) * 16] = 255
    x = (3 * k) % (W - 16)
    rgb[H // 2 + 8 : H // 2 + 24, x : x + 16] = (220, 30, 30)
    return rgb


def frame_number(rgb: np.ndarray) -> int:
    """Read back the index written by :func:`scene_frame`."""
    top = rgb[4 : H // 2 - 4]
    return sum(1 << bit for bit in range(8) if top[:, bit * 16 + 4 : bit * 16 + 12].mean() > 128)


def make_video(path: Path, fps: float, n_frames: int, audio: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n = int(n_frames / float(fps) * 16000)
    t = np.arange(n) / 16000
    sound = 0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t) + 0.02 * rng.standard_normal(n)
    return write_video(path, (scene_frame(k) for k in range(n_frames)), float(fps),
                       audio=sound.astype(np.float32) if audio else None)


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("raw")
    make_video(d / "vidA_0_1000.mp4", 30, 105, seed=0)      # 3.5 s at 30 fps
    make_video(d / "vidB_0_1000.mp4", NTSC, 110, seed=1)    # 3.67 s at 29.97 fps
    return d


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("music")
    done = prepare([raw], out, progress=False)
    assert [(d.stem, d.audio_seconds, d.frame_seconds) for d in done] == \
           [("vidA_0_1000", 3, 3), ("vidB_0_1000", 3, 3)]
    return out


def jpeg_indices(root: Path, stem: str) -> dict[int, list[int]]:
    """second -> the global frame indices in its folder, checked against the pixels."""
    out = {}
    for folder in sorted((root / "video_frames" / stem).iterdir()):
        second = int(folder.name.removeprefix("frame_"))
        names = sorted(folder.glob("*.jpg"))
        for p in names:
            bgr = cv2.imread(str(p))
            assert frame_number(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) == int(p.stem), p
        out[second] = [int(p.stem) for p in names]
    return out


# --------------------------------------------------------------------------------------------
# frame selection


def test_select_frames_by_timestamp():
    assert select_frames(30, 105) == {0: (0, 7, 14, 21), 1: (30, 37, 44, 51), 2: (60, 67, 74, 81)}
    # 29.97 fps: every second gets 4 frames (the original counter gave only the first second)
    assert select_frames(NTSC, 110) == {0: (0, 7, 14, 21), 1: (29, 36, 43, 50), 2: (59, 66, 73, 80)}
    assert select_frames(NTSC, 30 * 1001)[1000] == (29970, 29977, 29984, 29991)  # no drift
    assert select_frames(25, 50) == {0: (0, 6, 12, 18), 1: (25, 31, 37, 43)}
    assert select_frames(60, 60) == {0: (0, 15, 30, 45)}
    assert select_frames(30, 29) == {}  # no whole second
    assert select_frames(30, 60, per_second=1) == {0: (0,), 1: (30,)}
    with pytest.raises(MusicError, match="3.000 fps video cannot give 4 frames"):
        select_frames(3, 30)


# --------------------------------------------------------------------------------------------
# preparation


def test_prepare_30fps_keeps_offsets_0_7_14_21_of_each_whole_second(prepared):
    assert jpeg_indices(prepared, "vidA_0_1000") == {
        0: [0, 7, 14, 21], 1: [30, 37, 44, 51], 2: [60, 67, 74, 81]}


def test_prepare_2997fps_chooses_frames_by_timestamp(prepared):
    got = jpeg_indices(prepared, "vidB_0_1000")
    assert got == {0: [0, 7, 14, 21], 1: [29, 36, 43, 50], 2: [59, 66, 73, 80]}
    for s, idx in got.items():  # each kept frame is the one on screen at t = s + j*7/fps
        for j, k in enumerate(idx):
            t = s + Fraction(j * 7) / NTSC
            assert k / NTSC <= t < (k + 1) / NTSC


def test_prepare_writes_the_model_logmel_of_each_second(prepared, raw):
    for stem in ("vidA_0_1000", "vidB_0_1000"):
        files = sorted((prepared / "audio_frames" / stem).iterdir())
        assert [f.name for f in files] == ["000.npy", "001.npy", "002.npy"]
        wave = torch.from_numpy(read_audio_track(raw / f"{stem}.mp4"))
        with torch.no_grad():
            expected = LogMel()(wave[: 3 * 16000].view(3, 16000))[:, 0].numpy()
        for s, f in enumerate(files):
            mel = load_logmel(f)
            assert mel.shape == LOGMEL_SHAPE == (201, 64) and mel.dtype == np.float32
            np.testing.assert_allclose(mel, expected[s], atol=1e-5)
        assert expected[0].max() - expected[0].min() <= 80.0 + 1e-4  # top_db of the front end


def test_prepare_writes_the_index_and_leaves_no_partial_folders(prepared):
    assert (prepared / "index.txt").read_text() == (
        "vidA_0_1000.flac vidA_0_1000.mp4\nvidB_0_1000.flac vidB_0_1000.mp4\n")
    assert read_index(prepared / "index.txt") == ["vidA_0_1000", "vidB_0_1000"]
    assert not [p for p in prepared.rglob(".*")]


def test_cli_prepares_files_skips_done_videos_and_reports_errors(raw, tmp_path, capsys):
    out = tmp_path / "root"
    assert main(["prepare", "--videos", str(raw / "vidA_0_1000.mp4"), "--out", str(out), "--quiet",
                 "--index", "a.txt"]) == 0
    assert "1 video(s)" in capsys.readouterr().out
    assert read_index(out / "a.txt") == ["vidA_0_1000"]
    stamp = (out / "audio_frames" / "vidA_0_1000" / "000.npy").stat().st_mtime_ns
    done = prepare([raw / "vidA_0_1000.mp4"], out, progress=False)
    assert done[0].skipped and (out / "audio_frames" / "vidA_0_1000" / "000.npy").stat().st_mtime_ns == stamp
    assert not prepare([raw / "vidA_0_1000.mp4"], out, overwrite=True, progress=False)[0].skipped

    silent = make_video(tmp_path / "bad" / "mute_0_1000.mp4", 30, 40, audio=False)
    assert main(["prepare", "--videos", str(silent), "--out", str(out), "--quiet"]) == 2
    assert "mute_0_1000.mp4: has no audio track" in capsys.readouterr().err


def test_prepare_errors_name_the_file(tmp_path, raw):
    silent = make_video(tmp_path / "mute.mp4", 30, 40, audio=False)
    with pytest.raises(MediaError, match=r"mute\.mp4: has no audio track"):
        prepare([silent], tmp_path / "o", progress=False)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    with pytest.raises(MediaError, match=r"junk\.mp4: unreadable video"):
        prepare([junk], tmp_path / "o", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MusicError, match=r"empty: no video file"):
        prepare([tmp_path / "empty"], tmp_path / "o", progress=False)
    with pytest.raises(MusicError, match=r"nope\.mp4: no such video file"):
        prepare([tmp_path / "nope.mp4"], tmp_path / "o", progress=False)
    # --skip-bad: the bad files are reported, the good one is prepared and indexed
    shutil.copy(raw / "vidA_0_1000.mp4", tmp_path / "good.mp4")
    done = prepare([junk, silent, tmp_path / "good.mp4"], tmp_path / "o", skip_bad=True, progress=False)
    assert [d.stem for d in done] == ["good"]
    assert read_index(tmp_path / "o" / "index.txt") == ["good"]
    assert not (tmp_path / "o" / "video_frames" / "junk").exists()


# --------------------------------------------------------------------------------------------
# .pkl log-mels (the original format) are read without running code


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pickled_arrays_load(tmp_path, protocol):
    mel = np.random.default_rng(protocol).standard_normal(LOGMEL_SHAPE).astype(np.float32)
    p = tmp_path / "000.pkl"
    p.write_bytes(pickle.dumps(mel, protocol=protocol))
    np.testing.assert_array_equal(load_logmel(p), mel)


def test_restricted_unpickler_refuses_code_and_non_arrays(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "000.pkl"
    evil.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(MusicError, match=r"000\.pkl: refused or unreadable pickle .*'(posix|os|nt)\.system' is not allowed"):
        load_logmel(evil)
    assert not marker.exists()
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(MusicError, match=r"dict\.pkl: expected a numeric numpy array, got dict"):
        safe_load_pickled_array(tmp_path / "dict.pkl")
    (tmp_path / "obj.pkl").write_bytes(pickle.dumps(np.array([1, "x"], dtype=object)))
    with pytest.raises(MusicError, match=r"obj\.pkl: expected a numeric numpy array, got array of dtype object"):
        safe_load_pickled_array(tmp_path / "obj.pkl")
    (tmp_path / "shape.pkl").write_bytes(pickle.dumps(np.zeros((10, 64), np.float32)))
    with pytest.raises(MusicError, match=r"shape\.pkl: log-mel must have shape \(201, 64\)"):
        load_logmel(tmp_path / "shape.pkl")


# --------------------------------------------------------------------------------------------
# label JSON, index files, pairs


def write_labels(path: Path) -> Path:
    path.write_text(json.dumps({"version": "x", "videos": {
        "violin": ["vidA"], "accordion": ["vidB"], "flute": ["other"], "flute violin": ["duet1"]}}))
    return path


def test_labels_sort_categories_and_map_videos(tmp_path):
    labels = load_labels(write_labels(tmp_path / "l.json"))
    assert labels.categories == ("accordion", "flute", "violin")
    assert labels.index("vidA") == 2 and labels.index("vidB") == 0 and labels.index("duet1") == -1
    (tmp_path / "bad.json").write_text(json.dumps({"videos": {"a": ["x"], "b": ["x"]}}))
    with pytest.raises(MusicError, match=r"bad\.json: video 'x' is listed under both 'a' and 'b'"):
        load_labels(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({"vids": {}}))
    with pytest.raises(MusicError, match=r"bad2\.json: expected a non-empty object under 'videos'"):
        load_labels(tmp_path / "bad2.json")


def test_index_files(tmp_path):
    write_index(tmp_path / "i.txt", ["a_0_1000", "b_0_1000"])
    assert read_index(tmp_path / "i.txt") == ["a_0_1000", "b_0_1000"]
    (tmp_path / "bad.txt").write_text("a_0_1000.flac a_0_1000.mp4\n\nb_0_1000.flac c_0_1000.mp4\n")
    with pytest.raises(MusicError, match=r"bad\.txt:3: the audio and video names differ"):
        read_index(tmp_path / "bad.txt")
    assert video_id("AbC-dE_fG12_0_1000") == "AbC-dE_fG12" and video_id("synth7") == "synth7"


def test_pairs_only_where_both_the_audio_second_and_the_frame_folder_exist(prepared, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(prepared, root)
    assert len(scan_pairs(root)) == 6
    (root / "audio_frames" / "vidA_0_1000" / "002.npy").unlink()
    shutil.rmtree(root / "video_frames" / "vidB_0_1000" / "frame_001")
    pairs = scan_pairs(root)
    assert [(p.stem, p.second) for p in pairs] == [
        ("vidA_0_1000", 0), ("vidA_0_1000", 1), ("vidB_0_1000", 0), ("vidB_0_1000", 2)]
    assert all(len(p.frames) == 4 for p in pairs)
    with pytest.raises(MusicError, match="no \\(audio second, frame folder\\) pair found"):
        scan_pairs(root, ["missing_0_1000"])
    with pytest.raises(MusicError, match="not a MUSIC data root"):
        scan_pairs(tmp_path)


# --------------------------------------------------------------------------------------------
# MusicSolo


def test_music_solo_items(prepared, tmp_path):
    ds = MusicSolo(prepared, index=prepared / "index.txt", labels=write_labels(tmp_path / "l.json"),
                   image_size=32)
    assert len(ds) == 6 and ds.categories == ("accordion", "flute", "violin")
    torch.manual_seed(0)
    for i in range(len(ds)):
        item = ds[i]
        pair = ds.pairs[i]
        assert item["audio"].shape == (1, 201, 64) and item["audio"].dtype == torch.float32
        assert torch.equal(item["audio"][0], torch.from_numpy(load_logmel(pair.audio)))
        assert item["pos_image"].shape == item["neg_image"].shape == (3, 32, 32)
        assert Path(item["frame_path"]) in pair.frames  # one of the 4 frames of that second
        assert item["pos_label"] == {"vidA": 2, "vidB": 0}[pair.video_id]
        assert item["neg_label"] == {"vidA": 2, "vidB": 0}[video_id(Path(item["neg_frame_path"]).parts[-3])]


def test_music_solo_negatives_come_from_a_different_video_and_frames_vary(prepared):
    ds = MusicSolo(prepared, image_size=16)
    torch.manual_seed(1)
    chosen = set()
    for _ in range(8):
        for i in range(len(ds)):
            item = ds[i]
            pos_stem = Path(item["frame_path"]).parts[-3]
            assert Path(item["neg_frame_path"]).parts[-3] != pos_stem
            assert item["pos_label"] == item["neg_label"] == -1  # no label file given
            if i == 0:
                chosen.add(Path(item["frame_path"]).name)
    assert len(chosen) > 1  # the positive frame is drawn among the second's 4 frames


def test_music_solo_seeded_items_repeat_and_train_mode_augments(prepared):
    ds = MusicSolo(prepared, image_size=32, seed=3)
    a, b = ds[2], ds[2]
    assert a["frame_path"] == b["frame_path"] and torch.equal(a["neg_image"], b["neg_image"])
    train = MusicSolo(prepared, image_size=32, train=True, seed=3)
    assert train.resize_size == 37
    x = train[0]["pos_image"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    assert batch["audio"].shape == (4, 1, 201, 64) and batch["pos_image"].shape == (4, 3, 32, 32)


def test_music_solo_reads_original_pkl_and_reports_bad_setups(prepared, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(prepared, root)
    npy = root / "audio_frames" / "vidA_0_1000" / "001.npy"
    mel = np.load(npy)
    npy.with_suffix(".pkl").write_bytes(pickle.dumps(mel, protocol=2))
    npy.unlink()
    ds = MusicSolo(root, image_size=16)
    pair = next(i for i, p in enumerate(ds.pairs) if p.audio.suffix == ".pkl")
    np.testing.assert_array_equal(ds[pair]["audio"][0].numpy(), mel)

    (tmp_path / "partial.json").write_text(json.dumps({"videos": {"violin": ["vidA"]}}))
    with pytest.raises(MusicError, match=r"\['vidB'\] have no category in the label JSON"):
        MusicSolo(root, labels=tmp_path / "partial.json")
    with pytest.raises(MusicError, match="at least two different videos, found only 'vidA'"):
        MusicSolo(root, index=["vidA_0_1000"])


def test_audio_track_is_read_back_without_the_encoder_padding(tmp_path):
    # AAC pads its last frame (up to 1023 samples); a 2.95 s clip must not gain a third second
    sound = 0.2 * np.sin(2 * np.pi * 440 * np.arange(47200) / 16000)
    video = write_video(tmp_path / "v.mp4", [scene_frame(k) for k in range(88)], 30, audio=sound)
    back = read_audio_track(video)
    assert abs(back.shape[0] - 47200) <= 16  # the mp4 edit list is in ms
    np.testing.assert_allclose(back[2000:40000], sound[2000:40000], atol=0.05)


def test_prepare_a_synthmusic_video_at_2997fps(tmp_path):
    synth = pytest.importorskip("training.data.synth")
    video = synth.write_scene_video(tmp_path / "raw" / "solo_0_1000.mp4", "solo", 0, 3.2, fps=float(NTSC))
    (done,) = prepare([video], tmp_path / "root", progress=False)
    assert (done.audio_seconds, done.frame_seconds) == (3, 3)
    folders = sorted((tmp_path / "root" / "video_frames" / "solo_0_1000").iterdir())
    assert [[int(p.stem) for p in sorted(f.glob("*.jpg"))] for f in folders] == \
           [[0, 7, 14, 21], [29, 36, 43, 50], [59, 66, 73, 80]]
    assert cv2.imread(str(folders[0] / "00000.jpg")).shape == (224, 224, 3)
