"""Exported-model bundles: a folder of ONNX graphs (and TensorRT engines) plus ``manifest.json``.

Written by ``python export/to_onnx.py`` (and ``export/to_tensorrt.py`` for engines); read by the
edge runtime with :func:`load_bundle`, which needs neither torch nor onnx: numpy and json only.

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
    int8-cpu/{audio,image}.onnx  explicit QDQ, per-channel int8 weights, asymmetric uint8 activations,
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
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import UserError
from .fileio import atomic_path
from .metrics import ClusterMatch

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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(str(d["name"]), tuple(d["shape"]), str(d.get("dtype", "float32")))


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphSpec":
        return cls(tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                   tuple(TensorSpec.from_dict(t) for t in d["outputs"]))


@dataclass(frozen=True)
class GraphFile:
    file: str        # path relative to the bundle root
    precision: str   # fp32 | fp16 | int8 (int8-cpu files too): what the file computes in (its IO is always fp32)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GraphFile":
        return cls(str(d["file"]), str(d["precision"]))


@dataclass(frozen=True)
class Variant:
    graphs: dict[str, GraphFile]
    description: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # errors vs fp32, CPU timings, evaluation

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Variant":
        return cls({g: GraphFile.from_dict(f) for g, f in d["graphs"].items()},
                   str(d.get("description", "")), dict(d.get("report") or {}))


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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocessing":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


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
    in_view_score: str | None = None        # what it applies to: av_score | presence | heard_av (None: av_score)
    audio_gate_db: float = -50.0            # audio RMS (dBFS) below this: silence, nothing sounding
    class_threshold: float = 0.25           # audio class probability that names a class
    box_tau: float = 0.5                    # box: av map > box_tau x its max in the class's part (calibrated)
    box_method: str | None = None           # map | grabcut: how the box is cut (calibrated; None: map)
    calibration: dict[str, Any] = field(default_factory=dict)  # how the values above were fitted

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Postprocessing":
        return cls(**d)


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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EngineRecord":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown engine record keys {unknown}")
        return cls(**d)


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
    def from_dict(cls, d: Mapping[str, Any], where: str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(d, Mapping):
            raise BundleError(f"{where}: not a JSON object")
        if d.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{where}: not an avsl-edge bundle manifest (format {d.get('format')!r}, "
                              f"expected {BUNDLE_FORMAT!r})")
        version = d.get("format_version")
        if version != BUNDLE_FORMAT_VERSION:
            raise BundleError(
                f"{where}: bundle format version {version!r}, but this avsl-edge reads version "
                f"{BUNDLE_FORMAT_VERSION}; re-export the bundle with this version "
                "(python export/to_onnx.py --checkpoint RUN --out DIR)")
        try:
            m = cls(
                classes=tuple(str(c) for c in d["classes"]),
                num_clusters=int(d["num_clusters"]),
                dictionary=dict(d["dictionary"]),
                cluster_match=dict(d["cluster_match"]),
                preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                postprocessing=Postprocessing.from_dict(d["postprocessing"]),
                graphs={g: GraphSpec.from_dict(s) for g, s in d["graphs"].items()},
                variants={v: Variant.from_dict(s) for v, s in d["variants"].items()},
                model=dict(d.get("model") or {}),
                metrics=d.get("metrics"),
                export=dict(d.get("export") or {}),
                source=dict(d.get("source") or {}),
                engines=[EngineRecord.from_dict(e) for e in d.get("engines") or []],
                files={str(k): str(v) for k, v in d["files"].items()},
                created=str(d.get("created", "")),
                format=d["format"],
                format_version=int(version),
            )
        except KeyError as exc:
            raise BundleError(f"{where}: missing entry {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{where}: malformed entry ({type(exc).__name__}: {exc})") from None
        m.validate(where)
        return m

    def validate(self, where: str = MANIFEST_NAME) -> None:
        """Internal consistency (not the files on disk: :func:`load_bundle` checks those)."""
        missing = [g for g in GRAPHS if g not in self.graphs]
        if missing:
            raise BundleError(f"{where}: graphs {missing} are not described")
        for g, (ins, outs) in GRAPH_IO.items():
            got = (tuple(t.name for t in self.graphs[g].inputs), tuple(t.name for t in self.graphs[g].outputs))
            if got != (ins, outs):
                raise BundleError(f"{where}: graph {g!r} has inputs/outputs {got}, expected {(ins, outs)}")
        if "fp32" not in self.variants:
            raise BundleError(f"{where}: no 'fp32' variant")
        for v, var in self.variants.items():
            absent = [g for g in GRAPHS if g not in var.graphs]
            if absent:
                raise BundleError(f"{where}: variant {v!r} has no file for graphs {absent}")
        shape = list(self.dictionary.get("shape", []))
        if len(shape) != 2 or shape[0] != self.num_clusters:
            raise BundleError(f"{where}: dictionary shape {shape} does not match num_clusters {self.num_clusters}")
        try:
            ClusterMatch.from_dict(self.cluster_match)
        except ValueError as exc:
            raise BundleError(f"{where}: cluster_match: {exc}") from None
        if len(self.cluster_match["cluster_to_class"]) != self.num_clusters:
            raise BundleError(f"{where}: cluster_match has {len(self.cluster_match['cluster_to_class'])} "
                              f"clusters, expected {self.num_clusters}")
        if int(self.cluster_match["n_classes"]) != len(self.classes):
            raise BundleError(f"{where}: cluster_match has {self.cluster_match['n_classes']} classes, "
                              f"the manifest lists {len(self.classes)}")

    def referenced_files(self) -> list[str]:
        """Every file the manifest points at (graphs of every variant, dictionary, engines)."""
        refs = [self.dictionary["file"]]
        refs += [gf.file for var in self.variants.values() for gf in var.graphs.values()]
        refs += [e.file for e in self.engines]
        return list(dict.fromkeys(refs))


# --------------------------------------------------------------------------------------------
# files


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundle_files(root: str | os.PathLike) -> list[str]:
    """Relative POSIX paths (sorted as strings) of every regular file in the bundle except the manifest
    and hidden files."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if not p.is_file() or rel.as_posix() == MANIFEST_NAME or any(part.startswith(".") for part in rel.parts):
            continue
        out.append(rel.as_posix())
    return sorted(out)


