"""Hostile and damaged bundles: every path a manifest names stays inside the bundle folder (symlinks
resolved), and every damaged entry is one BundleError naming it, at load, never a traceback later
or a silently wrong model. Each bundle is a copy of the smoke run's bundle with one thing broken."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import opened_files

import avsl_edge
from avsl_edge import BundleError
from avsl_edge.backends import CPU_EP
from avsl_edge.bundle import MAX_MANIFEST_DEPTH, load_bundle, write_manifest

# --------------------------------------------------------------------------------------------
# helpers


def copy_bundle(src: Path, dst: Path) -> Path:
    """The bundle's files hard-linked (never written to here), its manifest copied (edited here)."""
    shutil.copytree(src, dst, copy_function=os.link)
    (dst / "manifest.json").unlink()
    shutil.copy(src / "manifest.json", dst / "manifest.json")
    return dst


def edit(root: Path, change: Callable[[dict], Any]) -> Path:
    m = json.loads((root / "manifest.json").read_text())
    change(m)
    (root / "manifest.json").write_text(json.dumps(m))
    return root


def put(*path: Any, value: Any) -> Callable[[dict], None]:
    """A manifest edit: set the entry at ``path`` (keys and list indices) to ``value``."""
    def change(m: dict) -> None:
        for key in path[:-1]:
            m = m[key]
        m[path[-1]] = value
    return change


def refusal(root: Path, **kw: Any) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(root, **kw)
    return str(info.value)


@pytest.fixture
def bundle(smoke_bundle, tmp_path) -> Path:
    return copy_bundle(smoke_bundle, tmp_path / "bundle")


