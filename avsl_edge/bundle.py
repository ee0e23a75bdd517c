"""Exported-model bundles: a folder of ONNX graphs (and TensorRT engines) plus ``manifest.json``.

Written by ``python export/to_onnx.py`` (and ``export/to_tensorrt.py`` for engines); read by the
edge runtime with :func:`load_bundle`, which needs neither torch nor onnx: numpy and json only.
A bundle may come from anyone: every entry of its manifest is checked in one pass when it is parsed
(:meth:`Manifest.from_dict`), and every path it names must stay inside the bundle folder with its
symlinks resolved (:func:`bundle_path`), so a hostile bundle can neither run a graph from elsewhere
nor learn anything about a file outside.

    bundle = load_bundle("runs/cpu/bundle")        # verifies format version + every sha256
    bundle.graph_path("image", "int8")             # Path to the int8 image graph
    bundle.dictionary                               # (K, 512) float32, an input of the head graph
    bundle.manifest.classes, bundle.cluster_match() # class names, cluster -> class map

Layout (``variant`` = fp32 | fp16 | int8 | int8-cpu)::

    manifest.json            this file's schema: :class:`Manifest`
    dictionary.npy           (K, 512) float32 object dictionary, fed to the head graph's `dictionary` input
    fp32/{audio,image,head}.onnx
    fp16/{audio,image}.onnx  half-precision weights and compute, fp32 inputs/outputs
    int8/{audio,image}.onnx  explicit QDQ int8 (per-channel weights, symmetric int8 activations): the
                             form TensorRT builds (strongly typed); ONNX Runtime's CPU EP runs only
                             about half of its convolutions in int8
    int8-cpu/{audio,image}.onnx  explicit QDQ, per-channel 7-bit int8 weights, asymmetric uint8 activations,
                             int32 biases (u8s8): the form ONNX Runtime's CPU EP runs fully in int8
                             (3-4x faster than fp32 with VNNI); optional, bundles before it lack it
    engines/*.engine         TensorRT engines (optional; tied to one GPU model + TensorRT version)

A variant maps each graph to a file; the fp16 and int8(-cpu) variants use the fp32 head graph (it is
<1 % of the compute and holds the cosine normalisation and the class softmax), so that entry
points at ``fp32/head.onnx``. Graph IO (names below) is identical across variants.

Graphs (B = dynamic batch, S = image size, h = w = S/16, K = clusters):
  audio  waveform (B, 16000) float32 at 16 kHz -> a_emb (B, 128), audio_probs (B, K)
         (the log-mel front end is inside the graph and stays fp32 in every variant)
  image  image (B, 3, S, S) float32, ImageNet-normalised RGB -> v_fea (B, 512, h, w), v_emb (B, 128, h, w)
  head   v_fea, v_emb, a_emb, dictionary (K, 512) -> av_map (B, 1, h, w), av_score (B,),
         class_maps M (B, K, h, w), class_probs softmax(softmax_scale*M over K) (B, K, h, w),
         sounding_objects GAP(M) (B, K)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .audio import CLIP_SAMPLES, SAMPLE_RATE  # what the edge side implements (a manifest must match it)
from .errors import UserError
from .fileio import atomic_path, confined
from .metrics import ClusterMatch
from .preprocess import IMAGENET_MEAN, IMAGENET_STD
from .rules import Rules  # the one place that knows the rules' ranges

BUNDLE_FORMAT = "avsl-edge/bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DICTIONARY_NAME = "dictionary.npy"
ENGINE_DIR = "engines"

AUDIO, IMAGE, HEAD = "audio", "image", "head"
GRAPHS: tuple[str, ...] = (AUDIO, IMAGE, HEAD)
VARIANTS: tuple[str, ...] = ("fp32", "fp16", "int8", "int8-cpu")
TENSORRT_VARIANTS: tuple[str, ...] = ("fp32", "fp16", "int8")  # int8-cpu has non-zero zero points: not for TensorRT

# graph -> (input names, output names), in the graphs' order
AUDIO_INPUTS: tuple[str, ...] = ("waveform",)
AUDIO_OUTPUTS: tuple[str, ...] = ("a_emb", "audio_probs")
IMAGE_INPUTS: tuple[str, ...] = ("image",)
IMAGE_OUTPUTS: tuple[str, ...] = ("v_fea", "v_emb")
HEAD_INPUTS: tuple[str, ...] = ("v_fea", "v_emb", "a_emb", "dictionary")
HEAD_OUTPUTS: tuple[str, ...] = ("av_map", "av_score", "class_maps", "class_probs", "sounding_objects")
GRAPH_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    AUDIO: (AUDIO_INPUTS, AUDIO_OUTPUTS),
    IMAGE: (IMAGE_INPUTS, IMAGE_OUTPUTS),
    HEAD: (HEAD_INPUTS, HEAD_OUTPUTS),
}
BATCH = "batch"  # the name of the dynamic batch dimension in shapes


class BundleError(UserError, ValueError):
    """A bundle that cannot be used: missing/corrupt files, wrong format version, bad manifest."""


# --------------------------------------------------------------------------------------------
# manifest schema


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # ints, or BATCH for the dynamic batch dimension
    dtype: str = "float32"


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class GraphFile:
    file: str        # path relative to the bundle root
    precision: str   # fp32 | fp16 | int8 (int8-cpu files too): what the file computes in (its IO is always fp32)


@dataclass(frozen=True)
class Variant:
    graphs: dict[str, GraphFile]
    description: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # errors vs fp32, CPU timings, evaluation


@dataclass(frozen=True)
class Preprocessing:
    """What the edge side does before the graphs (avsl_edge.preprocess / avsl_edge.audio)."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0 / 255.0          # uint8 -> [0, 1] before (x - mean) / std
    color: str = "RGB"
    layout: str = "NCHW"
    resize: str = "stretch to image_size x image_size (aspect not kept; INTER_AREA shrinking, bilinear enlarging)"
    sample_rate: int = 16000
    clip_samples: int = 16000
    clip_fit: str = "mono float32 in [-1, 1]; the last clip_samples samples, zero-padded at the start"


