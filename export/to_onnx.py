"""Export a trained run to an ONNX bundle (fp32 + fp16 + int8 graphs and a manifest).

    python export/to_onnx.py --checkpoint runs/cpu --out runs/cpu/bundle
    python export/to_onnx.py --checkpoint runs/cpu/model.pt --out bundle --calibration-data runs/cpu/data/test

Three graphs are traced from the trained StageTwo modules with the torch.export-based ONNX exporter
(``torch.onnx.export(dynamo=True)``), opset pinned to :data:`OPSET`, dynamic batch, simplified with
onnxslim and checked with ``onnx.checker`` (full check):

  audio  waveform (B, 16000) -> log-mel (inside the graph) -> audio net -> a_emb, audio_probs
  image  normalised RGB (B, 3, S, S) -> v_fea (B, 512, S/16, S/16), v_emb (B, 128, ...)
  head   v_fea, v_emb, a_emb, dictionary (K, 512) -> av_map, av_score, class_maps, class_probs,
         sounding_objects

The dictionary is a graph INPUT (a fixed (K, 512) shape), stored in the bundle as dictionary.npy,
so a re-clustered dictionary needs no re-export. Each graph must match PyTorch on real SynthMUSIC
samples (ONNX Runtime CPU, max abs difference <= 1e-4 x max(1, |output|); the class softmax also
within what its class maps' tolerance allows it, see :func:`parity`) or the export fails.
The fp16, int8 (TensorRT) and int8-cpu (ONNX Runtime CPU) variants (export/quantize.py) are then built, compared with fp32, timed on the
CPU, and (with evaluation data) scored on an AV-COCO split. The layout and the manifest are
described in avsl_edge/bundle.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python export/to_onnx.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import datetime
import json
import os
import platform
import time
import warnings
from typing import Any
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime
import onnxslim
import torch
from torch import Tensor, nn

from avsl_edge import bundle as B
from avsl_edge.audio import CLIP_SAMPLES, SAMPLE_RATE, fit_clip
from avsl_edge.avcoco import AVCocoError, load_avcoco, read_clip, read_frame
from avsl_edge.errors import OutputExistsError, UserError
from avsl_edge.metrics import ClusterMatch
from avsl_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_frame
from avsl_edge.backends import CPU_EP, OnnxRuntimeBackend
from avsl_edge.bundle_eval import evaluate_variants
from avsl_edge.fileio import atomic_dir, check_outputs
from avsl_edge.options import int_in, thread_count
from avsl_edge.variant_choice import HEADLINE  # the metrics variant="auto" bounds (within 2 points of fp32)
from export import quantize
from export.calibrate import calibrate_bundle
from training.checkpoint import CheckpointError, load_checkpoint
from training.config import RunConfig, from_dict, inference_size
from training.model import StageTwo

OPSET = 18  # ONNX Runtime >= 1.14 and TensorRT 10.x / 11.x (the ONNX parser reads opsets 9..20+) all accept it
PARITY_TOLERANCE = 1e-4  # max |onnxruntime - torch| <= PARITY_TOLERANCE * max(1, max |torch|), fp32
CALIBRATION_SEED = 424_242  # SynthMUSIC scenes rendered for calibration/parity never share training/test seeds
SYNTH_RENDER_SIZE = 224  # scenes are rendered at 224 px and resized, like the pipeline's test split
VARIANT_DESCRIPTIONS = {
    "fp32": "float32 graphs, the reference",
    "fp16": "half-precision weights and compute with float32 IO (onnxconverter-common, keep_io_types); "
            "the audio front end and the head stay float32",
    "int8": "explicit QDQ int8 (ONNX Runtime static quantization, per-channel symmetric weights, symmetric "
            "activations, float biases: the form TensorRT builds) on the convolutional trunks; front end, audio "
            "MLP and head stay float32",
    "int8-cpu": "explicit QDQ int8 for ONNX Runtime's CPU EP (per-channel symmetric int8 weights, asymmetric uint8 "
                "activations, int32 biases: every convolution becomes a u8s8 QLinearConv) on the convolutional "
                "trunks; front end, audio MLP and head stay float32",
}
CPU_FORM_NOTES = {  # what the int8-cpu description adds for a form other than plain u8s8
    "u8s8-reduce-range": "; 7-bit weights (reduce_range), so that no ISA's multiply-adds saturate",
    "u8u8": "; asymmetric uint8 weights (u8u8)",
    "u8s8-per-tensor": "; one weight scale per tensor",
    "u8s8-qoperator": "; QLinearConv nodes written into the file (QOperator)",
}


class ExportError(UserError, RuntimeError):
    """An export that cannot be completed or that does not match PyTorch."""


# --------------------------------------------------------------------------------------------
# the three graphs as modules


class AudioGraph(nn.Module):
    """waveform (B, 16000) -> a_emb (B, E), audio_probs = softmax(a_logits) (B, K)."""

    def __init__(self, model: StageTwo):
        super().__init__()
        self.audio = model.audio

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        out = self.audio(waveform)
        return out.a_emb, torch.softmax(out.a_logits, dim=1)


class ImageGraph(nn.Module):
    """image (B, 3, S, S) -> v_fea (B, 512, h, w), v_emb (B, E, h, w). v_logits is not needed."""

    def __init__(self, model: StageTwo):
        super().__init__()
        self.image = model.image

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        v_fea = self.image.backbone(image)
        return v_fea, self.image.project(v_fea)


class HeadGraph(nn.Module):
    """Localization head + class-aware head + the class softmax of docs/method.md §4.6."""

    def __init__(self, model: StageTwo, softmax_scale: float):
        super().__init__()
        self.localization = model.localization
        self.class_aware = model.class_aware
        self.softmax_scale = float(softmax_scale)

    def forward(self, v_fea: Tensor, v_emb: Tensor, a_emb: Tensor, dictionary: Tensor):
        loc = self.localization(v_emb, a_emb)
        obj = self.class_aware(v_fea, dictionary, loc.av_map)
        probs = torch.softmax(self.softmax_scale * obj.class_maps, dim=1)
        return loc.av_map, loc.av_score, obj.class_maps, probs, obj.sounding_objects


# --------------------------------------------------------------------------------------------
# loading a run


@dataclass
class LoadedRun:
    path: Path            # the model.pt
    model: StageTwo       # eval mode, cpu
    config: RunConfig
    checkpoint: dict

    @property
    def dictionary(self) -> Tensor:
        return self.checkpoint["dictionary"].float().contiguous()

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.checkpoint["classes"])

    def cluster_match(self) -> ClusterMatch:
        return ClusterMatch.from_cluster_to_class(self.checkpoint["cluster_to_class"].numpy(), len(self.classes),
                                                  self.checkpoint["affinity"].numpy())


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder -> its model.pt; a file is returned as is."""
    p = Path(path)
    return p / "model.pt" if p.is_dir() else p


