"""AVCocoDataset: AV-COCO folder -> model-ready tensors, classes matched by name."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from avsl_edge.audio import save_audio
from avsl_edge.avcoco import AVCocoError, AVImage, AVObject, load_avcoco, write_avcoco
from avsl_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD, denormalize_chw, preprocess_frame
from training.data.avcoco_dataset import AVCocoDataset, collate

MODEL_CLASSES = ("accordion", "banjo", "bell", "drum", "flute")


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_avcoco(root, file_classes=("drum", "banjo", "flute")):
    """Three images of different sizes: a duet (two boxes, one silent), a solo on a 44.1 kHz
    stereo clip, and an empty frame with a 0.5 s clip."""
    frames = {1: _rgb(48, 64, 1), 2: _rgb(30, 90, 2), 3: _rgb(40, 40, 3)}
    for i, rgb in frames.items():
        (root / "img").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "img" / f"{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    save_audio(root / "aud" / "1.wav", np.linspace(-0.5, 0.5, 16000))
    t = np.arange(44100) / 44100
    soundfile.write(root / "aud" / "2.wav", np.stack([np.sin(2 * np.pi * 300 * t)] * 2, 1) * 0.3,
                    44100, subtype="PCM_16")
    save_audio(root / "aud" / "3.flac", np.full(8000, 0.25))
    images = [
        AVImage(1, "img/1.png", 64, 48, "aud/1.wav", scene="duet",
                objects=(AVObject((8.0, 12.0, 16.0, 24.0), "drum", True),
                         AVObject((32.0, 0.0, 32.0, 48.0), "flute", False))),
        AVImage(2, "img/2.png", 90, 30, "aud/2.wav", scene="solo",
                objects=(AVObject((9.0, 3.0, 45.0, 15.0), "banjo", True),)),
        AVImage(3, "img/3.png", 40, 40, "aud/3.flac", audio_duration=0.5, scene="solo"),
    ]
    write_avcoco(root, list(file_classes), images)
    return frames


def test_items_are_model_ready_and_labels_index_the_model_classes(tmp_path):
    frames = make_avcoco(tmp_path)
    ds = AVCocoDataset(tmp_path, classes=MODEL_CLASSES, image_size=32)
    assert len(ds) == 3
    a = ds[0]
    assert a["image"].shape == (3, 32, 32) and a["image"].dtype == torch.float32
    assert a["waveform"].shape == (16000,) and a["waveform"].dtype == torch.float32
    torch.testing.assert_close(a["boxes"], torch.tensor([[8 / 64, 12 / 48, 16 / 64, 24 / 48],
                                                         [0.5, 0.0, 0.5, 1.0]]))
    assert a["labels"].tolist() == [MODEL_CLASSES.index("drum"), MODEL_CLASSES.index("flute")]
    assert a["labels"].dtype == torch.int64
    assert a["sounding"].tolist() == [True, False]
    assert a["image_id"] == 1 and a["scene"] == "duet"
    # the image is exactly the shared edge preprocessing of the frame
    assert torch.equal(a["image"], torch.from_numpy(preprocess_frame(frames[1], 32)))
    # an image without objects has empty, well-typed targets
    c = ds[2]
    assert c["boxes"].shape == (0, 4) and c["labels"].shape == (0,) and c["sounding"].shape == (0,)


def test_image_is_resized_without_keeping_aspect_then_imagenet_normalised(tmp_path):
    frames = make_avcoco(tmp_path)
    ds = AVCocoDataset(tmp_path, classes=MODEL_CLASSES, image_size=24)
    x = ds[1]["image"]  # from a 90x30 frame
    assert x.shape == (3, 24, 24)
    resized = cv2.resize(frames[2], (24, 24), interpolation=cv2.INTER_AREA)
    expected = TF.normalize(TF.to_dtype(torch.from_numpy(resized).permute(2, 0, 1), torch.float32,
                                        scale=True), list(IMAGENET_MEAN), list(IMAGENET_STD))
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(denormalize_chw(x.numpy()), resized)


def test_waveform_is_mono_16k_and_fitted_to_one_second(tmp_path):
    make_avcoco(tmp_path)
    ds = AVCocoDataset(tmp_path, classes=MODEL_CLASSES)
    np.testing.assert_allclose(ds[0]["waveform"].numpy(), np.linspace(-0.5, 0.5, 16000), atol=1e-4)
    stereo = ds[1]["waveform"].numpy()  # 44.1 kHz stereo -> 16 kHz mono, same tone
    t = np.arange(16000) / 16000
    np.testing.assert_allclose(stereo[500:-500], 0.3 * np.sin(2 * np.pi * 300 * t)[500:-500], atol=2e-3)
    short = ds[2]["waveform"].numpy()  # 0.5 s clip: zero-padded at the start
    assert np.all(short[:8000] == 0) and np.allclose(short[8000:], 0.25, atol=1e-4)
    half = AVCocoDataset(tmp_path, classes=MODEL_CLASSES, clip_seconds=0.25, sample_rate=8000)
    assert half[0]["waveform"].shape == (2000,)


def test_classes_match_by_name_whatever_the_file_ids(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_avcoco(a, file_classes=("drum", "banjo", "flute"))
    make_avcoco(b, file_classes=("flute", "banjo", "drum", "bell"))
    ids_a = json.loads((a / "annotations.json").read_text())["annotations"][0]["category_id"]
    ids_b = json.loads((b / "annotations.json").read_text())["annotations"][0]["category_id"]
    assert ids_a != ids_b  # the files disagree on ids ...
    da, db = AVCocoDataset(a, classes=MODEL_CLASSES), AVCocoDataset(b, classes=MODEL_CLASSES)
    for i in range(3):  # ... but the labels agree
        assert torch.equal(da[i]["labels"], db[i]["labels"])
    # without a class list the file's own categories are used
    assert AVCocoDataset(a).classes == ("drum", "banjo", "flute")
    assert AVCocoDataset(a)[0]["labels"].tolist() == [0, 2]


def test_unknown_class_is_an_error_naming_it_unless_ignored(tmp_path):
    make_avcoco(tmp_path)
    with pytest.raises(AVCocoError, match=r"annotations\.json: class\(es\) \['flute'\] are not among"):
        AVCocoDataset(tmp_path, classes=("banjo", "drum"))
    ds = AVCocoDataset(tmp_path, classes=("banjo", "drum"), ignore_unknown=True)
    assert ds.unknown_classes == ("flute",)
    first = ds[0]
    assert first["labels"].tolist() == [1] and first["boxes"].shape == (1, 4)
    assert first["sounding"].tolist() == [True]


def test_scene_filter(tmp_path):
    make_avcoco(tmp_path)
    solo = AVCocoDataset(tmp_path, classes=MODEL_CLASSES, scenes=["solo"])
    assert [solo[i]["image_id"] for i in range(len(solo))] == [2, 3]
    assert len(AVCocoDataset(tmp_path, classes=MODEL_CLASSES, scenes="duet")) == 1
    with pytest.raises(AVCocoError, match=r"no image has a scene in \['mosaic'\].*'duet', 'solo'"):
        AVCocoDataset(tmp_path, classes=MODEL_CLASSES, scenes=["mosaic"])


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(AVCocoError, match=r"annotations\.json: missing"):
        AVCocoDataset(tmp_path)
    write_avcoco(tmp_path, ["drum"], [])
    with pytest.raises(AVCocoError, match=r"annotations\.json: the data folder has no images"):
        AVCocoDataset(tmp_path)


def test_accepts_a_loaded_avcoco_and_collates_variable_box_counts(tmp_path):
    make_avcoco(tmp_path)
    ds = AVCocoDataset(load_avcoco(tmp_path), classes=MODEL_CLASSES, image_size=16)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert batch["image"].shape == (3, 3, 16, 16)
    assert batch["waveform"].shape == (3, 16000)
    assert [b.shape for b in batch["boxes"]] == [(2, 4), (1, 4), (0, 4)]
    assert [lab.tolist() for lab in batch["labels"]] == [[3, 4], [1], []]
    assert [s.tolist() for s in batch["sounding"]] == [[True, False], [True], []]
    assert batch["image_id"].tolist() == [1, 2, 3]
    assert batch["scene"] == ["duet", "solo", "solo"]
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_unreadable_frame_surfaces_as_an_error_naming_file_and_image(tmp_path):
    make_avcoco(tmp_path)
    (tmp_path / "img" / "2.png").write_bytes(b"broken")
    ds = AVCocoDataset(tmp_path, classes=MODEL_CLASSES)
    with pytest.raises(AVCocoError, match=r"2\.png: unreadable image \(image id 2\)"):
        ds[1]


def test_bad_arguments(tmp_path):
    make_avcoco(tmp_path)
    with pytest.raises(ValueError, match="duplicate names"):
        AVCocoDataset(tmp_path, classes=("drum", "drum"))
    with pytest.raises(ValueError, match="image_size"):
        AVCocoDataset(tmp_path, image_size=0)
