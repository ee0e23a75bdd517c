"""ONNX export of a small StageTwo run: bundle layout, parity with PyTorch on SynthMUSIC samples,
manifest round trip and refusals, fp16/int8 variants in ONNX Runtime, the TensorRT CLI without
TensorRT, and the torch-free engine bookkeeping."""

from __future__ import annotations

import collections

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from avsl_edge import bundle as B
from avsl_edge import tensorrt_engine as T
from export import quantize
from avsl_edge.backends import CPU_EP, OnnxRuntimeBackend
from avsl_edge.cli import main as cli_main
from export.to_onnx import (OPSET, AudioGraph, ExportError, HeadGraph, ImageGraph, Samples, export_graph, export_run,
                            load_run, load_samples, parity)
from training.checkpoint import save_checkpoint
from training.config import preset, to_dict
from training.data.classes import CLASSES
from training.data.synth import KINDS, write_split
from training.evaluate import evaluate

REPO = Path(__file__).resolve().parents[1]
K = 11
IMAGE_SIZE = 64  # the smoke preset's model input


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder with a randomly initialised smoke-preset StageTwo model.pt and an eval.json."""
    torch.manual_seed(0)
    from training.model import StageTwo

    cfg = preset("smoke")
    assert cfg.data.image_size == IMAGE_SIZE and cfg.model.num_clusters == K
    model = StageTwo(cfg.model)
    dictionary = torch.nn.functional.normalize(torch.randn(K, 512), dim=1)
    root = tmp_path_factory.mktemp("run")
    affinity = torch.rand(len(CLASSES), K, dtype=torch.float64)
    save_checkpoint(root / "model.pt", "stage_two", config=to_dict(cfg), model=model.state_dict(),
                    dictionary=dictionary, classes=list(CLASSES), cluster_to_class=torch.arange(K),
                    affinity=affinity, centroids=dictionary.clone(), nmi=0.42, round=2)
    (root / "eval.json").write_text(json.dumps({"table": {"model": {"mosaic_ciou@0.3": 12.5}}}))
    return root


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """A 10-scene SynthMUSIC AV-COCO folder (every kind twice)."""
    return write_split(tmp_path_factory.mktemp("data") / "test", KINDS, 10, seed=3, image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def bundle_dir(run_dir, split) -> Path:
    # the call the training pipeline makes, plus test-sized settings
    return export_run(run_dir / "model.pt", run_dir / "bundle", calibration_data=split, calibration_size=8,
                      threads=1, log=lambda msg: None)


@pytest.fixture(scope="module")
def samples() -> Samples:
    """Three real SynthMUSIC inputs (seeds the export never used)."""
    return load_samples(None, IMAGE_SIZE, 3, seed=99)


def _linked_copy(src: Path, dst: Path) -> Path:
    """A cheap copy of a bundle: hard links, so never write into a file of it; replace files instead."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _replace_file(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


# ---------------------------------------------------------------------------------------------
# export and layout


def test_export_writes_a_verified_bundle(bundle_dir, run_dir):
    b = B.load_bundle(bundle_dir)  # checks the format version and every sha256
    m = b.manifest
    assert (bundle_dir / "manifest.json").is_file() and (bundle_dir / "dictionary.npy").is_file()
    assert set(m.variants) == {"fp32", "fp16", "int8", "int8-cpu"}
    for v in ("fp32", "fp16", "int8", "int8-cpu"):
        for g in B.GRAPHS:
            assert b.graph_path(g, v).is_file()
    assert b.graph_path("head", "int8") == bundle_dir / "fp32" / "head.onnx"  # the head stays fp32
    assert sorted(m.files) == B.bundle_files(bundle_dir)  # every file has a checksum
    assert m.classes == CLASSES and m.num_clusters == K

    ck = torch.load(run_dir / "model.pt", weights_only=True)
    np.testing.assert_array_equal(b.dictionary, ck["dictionary"].numpy())
    match = b.cluster_match()
    np.testing.assert_array_equal(match.cluster_to_class, np.arange(K))
    np.testing.assert_allclose(match.affinity, ck["affinity"].numpy())
    assert m.preprocessing.image_size == IMAGE_SIZE
    assert m.preprocessing.mean == (0.485, 0.456, 0.406) and m.preprocessing.std == (0.229, 0.224, 0.225)
    assert (m.preprocessing.sample_rate, m.preprocessing.clip_samples) == (16000, 16000)
    assert (m.postprocessing.softmax_scale, m.postprocessing.sounding_threshold) == (3.0, 0.5)
    assert m.metrics == {"table": {"model": {"mosaic_ciou@0.3": 12.5}}}  # the run's eval.json
    assert m.model["feature_hw"] == [4, 4] and m.model["round"] == 2 and m.model["nmi"] == 0.42
    assert m.source["sha256"] == B.sha256_file(run_dir / "model.pt")
    assert m.export["opset"] == OPSET