def load_run(path: str | os.PathLike) -> LoadedRun:
    ckpt_path = resolve_checkpoint(path)
    ck = load_checkpoint(ckpt_path, "stage_two")
    missing = [k for k in ("config", "model", "dictionary", "classes", "cluster_to_class", "affinity") if k not in ck]
    if missing:
        raise CheckpointError(f"{ckpt_path}: not a final stage-two model (missing {missing}); use <run>/model.pt")
    cfg = from_dict(ck["config"])
    model = StageTwo(cfg.model)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt_path}: the model weights do not fit its config ({exc})") from exc
    d = ck["dictionary"]
    if tuple(d.shape) != (cfg.model.num_clusters, 512):
        raise CheckpointError(f"{ckpt_path}: dictionary is {tuple(d.shape)}, expected ({cfg.model.num_clusters}, 512)")
    return LoadedRun(ckpt_path, model.eval(), cfg, ck)


# --------------------------------------------------------------------------------------------
# samples (calibration, parity, error measurements)


@dataclass
class Samples:
    images: np.ndarray     # (N, 3, S, S) float32, preprocessed
    waveforms: np.ndarray  # (N, 16000) float32
    source: str

    def __len__(self) -> int:
        return len(self.images)


def load_samples(data: str | os.PathLike | None, image_size: int, n: int, seed: int = CALIBRATION_SEED,
                 synth_options: Mapping[str, Any] | None = None) -> Samples:
    """``n`` model inputs from an AV-COCO folder (evenly spread over its images) or, when ``data``
    is None, from freshly rendered SynthMUSIC scenes of every kind (seeds from ``seed``; the
    generator's ``synth_options``, e.g. the run's pack and hold-outs, see :func:`synth_options`)."""
    if n < 1:
        raise ValueError(f"need at least one sample, got n={n}")
    if data is not None:
        coco = load_avcoco(data)
        if not coco.images:
            raise AVCocoError(f"{data}: the data folder has no images")
        idx = np.unique(np.linspace(0, len(coco.images) - 1, min(n, len(coco.images))).round().astype(int))
        ims = [coco.images[i] for i in idx]
        images = np.stack([preprocess_frame(read_frame(coco, im), image_size) for im in ims])
        waves = np.stack([fit_clip(read_clip(coco, im)) for im in ims])
        return Samples(images, waves, f"{Path(data)} ({len(ims)} of {len(coco.images)} images)")
    from training.data.synth import KINDS, SynthConfig, SynthMusic, scene_seed

    options = dict(synth_options or {})
    synth = SynthMusic(SynthConfig(image_size=SYNTH_RENDER_SIZE, **options))
    scenes = [synth.scene(KINDS[i % len(KINDS)], scene_seed(seed, i)) for i in range(n)]
    images = np.stack([preprocess_frame(s.image, image_size) for s in scenes])
    waves = np.stack([fit_clip(s.audio) for s in scenes])
    return Samples(images, waves, f"SynthMUSIC {options.get('pack', 'v1')}, {n} scenes of kinds {','.join(KINDS)} "
                                  f"(seed {seed})")