def write_manifest(root: str | os.PathLike, manifest: Manifest) -> Path:
    """Checksum every file under ``root`` into ``manifest.files`` and write ``manifest.json``
    atomically (temp file + rename). Referenced files must exist."""
    root = Path(root)
    manifest.validate(str(root / MANIFEST_NAME))
    missing = [f for f in manifest.referenced_files() if not (root / f).is_file()]
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
    """Parse and validate ``manifest.json`` (format tag and version included), without hashing files."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST_NAME}); export one with "
                          "python export/to_onnx.py --checkpoint RUN --out DIR")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest ({exc})") from None
    return Manifest.from_dict(data, str(path))


def verify_files(root: str | os.PathLike, manifest: Manifest) -> None:
    """Every listed file exists with its sha256; every referenced file is listed."""
    root = Path(root)
    unlisted = [f for f in manifest.referenced_files() if f not in manifest.files]
    if unlisted:
        raise BundleError(f"{root / MANIFEST_NAME}: files {unlisted} are used but have no sha256 entry")
    for rel, expected in manifest.files.items():
        path = root / rel
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

    def graph_path(self, graph: str, variant: str = "fp32") -> Path:
        if graph not in GRAPHS:
            raise BundleError(f"unknown graph {graph!r}; the graphs are {GRAPHS}")
        if variant not in self.manifest.variants:
            raise BundleError(f"{self.root}: has no {variant!r} variant (it has {sorted(self.manifest.variants)})")
        return self.root / self.manifest.variants[variant].graphs[graph].file

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


def load_bundle(root: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read ``manifest.json``, check the format version and (``verify``) every file's sha256.

    Raises BundleError with the offending file named: no folder/manifest, another format version,
    a malformed manifest, a missing file, a checksum mismatch, a dictionary of the wrong shape.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if verify:
        verify_files(root, manifest)
    dpath = root / manifest.dictionary["file"]
    try:
        dictionary = np.load(dpath, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{dpath}: unreadable dictionary ({exc})") from None
    if dictionary.dtype != np.float32 or list(dictionary.shape) != list(manifest.dictionary["shape"]):
        raise BundleError(f"{dpath}: dictionary is {dictionary.dtype} {dictionary.shape}, the manifest says "
                          f"float32 {tuple(manifest.dictionary['shape'])}")
    return Bundle(root, manifest, dictionary)


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