def test_graphs_have_pinned_opset_dynamic_batch_and_documented_io(bundle_dir):
    b = B.load_bundle(bundle_dir)
    for g in B.GRAPHS:
        model = onnx.load(str(b.graph_path(g)))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == OPSET
        spec = b.manifest.graphs[g]
        for vi, ts in zip([*model.graph.input, *model.graph.output], [*spec.inputs, *spec.outputs]):
            dims = tuple(d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim)
            assert (vi.name, dims) == (ts.name, ts.shape)
    assert b.manifest.graphs["head"].inputs[3] == B.TensorSpec("dictionary", (K, 512))


# ---------------------------------------------------------------------------------------------
# parity with PyTorch (fp32)


def _max_diff(session, feeds, names, torch_out):
    got = session.run(list(names), feeds)
    return {n: float(np.max(np.abs(g - t.numpy()))) for n, g, t in zip(names, got, torch_out)}


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_pytorch_on_synthmusic(bundle_dir, run_dir, samples, batch):
    run = load_run(run_dir)
    b = B.load_bundle(bundle_dir)
    x = torch.from_numpy(samples.images[:batch])
    w = torch.from_numpy(samples.waveforms[:batch])
    with torch.no_grad():
        a_ref = AudioGraph(run.model)(w)
        v_ref = ImageGraph(run.model)(x)
        h_ref = HeadGraph(run.model, 3.0)(*v_ref, a_ref[0], run.dictionary)
    diffs = {
        **_max_diff(quantize.cpu_session(b.graph_path("audio"), 1), {"waveform": w.numpy()}, B.AUDIO_OUTPUTS, a_ref),
        **_max_diff(quantize.cpu_session(b.graph_path("image"), 1), {"image": x.numpy()}, B.IMAGE_OUTPUTS, v_ref),
        **_max_diff(quantize.cpu_session(b.graph_path("head"), 1),
                    {"v_fea": v_ref[0].numpy(), "v_emb": v_ref[1].numpy(), "a_emb": a_ref[0].numpy(),
                     "dictionary": b.dictionary}, B.HEAD_OUTPUTS, h_ref),
    }
    assert set(diffs) == {*B.AUDIO_OUTPUTS, *B.IMAGE_OUTPUTS, *B.HEAD_OUTPUTS}
    assert max(diffs.values()) < 1e-4, diffs


def test_the_cosine_class_head_exports_and_matches_pytorch(samples, tmp_path):
    """--model.similarity cosine adds two L2 normalisations to the head graph; ONNX Runtime agrees."""
    from training.model import ModelConfig, StageTwo

    torch.manual_seed(1)
    model = StageTwo(ModelConfig(num_clusters=K, similarity="cosine", obj_affine_scale=20.0)).eval()
    head = HeadGraph(model, 3.0).eval()
    with torch.no_grad():
        v_fea, v_emb = ImageGraph(model)(torch.from_numpy(samples.images))
        a_emb, _ = AudioGraph(model)(torch.from_numpy(samples.waveforms))
    dictionary = 7.0 * torch.rand(K, 512)  # keys of unequal length, like a real dictionary
    feeds = {"v_fea": v_fea.numpy(), "v_emb": v_emb.numpy(), "a_emb": a_emb.numpy(), "dictionary": dictionary.numpy()}
    ins, outs = B.GRAPH_IO[B.HEAD]
    path = export_graph(head, tuple(torch.from_numpy(v[:2]) if n != "dictionary" else torch.from_numpy(v)
                                    for n, v in feeds.items()), ins, outs, ("v_fea", "v_emb", "a_emb"),
                        tmp_path / "head.onnx")
    report = parity(head, path, feeds, threads=1)
    assert all(r["max_abs_diff"] <= r["tolerance"] for r in report.values()), report
    assert report["class_maps"]["max_abs_ref"] <= 20.0 + 1e-4  # |a * cos| with a = 20 and av_map <= 1