@pytest.fixture
def secret(tmp_path) -> Path:
    """A file next to the bundle folder that no bundle may read."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("the neighbour's secret\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# 1. every path stays inside the bundle folder


def test_a_graph_outside_the_bundle_is_refused_and_never_opened(bundle, tmp_path):
    foreign = tmp_path / "outside" / "foreign.onnx"
    foreign.parent.mkdir()
    shutil.copy(bundle / "fp32" / "head.onnx", foreign)  # a working graph, listed with its true sha256

    def point_at_it(m: dict) -> None:
        m["variants"]["fp32"]["graphs"]["head"]["file"] = "../outside/foreign.onnx"
        m["files"]["../outside/foreign.onnx"] = sha256(foreign)

    edit(bundle, point_at_it)
    with opened_files() as seen, pytest.raises(BundleError) as info:
        avsl_edge.load(bundle, backend="onnxruntime", providers=[CPU_EP])
    assert "variants.fp32.graphs.head.file: path '../outside/foreign.onnx' leaves the bundle folder" in str(info.value)
    assert str(foreign) not in seen


def test_an_absolute_graph_path_is_refused(bundle, tmp_path):
    elsewhere = str(tmp_path / "elsewhere.onnx")
    edit(bundle, put("variants", "int8", "graphs", "image", "file", value=elsewhere))
    assert f"variants.int8.graphs.image.file: path {elsewhere!r} leaves the bundle folder" in refusal(bundle)


def test_a_graph_symlinked_out_of_the_bundle_is_refused(bundle, tmp_path):
    foreign = tmp_path / "outside" / "head.onnx"
    foreign.parent.mkdir()
    shutil.copy(bundle / "fp32" / "head.onnx", foreign)  # same bytes: the checksum alone would pass
    (bundle / "fp32" / "head.onnx").unlink()
    (bundle / "fp32" / "head.onnx").symlink_to(foreign)
    with opened_files() as seen:
        msg = refusal(bundle)
    assert "variants.fp32.graphs.head.file: path 'fp32/head.onnx' leaves the bundle folder" in msg
    assert str(foreign) not in seen


def test_a_folder_symlinked_out_of_the_bundle_is_refused(bundle, tmp_path):
    shutil.copytree(bundle / "int8", tmp_path / "outside-int8")
    shutil.rmtree(bundle / "int8")
    (bundle / "int8").symlink_to(tmp_path / "outside-int8")
    assert "variants.int8.graphs.audio.file: path 'int8/audio.onnx' leaves the bundle folder" in refusal(bundle)


def test_a_files_entry_outside_the_bundle_is_never_hashed_nor_probed(bundle, secret):
    """Whether the outside file exists or not, the refusal is the same and tells nothing about it."""
    messages = []
    for target in ("../outside/secret.txt", "../outside/no-such-file.txt", "../../../../etc/shadow"):
        edit(bundle, put("files", target, value="0" * 64))
        with opened_files() as seen:
            msg = refusal(bundle)
        assert f"files[{target!r}]: path {target!r} leaves the bundle folder" in msg
        assert not [p for p in seen if not p.startswith(str(bundle.resolve()))]
        messages.append(msg.replace(target, "TARGET"))
        edit(bundle, lambda m, target=target: m["files"].pop(target))
    assert sha256(secret)[:16] not in "".join(messages)
    assert len(set(messages)) == 1  # the same for a file that exists and one that does not: no size, no existence


def test_a_dictionary_outside_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "outside.npy"
    shutil.copy(bundle / "dictionary.npy", outside)
    edit(bundle, put("dictionary", "file", value="../outside.npy"))
    assert "dictionary.file: path '../outside.npy' leaves the bundle folder" in refusal(bundle, verify=False)
    edit(bundle, put("dictionary", "file", value="dictionary.npy"))
    (bundle / "dictionary.npy").unlink()
    (bundle / "dictionary.npy").symlink_to(outside)
    assert "dictionary.file: path 'dictionary.npy' leaves the bundle folder" in refusal(bundle, verify=False)


def test_a_manifest_symlinked_from_outside_is_refused(bundle, tmp_path):
    (bundle / "manifest.json").rename(tmp_path / "manifest.json")
    (bundle / "manifest.json").symlink_to(tmp_path / "manifest.json")
    assert "path 'manifest.json' leaves the bundle folder" in refusal(bundle)


def test_an_engine_record_must_stay_in_the_engines_folder(bundle):
    def add_engine(m: dict) -> None:
        m["engines"] = [dict(graph="image", variant="int8", precision="int8", file="../../escape.engine",
                             onnx_file="int8/image.onnx", onnx_sha256=m["files"]["int8/image.onnx"], batch_min=1,
                             batch_opt=1, batch_max=8, gpu_name="Orin", compute_capability="8.7",
                             tensorrt_version="10.3.0")]

    edit(bundle, add_engine)
    assert "engines[0].file: '../../escape.engine' is not under engines/" in refusal(bundle)


def test_symlinks_that_stay_inside_the_bundle_are_fine(bundle):
    (bundle / "fp32" / "head.onnx").rename(bundle / "head-elsewhere.onnx")
    (bundle / "fp32" / "head.onnx").symlink_to(Path("..") / "head-elsewhere.onnx")
    edit(bundle, lambda m: m["files"].update({"head-elsewhere.onnx": m["files"]["fp32/head.onnx"]}))
    assert load_bundle(bundle).graph_path("head").resolve() == (bundle / "head-elsewhere.onnx").resolve()


def test_rewriting_a_manifest_never_checksums_a_symlink_out_of_the_folder(bundle, secret):
    (bundle / "notes.txt").symlink_to(secret)
    manifest = load_bundle(bundle).manifest
    with pytest.raises(BundleError, match="path 'notes.txt' leaves the bundle folder"):
        write_manifest(bundle, manifest)
    assert sha256(secret) not in (bundle / "manifest.json").read_text()


def test_the_source_checksum_must_be_a_checksum(bundle):
    """It names the TensorRT execution provider's cache folder: no path may hide in it."""
    edit(bundle, put("source", "sha256", value="../../../../tmp/x"))
    assert "source.sha256: must be a sha256" in refusal(bundle)


# --------------------------------------------------------------------------------------------
# 2. a clear error where a traceback came