def synth_options(cfg: Any, pack: str | None = None) -> dict[str, Any]:
    """The SynthConfig fields of a run's training data: its pack (or ``pack``) and, for v2, its
    held-out sources, which calibration must not see either."""
    pack = pack or cfg.data.pack
    out: dict[str, Any] = {"pack": pack}
    if pack == "v2" and cfg.data.pack == "v2":
        out.update(hold_out_pictures=cfg.data.hold_out_pictures, hold_out_sounds=cfg.data.hold_out_sounds)
    return out


# --------------------------------------------------------------------------------------------
# export of one graph


def export_graph(module: nn.Module, args: tuple[Tensor, ...], input_names: Sequence[str],
                 output_names: Sequence[str], dynamic: Sequence[str], path: Path, opset: int = OPSET) -> Path:
    """torch.onnx (dynamo) export with a dynamic batch on the ``dynamic`` inputs, then onnxslim and
    the full onnx.checker. The forward's argument names must equal ``input_names``."""
    batch = torch.export.Dim("batch")
    shapes = {name: ({0: batch} if name in dynamic else None) for name in input_names}
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # the head's three batch inputs share one Dim; torch says so once per export
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints")
        program = torch.onnx.export(module, args, dynamo=True, opset_version=opset, input_names=list(input_names),
                                    output_names=list(output_names), dynamic_shapes=shapes, verbose=False,
                                    optimize=True)
    model = onnxslim.slim(program.model_proto)
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(input_names) or got_out != list(output_names):
        raise ExportError(f"{path.name}: exported IO {got_in} -> {got_out}, expected {list(input_names)} -> "
                          f"{list(output_names)}")
    if model.opset_import[0].version != opset:
        raise ExportError(f"{path.name}: exported with opset {model.opset_import[0].version}, expected {opset}")
    model.producer_name, model.producer_version = "avsl-edge export", f"torch {torch.__version__}"
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _torch_run(module: nn.Module, feeds: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = module(*(torch.from_numpy(v) for v in feeds.values()))
    return {n: o.numpy() for n, o in zip(names, out)}


def parity(module: nn.Module, path: Path, feeds: dict[str, np.ndarray], threads: int = 0,
           softmax_of: dict[str, tuple[str, float]] | None = None) -> dict[str, dict]:
    """Per output: max |onnxruntime - torch|, max |torch| and the tolerance it must meet.

    softmax_of: output -> (the output it is the softmax of, the softmax's scale). Such an output
    also passes within half the scale times its input's tolerance, since |d softmax(s z)| <= s/2
    max |dz|: with large class maps, fp32 rounding the maps tolerate moves the probabilities more
    than 1e-4, and how much differs between hosts."""
    names = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
    ref = _torch_run(module, feeds, names)
    got = dict(zip(names, quantize.cpu_session(path, threads).run(names, feeds)))
    report = {}
    for n in names:
        scale = float(np.max(np.abs(ref[n]))) if ref[n].size else 0.0
        report[n] = {"max_abs_diff": float(np.max(np.abs(got[n] - ref[n]))), "max_abs_ref": scale,
                     "tolerance": PARITY_TOLERANCE * max(1.0, scale)}
    for n, (source, softmax_scale) in (softmax_of or {}).items():
        report[n]["tolerance"] = max(report[n]["tolerance"], 0.5 * softmax_scale * report[source]["tolerance"])
    return report


def _check_parity(graph: str, report: dict[str, dict]) -> None:
    bad = {n: r for n, r in report.items() if not r["max_abs_diff"] <= r["tolerance"]}
    if bad:
        raise ExportError(f"graph {graph!r}: ONNX Runtime does not match PyTorch: " + ", ".join(
            f"{n} max abs diff {r['max_abs_diff']:.3g} > {r['tolerance']:.3g}" for n, r in bad.items()))


# --------------------------------------------------------------------------------------------
# the bundle


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _prepare_out(out_dir: Path) -> None:
    """A non-empty ``out_dir`` is only ever replaced when it is a bundle."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExistsError(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / B.MANIFEST_NAME).is_file():
            raise OutputExistsError(f"{out_dir} is not empty and is not a bundle; choose another --out")


def _run_metrics(ckpt: Path) -> dict | None:
    """The run's eval.json (fp32 PyTorch evaluation) when the checkpoint sits in a run folder."""
    path = ckpt.parent / "eval.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: unreadable evaluation file ({exc})") from exc