@dataclass(frozen=True)
class Postprocessing:
    softmax_scale: float = 3.0        # class_probs = softmax(softmax_scale * M) (baked into the head graph)
    sounding_threshold: float = 0.5   # av_score >= this: "something in view is sounding" (evaluation)
    solo_tau: float = 0.1
    mosaic_tau: float = 0.5
    duet_tau: float = 0.2
    nsa_threshold: float = 0.2
    # The edge Localizer's decisions (avsl_edge.localizer.Rules); optional, so older bundles load.
    in_view_threshold: float | None = None  # calibrated in-view threshold (None: sounding_threshold)
    in_view_score: str | None = None        # what it applies to: one of rules.IN_VIEW_SCORES
                                            # (None: av_score)
    in_view_combination: dict[str, float] | None = None  # "combined"'s weights (avsl_edge.rules.combined_score)
    audio_gate_db: float = -50.0            # audio RMS (dBFS) below this: silence, nothing sounding
    class_threshold: float = 0.25           # audio class probability that names a class
    box_tau: float = 0.5                    # box: av map > box_tau x its max in the class's part (calibrated)
    box_method: str | None = None           # map | grabcut: how the box is cut (calibrated; None: map)
    calibration: dict[str, Any] = field(default_factory=dict)  # how the values above were fitted


@dataclass(frozen=True)
class EngineRecord:
    """One serialized TensorRT engine. Engines only run on the GPU model and TensorRT version
    they were built with; the runtime compares these fields before deserialising."""

    graph: str
    variant: str
    precision: str
    file: str                  # relative to the bundle root, under engines/
    onnx_file: str             # the graph it was built from ...
    onnx_sha256: str           # ... and that file's checksum at build time (stale-engine check)
    batch_min: int
    batch_opt: int
    batch_max: int
    gpu_name: str
    compute_capability: str    # "8.7", "9.0", ...
    tensorrt_version: str
    created: str = ""


@dataclass
class Manifest:
    classes: tuple[str, ...]
    num_clusters: int
    dictionary: dict[str, Any]                  # {"file": "dictionary.npy", "shape": [K, 512], "dtype": "float32"}
    cluster_match: dict[str, Any]               # ClusterMatch.to_dict()
    preprocessing: Preprocessing
    postprocessing: Postprocessing
    graphs: dict[str, GraphSpec]
    variants: dict[str, Variant]
    model: dict[str, Any] = field(default_factory=dict)    # image_size, feature map size, config, round, nmi
    metrics: dict[str, Any] | None = None                  # the run's eval.json (fp32 PyTorch), if any
    export: dict[str, Any] = field(default_factory=dict)   # exporter, opset, tool versions, parity
    source: dict[str, Any] = field(default_factory=dict)   # checkpoint name and sha256
    engines: list[EngineRecord] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)    # relative path -> sha256 (every file but the manifest)
    created: str = ""
    format: str = BUNDLE_FORMAT
    format_version: int = BUNDLE_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = MANIFEST_NAME) -> Manifest:
        """Parse a manifest's JSON value: every entry is checked here (types, ranges, consistency of
        the sizes; not the files on disk: :func:`read_manifest` confines the paths, :func:`load_bundle`
        checks the files), so a damaged manifest is one BundleError naming the entry."""
        return _ManifestReader(where).manifest(d)

    def validate(self, where: str = MANIFEST_NAME) -> None:
        """The checks of :meth:`from_dict` on this object (before it is written)."""
        Manifest.from_dict(json.loads(json.dumps(self.to_dict(), default=json_default)), where)

    def referenced_files(self) -> list[str]:
        """Every file the manifest points at (graphs of every variant, dictionary, engines)."""
        refs = [self.dictionary["file"]]
        refs += [gf.file for var in self.variants.values() for gf in var.graphs.values()]
        refs += [e.file for e in self.engines]
        return list(dict.fromkeys(refs))

    def named_paths(self) -> list[tuple[str, str]]:
        """(entry, path) of every path the manifest names: what must stay inside the bundle folder."""
        out = [("dictionary.file", self.dictionary["file"])]
        out += [(f"variants.{v}.graphs.{g}.file", gf.file) for v, var in self.variants.items()
                for g, gf in var.graphs.items()]
        for i, e in enumerate(self.engines):
            out += [(f"engines[{i}].file", e.file), (f"engines[{i}].onnx_file", e.onnx_file)]
        out += [(f"files[{rel!r}]", rel) for rel in self.files]
        return out


