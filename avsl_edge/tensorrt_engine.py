"""TensorRT engines for a bundle: build them from a variant's ONNX graphs, and load them back
only on the GPU model and TensorRT version they were built for. Torch-free, so a Jetson (JetPack 6
ships TensorRT 10) builds its own engines from a bundle exported elsewhere.

    records = build_bundle_engines("runs/cpu/bundle", "int8", BuildOptions(batch_max=8))
    engine, record = load_engine(load_bundle("runs/cpu/bundle"), "image", "int8")

Build recipe (valid on TensorRT 10.x and 11.x; nothing that 11 removed is used):
  * ``Builder.create_network(flags)``: a strongly typed network. On 10.x the flag
    ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` asks for it; on 11.x strong typing is always on
    and the flag is deprecated, so no flag is passed. Precision therefore comes from the ONNX file
    itself (fp16 casts, int8 Q/DQ nodes): no FP16/INT8 builder flags, no calibrator.
  * ``OnnxParser.parse_from_file``; one optimization profile over the batch dimension of every
    dynamic input (min/opt/max); ``set_memory_pool_limit(WORKSPACE, ...)`` when asked.
  * a timing cache (``create_timing_cache`` / ``set_timing_cache`` / ``get_timing_cache``)
    loaded from and saved back to one file per GPU model and TensorRT version, so every later
    build of any graph reuses the kernel timings.
  * ``build_serialized_network`` -> ``engines/<graph>.<precision>.b<min>-<max>.<gpu>.trt<version>.engine``,
    recorded in the manifest (:class:`avsl_edge.bundle.EngineRecord`) with its checksum.

Engines are not portable: :func:`check_engine` refuses a record whose GPU name, compute
capability or TensorRT version differs from this machine's, or whose source ONNX file changed.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import UserError
from .bundle import (ENGINE_DIR, GRAPHS, Bundle, BundleError, EngineRecord, bundle_path, load_bundle,
                     read_manifest, sha256_file, write_manifest)
from .fileio import atomic_path

SUPPORTED_MAJORS = (10, 11)
INSTALL_HINT = ("install TensorRT 10 or 11 for this machine's CUDA: `pip install tensorrt` "
                "(x86-64/SBSA Linux and Windows; e.g. `pip install tensorrt-cu12`), or on Jetson the "
                "JetPack 6 package `sudo apt install python3-libnvinfer`")


class TensorRTUnavailable(UserError, RuntimeError):
    """TensorRT (or a GPU with its driver) is not present or not a supported version."""


class EngineMismatchError(BundleError):
    """An engine built for another GPU, TensorRT version or ONNX file."""


class EngineBuildError(UserError, RuntimeError):
    """TensorRT could not parse a graph or build an engine."""


# --------------------------------------------------------------------------------------------
# versions and machine


def parse_version(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26); non-numeric parts end the tuple ('11.0.0b1' -> (11, 0))."""
    out = []
    for part in str(version).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
        if m.end() != len(part):
            break
    if not out:
        raise ValueError(f"not a version string: {version!r}")
    return tuple(out)


def check_tensorrt_version(version: str) -> int:
    """The major version if this code supports it, else TensorRTUnavailable."""
    major = parse_version(version)[0]
    if major not in SUPPORTED_MAJORS:
        raise TensorRTUnavailable(f"TensorRT {version} is not supported (need {' or '.join(map(str, SUPPORTED_MAJORS))}.x); "
                                  + INSTALL_HINT)
    return major


def import_tensorrt() -> ModuleType:
    """``import tensorrt``, with an error that says what to install, and the version checked."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise TensorRTUnavailable(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from None
    check_tensorrt_version(trt.__version__)
    return trt


@dataclass(frozen=True)
class GpuInfo:
    name: str                 # e.g. "NVIDIA H100 80GB HBM3", "Orin"
    compute_capability: str   # e.g. "9.0", "8.7"


_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76  # CUdevice_attribute values (CUDA driver API)


def load_libcuda() -> ctypes.CDLL | None:
    """The NVIDIA driver library (libcuda / nvcuda), or None where there is no driver."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``, read from the driver (libcuda) with
    ctypes: no CUDA Python package needed, and the same call works on Jetson."""
    lib = load_libcuda()
    if lib is None:
        raise TensorRTUnavailable("no NVIDIA driver found (libcuda could not be loaded): TensorRT engines "
                                  "need an NVIDIA GPU with its driver")

    def check(rc: int, what: str) -> None:
        if rc != 0:
            raise TensorRTUnavailable(f"CUDA driver call {what} failed with error {rc} (is a GPU visible?)")

    check(lib.cuInit(0), "cuInit")
    dev = ctypes.c_int()
    check(lib.cuDeviceGet(ctypes.byref(dev), int(device)), f"cuDeviceGet({device})")
    buf = ctypes.create_string_buffer(256)
    check(lib.cuDeviceGetName(buf, 256, dev), "cuDeviceGetName")
    major, minor = ctypes.c_int(), ctypes.c_int()
    check(lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev), "cuDeviceGetAttribute")
    check(lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev), "cuDeviceGetAttribute")
    return GpuInfo(buf.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}")


# --------------------------------------------------------------------------------------------
# names and compatibility


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (safe in file names)."""
    s = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return s or "unknown"