@contextmanager
def _timed(parts: dict[str, float], name: str) -> Iterator[None]:
    """Adds the wall seconds of the block to ``parts[name]`` (the manifest's ``export.wall_s``)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        parts[name] = round(parts.get(name, 0.0) + time.perf_counter() - t0, 2)


def export_fp32(run: LoadedRun, parity_samples: Samples, out: Path, opset: int, threads: int,
                parts: dict[str, float], log: Callable[[str], None]) -> tuple[dict[str, Path], dict, tuple[int, int]]:
    """The three fp32 graphs of ``run`` under ``out/fp32``, each checked against PyTorch on
    ``parity_samples``; returns their paths, the parity report and the feature map's (h, w)."""
    model, cfg = run.model, run.config
    graphs = {B.AUDIO: AudioGraph(model).eval(), B.IMAGE: ImageGraph(model).eval(),
              B.HEAD: HeadGraph(model, cfg.eval.softmax_scale).eval()}
    with torch.no_grad():
        v_fea, v_emb = graphs[B.IMAGE](torch.from_numpy(parity_samples.images))
        a_emb, _ = graphs[B.AUDIO](torch.from_numpy(parity_samples.waveforms))
    feeds = {
        B.AUDIO: {"waveform": parity_samples.waveforms},
        B.IMAGE: {"image": parity_samples.images},
        B.HEAD: {"v_fea": v_fea.numpy(), "v_emb": v_emb.numpy(), "a_emb": a_emb.numpy(),
                 "dictionary": run.dictionary.numpy()},
    }
    dynamic = {B.AUDIO: ("waveform",), B.IMAGE: ("image",), B.HEAD: ("v_fea", "v_emb", "a_emb")}
    paths, parity_report = {}, {}
    for g, module in graphs.items():
        ins, outs = B.GRAPH_IO[g]
        ex = tuple(torch.from_numpy(v[:2]) if n in dynamic[g] else torch.from_numpy(v) for n, v in feeds[g].items())
        with _timed(parts, "graph_export"):
            paths[g] = export_graph(module, ex, ins, outs, dynamic[g], out / "fp32" / f"{g}.onnx", opset)
        with _timed(parts, "parity"):
            softmax_of = {"class_probs": ("class_maps", module.softmax_scale)} if g == B.HEAD else None
            parity_report[g] = parity(module, paths[g], feeds[g], threads, softmax_of)
        _check_parity(g, parity_report[g])
        worst = max(r["max_abs_diff"] for r in parity_report[g].values())
        log(f"[export] {g}: exported, ORT vs torch max abs diff {worst:.2e}")
    return paths, parity_report, (v_fea.shape[2], v_fea.shape[3])