# --------------------------------------------------------------------------------------------
# manifest validation: the one pass every manifest goes through when it is parsed

MAX_MANIFEST_BYTES = 64 << 20  # an export writes tens of KB; far more is not a manifest
MAX_MANIFEST_DEPTH = 32        # an export nests about 8 deep; the limit keeps json and asdict off Python's recursion limit
FEATURE_STRIDE = 16            # the image graph's output stride: h = w = ceil(image_size / 16)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def feature_size(image_size: int) -> int:
    """The image graph's feature map side for square frames of ``image_size``: ceil(S / 16) (ResNet-18
    with a stride-1 layer4; every stride-2 layer rounds up)."""
    return -(-image_size // FEATURE_STRIDE)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads(object_pairs_hook=...)``: a key given twice is an error, not "the last one wins"."""
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {dup!r} appears twice in one object")
    return d


class _ManifestReader:
    """Typed reads of one manifest's entries; every problem is a BundleError naming the entry."""

    def __init__(self, where: str):
        self.where = where

    def error(self, at: str, problem: str) -> BundleError:
        return BundleError(f"{self.where}: {at}: {problem}")

    # ---- values
    def obj(self, v: Any, at: str, keys: Sequence[str] | None = None, required: Sequence[str] = ()) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.error(at, f"must be an object, got {_show(v)}")
        if keys is not None and set(v) - set(keys):
            raise self.error(at, f"unknown entries {sorted(set(v) - set(keys))} (known: {', '.join(keys)})")
        for k in required:
            if k not in v:
                raise BundleError(f"{self.where}: missing entry {at + '.' + k if at != 'manifest' else k!r}")
        return v

    def array(self, v: Any, at: str, length: int | None = None) -> list[Any]:
        if not isinstance(v, list):
            raise self.error(at, f"must be a list, got {_show(v)}")
        if length is not None and len(v) != length:
            raise self.error(at, f"must have {length} items, got {len(v)}")
        return v

    def string(self, v: Any, at: str, choices: Sequence[str] | None = None, empty: bool = True) -> str:
        if not isinstance(v, str) or (not empty and not v.strip()):
            raise self.error(at, f"must be a {'' if empty else 'non-empty '}string, got {_show(v)}")
        if choices is not None and v not in choices:
            raise self.error(at, f"must be one of {', '.join(choices)}, got {_show(v)}")
        return v

    def integer(self, v: Any, at: str, lo: int | None = None) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(at, f"must be an integer, got {_show(v)}")
        if lo is not None and v < lo:
            raise self.error(at, f"must be >= {lo}, got {v}")
        return v

    def number(self, v: Any, at: str, lo: float = -math.inf, hi: float = math.inf, open_lo: bool = False) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.error(at, f"must be a finite number, got {_show(v)}")
        if v < lo or v > hi or (open_lo and v == lo):
            raise self.error(at, f"must be in {'(' if open_lo else '['}{lo:g}, {hi:g}], got {v!r}")
        return float(v)

    @staticmethod
    def optional(d: Mapping[str, Any], key: str, default: Any) -> Any:
        """An optional entry: absent or null (older exports wrote null for some) gives ``default``."""
        v = d.get(key)
        return default if v is None else v

    def sha256(self, v: Any, at: str) -> str:
        if not isinstance(v, str) or not _SHA256.fullmatch(v):
            raise self.error(at, f"must be a sha256 (64 lowercase hex digits), got {_show(v)}")
        return v

    def tree(self, d: Any) -> None:
        """No nesting deeper than MAX_MANIFEST_DEPTH, no string that is not valid Unicode (a lone
        surrogate from a JSON escape), walked without recursion."""
        stack = [(d, 1)]
        while stack:
            v, depth = stack.pop()
            if depth > MAX_MANIFEST_DEPTH:
                raise BundleError(f"{self.where}: nested more than {MAX_MANIFEST_DEPTH} levels deep: not a manifest")
            items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
            for k, x in items:
                for text in (k, x):
                    if isinstance(text, str):
                        try:
                            text.encode("utf-8")
                        except UnicodeEncodeError:
                            raise BundleError(f"{self.where}: the string {_show(text)} is not valid Unicode") from None
                if isinstance(x, (dict, list)):
                    stack.append((x, depth + 1))

    # ---- the manifest
    def manifest(self, d: Any) -> Manifest:
        self.tree(d)
        if not isinstance(d, dict):
            raise BundleError(f"{self.where}: not a JSON object")
        if d.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{self.where}: not an avsl-edge bundle manifest (format {_show(d.get('format'))}, "
                              f"expected {BUNDLE_FORMAT!r})")
        version = d.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version != BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"{self.where}: bundle format version {_show(version)}, but this avsl-edge reads version "
                f"{BUNDLE_FORMAT_VERSION}; re-export the bundle with this version "
                "(python export/to_onnx.py --checkpoint RUN --out DIR)")
        self.obj(d, "manifest", [f.name for f in fields(Manifest)],
                 ["classes", "num_clusters", "dictionary", "cluster_match", "preprocessing", "postprocessing",
                  "graphs", "variants", "files"])
        classes = self.classes(d["classes"])
        k = self.integer(d["num_clusters"], "num_clusters", lo=1)
        if k < len(classes):
            raise self.error("num_clusters", f"{k}, but each of the {len(classes)} classes needs at least one cluster")
        dictionary = self.dictionary(d["dictionary"], k)
        cluster_match = self.cluster_match(d["cluster_match"], len(classes), k)
        pre = self.preprocessing(d["preprocessing"])
        graphs = self.graphs(d["graphs"], k, pre, dictionary["shape"][1])
        variants = self.variants(d["variants"])
        m = Manifest(
            classes=classes, num_clusters=k, dictionary=dictionary, cluster_match=cluster_match,
            preprocessing=pre, postprocessing=self.postprocessing(d["postprocessing"]), graphs=graphs,
            variants=variants, model=self.model(self.optional(d, "model", {}), k, pre),
            metrics=None if d.get("metrics") is None else self.obj(d["metrics"], "metrics"),
            export=self.obj(self.optional(d, "export", {}), "export"),
            source=self.source(self.optional(d, "source", {})),
            engines=self.engines(self.optional(d, "engines", []), variants),
            files={self.string(rel, f"files key {_show(rel)}", empty=False): self.sha256(h, f"files[{rel!r}]")
                   for rel, h in self.obj(d["files"], "files").items()},
            created=self.string(d.get("created", ""), "created"),
            format=BUNDLE_FORMAT, format_version=version)
        return m

    def classes(self, v: Any) -> tuple[str, ...]:
        names = self.array(v, "classes")
        if not names:
            raise self.error("classes", "must name at least one class")
        for i, c in enumerate(names):
            self.string(c, f"classes[{i}]", empty=False)
        dup = sorted(c for c, n in Counter(names).items() if n > 1)
        if dup:
            raise self.error("classes", f"names {dup} more than once")
        return tuple(names)

    def dictionary(self, v: Any, k: int) -> dict[str, Any]:
        d = self.obj(v, "dictionary", ["file", "shape", "dtype"], ["file", "shape"])
        self.string(d["file"], "dictionary.file", empty=False)
        shape = [self.integer(n, f"dictionary.shape[{i}]", lo=1)
                 for i, n in enumerate(self.array(d["shape"], "dictionary.shape", 2))]
        if shape[0] != k:
            raise self.error("dictionary.shape", f"{shape} does not match num_clusters {k}")
        self.string(d.get("dtype", "float32"), "dictionary.dtype", ("float32",))
        return {**d, "shape": shape}

    def cluster_match(self, v: Any, c: int, k: int) -> dict[str, Any]:
        d = self.obj(v, "cluster_match", ["cluster_to_class", "n_classes", "affinity"],
                     ["cluster_to_class", "n_classes"])
        if self.integer(d["n_classes"], "cluster_match.n_classes") != c:
            raise self.error("cluster_match.n_classes", f"{d['n_classes']} classes, the manifest lists {c}")
        c2c = self.array(d["cluster_to_class"], "cluster_match.cluster_to_class")
        if len(c2c) != k:
            raise self.error("cluster_match.cluster_to_class", f"has {len(c2c)} clusters, expected num_clusters {k}")
        for i, x in enumerate(c2c):
            if self.integer(x, f"cluster_match.cluster_to_class[{i}]", lo=0) >= c:
                raise self.error(f"cluster_match.cluster_to_class[{i}]", f"class {x} of {c}")
        if d.get("affinity") is not None:
            for i, row in enumerate(self.array(d["affinity"], "cluster_match.affinity", c)):
                for j, x in enumerate(self.array(row, f"cluster_match.affinity[{i}]", k)):
                    self.number(x, f"cluster_match.affinity[{i}][{j}]")
        try:
            ClusterMatch.from_dict(d)
        except ValueError as exc:
            raise self.error("cluster_match", str(exc)) from None
        return d

    def preprocessing(self, v: Any) -> Preprocessing:
        d = self.obj(v, "preprocessing", [f.name for f in fields(Preprocessing)], ["image_size", "mean", "std"])
        self.integer(d["image_size"], "preprocessing.image_size", lo=FEATURE_STRIDE)
        # the edge runtime implements one preprocessing; a manifest describing another would be ignored
        for name, want in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            got = [self.number(x, f"preprocessing.{name}[{i}]")
                   for i, x in enumerate(self.array(d[name], f"preprocessing.{name}", 3))]
            if not np.allclose(got, want, rtol=0, atol=1e-6):
                raise self.error(f"preprocessing.{name}", f"{got}, but avsl-edge normalises with the ImageNet "
                                 f"{name} {list(want)}")
        scale = self.number(d.get("scale", 1.0 / 255.0), "preprocessing.scale")
        if not math.isclose(scale, 1.0 / 255.0, rel_tol=1e-9):
            raise self.error("preprocessing.scale", f"{scale!r}, but avsl-edge scales bytes by 1/255")
        self.string(d.get("color", "RGB"), "preprocessing.color", ("RGB",))
        self.string(d.get("layout", "NCHW"), "preprocessing.layout", ("NCHW",))
        for name in ("resize", "clip_fit"):
            self.string(d.get(name, ""), f"preprocessing.{name}")
        for name, want in (("sample_rate", SAMPLE_RATE), ("clip_samples", CLIP_SAMPLES)):
            if self.integer(d.get(name, want), f"preprocessing.{name}") != want:
                raise self.error(f"preprocessing.{name}", f"{d[name]}, but avsl-edge feeds the audio graph "
                                 f"{CLIP_SAMPLES} samples at {SAMPLE_RATE} Hz")
        return Preprocessing(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    def postprocessing(self, v: Any) -> Postprocessing:
        d = self.obj(v, "postprocessing", [f.name for f in fields(Postprocessing)])
        at = "postprocessing."
        if "softmax_scale" in d:
            self.number(d["softmax_scale"], at + "softmax_scale", 0.0, 1000.0, open_lo=True)
        for name in ("sounding_threshold", "solo_tau", "mosaic_tau", "duet_tau", "nsa_threshold"):
            if name in d:
                self.number(d[name], at + name, 0.0, 1.0)
        for name in ("in_view_threshold", "audio_gate_db", "class_threshold", "box_tau"):
            if d.get(name) is not None or (name != "in_view_threshold" and name in d):
                self.number(d[name], at + name)  # the ranges: Rules below
        for name in ("in_view_score", "box_method"):
            if d.get(name) is not None:
                self.string(d[name], at + name)
        if d.get("in_view_combination") is not None:
            self.obj(d["in_view_combination"], at + "in_view_combination")  # its keys and values: Rules below
        self.obj(d.get("calibration", {}), at + "calibration")
        p = Postprocessing(**d)
        try:
            Rules.from_postprocessing(p)
        except ValueError as exc:
            raise self.error("postprocessing", str(exc).replace("Rules.", "")) from None
        return p

    def tensor(self, v: Any, at: str) -> TensorSpec:
        d = self.obj(v, at, ["name", "shape", "dtype"], ["name", "shape"])
        shape = tuple(n if n == BATCH else self.integer(n, f"{at}.shape[{i}]", lo=1)
                      for i, n in enumerate(self.array(d["shape"], f"{at}.shape")))
        return TensorSpec(self.string(d["name"], f"{at}.name"), shape,
                          self.string(d.get("dtype", "float32"), f"{at}.dtype", ("float32",)))

    def graphs(self, v: Any, k: int, pre: Preprocessing, features: int) -> dict[str, GraphSpec]:
        d = self.obj(v, "graphs")
        missing = [g for g in GRAPHS if g not in d]
        if missing:
            raise BundleError(f"{self.where}: graphs {missing} are not described")
        self.obj(d, "graphs", GRAPHS)
        out = {}
        for g in GRAPHS:
            spec = self.obj(d[g], f"graphs.{g}", ["inputs", "outputs"], ["inputs", "outputs"])
            out[g] = GraphSpec(*(tuple(self.tensor(t, f"graphs.{g}.{kind}[{i}]")
                                       for i, t in enumerate(self.array(spec[kind], f"graphs.{g}.{kind}")))
                                 for kind in ("inputs", "outputs")))
        for g, (ins, outs) in GRAPH_IO.items():
            got = (tuple(t.name for t in out[g].inputs), tuple(t.name for t in out[g].outputs))
            if got != (ins, outs):
                raise BundleError(f"{self.where}: graph {g!r} has inputs/outputs {got}, expected {(ins, outs)}")
        # every fixed size follows from the manifest's own numbers: check them against each other
        a_emb = out[AUDIO].outputs[0].shape
        embed = a_emb[1] if len(a_emb) == 2 and isinstance(a_emb[1], int) else -1
        hw = feature_size(pre.image_size)
        want = graph_specs(k, pre.image_size, (hw, hw), embed, features, pre.clip_samples)
        for g in GRAPHS:
            for kind in ("inputs", "outputs"):
                for i, (t, w) in enumerate(zip(getattr(out[g], kind), getattr(want[g], kind))):
                    if t.shape != w.shape:
                        raise self.error(f"graphs.{g}.{kind}[{i}] ({t.name})",
                                         f"shape {list(t.shape)}, but num_clusters {k}, image_size "
                                         f"{pre.image_size}, clip_samples {pre.clip_samples} and the dictionary's "
                                         f"{features} features make it {list(w.shape)}")
        return out

    def variants(self, v: Any) -> dict[str, Variant]:
        d = self.obj(v, "variants", VARIANTS)
        if not d:  # an export writes fp32 and more; a packaged bundle may keep only smaller ones
            raise BundleError(f"{self.where}: no variant")
        out = {}
        for name, var in d.items():
            at = f"variants.{name}"
            var = self.obj(var, at, ["graphs", "description", "report"], ["graphs"])
            graphs = self.obj(var["graphs"], f"{at}.graphs", GRAPHS)
            absent = [g for g in GRAPHS if g not in graphs]
            if absent:
                raise BundleError(f"{self.where}: variant {name!r} has no file for graphs {absent}")
            files = {}
            for g in GRAPHS:
                gf = self.obj(graphs[g], f"{at}.graphs.{g}", ["file", "precision"], ["file", "precision"])
                files[g] = GraphFile(self.string(gf["file"], f"{at}.graphs.{g}.file", empty=False),
                                     self.string(gf["precision"], f"{at}.graphs.{g}.precision", PRECISIONS))
            report = self.obj(self.optional(var, "report", {}), f"{at}.report")
            if "eval" in report:  # `avsl-edge info` reads report.eval.model
                self.obj(self.obj(report["eval"], f"{at}.report.eval").get("model", {}), f"{at}.report.eval.model")
            out[name] = Variant(files, self.string(var.get("description", ""), f"{at}.description"), report)
        return out

    def model(self, v: Any, k: int, pre: Preprocessing) -> dict[str, Any]:
        d = self.obj(v, "model")
        hw = feature_size(pre.image_size)
        for name, want in (("image_size", pre.image_size), ("num_clusters", k), ("feature_hw", [hw, hw])):
            if name in d and d[name] != want or isinstance(d.get(name), bool):
                raise self.error(f"model.{name}", f"{_show(d[name])}, but the graphs say {want}")
        if d.get("nmi") is not None:
            self.number(d["nmi"], "model.nmi", 0.0, 1.0)
        return d

    def source(self, v: Any) -> dict[str, Any]:
        d = self.obj(v, "source")
        if "sha256" in d:  # names the TensorRT EP's cache folder
            self.sha256(d["sha256"], "source.sha256")
        if "checkpoint" in d:
            self.string(d["checkpoint"], "source.checkpoint")
        return d

    def engines(self, v: Any, variants: Mapping[str, Variant]) -> list[EngineRecord]:
        out = []
        names = [f.name for f in fields(EngineRecord)]
        for i, e in enumerate(self.array(v, "engines")):
            at = f"engines[{i}]"
            e = self.obj(e, at, names, [n for n in names if n != "created"])
            graph = self.string(e["graph"], f"{at}.graph", GRAPHS)
            variant = self.string(e["variant"], f"{at}.variant", [t for t in TENSORRT_VARIANTS if t in variants])
            file = self.string(e["file"], f"{at}.file", empty=False)
            if not file.startswith(ENGINE_DIR + "/"):
                raise self.error(f"{at}.file", f"{file!r} is not under {ENGINE_DIR}/")
            onnx_file = variants[variant].graphs[graph].file
            if e["onnx_file"] != onnx_file:
                raise self.error(f"{at}.onnx_file", f"{_show(e['onnx_file'])}, but the {variant} {graph} graph "
                                 f"is {onnx_file!r}")
            batch = [self.integer(e[n], f"{at}.{n}", lo=1) for n in ("batch_min", "batch_opt", "batch_max")]
            if not batch[0] <= batch[1] <= batch[2]:
                raise self.error(at, f"needs batch_min <= batch_opt <= batch_max, got {batch}")
            out.append(EngineRecord(
                graph=graph, variant=variant, precision=self.string(e["precision"], f"{at}.precision", PRECISIONS),
                file=file, onnx_file=onnx_file, onnx_sha256=self.sha256(e["onnx_sha256"], f"{at}.onnx_sha256"),
                batch_min=batch[0], batch_opt=batch[1], batch_max=batch[2],
                **{n: self.string(e[n], f"{at}.{n}", empty=False)
                   for n in ("gpu_name", "compute_capability", "tensorrt_version")},
                created=self.string(e.get("created", ""), f"{at}.created")))
        return out


# --------------------------------------------------------------------------------------------
# files


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundle_path(root: str | os.PathLike, rel: Any, entry: str) -> Path:
    """``root / rel`` for a path the manifest names (``entry``), checked to stay inside the bundle
    folder with every symlink resolved (:func:`avsl_edge.fileio.confined`): the one check every
    bundle path goes through before anything opens it."""
    return confined(root, rel, f"{Path(root) / MANIFEST_NAME}: {entry}", BundleError, "bundle folder")


def bundle_files(root: str | os.PathLike) -> list[str]:
    """Relative POSIX paths (sorted as strings) of every regular file in the bundle except the manifest
    and hidden files. A symlink out of the folder is a BundleError (its target is never checksummed)."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.as_posix() == MANIFEST_NAME or any(part.startswith(".") for part in rel.parts):
            continue
        bundle_path(root, rel.as_posix(), "a file in the folder")
        if p.is_file():
            out.append(rel.as_posix())
    return sorted(out)


def write_manifest(root: str | os.PathLike, manifest: Manifest) -> Path:
    """Checksum every file under ``root`` into ``manifest.files`` and write ``manifest.json``
    atomically (temp file + rename). Referenced files must exist."""
    root = Path(root)
    manifest.validate(str(root / MANIFEST_NAME))
    missing = [rel for entry, rel in manifest.named_paths() if not entry.startswith("files[")
               and not bundle_path(root, rel, entry).is_file()]
    if missing:
        raise BundleError(f"{root}: the manifest references files that do not exist: {missing}")
    manifest.files = {rel: sha256_file(root / rel) for rel in bundle_files(root)}
    text = json.dumps(manifest.to_dict(), indent=2, default=json_default) + "\n"
    with atomic_path(root / MANIFEST_NAME) as tmp:
        tmp.write_text(text)
    return root / MANIFEST_NAME


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars/arrays and paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_manifest(root: str | os.PathLike) -> Manifest:
    """Parse and validate ``manifest.json`` (format tag and version included) and check that every
    path it names stays inside the bundle folder, without reading or hashing those files."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    path = bundle_path(root, MANIFEST_NAME, "the manifest itself")
    if not path.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST_NAME}); export one with "
                          "python export/to_onnx.py --checkpoint RUN --out DIR")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except ValueError as exc:  # bad UTF-8, bad JSON, a number too long for Python: all ValueErrors
        raise BundleError(f"{path}: unreadable manifest ({exc})") from None
    except RecursionError:
        raise BundleError(f"{path}: unreadable manifest (nested too deeply)") from None
    manifest = Manifest.from_dict(doc, str(path))
    for entry, rel in manifest.named_paths():
        bundle_path(root, rel, entry)
    return manifest