def test_onnx_pipeline_reproduces_the_pytorch_evaluation(bundle_dir, run_dir, split):
    """The fp32 variant, scored by the export on the split, gives PyTorch's evaluation table."""
    torch_table = evaluate(run_dir / "model.pt", split, progress=False)["model"]
    onnx_table = B.load_bundle(bundle_dir).manifest.variants["fp32"].report["eval"]["model"]
    assert set(onnx_table) == set(torch_table) - {"nmi"}
    for key, value in onnx_table.items():
        assert value == pytest.approx(torch_table[key], abs=1e-6), key


def test_a_larger_inference_size_reaches_the_bundle_and_the_evaluation(run_dir, split, tmp_path, capsys):
    """--eval.image_size 96 on a model trained at 64 px: the bundle takes 96 px frames (6x6 maps),
    records both sizes, and its fp32 scores are PyTorch's evaluation at 96 px."""
    ck = torch.load(run_dir / "model.pt", weights_only=True)
    ck["config"]["eval"]["image_size"] = 96
    big = tmp_path / "run96"
    big.mkdir()
    payload = {k: v for k, v in ck.items() if k not in ("format", "version", "kind")}
    save_checkpoint(big / "model.pt", "stage_two", **payload)
    bundle = export_run(big / "model.pt", big / "bundle", calibration_data=split, calibration_size=4,
                        variants=(), threads=1, log=lambda msg: None)
    m = B.load_bundle(bundle).manifest
    assert m.preprocessing.image_size == 96 and m.model["train_image_size"] == IMAGE_SIZE
    assert m.model["feature_hw"] == [6, 6]
    assert cli_main(["info", "--model", str(bundle), "--no-verify"]) == 0
    assert "image 96 px (trained at 64 px), feature map [6, 6]" in capsys.readouterr().out
    torch_table = evaluate(big / "model.pt", split, progress=False)["model"]
    assert torch_table != evaluate(run_dir / "model.pt", split, progress=False)["model"]
    for key, value in m.variants["fp32"].report["eval"]["model"].items():
        assert value == pytest.approx(torch_table[key], abs=1e-6), key


# ---------------------------------------------------------------------------------------------
# precision variants


# Tolerances vs fp32. v_fea and the class maps: error RMS relative to the output's RMS. The
# embeddings only ever enter the model through a cosine, so for them the angle counts: the mean
# cosine between the variant's and fp32's vectors (per clip, per image position). Measured on
# this random-weight model: fp16 ~1e-3 relative; int8 (per-tensor symmetric activations, half
# the range unused after a ReLU) 0.08 on v_fea and 0.16 relative on v_emb (cosine ~0.99). A
# trained network is better conditioned; the export's own report (manifest) gives its figures.
RMS_TOLERANCE = {"fp16": 1e-2, "int8": 0.15, "int8-cpu": 0.15}
MIN_COSINE = {"fp16": 0.9999, "int8": 0.97, "int8-cpu": 0.97}


def _rms_rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - ref) ** 2)) / max(np.sqrt(np.mean(ref ** 2)), 1e-12))


def _mean_cosine(a: np.ndarray, ref: np.ndarray) -> float:
    """Mean cosine along axis 1 (the embedding channels) of (N, E) or (N, E, h, w) outputs."""
    dot = np.sum(a * ref, axis=1)
    return float(np.mean(dot / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)))