def build_variants(paths: dict[str, Path], variants: Sequence[str], samples: Samples, out: Path,
                   calibration_method: str, parts: dict[str, float], log: Callable[[str], None],
                   int8_cpu_form: str = quantize.INT8_CPU_FORM) -> dict[str, dict[str, B.GraphFile]]:
    """The fp16 / int8 / int8-cpu audio and image graphs from the fp32 ones (INT8 calibrated on
    ``samples``, int8-cpu in ``int8_cpu_form`` of :data:`export.quantize.CPU_FORMS`); every variant
    shares the fp32 head. Variant -> graph -> file."""
    variant_graphs = {"fp32": {g: B.GraphFile(f"fp32/{g}.onnx", "fp32") for g in B.GRAPHS}}
    for v in variants:
        files = {}
        for g in (B.AUDIO, B.IMAGE):
            dst = out / v / f"{g}.onnx"
            if v == "fp16":
                with _timed(parts, "fp16"):
                    quantize.to_fp16(paths[g], dst)
            else:
                name = B.GRAPH_IO[g][0][0]
                arr = samples.waveforms if g == B.AUDIO else samples.images
                with _timed(parts, "int8_quantisation"):
                    quantize.to_int8(paths[g], dst, [{name: arr[i:i + 1]} for i in range(len(arr))],
                                     calibration_method, symmetric=v == "int8",
                                     **(quantize.CPU_FORMS[int8_cpu_form] if v == "int8-cpu" else {}))
            files[g] = B.GraphFile(f"{v}/{g}.onnx", "int8" if v == "int8-cpu" else v)
        files[B.HEAD] = B.GraphFile(f"fp32/{B.HEAD}.onnx", "fp32")
        variant_graphs[v] = files
        log(f"[export] {v}: audio and image graphs written")
    return variant_graphs