def verify_files(root: str | os.PathLike, manifest: Manifest) -> None:
    """Every listed file exists with its sha256; every referenced file is listed."""
    root = Path(root)
    unlisted = [f for f in manifest.referenced_files() if f not in manifest.files]
    if unlisted:
        raise BundleError(f"{root / MANIFEST_NAME}: files {unlisted} are used but have no sha256 entry")
    for rel, expected in manifest.files.items():
        path = bundle_path(root, rel, f"files[{rel!r}]")
        if not path.is_file():
            raise BundleError(f"{path}: listed in {MANIFEST_NAME} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{path}: sha256 mismatch ({MANIFEST_NAME} says {expected[:16]}..., the file is "
                f"{actual[:16]}...): the file was modified or corrupted; re-export the bundle")


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class Bundle:
    root: Path
    manifest: Manifest
    dictionary: np.ndarray  # (K, 512) float32

    def path(self, rel: str, entry: str) -> Path:
        """A regular file the manifest names (``entry``), inside the bundle folder, else BundleError."""
        path = bundle_path(self.root, rel, entry)
        if not path.is_file():  # a FIFO or a device would hang or flood whatever reads it
            raise BundleError(f"{path}: {entry} is missing or not a regular file")
        return path

    def graph_path(self, graph: str, variant: str = "fp32") -> Path:
        if graph not in GRAPHS:
            raise BundleError(f"unknown graph {graph!r}; the graphs are {GRAPHS}")
        if variant not in self.manifest.variants:
            raise BundleError(f"{self.root}: has no {variant!r} variant (it has {sorted(self.manifest.variants)})")
        return self.path(self.manifest.variants[variant].graphs[graph].file, f"variants.{variant}.graphs.{graph}.file")

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(self.manifest.variants)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.manifest.classes

    @property
    def image_size(self) -> int:
        return self.manifest.preprocessing.image_size

    def cluster_match(self) -> ClusterMatch:
        return ClusterMatch.from_dict(self.manifest.cluster_match)

    def engines(self, variant: str | None = None, graph: str | None = None) -> list[EngineRecord]:
        return [e for e in self.manifest.engines
                if (variant is None or e.variant == variant) and (graph is None or e.graph == graph)]