@pytest.mark.parametrize("entry, value, problem", [
    ("in_view_threshold", 5.0, "in_view_threshold must be a number in [0, 1], got 5.0"),
    ("class_threshold", float("nan"), "postprocessing.class_threshold: must be a finite number, got nan"),
    ("box_tau", -1, "box_tau must be a number in [0, 1], got -1"),
    ("audio_gate_db", float("nan"), "postprocessing.audio_gate_db: must be a finite number, got nan"),
    ("audio_gate_db", 10.0, "audio_gate_db must be a level in dBFS in [-200, 0], got 10.0"),
    ("in_view_score", "vibes", "in_view_score must be one of av_score, presence, heard_av, heard_class, combined, got 'vibes'"),
    ("box_method", "magic", "box_method must be one of map, grabcut, got 'magic'"),
    ("in_view_combination", [1, 2], "postprocessing.in_view_combination: must be an object, got [1, 2]"),
    ("in_view_combination", {"bias": 1.0}, "in_view_combination must map exactly bias, av_score, presence, heard_av"),
    ("in_view_combination", {"bias": "x", "av_score": 1, "presence": 1, "heard_av": 1},
     "in_view_combination['bias'] must be a finite number within +-1e4, got 'x'"),
    ("softmax_scale", "3", "postprocessing.softmax_scale: must be a finite number, got '3'"),
])
def test_out_of_range_rules_are_refused_at_load(bundle, entry, value, problem):
    edit(bundle, put("postprocessing", entry, value=value))
    with pytest.raises(BundleError, match=re.escape(problem)):
        avsl_edge.load(bundle, backend="onnxruntime", providers=[CPU_EP], verify=False)


@pytest.mark.parametrize("depth", [MAX_MANIFEST_DEPTH + 1, 100_000])
def test_an_absurdly_nested_manifest_is_refused(bundle, depth):
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text.rstrip()[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}")
    assert re.search("nested (more than 32 levels|too) deep", refusal(bundle))


@pytest.mark.parametrize("text", ["[1, 2]", '"a manifest"', "null", "42"])
def test_a_manifest_that_is_not_an_object_is_refused(bundle, text):
    (bundle / "manifest.json").write_text(text)
    assert "manifest.json: not a JSON object" in refusal(bundle)


@pytest.mark.parametrize("path, value, problem", [
    (("classes",), 5, "classes: must be a list, got 5"),
    (("num_clusters",), "11", "num_clusters: must be an integer, got '11'"),
    (("preprocessing",), [64], "preprocessing: must be an object, got [64]"),
    (("preprocessing", "image_size"), "64", "preprocessing.image_size: must be an integer, got '64'"),
    (("graphs", "image", "inputs", 0, "shape"), "abc", "graphs.image.inputs[0].shape: must be a list, got 'abc'"),
    (("variants", "fp32"), 3, "variants.fp32: must be an object, got 3"),
    (("variants", "fp32", "report", "eval"), 3, "variants.fp32.report.eval: must be an object, got 3"),
    (("engines",), [5], "engines[0]: must be an object, got 5"),
    (("files",), ["dictionary.npy"], "files: must be an object, got ['dictionary.npy']"),
    (("dictionary",), "dictionary.npy", "dictionary: must be an object, got 'dictionary.npy'"),
    (("cluster_match", "cluster_to_class", 0), True, "cluster_match.cluster_to_class[0]: must be an integer, got True"),
    (("metrics",), [1], "metrics: must be an object, got [1]"),
    (("created",), 5, "created: must be a string, got 5"),
])
def test_wrong_types_are_refused_naming_the_entry(bundle, path, value, problem):
    edit(bundle, put(*path, value=value))
    assert problem in refusal(bundle)


def test_a_number_too_long_for_python_is_refused(bundle):
    (bundle / "manifest.json").write_text('{"format_version": 1' + "0" * 5000 + "}")
    assert "unreadable manifest" in refusal(bundle)