def build_manifest(run: LoadedRun, feature_hw: tuple[int, int], variant_graphs: dict[str, dict[str, B.GraphFile]],
                   metrics: dict | None, opset: int, parity: dict, calibration: dict) -> B.Manifest:
    """The bundle's manifest before its variant reports and calibrated rules are added (the int8-cpu
    description names the form that ``calibration["int8_cpu_form"]`` records)."""
    cfg = run.config
    size, k = inference_size(cfg), cfg.model.num_clusters
    h, wd = feature_hw
    return B.Manifest(
        classes=run.classes,
        num_clusters=k,
        dictionary={"file": B.DICTIONARY_NAME, "shape": [k, 512], "dtype": "float32"},
        cluster_match=run.cluster_match().to_dict(),
        preprocessing=B.Preprocessing(image_size=size, mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD),
                                      sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES),
        postprocessing=B.Postprocessing(
            softmax_scale=cfg.eval.softmax_scale, sounding_threshold=cfg.eval.sounding_threshold,
            solo_tau=cfg.eval.solo_tau, mosaic_tau=cfg.eval.mosaic_tau, duet_tau=cfg.eval.duet_tau,
            nsa_threshold=cfg.eval.nsa_threshold),
        graphs=B.graph_specs(k, size, (h, wd), cfg.model.embed_dim, clip_samples=CLIP_SAMPLES),
        variants={v: B.Variant(gs, VARIANT_DESCRIPTIONS[v] + (CPU_FORM_NOTES.get(calibration.get("int8_cpu_form"), "")
                                                              if v == "int8-cpu" else ""))
                  for v, gs in variant_graphs.items()},
        model={"image_size": size, "train_image_size": cfg.data.image_size, "feature_hw": [h, wd],
               "num_clusters": k, "embed_dim": cfg.model.embed_dim, "feature_dim": 512, "gate": cfg.model.gate,
               "config": dataclasses.asdict(cfg.model),
               "preset": cfg.preset, "round": int(run.checkpoint.get("round", -1)),
               "nmi": float(run.checkpoint["nmi"]) if "nmi" in run.checkpoint else None},
        metrics=metrics,
        export={"exporter": "torch.onnx.export(dynamo=True) (torch.export)", "opset": opset,
                "simplifier": f"onnxslim {onnxslim.__version__}", "dynamic_axes": {"batch": "dim 0"},
                "dictionary": "graph input of the head (dictionary.npy)",
                "parity": parity, "calibration": calibration,
                "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                             "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}},
        source={"checkpoint": run.path.name, "sha256": B.sha256_file(run.path)},
        created=_now(),
    )