@pytest.mark.parametrize("variant", ["fp16", "int8", "int8-cpu"])
def test_precision_variants_run_in_onnxruntime_close_to_fp32(bundle_dir, samples, variant):
    b = B.load_bundle(bundle_dir)
    ref = OnnxRuntimeBackend(b, "fp32", [CPU_EP], 1, 1)(samples.images, samples.waveforms)
    out = OnnxRuntimeBackend(b, variant, [CPU_EP], 1, 1)(samples.images, samples.waveforms)
    assert set(out) == set(ref)
    for name in out:
        assert out[name].dtype == np.float32 and out[name].shape == ref[name].shape, name
        assert np.all(np.isfinite(out[name])), name
    for name in ("v_fea", "class_maps"):
        assert _rms_rel(out[name], ref[name]) < RMS_TOLERANCE[variant], name
    for name in ("a_emb", "v_emb"):
        assert _mean_cosine(out[name], ref[name]) > MIN_COSINE[variant], name
    np.testing.assert_allclose(out["class_probs"].sum(axis=1), 1.0, atol=1e-5)
    # silence: the fp32 log-mel front end keeps the -100 dB floor finite in every variant
    silent = OnnxRuntimeBackend(b, variant, [CPU_EP], 1, 1)(samples.images[:1], np.zeros((1, 16000), np.float32))
    assert all(np.all(np.isfinite(v)) for v in silent.values())
    report = b.manifest.variants[variant].report
    assert set(report["max_abs_error_vs_fp32"]) == {"a_emb", "audio_probs", "v_fea", "v_emb"}
    assert report["cpu_ms_batch1"]["image"] > 0 and "mosaic_ciou@0.3" in report["eval"]["model"]
    assert set(report["eval"]["delta_vs_fp32"]) == {"mosaic_ciou@0.3", "duet_ciou@0.3", "solo_iou@0.5"}


def test_fp16_graphs_are_half_precision_with_fp32_io_and_front_end(bundle_dir):
    b = B.load_bundle(bundle_dir)
    for g in ("audio", "image"):
        m = onnx.load(str(b.graph_path(g, "fp16")))
        assert {o.domain: o.version for o in m.opset_import} == {"": OPSET}
        io = [*m.graph.input, *m.graph.output]
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in io)
        big = [t for t in m.graph.initializer if np.prod(t.dims) >= 1024]
        assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big if len(t.dims) == 4), g
    audio = onnx.load(str(b.graph_path("audio", "fp16")))
    front = set(quantize.frontend_nodes(audio))
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(audio).graph.value_info}
    log = next(n for n in audio.graph.node if n.op_type == "Log")
    assert log.name in front and types[log.input[0]] == onnx.TensorProto.FLOAT