# --------------------------------------------------------------------------------------------
# 3. silently accepted before: now a clear error


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_dictionary_with_non_finite_values_is_refused(bundle, bad):
    d = np.load(bundle / "dictionary.npy")
    d[3, 7] = bad
    (bundle / "dictionary.npy").unlink()  # a hard link: replace, do not write through
    np.save(bundle / "dictionary.npy", d)
    edit(bundle, put("files", "dictionary.npy", value=sha256(bundle / "dictionary.npy")))  # a faithful checksum
    assert "dictionary rows [3] hold NaN or infinite values" in refusal(bundle, verify=False)


def test_a_dictionary_with_an_all_zero_row_is_refused(bundle):
    d = np.load(bundle / "dictionary.npy")
    d[1] = 0.0
    (bundle / "dictionary.npy").unlink()
    np.save(bundle / "dictionary.npy", d)
    assert "dictionary rows [1] are all zero" in refusal(bundle, verify=False)


@pytest.mark.parametrize("classes, problem", [
    (lambda c: [c[0]] * len(c), "more than once"),
    (lambda c: list(range(len(c))), "classes[0]: must be a non-empty string, got 0"),
    (lambda c: [""] + c[1:], "classes[0]: must be a non-empty string, got ''"),
    (lambda c: [], "classes: must name at least one class"),
])
def test_duplicate_or_non_string_classes_are_refused(bundle, classes, problem):
    edit(bundle, lambda m: m.update(classes=classes(m["classes"])))
    assert problem in refusal(bundle)


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_a_format_version_that_only_equals_1_is_refused(bundle, version):
    edit(bundle, put("format_version", value=version))
    assert f"bundle format version {version!r}, but this avsl-edge reads version 1" in refusal(bundle)


@pytest.mark.parametrize("size, problem", [
    (0, "preprocessing.image_size: must be >= 16, got 0"),
    (-64, "preprocessing.image_size: must be >= 16, got -64"),
    (97, "graphs.image.inputs[0] (image): shape ['batch', 3, 64, 64], but "),
    (128, "graphs.image.inputs[0] (image): shape ['batch', 3, 64, 64], but "),
])
def test_an_image_size_that_would_fail_at_the_first_frame_is_refused_at_load(bundle, size, problem):
    edit(bundle, put("preprocessing", "image_size", value=size))
    assert problem in refusal(bundle)


def test_an_image_size_that_fits_the_manifest_but_not_the_graph_file_is_refused_at_load(bundle):
    """Consistent numbers (97 px frames make 7 x 7 feature maps), but the image graph takes 64 px."""
    def resize(m: dict) -> None:
        m["preprocessing"]["image_size"] = m["model"]["image_size"] = 97
        m["model"]["feature_hw"] = [7, 7]
        for graph in m["graphs"].values():
            for t in graph["inputs"] + graph["outputs"]:
                if len(t["shape"]) == 4:
                    t["shape"][2:] = [7, 7]
        m["graphs"]["image"]["inputs"][0]["shape"] = ["batch", 3, 97, 97]

    edit(bundle, resize)
    with pytest.raises(BundleError, match=r"image\.onnx: input 'image' has shape .* the bundle is mismatched"):
        avsl_edge.load(bundle, backend="onnxruntime", providers=[CPU_EP], verify=False)


@pytest.mark.parametrize("change, problem", [
    (put("dictionary", "shape", value=[11, 256]), "the dictionary's 256 features make it"),
    (put("num_clusters", value=12), "dictionary.shape: [11, 512] does not match num_clusters 12"),
    (lambda m: m["cluster_match"]["cluster_to_class"].pop(), "has 10 clusters, expected num_clusters 11"),
    (put("graphs", "audio", "outputs", 1, "shape", value=["batch", 7]), "graphs.audio.outputs[1] (audio_probs)"),
    (put("cluster_match", "n_classes", value=10), "cluster_match.n_classes: 10 classes, the manifest lists 11"),
    (put("model", "feature_hw", value=[9, 9]), "model.feature_hw: [9, 9], but the graphs say [4, 4]"),
])
def test_dictionary_classes_clusters_and_graph_sizes_must_agree(bundle, change, problem):
    edit(bundle, change)
    assert problem in refusal(bundle)