def export_run(model_path: str | os.PathLike, out_dir: str | os.PathLike,
               calibration_data: str | os.PathLike | None = None, *,
               eval_data: str | os.PathLike | None = None,
               variants: Sequence[str] = ("fp16", "int8", "int8-cpu"),
               calibration_size: int = 32,
               calibration_method: str = "minmax",
               evaluate: bool = True,
               threads: int = 0,
               opset: int = OPSET,
               max_fpr: float = 0.02,
               calibration_pack: str | None = None,
               int8_cpu_form: str = quantize.INT8_CPU_FORM,
               log: Callable[[str], None] = print) -> Path:
    """Export ``model_path`` (a run's model.pt or its run folder) into the bundle ``out_dir``.

    calibration_data: an AV-COCO folder whose images calibrate INT8 (``calibration_size`` of them,
        evenly spread); None renders SynthMUSIC scenes instead.
    eval_data: an AV-COCO folder on which every variant is scored (the manifest records each
        variant's table); defaults to ``calibration_data``; nothing is scored when both are None
        or ``evaluate`` is False.
    max_fpr: the in-view rule's calibration bound, the largest share of off-screen scenes it may
        declare sounding in view (:mod:`avsl_edge.calibrate`).
    calibration_pack: the SynthMUSIC pack of the rendered INT8 samples and rule-calibration scenes
        (default: the pack the run trained on, without its held-out sources).
    int8_cpu_form: the quantization form of the int8-cpu variant (:data:`export.quantize.CPU_FORMS`).
    The bundle is assembled in a temporary sibling folder and renamed into place; an existing
    bundle at ``out_dir`` is replaced, any other non-empty folder is an error.
    """
    bad = [v for v in variants if v not in B.VARIANTS or v == "fp32"]
    if bad:
        raise ExportError(f"unknown variants {bad}; choose from fp16, int8, int8-cpu (fp32 is always exported)")
    if not 0.0 <= max_fpr < 1.0:
        raise ExportError(f"--max-fpr must be in [0, 1), got {max_fpr}")
    if int8_cpu_form not in quantize.CPU_FORMS:
        raise ExportError(f"--int8-cpu-form must be one of {', '.join(quantize.CPU_FORMS)}, got {int8_cpu_form!r}")
    out_dir = Path(out_dir)
    _prepare_out(out_dir)
    parts: dict[str, float] = {}
    with _timed(parts, "load_and_samples"):
        run = load_run(model_path)
    cfg = run.config
    size, k = inference_size(cfg), cfg.model.num_clusters
    if calibration_pack not in (None, "v1", "v2"):
        raise ExportError(f"--calibration-pack must be v1 or v2, got {calibration_pack!r}")
    synth = synth_options(cfg, calibration_pack)
    eval_data = eval_data if eval_data is not None else calibration_data
    metrics = _run_metrics(run.path)

    log(f"[export] {run.path}: K={k}, image {size} px; samples from "
        f"{calibration_data if calibration_data is not None else 'SynthMUSIC ' + synth['pack']}")
    with _timed(parts, "load_and_samples"):
        samples = load_samples(calibration_data, size, calibration_size, synth_options=synth)
        parity_samples = load_samples(None, size, 4, seed=CALIBRATION_SEED + 1)
    with atomic_dir(out_dir) as tmp:
        paths, parity_report, feature_hw = export_fp32(run, parity_samples, tmp, opset, threads, parts, log)
        np.save(tmp / B.DICTIONARY_NAME, run.dictionary.numpy().astype(np.float32))
        variant_graphs = build_variants(paths, variants, samples, tmp, calibration_method, parts, log, int8_cpu_form)
        manifest = build_manifest(run, feature_hw, variant_graphs, metrics, opset,
                                  parity={"samples": parity_samples.source,
                                          "tolerance": f"{PARITY_TOLERANCE} x max(1, |ref|)", "graphs": parity_report},
                                  calibration={"samples": samples.source, "method": calibration_method,
                                               "size": len(samples), "int8_cpu_form": int8_cpu_form})
        B.write_manifest(tmp, manifest)
        bundle = B.load_bundle(tmp)
        with _timed(parts, "variant_reports"):
            reports = variant_reports(bundle, samples, eval_data if evaluate else None, threads, log)
        for v, rep in reports.items():
            manifest.variants[v] = dataclasses.replace(manifest.variants[v], report=rep)
        with _timed(parts, "rules_calibration"):
            rules = calibrate_bundle(bundle, threads=threads, log=log, max_fpr=max_fpr, synth_options=synth)
        manifest.postprocessing = dataclasses.replace(manifest.postprocessing, **rules)
        manifest.export["wall_s"] = parts
        log("[export] wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        B.write_manifest(tmp, manifest)
        B.load_bundle(tmp)  # verify what is about to be installed
    log(f"[export] bundle: {out_dir}")
    return out_dir


def variant_reports(bundle: B.Bundle, samples: Samples, eval_data: str | os.PathLike | None, threads: int,
                    log: Callable[[str], None] = print) -> dict[str, dict]:
    """Per variant: max abs error of every graph output vs fp32 (each graph fed the same inputs,
    and end to end), CPU milliseconds per batch-1 run of each graph, and the evaluation table."""
    n = min(len(samples), 16)
    images, waves = samples.images[:n], samples.waveforms[:n]
    order = ["fp32", *(v for v in bundle.variants if v != "fp32")]  # fp32 first: the others compare with it
    models = {v: OnnxRuntimeBackend(bundle, v, [CPU_EP], threads, 1 if threads else 0) for v in order}
    ref = models["fp32"](images, waves)
    # every variant scored in one pass over the test split: each frame and clip decoded once
    tables = evaluate_variants(models, load_avcoco(eval_data)) if eval_data is not None else {}
    reports = {}
    for v, m in models.items():
        rep: dict = {}
        if v != "fp32":
            per_graph = {**m.run(B.AUDIO, {"waveform": waves}), **m.run(B.IMAGE, {"image": images})}
            rep["max_abs_error_vs_fp32"] = quantize.max_abs_errors(per_graph, ref)
            end = m(images, waves)
            rep["end_to_end_max_abs_error_vs_fp32"] = quantize.max_abs_errors(
                {k: end[k] for k in ("av_map", "class_probs", "audio_probs")}, ref)
            rep["error_samples"] = n
        feeds1 = {B.AUDIO: {"waveform": waves[:1]}, B.IMAGE: {"image": images[:1]},
                  B.HEAD: {"v_fea": ref["v_fea"][:1], "v_emb": ref["v_emb"][:1], "a_emb": ref["a_emb"][:1],
                           "dictionary": bundle.dictionary}}
        rep["cpu_ms_batch1"] = {g: round(quantize.time_ms(m.sessions[g], feeds1[g]), 3) for g in B.GRAPHS}
        rep["cpu"] = {"threads": threads or "onnxruntime default", "processor": platform.processor() or platform.machine(),
                      "cores": os.cpu_count()}
        if v in tables:
            rep["eval"] = {"data": str(eval_data), "model": tables[v]["model"]}
        if "eval" in rep and v != "fp32":
            base = reports["fp32"]["eval"]["model"]
            rep["eval"]["delta_vs_fp32"] = {k: rep["eval"]["model"][k] - base[k] for k in HEADLINE
                                            if k in base and k in rep["eval"]["model"]}
        reports[v] = rep
        log(f"[export] {v}: CPU ms (batch 1) {rep['cpu_ms_batch1']}"
            + (f"; {_headline(rep['eval'])}" if "eval" in rep else ""))
    return reports


def _headline(ev: dict) -> str:
    row, delta = ev["model"], ev.get("delta_vs_fp32", {})
    parts = [f"{k} {row[k]:.1f}" + (f" ({delta[k]:+.1f} vs fp32)" if k in delta else "") for k in HEADLINE if k in row]
    return ", ".join(parts) or "no scored scenes"


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python export/to_onnx.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--checkpoint", required=True, type=Path, help="a run folder or its model.pt")
    p.add_argument("--out", type=Path, help="bundle folder (default: <run>/bundle)")
    p.add_argument("--calibration-data", type=Path,
                   help="AV-COCO folder for INT8 calibration (default: rendered SynthMUSIC scenes)")
    p.add_argument("--eval-data", type=Path,
                   help="AV-COCO folder to score every variant on (default: --calibration-data, "
                        "else <run>/data/test when present)")
    p.add_argument("--variants", default="fp16,int8,int8-cpu", help="comma-separated precision variants besides fp32")
    p.add_argument("--calibration-size", type=int_in(1, 10_000), default=32, help="calibration images (default 32)")
    p.add_argument("--calibration-method", choices=quantize.CALIBRATION_METHODS, default="minmax")
    p.add_argument("--int8-cpu-form", choices=tuple(quantize.CPU_FORMS), default=quantize.INT8_CPU_FORM,
                   help=f"quantization form of the int8-cpu variant (default {quantize.INT8_CPU_FORM}: 7-bit weights, "
                        "which no CPU's multiply-adds saturate; python -m benchmarks.int8_forms compares them)")
    p.add_argument("--calibration-pack", choices=("v1", "v2"),
                   help="SynthMUSIC pack of the rendered INT8 samples and rule-calibration scenes (default: the "
                        "pack the run trained on, without its held-out sources)")
    p.add_argument("--no-eval", action="store_true", help="do not score the variants")
    p.add_argument("--threads", type=thread_count, default=0,
                   help="ONNX Runtime CPU threads (0 = its default; at most 4 per core)")
    p.add_argument("--max-fpr", type=float, default=0.02, metavar="F",
                   help="the in-view rule's calibration bound: the largest share of off-screen scenes it may "
                        "light (default 0.02; the manifest lists the other operating points)")
    args = p.parse_args(argv)
    ckpt = resolve_checkpoint(args.checkpoint)
    out = args.out or ckpt.parent / "bundle"
    eval_data = args.eval_data
    if eval_data is None and args.calibration_data is None and (ckpt.parent / "data" / "test" / "annotations.json").is_file():
        eval_data = ckpt.parent / "data" / "test"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    try:
        check_outputs({"--out": out}, {"--checkpoint": ckpt, "--calibration-data": args.calibration_data,
                                       "--eval-data": eval_data}, replaced=("--out",))
        export_run(ckpt, out, args.calibration_data, eval_data=eval_data, variants=variants,
                   calibration_size=args.calibration_size, calibration_method=args.calibration_method,
                   evaluate=not args.no_eval, threads=args.threads, max_fpr=args.max_fpr,
                   calibration_pack=args.calibration_pack, int8_cpu_form=args.int8_cpu_form)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
