"""The AV-COCO reader/writer (docs/avcoco.md): every error the format lists names the file
and the offending entry; valid folders load completely."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from avsl_edge.audio import save_audio
from avsl_edge.avcoco import (
    AVCocoError,
    AVImage,
    AVObject,
    load_avcoco,
    read_clip,
    read_frame,
    write_avcoco,
)

W, H = 64, 48


def _frame(seed: int) -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :, seed % 3] = 40 + 50 * seed
    rgb[10:20, 10:30] = (255, 255, 0)
    return rgb


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_folder(root: Path, n: int = 2) -> dict:
    """``n`` PNG frames + ``n`` 1 s WAV clips under ``root`` and the matching annotation document
    (not yet written: tests break it first, then call :func:`dump`)."""
    images, annotations = [], []
    for i in range(1, n + 1):
        _write_png(root / "frames" / f"{i:06d}.png", _frame(i))
        save_audio(root / "audio" / f"{i:06d}.wav", 0.1 * np.sin(np.linspace(0, 300 * i, 16000)))
        images.append({"id": i, "file_name": f"frames/{i:06d}.png", "width": W, "height": H,
                       "audio": f"audio/{i:06d}.wav", "audio_offset": 0.0, "audio_duration": 1.0,
                       "scene": "solo"})
        annotations.append({"id": 10 + i, "image_id": i, "category_id": 1 + i % 2,
                            "bbox": [4.0, 5.0, 20.0, 30.0], "area": 600.0, "iscrowd": 0,
                            "sounding": True})
    return {
        "info": {"version": "1.0", "description": "test"},
        "categories": [{"id": 1, "name": "banjo"}, {"id": 2, "name": "drum"}],
        "images": images,
        "annotations": annotations,
    }


def dump(root: Path, doc: dict) -> Path:
    path = root / "annotations.json"
    path.write_text(json.dumps(doc))
    return path


def load_error(root: Path, doc: dict) -> str:
    dump(root, doc)
    with pytest.raises(AVCocoError) as info:
        load_avcoco(root)
    return str(info.value)


# --------------------------------------------------------------------------------------------
# valid folders


def test_valid_folder_loads_every_image_object_and_clip(tmp_path):
    dump(tmp_path, make_folder(tmp_path))
    coco = load_avcoco(tmp_path)
    assert coco.categories == ("banjo", "drum")
    assert len(coco) == 2 and [im.id for im in coco.images] == [1, 2]
    im = coco.images[0]
    assert im.objects == (AVObject((4.0, 5.0, 20.0, 30.0), "drum", True),)
    assert im.objects[0].normalised(W, H) == pytest.approx((4 / W, 5 / H, 20 / W, 30 / H))
    np.testing.assert_array_equal(read_frame(coco, im), _frame(1))  # PNG is lossless, RGB order
    clip = read_clip(coco, im)
    assert clip.dtype == np.float32 and clip.shape == (16000,)


def test_round_trip_write_then_load(tmp_path):
    doc = make_folder(tmp_path, n=3)  # only for the media files
    images = [
        AVImage(id=5, file_name="frames/000001.png", width=W, height=H, audio="audio/000001.wav",
                audio_offset=0.25, audio_duration=0.5, scene="duet",
                objects=(AVObject((0.0, 0.0, W, H), "flute", True),
                         AVObject((1.5, 2.5, 10.0, 12.0), "banjo", False))),
        AVImage(id=9, file_name="frames/000002.png", width=W, height=H, audio="audio/000002.wav"),
        AVImage(id=2, file_name="frames/000003.png", width=W, height=H, audio="audio/000003.wav",
                scene="mosaic", objects=(AVObject((3.0, 4.0, 5.0, 6.0), "flute"),),
                extra={"source": "unit-test"}),
    ]
    assert doc["images"]
    path = write_avcoco(tmp_path, ["flute", "banjo", "drum"], images, description="round trip")
    assert path == tmp_path / "annotations.json"
    coco = load_avcoco(tmp_path)
    assert coco.categories == ("flute", "banjo", "drum")  # ids are 1-based positions
    assert coco.images == tuple(images)
    assert coco.images[2].extra == {"source": "unit-test"}
    assert coco.info["description"] == "round trip"
    assert not list(tmp_path.glob(".annotations.*"))  # no temporary file left behind
    assert read_clip(coco, coco.images[0]).shape == (8000,)


def test_writer_refuses_unknown_class_and_duplicate_ids(tmp_path):
    im = AVImage(id=1, file_name="a.png", width=W, height=H, audio="a.wav",
                 objects=(AVObject((0, 0, 1, 1), "tuba"),))
    with pytest.raises(AVCocoError, match=r"image 1 .*'tuba'"):
        write_avcoco(tmp_path, ["flute"], [im])
    plain = AVImage(id=1, file_name="a.png", width=W, height=H, audio="a.wav")
    with pytest.raises(AVCocoError, match="duplicate image id 1"):
        write_avcoco(tmp_path, ["flute"], [plain, plain])
    with pytest.raises(AVCocoError, match="duplicate category"):
        write_avcoco(tmp_path, ["flute", "flute"], [plain])
    assert not (tmp_path / "annotations.json").exists()


def test_image_without_annotation_is_valid(tmp_path):
    doc = make_folder(tmp_path)
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != 2]
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    assert coco.images[1].id == 2 and coco.images[1].objects == ()
    assert coco.images[1].sounding_categories == ()
    assert read_clip(coco, coco.images[1]).shape == (16000,)


def test_missing_sounding_means_true_and_false_is_kept(tmp_path):
    doc = make_folder(tmp_path)
    del doc["annotations"][0]["sounding"]
    doc["annotations"][1]["sounding"] = False
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    assert coco.images[0].objects[0].sounding is True
    assert coco.images[1].objects[0].sounding is False
    assert coco.images[1].silent_categories == ("banjo",)


def test_unknown_extra_keys_are_kept_and_ignored(tmp_path):
    doc = make_folder(tmp_path)
    doc["licenses"] = [{"id": 1, "name": "CC-BY"}]
    doc["info"]["contributor"] = "someone"
    doc["categories"][0]["supercategory"] = "string"
    doc["images"][0].update({"license": 1, "flickr_url": "http://example.com", "camera": {"fps": 30}})
    doc["annotations"][0].update({"segmentation": [[1, 2, 3, 4]], "note": "hi"})
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    assert coco.images[0].extra == {"license": 1, "flickr_url": "http://example.com",
                                    "camera": {"fps": 30}}
    assert coco.info["contributor"] == "someone"
    assert coco.images[0].objects == (AVObject((4.0, 5.0, 20.0, 30.0), "drum", True),)


def test_class_names_not_ids_travel(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    doc_a = make_folder(a)
    dump(a, doc_a)
    doc_b = make_folder(b)
    # same classes, different and unordered ids; the annotations point at the same names
    doc_b["categories"] = [{"id": 70, "name": "drum"}, {"id": 3, "name": "banjo"}]
    remap = {1: 3, 2: 70}
    for ann in doc_b["annotations"]:
        ann["category_id"] = remap[ann["category_id"]]
    dump(b, doc_b)
    ca, cb = load_avcoco(a), load_avcoco(b)
    assert set(ca.categories) == set(cb.categories) == {"banjo", "drum"}
    assert [[o.category for o in im.objects] for im in ca.images] == \
           [[o.category for o in im.objects] for im in cb.images] == [["drum"], ["banjo"]]


def test_images_share_one_long_audio_file_at_different_offsets(tmp_path):
    doc = make_folder(tmp_path, n=3)
    ramp = np.linspace(-0.9, 0.9, 3 * 16000, dtype=np.float32)
    save_audio(tmp_path / "audio" / "video.flac", ramp)
    for k, im in enumerate(doc["images"]):
        im.update(audio="audio/video.flac", audio_offset=float(k), audio_duration=1.0)
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    for k, im in enumerate(coco.images):
        clip = read_clip(coco, im)
        np.testing.assert_allclose(clip, ramp[k * 16000:(k + 1) * 16000], atol=1.0 / 16384)


def test_multichannel_44k1_audio_is_mixed_to_mono_and_resampled(tmp_path):
    doc = make_folder(tmp_path, n=1)
    rate = 44100
    t = np.arange(2 * rate) / rate
    tone = np.sin(2 * np.pi * 440.0 * t)
    stereo = np.stack([0.6 * tone, 0.2 * tone, -0.2 * tone], axis=1)  # 3 channels, mean 0.2*tone
    soundfile.write(tmp_path / "audio" / "multi.wav", stereo, rate, subtype="PCM_16")
    doc["images"][0].update(audio="audio/multi.wav", audio_offset=0.5, audio_duration=1.0)
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    clip = read_clip(coco, coco.images[0])
    assert clip.shape == (16000,) and clip.dtype == np.float32
    t16 = 0.5 + np.arange(16000) / 16000
    expected = 0.2 * np.sin(2 * np.pi * 440.0 * t16)
    # skip the resampler's edge transients; the middle is the mixed tone at 16 kHz, in phase
    np.testing.assert_allclose(clip[500:-500], expected[500:-500], atol=2e-3)


# --------------------------------------------------------------------------------------------
# every error the format lists names the file and the offending entry


ANN = re.escape(os.sep + "annotations.json")


@pytest.mark.parametrize("bad", ["../outside.png", "frames/../../outside.png", "/etc/passwd.png"])
def test_path_leaving_root(tmp_path, bad):
    root = tmp_path / "data"
    doc = make_folder(root)
    doc["images"][1]["file_name"] = bad
    msg = load_error(root, doc)
    assert re.search(ANN + r": images\[1\] \(id 2\) 'file_name'", msg), msg
    assert "leaves the data folder" in msg and repr(bad) in msg


def test_symlink_leaving_root(tmp_path):
    root = tmp_path / "data"
    doc = make_folder(root)
    save_audio(tmp_path / "secret.wav", np.zeros(16000))
    (root / "audio" / "link.wav").symlink_to(tmp_path / "secret.wav")
    doc["images"][0]["audio"] = "audio/link.wav"
    msg = load_error(root, doc)
    assert re.search(ANN + r": images\[0\] \(id 1\) 'audio'", msg) and "leaves" in msg, msg


@pytest.mark.parametrize("key", ["file_name", "audio"])
def test_missing_file(tmp_path, key):
    doc = make_folder(tmp_path)
    (tmp_path / doc["images"][1][key]).unlink()
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + r": images\[1\] \(id 2\)", msg), msg
    assert f"{doc['images'][1][key]!r} does not exist" in msg
    # without the file check, the folder loads and the read names the file and image
    coco = load_avcoco(tmp_path, check_files=False)
    read = read_frame if key == "file_name" else read_clip
    with pytest.raises(AVCocoError, match=r"000002\.(png|wav).*image id 2"):
        read(coco, coco.images[1])


def test_unreadable_image(tmp_path):
    doc = make_folder(tmp_path)
    (tmp_path / "frames" / "000002.png").write_bytes(b"this is not a PNG")
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    with pytest.raises(AVCocoError) as info:
        read_frame(coco, coco.images[1])
    msg = str(info.value)
    assert str(tmp_path / "frames" / "000002.png") in msg and "image id 2" in msg and "unreadable" in msg


def test_image_with_wrong_size_is_an_error(tmp_path):
    doc = make_folder(tmp_path)
    doc["images"][0]["width"] = W + 2
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    with pytest.raises(AVCocoError, match=r"000001\.png: image is 64x48 but image id 1 says 66x48"):
        read_frame(coco, coco.images[0])


def test_unreadable_audio(tmp_path):
    doc = make_folder(tmp_path)
    (tmp_path / "audio" / "000002.wav").write_bytes(b"RIFF garbage")
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    with pytest.raises(AVCocoError) as info:
        read_clip(coco, coco.images[1])
    msg = str(info.value)
    assert str(tmp_path / "audio" / "000002.wav") in msg and "image id 2" in msg and "unreadable" in msg


def test_audio_clip_past_the_end_of_the_file(tmp_path):
    doc = make_folder(tmp_path)
    doc["images"][0]["audio_offset"] = 0.5  # the file holds 1 s; 0.5 + 1.0 does not fit
    dump(tmp_path, doc)
    coco = load_avcoco(tmp_path)
    with pytest.raises(AVCocoError, match=r"000001\.wav: asked for 0\.500s .*image id 1"):
        read_clip(coco, coco.images[0])


@pytest.mark.parametrize("bbox", [[50.0, 5.0, 20.0, 10.0],   # right edge 70 > 64
                                  [4.0, 40.0, 10.0, 10.0],   # bottom edge 50 > 48
                                  [-3.0, 5.0, 10.0, 10.0],   # left of the image
                                  [4.0, 5.0, 0.0, 10.0]])    # empty box
def test_box_outside_the_image(tmp_path, bbox):
    doc = make_folder(tmp_path)
    doc["annotations"][1]["bbox"] = bbox
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + r": annotations\[1\] \(id 12\): bbox .* is outside image 2 \(64x48\)", msg), msg


def test_box_touching_the_border_is_valid(tmp_path):
    doc = make_folder(tmp_path)
    doc["annotations"][0]["bbox"] = [0.0, 0.0, float(W), float(H)]
    doc["annotations"][1]["bbox"] = [32.0, 24.0, 32.0 + 1e-6, 24.0 - 1e-6]  # float round-off
    dump(tmp_path, doc)
    assert load_avcoco(tmp_path).images[0].objects[0].bbox == (0.0, 0.0, W, H)


def test_category_id_not_in_categories(tmp_path):
    doc = make_folder(tmp_path)
    doc["annotations"][0]["category_id"] = 99
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + r": annotations\[0\] \(id 11\): category_id 99 is not in 'categories'", msg), msg


def test_annotation_of_unknown_image(tmp_path):
    doc = make_folder(tmp_path)
    doc["annotations"][1]["image_id"] = 7
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + r": annotations\[1\] \(id 12\): image_id 7 is not in 'images'", msg), msg


def test_duplicate_image_id(tmp_path):
    doc = make_folder(tmp_path)
    doc["images"][1]["id"] = 1
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + r": images\[1\] \(id 1\): duplicate image id 1", msg), msg


def test_duplicate_annotation_id(tmp_path):
    doc = make_folder(tmp_path)
    doc["annotations"][1]["id"] = 11
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + r": annotations\[1\] \(id 11\): duplicate annotation id 11", msg), msg


def test_duplicate_category_id_and_name(tmp_path):
    doc = make_folder(tmp_path)
    doc["categories"][1]["id"] = 1
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + r": categories\[1\]: duplicate category id 1", msg), msg
    doc = make_folder(tmp_path)
    doc["categories"][1]["name"] = "banjo"
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + r": categories\[1\]: duplicate category name 'banjo'", msg), msg


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda d: d["images"][0].update(width=0), r"images\[0\] \(id 1\): 'width' must be > 0"),
        (lambda d: d["images"][0].update(audio_offset=-1.0), r"images\[0\] \(id 1\): 'audio_offset' must be >= 0"),
        (lambda d: d["images"][0].update(audio_duration=0), r"images\[0\] \(id 1\): 'audio_duration' must be > 0"),
        (lambda d: d["images"][0].update(file_name="frames/a.gif"), r"images\[0\] \(id 1\): 'file_name' .* not a PNG or JPEG"),
        (lambda d: d["images"][0].update(audio="audio/a.mp3"), r"images\[0\] \(id 1\): 'audio' .* not a WAV or FLAC"),
        (lambda d: d["images"][0].update(id="1"), r"images\[0\]: 'id' must be an integer"),
        (lambda d: d["annotations"][0].update(sounding="yes"), r"annotations\[0\] \(id 11\): 'sounding' must be true or false"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\] \(id 11\): 'bbox' must be \[x, y, width, height\]"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 3]), r"annotations\[0\] \(id 11\): 'bbox' must be a finite number"),
        (lambda d: d.update(categories=[]), r"'categories' is empty"),
        (lambda d: d.pop("images"), r"'images' must be a list"),
    ],
)
def test_malformed_entries(tmp_path, mutate, pattern):
    doc = make_folder(tmp_path)
    mutate(doc)
    msg = load_error(tmp_path, doc)
    assert re.search(ANN + ": " + pattern, msg), msg


def test_missing_or_broken_annotation_file(tmp_path):
    with pytest.raises(AVCocoError, match="no such data folder"):
        load_avcoco(tmp_path / "nope")
    with pytest.raises(AVCocoError, match=r"annotations\.json: missing"):
        load_avcoco(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(AVCocoError, match=r"annotations\.json: not valid JSON"):
        load_avcoco(tmp_path)


def test_annotations_nested_too_deeply_are_a_clear_error(tmp_path):
    (tmp_path / "annotations.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AVCocoError, match="nested too deeply"):
        load_avcoco(tmp_path)