def engine_file_name(graph: str, precision: str, batch_min: int, batch_max: int, gpu: GpuInfo,
                     tensorrt_version: str) -> str:
    """``image.int8.b1-8.nvidia-h100-80gb-hbm3-sm90.trt10.3.0.engine``."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; the graphs are {GRAPHS}")
    sm = gpu.compute_capability.replace(".", "")
    return (f"{graph}.{precision}.b{batch_min}-{batch_max}.{slug(gpu.name)}-sm{sm}."
            f"trt{'.'.join(map(str, parse_version(tensorrt_version)[:3]))}.engine")


def timing_cache_name(gpu: GpuInfo, tensorrt_version: str) -> str:
    return f"timing.{slug(gpu.name)}-sm{gpu.compute_capability.replace('.', '')}.trt{tensorrt_version}.cache"


def engine_mismatches(record: EngineRecord, gpu: GpuInfo, tensorrt_version: str) -> list[str]:
    """Why ``record`` cannot run here (empty list: it can)."""
    out = []
    if record.gpu_name != gpu.name:
        out.append(f"GPU {record.gpu_name!r} (this machine: {gpu.name!r})")
    if record.compute_capability != gpu.compute_capability:
        out.append(f"compute capability {record.compute_capability} (this machine: {gpu.compute_capability})")
    if record.tensorrt_version != tensorrt_version:
        out.append(f"TensorRT {record.tensorrt_version} (this machine: {tensorrt_version})")
    return out


def check_engine(bundle: Bundle, record: EngineRecord, gpu: GpuInfo, tensorrt_version: str) -> None:
    """Refuse an engine built for another GPU/TensorRT, or from an ONNX file that has changed since."""
    problems = engine_mismatches(record, gpu, tensorrt_version)
    if problems:
        raise EngineMismatchError(
            f"{bundle.root / record.file}: built for {', '.join(problems)}; engines are not portable, rebuild it "
            f"here: python export/to_tensorrt.py --bundle {bundle.root} --variant {record.variant}")
    current = bundle.manifest.files.get(record.onnx_file)
    if current != record.onnx_sha256:
        raise EngineMismatchError(
            f"{bundle.root / record.file}: built from a different {record.onnx_file} (sha256 "
            f"{record.onnx_sha256[:16]}..., now {str(current)[:16]}...); rebuild it: "
            f"python export/to_tensorrt.py --bundle {bundle.root} --variant {record.variant}")


def find_engine(bundle: Bundle, graph: str, variant: str, gpu: GpuInfo, tensorrt_version: str,
                batch: int | None = None) -> EngineRecord:
    """The engine of ``graph``/``variant`` that runs here (and covers ``batch``), else a clear error."""
    candidates = bundle.engines(variant=variant, graph=graph)
    if not candidates:
        raise BundleError(f"{bundle.root}: no TensorRT engine for graph {graph!r}, variant {variant!r}; build it: "
                          f"python export/to_tensorrt.py --bundle {bundle.root} --variant {variant}")
    fitting = [r for r in candidates if not engine_mismatches(r, gpu, tensorrt_version)]
    if not fitting:
        check_engine(bundle, candidates[0], gpu, tensorrt_version)  # raises, naming the mismatch
    if batch is not None:
        covering = [r for r in fitting if r.batch_min <= batch <= r.batch_max]
        if not covering:
            ranges = ", ".join(f"{r.batch_min}-{r.batch_max}" for r in fitting)
            raise EngineMismatchError(f"{bundle.root}: the {graph}/{variant} engines cover batch {ranges}, "
                                      f"not {batch}; rebuild with --batch-max {batch}")
        fitting = covering
    record = fitting[0]
    check_engine(bundle, record, gpu, tensorrt_version)
    return record


def load_engine(bundle: Bundle, graph: str, variant: str = "fp32", batch: int | None = None,
                trt: ModuleType | None = None, gpu: GpuInfo | None = None) -> tuple[Any, EngineRecord]:
    """Deserialize the engine of ``graph``/``variant`` after checking that it was built for this
    GPU and TensorRT version (and from the bundle's current ONNX file). Returns (ICudaEngine, record)."""
    trt = trt or import_tensorrt()
    gpu = gpu or gpu_info()
    record = find_engine(bundle, graph, variant, gpu, trt.__version__, batch)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(bundle.path(record.file, f"engine {record.file!r}").read_bytes())
    if engine is None:
        raise EngineMismatchError(f"{bundle.root / record.file}: TensorRT {trt.__version__} could not deserialize "
                                  "the engine; rebuild it")
    return engine, record


# --------------------------------------------------------------------------------------------
# building


@dataclass(frozen=True)
class BuildOptions:
    batch_min: int = 1
    batch_opt: int = 1
    batch_max: int = 8
    workspace_mib: int = 0            # 0 = TensorRT's default (the device memory)
    tf32: bool = False                # allow TF32 math in fp32 layers (Ampere+); off = true fp32
    timing_cache: Path | None = None  # default: <bundle>/engines/timing.<gpu>.trt<version>.cache

    def __post_init__(self) -> None:
        if not 1 <= self.batch_min <= self.batch_opt <= self.batch_max:
            raise ValueError(f"need 1 <= batch_min <= batch_opt <= batch_max, got {self.batch_min}, "
                             f"{self.batch_opt}, {self.batch_max}")
        if self.workspace_mib < 0:
            raise ValueError(f"workspace_mib must be >= 0, got {self.workspace_mib}")


def network_flags(trt: ModuleType) -> int:
    """Strongly typed network flags: the explicit flag on 10.x; 0 on 11.x (always strongly typed)."""
    major = check_tensorrt_version(trt.__version__)
    if major >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_engine(trt: ModuleType, onnx_path: Path, options: BuildOptions, timing_cache: Path,
                 logger: Any = None) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network, build it with one batch profile and the
    timing cache at ``timing_cache`` (read if present, written back), return the serialized engine."""
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: the TensorRT ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    dynamic = 0
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise EngineBuildError(f"{onnx_path}: input {tensor.name} {shape} has a dynamic non-batch dimension")
        if shape and shape[0] < 0:
            rest = shape[1:]
            profile.set_shape(tensor.name, (options.batch_min, *rest), (options.batch_opt, *rest),
                              (options.batch_max, *rest))
            dynamic += 1
    if dynamic:
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT could not build an engine (see the log above)")
    _atomic_write(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def add_engine_record(root: str | os.PathLike, record: EngineRecord) -> None:
    """Record an engine in the manifest (replacing the record of the same file, or of the same
    graph/variant/GPU/TensorRT/batch range) and re-checksum the bundle."""
    root = Path(root)
    manifest = read_manifest(root)
    same = (record.graph, record.variant, record.gpu_name, record.compute_capability, record.tensorrt_version,
            record.batch_min, record.batch_max)
    manifest.engines = [e for e in manifest.engines if e.file != record.file and
                        (e.graph, e.variant, e.gpu_name, e.compute_capability, e.tensorrt_version,
                         e.batch_min, e.batch_max) != same] + [record]
    write_manifest(root, manifest)


def build_bundle_engines(root: str | os.PathLike, variant: str = "fp32", options: BuildOptions = BuildOptions(),
                         graphs: Sequence[str] = GRAPHS, log: Callable[[str], None] = print,
                         trt: ModuleType | None = None, gpu: GpuInfo | None = None) -> list[EngineRecord]:
    """Build (and record in the manifest) the engines of ``graphs`` of a bundle variant."""
    trt = trt or import_tensorrt()
    gpu = gpu or gpu_info()
    bundle = load_bundle(root)
    if variant not in bundle.manifest.variants:
        raise BundleError(f"{bundle.root}: has no {variant!r} variant (it has {sorted(bundle.manifest.variants)})")
    version = trt.__version__
    # written into the bundle: confined like every bundle path (engines/ may not be a symlink out)
    cache = options.timing_cache or bundle_path(bundle.root, f"{ENGINE_DIR}/{timing_cache_name(gpu, version)}",
                                                "the timing cache")
    records = []
    for graph in graphs:
        gf = bundle.manifest.variants[variant].graphs[graph]
        name = engine_file_name(graph, gf.precision, options.batch_min, options.batch_max, gpu, version)
        log(f"[tensorrt] {graph} ({variant}, {gf.file}) -> {ENGINE_DIR}/{name}")
        onnx_path = bundle.graph_path(graph, variant)
        data = build_engine(trt, onnx_path, options, Path(cache))
        _atomic_write(bundle_path(bundle.root, f"{ENGINE_DIR}/{name}", f"engine {name!r}"), data)
        record = EngineRecord(
            graph=graph, variant=variant, precision=gf.precision, file=f"{ENGINE_DIR}/{name}", onnx_file=gf.file,
            onnx_sha256=sha256_file(onnx_path), batch_min=options.batch_min,
            batch_opt=options.batch_opt, batch_max=options.batch_max, gpu_name=gpu.name,
            compute_capability=gpu.compute_capability, tensorrt_version=version,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        add_engine_record(bundle.root, record)
        records.append(record)
    return records