def read_dictionary(root: str | os.PathLike, manifest: Manifest) -> np.ndarray:
    """The (K, D) float32 dictionary, checked against the manifest before its data is read, and
    finite with no all-zero row (the head normalises each row: NaN or zero rows light the whole frame
    or nothing)."""
    path = bundle_path(root, manifest.dictionary["file"], "dictionary.file")
    if not path.is_file():
        raise BundleError(f"{path}: dictionary is missing or not a regular file")
    want = tuple(manifest.dictionary["shape"])
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only, until copied
    except (OSError, ValueError, EOFError) as exc:
        why = "it holds pickled objects, which a bundle never loads" if "pickle" in str(exc) else str(exc)
        raise BundleError(f"{path}: unreadable dictionary ({why})") from None
    if not isinstance(mapped, np.ndarray):
        raise BundleError(f"{path}: unreadable dictionary (not a single .npy array)")
    if mapped.dtype != np.float32 or mapped.shape != want:
        raise BundleError(f"{path}: dictionary is {mapped.dtype} {mapped.shape}, the manifest says float32 {want}")
    dictionary = np.array(mapped)
    del mapped
    bad = np.nonzero(~np.isfinite(dictionary).all(axis=1))[0]
    if bad.size:
        raise BundleError(f"{path}: dictionary rows {bad.tolist()} hold NaN or infinite values; re-export the bundle")
    zero = np.nonzero(~dictionary.any(axis=1))[0]
    if zero.size:
        raise BundleError(f"{path}: dictionary rows {zero.tolist()} are all zero; re-export the bundle")
    return dictionary