@pytest.mark.parametrize("entry, value, problem", [
    ("mean", [0.0, 0.0, 0.0], "avsl-edge normalises with the ImageNet mean"),
    ("std", [0.0, 0.0, 0.0], "avsl-edge normalises with the ImageNet std"),
    ("color", "BGR", "preprocessing.color: must be one of RGB, got 'BGR'"),
    ("sample_rate", 48000, "preprocessing.sample_rate: 48000, but avsl-edge feeds the audio graph 16000 samples"),
])
def test_preprocessing_the_runtime_would_ignore_is_refused(bundle, entry, value, problem):
    edit(bundle, put("preprocessing", entry, value=value))
    assert problem in refusal(bundle)


def test_a_key_given_twice_is_refused(bundle):
    text = (bundle / "manifest.json").read_text().rstrip()
    (bundle / "manifest.json").write_text(text[:-1] + ', "classes": ["drum"]}')
    assert "key 'classes' appears twice in one object" in refusal(bundle)


@pytest.mark.parametrize("change, problem", [
    (put("variants", "fp64", value={"graphs": {}}), "variants: unknown entries ['fp64']"),
    (put("variants", "fp32", "graphs", "video", value={"file": "fp32/head.onnx", "precision": "fp32"}),
     "variants.fp32.graphs: unknown entries ['video']"),
    (put("variants", "fp32", "graphs", "head", "precision", value="fp3"),
     "variants.fp32.graphs.head.precision: must be one of fp32, fp16, int8, got 'fp3'"),
    (put("postprocessing", "colour", value=1), "postprocessing: unknown entries ['colour']"),
    (put("files", "dictionary.npy", value="xyz"), "files['dictionary.npy']: must be a sha256"),
])
def test_unknown_names_and_malformed_checksums_are_refused(bundle, change, problem):
    edit(bundle, change)
    assert problem in refusal(bundle)


@pytest.mark.parametrize("field, value, problem", [
    ("batch_min", 0, "engines[0].batch_min: must be >= 1, got 0"),
    ("batch_max", "8", "engines[0].batch_max: must be an integer, got '8'"),
    ("variant", "fp8", "engines[0].variant: must be one of fp32, fp16, int8, got 'fp8'"),
    ("onnx_file", "fp32/image.onnx", "engines[0].onnx_file: 'fp32/image.onnx', but the int8 image graph is"),
])
def test_engine_records_are_checked(bundle, field, value, problem):
    def add_engine(m: dict) -> None:
        record = dict(graph="image", variant="int8", precision="int8", file="engines/image.engine",
                      onnx_file="int8/image.onnx", onnx_sha256=m["files"]["int8/image.onnx"], batch_min=1,
                      batch_opt=1, batch_max=8, gpu_name="Orin", compute_capability="8.7", tensorrt_version="10.3.0")
        m["engines"] = [{**record, field: value}]

    edit(bundle, add_engine)
    assert problem in refusal(bundle)


def test_a_fifo_in_place_of_a_file_is_refused_not_read(bundle):
    """Unverified loads open the dictionary and the graphs: a FIFO there would block forever."""
    dictionary = np.load(bundle / "dictionary.npy")
    (bundle / "dictionary.npy").unlink()
    os.mkfifo(bundle / "dictionary.npy")
    assert "dictionary.npy: dictionary is missing or not a regular file" in refusal(bundle, verify=False)
    (bundle / "dictionary.npy").unlink()
    np.save(bundle / "dictionary.npy", dictionary)
    (bundle / "fp32" / "head.onnx").unlink()
    os.mkfifo(bundle / "fp32" / "head.onnx")
    with pytest.raises(BundleError, match="variants.fp32.graphs.head.file is missing or not a regular file"):
        avsl_edge.load(bundle, backend="onnxruntime", providers=[CPU_EP], verify=False)


def test_the_smoke_bundle_itself_loads_and_rewrites_unchanged(bundle):
    b = load_bundle(bundle)
    write_manifest(bundle, b.manifest)
    assert load_bundle(bundle).manifest == b.manifest