def _ort_conv_kernels(path: Path, tmp_path: Path) -> collections.Counter:
    """Convolution node types of the graph ONNX Runtime's CPU EP actually runs (after its fusions)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=[CPU_EP])
    m = onnx.load(so.optimized_model_filepath)
    return collections.Counter(n.op_type for n in m.graph.node if n.op_type in ("Conv", "QLinearConv"))


def test_int8_cpu_graphs_run_every_convolution_in_int8_in_onnxruntime(bundle_dir, tmp_path):
    b = B.load_bundle(bundle_dir)
    image = _ort_conv_kernels(b.graph_path("image", "int8-cpu"), tmp_path)
    assert image["QLinearConv"] >= 20 and image["Conv"] == 0, image  # u8s8: all fused
    # the TensorRT form (symmetric int8 activations) leaves float convolutions on the CPU EP
    assert _ort_conv_kernels(b.graph_path("image", "int8"), tmp_path)["Conv"] > 0
    m = onnx.load(str(b.graph_path("image", "int8-cpu")))
    inits = {t.name: t for t in m.graph.initializer}
    acts = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert acts and all(onnx.numpy_helper.to_array(inits[n.input[2]]).dtype == np.uint8 for n in acts)
    assert b.manifest.variants["int8-cpu"].graphs["image"].precision == "int8"
    assert b.graph_path("head", "int8-cpu") == bundle_dir / "fp32" / "head.onnx"


def test_int8_cpu_weights_are_seven_bit_so_no_cpu_saturates_their_pair_sums(bundle_dir):
    b = B.load_bundle(bundle_dir)
    assert b.manifest.export["calibration"]["int8_cpu_form"] == "u8s8-reduce-range"
    assert "reduce_range" in b.manifest.variants["int8-cpu"].description
    for g in ("audio", "image"):
        m = onnx.load(str(b.graph_path(g, "int8-cpu")))
        weights = [onnx.numpy_helper.to_array(t) for t in m.graph.initializer if t.data_type == onnx.TensorProto.INT8
                   and len(t.dims) == 4]
        assert len(weights) >= 20 and all(np.abs(w.astype(int)).max() <= 64 for w in weights)
    # the TensorRT form keeps the full int8 range
    m = onnx.load(str(b.graph_path("image", "int8")))
    assert max(np.abs(onnx.numpy_helper.to_array(t).astype(int)).max() for t in m.graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4) == 127


def test_an_unknown_int8_cpu_form_is_refused_before_anything_is_written(run_dir, tmp_path):
    with pytest.raises(ExportError, match="--int8-cpu-form must be one of"):
        export_run(run_dir / "model.pt", tmp_path / "bundle", int8_cpu_form="u4", log=lambda msg: None)
    assert not (tmp_path / "bundle").exists()


def test_int8_graphs_are_explicit_symmetric_qdq_with_per_channel_weights(bundle_dir):
    b = B.load_bundle(bundle_dir)
    for g in ("audio", "image"):
        m = onnx.load(str(b.graph_path(g, "int8")))
        assert {o.domain: o.version for o in m.opset_import} == {"": OPSET}  # plain ONNX, no ORT contrib ops
        inits = {t.name: t for t in m.graph.initializer}
        q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
        dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
        assert q and dq
        # TensorRT: int8 zero points, all zero (symmetric)
        for n in q + dq:
            zp = onnx.numpy_helper.to_array(inits[n.input[2]])
            assert zp.dtype == np.int8 and not zp.any(), n.name
        # per-channel: the weight scales of every quantized conv are vectors
        convs = [n for n in m.graph.node if n.op_type == "Conv"]
        producers = {o: n for n in m.graph.node for o in n.output}
        per_channel = [producers[c.input[1]] for c in convs if c.input[1] in producers]
        assert len(per_channel) >= 20
        assert all(onnx.numpy_helper.to_array(inits[d.input[1]]).ndim == 1 for d in per_channel)
        # the audio front end (STFT conv1d, magnitude, mel matmul, log) and the MLP stay float
        if g == "audio":
            float_ops = [n for n in m.graph.node if n.op_type in ("Sqrt", "MatMul", "Log", "Gemm")]
            assert {n.op_type for n in float_ops} == {"Sqrt", "MatMul", "Log", "Gemm"}
            assert not any(producers[i].op_type == "DequantizeLinear" for n in float_ops for i in n.input
                           if i in producers)
            stft = next(n for n in m.graph.node if n.op_type == "Conv")  # the first conv: the DFT basis
            assert stft.input[1] in inits and len(inits[stft.input[1]].dims) == 3


# ---------------------------------------------------------------------------------------------
# manifest round trip and refusals


def test_manifest_round_trips_through_json(bundle_dir, tmp_path):
    m = B.read_manifest(bundle_dir)
    again = B.Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again == m
    copy = _linked_copy(bundle_dir, tmp_path / "bundle")
    B.write_manifest(copy, again)  # rewrite (atomically) and re-checksum: still loads, same content
    assert B.load_bundle(copy).manifest == m
    assert not [p for p in copy.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_tampered_file_is_refused_with_its_name(bundle_dir, tmp_path):
    copy = _linked_copy(bundle_dir, tmp_path / "bundle")
    target = copy / "int8" / "image.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    _replace_file(target, bytes(data))
    with pytest.raises(B.BundleError, match=r"int8/image\.onnx: sha256 mismatch"):
        B.load_bundle(copy)
    target.unlink()
    with pytest.raises(B.BundleError, match=r"int8/image\.onnx: listed in manifest\.json but missing"):
        B.load_bundle(copy)
    B.load_bundle(copy, verify=False)  # an explicit opt-out still reads the manifest


def test_wrong_format_version_or_foreign_folder_is_refused(bundle_dir, tmp_path):
    copy = _linked_copy(bundle_dir, tmp_path / "bundle")
    d = json.loads((copy / "manifest.json").read_text())
    d["format_version"] = B.BUNDLE_FORMAT_VERSION + 1
    _replace_file(copy / "manifest.json", json.dumps(d).encode())
    with pytest.raises(B.BundleError, match=r"bundle format version 2, but this avsl-edge reads version 1; re-export"):
        B.load_bundle(copy)
    d["format_version"], d["format"] = B.BUNDLE_FORMAT_VERSION, "something/else"
    _replace_file(copy / "manifest.json", json.dumps(d).encode())
    with pytest.raises(B.BundleError, match="not an avsl-edge bundle manifest"):
        B.load_bundle(copy)
    with pytest.raises(B.BundleError, match="not a bundle"):
        B.load_bundle(tmp_path)
    with pytest.raises(B.BundleError, match="no such bundle folder"):
        B.load_bundle(tmp_path / "missing")


def test_export_never_overwrites_a_folder_that_is_not_a_bundle(run_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a bundle"):
        export_run(run_dir / "model.pt", tmp_path, log=lambda msg: None)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_false_positive_bound_out_of_range_is_refused_before_anything_is_written(run_dir, tmp_path, capsys):
    from export.to_onnx import main as to_onnx_main

    out = tmp_path / "bundle"
    assert to_onnx_main(["--checkpoint", str(run_dir), "--out", str(out), "--max-fpr", "1.5"]) == 2
    assert "--max-fpr must be in [0, 1), got 1.5" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------------
# command lines


def test_to_onnx_help_runs_as_a_script():
    r = subprocess.run([sys.executable, "export/to_onnx.py", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--checkpoint" in r.stdout and "--calibration-data" in r.stdout and "--max-fpr" in r.stdout


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_to_tensorrt_without_tensorrt_says_what_to_install(bundle_dir):
    r = subprocess.run([sys.executable, "export/to_tensorrt.py", "--bundle", str(bundle_dir)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "pip install tensorrt" in r.stderr and "Traceback" not in r.stderr
    assert not (bundle_dir / B.ENGINE_DIR).exists()  # nothing pretending to be an engine


# ---------------------------------------------------------------------------------------------
# TensorRT engine bookkeeping (torch-free, no TensorRT needed)


H100 = T.GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
ORIN = T.GpuInfo("Orin", "8.7")


def test_engine_names_carry_graph_precision_batch_gpu_and_version():
    assert T.engine_file_name("image", "int8", 1, 8, H100, "10.3.0.26") == \
        "image.int8.b1-8.nvidia-h100-80gb-hbm3-sm90.trt10.3.0.engine"
    assert T.engine_file_name("head", "fp32", 2, 16, ORIN, "11.0.0") == "head.fp32.b2-16.orin-sm87.trt11.0.0.engine"
    with pytest.raises(ValueError, match="unknown graph"):
        T.engine_file_name("video", "fp32", 1, 1, ORIN, "10.3.0")


def test_tensorrt_versions_and_network_flags():
    assert T.parse_version("10.3.0.26") == (10, 3, 0, 26) and T.parse_version("11.0.0b1") == (11, 0, 0)
    assert T.check_tensorrt_version("10.3.0") == 10 and T.check_tensorrt_version("11.1.0") == 11
    with pytest.raises(T.TensorRTUnavailable, match="TensorRT 8.6.1 is not supported.*pip install tensorrt"):
        T.check_tensorrt_version("8.6.1")
    flag = SimpleNamespace(STRONGLY_TYPED=0)
    assert T.network_flags(SimpleNamespace(__version__="10.3.0", NetworkDefinitionCreationFlag=flag)) == 1
    # 11.x: strongly typed always; the deprecated flag is not passed
    assert T.network_flags(SimpleNamespace(__version__="11.0.0", NetworkDefinitionCreationFlag=flag)) == 0


def test_import_tensorrt_error_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(T.TensorRTUnavailable, match="pip install tensorrt"):
        T.import_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(__version__="9.2.0"))
    with pytest.raises(T.TensorRTUnavailable, match="9.2.0 is not supported"):
        T.import_tensorrt()


def _record(bundle: B.Bundle, gpu: T.GpuInfo, version: str, **kw) -> B.EngineRecord:
    onnx_file = bundle.manifest.variants["int8"].graphs["image"].file
    fields = dict(graph="image", variant="int8", precision="int8",
                  file="engines/" + T.engine_file_name("image", "int8", 1, 8, gpu, version), onnx_file=onnx_file,
                  onnx_sha256=bundle.manifest.files[onnx_file], batch_min=1, batch_opt=1, batch_max=8,
                  gpu_name=gpu.name, compute_capability=gpu.compute_capability, tensorrt_version=version)
    fields.update(kw)
    return B.EngineRecord(**fields)


def test_engines_built_elsewhere_are_refused_with_a_clear_message(bundle_dir):
    b = B.load_bundle(bundle_dir)
    rec = _record(b, H100, "10.3.0")
    b = dataclasses.replace(b, manifest=dataclasses.replace(b.manifest, engines=[rec]))
    assert T.find_engine(b, "image", "int8", H100, "10.3.0") == rec
    assert T.find_engine(b, "image", "int8", H100, "10.3.0", batch=8) == rec
    with pytest.raises(T.EngineMismatchError, match=r"GPU 'NVIDIA H100 80GB HBM3' \(this machine: 'Orin'\).*"
                                                     r"not portable, rebuild.*to_tensorrt\.py"):
        T.find_engine(b, "image", "int8", ORIN, "10.3.0")
    with pytest.raises(T.EngineMismatchError, match=r"TensorRT 10\.3\.0 \(this machine: 10\.4\.0\)"):
        T.find_engine(b, "image", "int8", H100, "10.4.0")
    with pytest.raises(T.EngineMismatchError, match="cover batch 1-8, not 9"):
        T.find_engine(b, "image", "int8", H100, "10.3.0", batch=9)
    with pytest.raises(B.BundleError, match="no TensorRT engine for graph 'audio'"):
        T.find_engine(b, "audio", "int8", H100, "10.3.0")
    stale = dataclasses.replace(rec, onnx_sha256="0" * 64)
    with pytest.raises(T.EngineMismatchError, match="built from a different int8/image.onnx"):
        T.check_engine(b, stale, H100, "10.3.0")
    # the refusal comes before TensorRT is asked to deserialize anything
    fake_trt = SimpleNamespace(__version__="10.4.0")
    with pytest.raises(T.EngineMismatchError):
        T.load_engine(b, "image", "int8", trt=fake_trt, gpu=H100)


def test_engine_records_are_kept_in_the_manifest_with_checksums(bundle_dir, tmp_path):
    copy = _linked_copy(bundle_dir, tmp_path / "bundle")
    b = B.load_bundle(copy)
    rec = _record(b, ORIN, "10.3.0")
    (copy / rec.file).parent.mkdir()
    (copy / rec.file).write_bytes(b"test bytes standing in for a serialized engine")
    T.add_engine_record(copy, rec)
    T.add_engine_record(copy, rec)  # same engine again: replaced, not duplicated
    loaded = B.load_bundle(copy)
    assert loaded.engines() == [rec] and rec.file in loaded.manifest.files
    _replace_file(copy / rec.file, b"changed")
    with pytest.raises(B.BundleError, match="sha256 mismatch"):
        B.load_bundle(copy)


def test_bundle_and_engine_code_load_without_torch_or_onnx():
    """The edge side (and a Jetson building engines) reads bundles with numpy + json only."""
    code = ("import sys, avsl_edge.bundle, avsl_edge.tensorrt_engine, export.to_tensorrt; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime')); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


class _MapsAndSoftmax(torch.nn.Module):
    def forward(self, maps):
        return maps * 1.0, torch.softmax(3.0 * maps, dim=1)


def test_a_softmax_output_is_held_to_the_tolerance_its_input_allows(tmp_path):
    maps = (np.random.default_rng(0).standard_normal((2, 11, 4, 4)) * 400).astype(np.float32)
    path = export_graph(_MapsAndSoftmax(), (torch.from_numpy(maps),), ["maps"], ["class_maps", "class_probs"],
                        ("maps",), tmp_path / "g.onnx")
    plain = parity(_MapsAndSoftmax(), path, {"maps": maps})
    held = parity(_MapsAndSoftmax(), path, {"maps": maps}, softmax_of={"class_probs": ("class_maps", 3.0)})
    assert plain["class_probs"]["tolerance"] == 1e-4  # probabilities: max |ref| <= 1
    assert held["class_probs"]["tolerance"] == pytest.approx(0.5 * 3.0 * held["class_maps"]["tolerance"])
    assert held["class_maps"] == plain["class_maps"] and held["class_probs"]["max_abs_diff"] <= 1e-3