def load_bundle(root: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read ``manifest.json``, check the format version and (``verify``) every file's sha256.

    Raises BundleError with the offending file or entry named: no folder/manifest, another format
    version, a malformed manifest, a path that leaves the bundle folder, a missing file, a checksum
    mismatch, a dictionary of the wrong shape or with non-finite values.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if verify:
        verify_files(root, manifest)
    return Bundle(root, manifest, read_dictionary(root, manifest))


def graph_specs(num_clusters: int, image_size: int, feature_hw: Sequence[int], embed_dim: int = 128,
                feature_dim: int = 512, clip_samples: int = 16000) -> dict[str, GraphSpec]:
    """The IO description of the three graphs for a model of these sizes."""
    b, k, (h, w), e, c = BATCH, num_clusters, feature_hw, embed_dim, feature_dim
    t = TensorSpec
    return {
        AUDIO: GraphSpec((t("waveform", (b, clip_samples)),), (t("a_emb", (b, e)), t("audio_probs", (b, k)))),
        IMAGE: GraphSpec((t("image", (b, 3, image_size, image_size)),),
                         (t("v_fea", (b, c, h, w)), t("v_emb", (b, e, h, w)))),
        HEAD: GraphSpec(
            (t("v_fea", (b, c, h, w)), t("v_emb", (b, e, h, w)), t("a_emb", (b, e)), t("dictionary", (k, c))),
            (t("av_map", (b, 1, h, w)), t("av_score", (b,)), t("class_maps", (b, k, h, w)),
             t("class_probs", (b, k, h, w)), t("sounding_objects", (b, k)))),
    }
