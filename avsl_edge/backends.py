"""Inference backends for an exported bundle: the ONE place that chooses how the graphs run.

Two backends give the same outputs (the graphs' IO of :mod:`avsl_edge.bundle`):

* :class:`OnnxRuntimeBackend`: one ``onnxruntime.InferenceSession`` per graph. Explicit
  ``providers`` win (a name this onnxruntime build lacks is an error); ``providers=None`` tries
  the TensorRT execution provider, then CUDA, then the CPU, skipping quietly what cannot work here
  (no NVIDIA driver, missing CUDA/TensorRT libraries) and logging what was applied. Thread counts
  are settable; on a GPU the image -> head chain is run with IO binding so the feature maps stay
  on the device.
* :class:`TensorRTBackend`: the serialized TensorRT engines stored in the bundle
  (``export/to_tensorrt.py`` builds them), run through the TensorRT Python API with device memory
  from the CUDA driver (ctypes, no CUDA Python package, no torch).

:func:`create_backend` picks one: ``backend="auto"`` uses the bundle's TensorRT engines when they
were built for this GPU and TensorRT is installed, else ONNX Runtime with the automatic provider
list.

    bundle = load_bundle("runs/cpu/bundle")
    be = create_backend(bundle, "onnxruntime", providers=["CPUExecutionProvider"], intra_op_threads=2)
    out = be(images, waveforms)     # every graph output, numpy, batch first
    be.description                  # "onnxruntime 1.31.1, fp32, providers CPUExecutionProvider"
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .bundle import AUDIO, GRAPH_IO, GRAPHS, HEAD, IMAGE, Bundle, BundleError
from .registry import cache_dir
from .options import max_threads
from .variant_choice import AUTO_VARIANT, VariantChoice, choose_variant
from .tensorrt_engine import (TensorRTUnavailable, engine_mismatches, gpu_info, import_tensorrt, load_engine,
                              load_libcuda)  # torch-free: ctypes; tensorrt itself loads only when an engine does

log = logging.getLogger("avsl_edge")

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "tensorrt")
TRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
AUTO_PROVIDERS: tuple[str, ...] = (TRT_EP, CUDA_EP, CPU_EP)
_GPU_EPS = {TRT_EP: "tensorrt", CUDA_EP: "cuda"}

Provider = str | tuple[str, dict[str, Any]]


class BackendError(UserError, RuntimeError):
    """A backend that cannot be created or run here (unknown provider, missing TensorRT, ...)."""


# --------------------------------------------------------------------------------------------
# the common interface


class Backend:
    """Runs the three graphs of one bundle variant. Subclasses implement :meth:`run`."""

    name: str = "backend"
    variant_choice: VariantChoice | None = None  # set when ``variant="auto"`` chose this variant

    def __init__(self, bundle: Bundle, variant: str):
        if variant not in bundle.manifest.variants:
            raise BundleError(f"{bundle.root}: has no {variant!r} variant (it has {sorted(bundle.manifest.variants)})")
        self.bundle, self.variant = bundle, variant
        self.dictionary = np.ascontiguousarray(bundle.dictionary, dtype=np.float32)
        self._specs = {g: bundle.manifest.graphs[g] for g in GRAPHS}

    # ---- to implement
    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one graph on numpy feeds (the head's ``dictionary`` is added when absent)."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        return f"{self.name}, {self.variant}{self.auto_note}"

    @property
    def auto_note(self) -> str:
        """Why ``variant="auto"`` chose this variant (empty for a variant asked for by name)."""
        return f" (auto: {self.variant_choice.reason})" if self.variant_choice is not None else ""

    def info(self) -> dict[str, Any]:
        out = {"backend": self.name, "variant": self.variant, "description": self.description}
        if self.variant_choice is not None:
            out["variant_choice"] = self.variant_choice.to_dict()
        return out

    def close(self) -> None:
        """Release sessions / device memory (the object is unusable afterwards)."""

    # ---- shared
    def check_feeds(self, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Contiguous float32 feeds with the manifest's names and non-batch dimensions, else ValueError."""
        if graph not in GRAPHS:
            raise ValueError(f"unknown graph {graph!r}; the graphs are {GRAPHS}")
        feeds = dict(feeds)
        if graph == HEAD and "dictionary" not in feeds:
            feeds["dictionary"] = self.dictionary
        out = {}
        for spec in self._specs[graph].inputs:
            if spec.name not in feeds:
                raise ValueError(f"graph {graph!r} needs input {spec.name!r}; got {sorted(feeds)}")
            a = np.ascontiguousarray(feeds[spec.name], dtype=np.float32)
            want = spec.shape
            ok = a.ndim == len(want) and all(isinstance(w, str) or int(w) == d for w, d in zip(want, a.shape))
            if not ok or (a.ndim and isinstance(want[0], str) and a.shape[0] < 1):
                raise ValueError(f"graph {graph!r} input {spec.name!r}: shape {a.shape}, expected "
                                 f"{tuple(want)}")
            out[spec.name] = a
        return out

    def audio(self, waveforms: np.ndarray) -> dict[str, np.ndarray]:
        """(B, 16000) float32 at 16 kHz -> a_emb (B, E), audio_probs (B, K)."""
        return self.run(AUDIO, {"waveform": waveforms})

    def image(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """(B, 3, S, S) preprocessed frames -> v_fea, v_emb."""
        return self.run(IMAGE, {"image": images})

    def head(self, v_fea: np.ndarray, v_emb: np.ndarray, a_emb: np.ndarray) -> dict[str, np.ndarray]:
        return self.run(HEAD, {"v_fea": v_fea, "v_emb": v_emb, "a_emb": a_emb})

    def frame(self, images: np.ndarray, a_emb: np.ndarray, timings: dict[str, float] | None = None,
              features: bool = True) -> dict[str, np.ndarray]:
        """Image graph then head with a given audio embedding: every head output, and v_fea, v_emb
        when ``features``. ``timings`` (optional) receives the milliseconds of "image" and "head"."""
        t0 = time.perf_counter()
        v = self.image(images)
        t1 = time.perf_counter()
        a = np.broadcast_to(np.asarray(a_emb, np.float32), (v["v_fea"].shape[0], np.shape(a_emb)[-1]))
        h = self.head(v["v_fea"], v["v_emb"], a)
        if timings is not None:
            timings["image"], timings["head"] = (t1 - t0) * 1000.0, (time.perf_counter() - t1) * 1000.0
        return {**v, **h} if features else h

    def __call__(self, images: np.ndarray, waveforms: np.ndarray) -> dict[str, np.ndarray]:
        """The whole model on a batch: every output of the three graphs."""
        a = self.audio(waveforms)
        return {**a, **self.frame(images, a["a_emb"])}

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# ONNX Runtime


def _provider_name(p: Provider) -> str:
    return p if isinstance(p, str) else p[0]


def _gpu_present() -> str | None:
    """None when an NVIDIA GPU answers through its driver, else why not."""
    try:
        gpu_info()
    except TensorRTUnavailable as exc:
        return str(exc)
    return None


def _provider_library_problem(ort: Any, provider: str) -> str | None:
    """Load the provider's shared library the way onnxruntime will; None if it loads, else the error."""
    stem = _GPU_EPS[provider]
    capi = Path(ort.__file__).parent / "capi"
    name = (f"onnxruntime_providers_{stem}.dll" if sys.platform == "win32" else f"libonnxruntime_providers_{stem}.so")
    path = capi / name
    if not path.is_file():
        return None  # an unusual layout: let onnxruntime decide
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        return str(exc).split(": ", 1)[-1]
    return None


def auto_providers(ort: Any | None = None) -> tuple[list[str], dict[str, str]]:
    """The automatic provider list for this machine and the providers skipped, with the reason."""
    if ort is None:
        import onnxruntime as ort  # noqa: PLC0415 - the engine loads with a model: `import avsl_edge.cli` stays light
    available = set(ort.get_available_providers())
    chosen, skipped = [], {}
    gpu_problem: str | None | bool = False  # not checked yet
    for p in AUTO_PROVIDERS:
        if p not in available:
            skipped[p] = "not in this onnxruntime build"
            continue
        if p in _GPU_EPS:
            if gpu_problem is False:
                gpu_problem = _gpu_present()
                if gpu_problem is None and hasattr(ort, "preload_dlls"):
                    try:  # CUDA/cuDNN from NVIDIA's pip wheels, when installed
                        ort.preload_dlls()
                    except Exception:  # noqa: BLE001 - best effort
                        pass
            if gpu_problem:
                skipped[p] = gpu_problem
                continue
            problem = _provider_library_problem(ort, p)
            if problem:
                skipped[p] = f"its libraries do not load ({problem})"
                continue
        chosen.append(p)
    return chosen, skipped


def _ep_options(provider: str, bundle: Bundle, variant: str, device_id: int) -> dict[str, Any]:
    if provider == TRT_EP:
        cache = cache_dir() / "trt-ep" / (bundle.manifest.source.get("sha256", "bundle")[:16] + f"-{variant}")
        cache.mkdir(parents=True, exist_ok=True)
        return {"device_id": device_id, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                "trt_fp16_enable": variant == "fp16", "trt_int8_enable": variant == "int8"}
    if provider == CUDA_EP:
        return {"device_id": device_id}
    return {}


def ort_session(path: str | os.PathLike, providers: Sequence[Provider] = (CPU_EP,), intra_op_threads: int = 0,
                inter_op_threads: int = 0, spinning: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` (threads 0 = onnxruntime's default; warnings silenced).

    ``spinning`` False (default): idle intra-op threads sleep instead of busy-waiting. On a small
    CPU shared with the camera, audio and drawing threads (or any other process) spinning workers
    steal the cores the others need: measured on 2 cores with one core busy elsewhere, the 224 px
    fp32 image graph took 98-100 ms with spinning against 56-58 ms without (27.0 vs 27.4 ms on an
    idle machine).
    """
    import onnxruntime as ort  # noqa: PLC0415 - the engine loads with a model: `import avsl_edge.cli` stays light

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = int(intra_op_threads)
    so.inter_op_num_threads = int(inter_op_threads)
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=list(providers))


class OnnxRuntimeBackend(Backend):
    """One InferenceSession per graph of a bundle variant.

    providers: None = automatic (TensorRT EP, CUDA EP, CPU, as far as they work here); else a list
        of provider names or ``(name, options)`` pairs, used as given.
    intra_op_threads / inter_op_threads: 0 = onnxruntime's default.
    io_binding: bind outputs to the device and keep the image graph's outputs there for the head
        (default: on when a GPU provider was applied).
    """

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, variant: str = "fp32", providers: Sequence[Provider] | None = None,
                 intra_op_threads: int = 0, inter_op_threads: int = 0, io_binding: bool | None = None,
                 device_id: int = 0):
        super().__init__(bundle, variant)
        try:
            import onnxruntime as ort  # noqa: PLC0415 - the engine loads with a model: `import avsl_edge.cli` stays light
        except ImportError as exc:
            raise BackendError(f"onnxruntime is not installed ({exc}); pip install onnxruntime "
                               "(or onnxruntime-gpu on an NVIDIA machine)") from None
        self._ort = ort
        for n, v in (("intra_op_threads", intra_op_threads), ("inter_op_threads", inter_op_threads)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= max_threads():
                raise BackendError(f"{n} must be an integer in 0..{max_threads()} (0 = onnxruntime's default), "
                                   f"got {v!r}")
        available = ort.get_available_providers()
        self.skipped: dict[str, str] = {}
        if providers is None:
            names, self.skipped = auto_providers(ort)
            self.requested: list[Provider] = [(p, _ep_options(p, bundle, variant, device_id)) for p in names]
        else:
            providers = [providers] if isinstance(providers, str) else list(providers)
            if not providers:
                raise BackendError("providers is an empty list; pass None for the automatic choice")
            unknown = [_provider_name(p) for p in providers if _provider_name(p) not in available]
            if unknown:
                raise BackendError(f"execution providers {unknown} are not available in this onnxruntime "
                                   f"{ort.__version__} build (available: {available})")
            self.requested = list(providers)
        self.threads = (int(intra_op_threads), int(inter_op_threads))
        self.sessions = {}
        for g in GRAPHS:
            path = bundle.graph_path(g, variant)
            try:
                self.sessions[g] = ort_session(path, self.requested, *self.threads)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise BackendError(f"{path}: onnxruntime could not load the graph ({exc})") from None
            self._check_io(g, self.sessions[g], path)
        self.providers: list[str] = self.sessions[IMAGE].get_providers()
        wanted = _provider_name(self.requested[0]) if self.requested else CPU_EP
        if self.providers and self.providers[0] != wanted:
            log.warning("requested %s but onnxruntime applied %s", wanted, self.providers)
        on_gpu = bool(self.providers) and self.providers[0] in _GPU_EPS
        self.io_binding = on_gpu if io_binding is None else bool(io_binding)
        self._device = ("cuda", device_id) if on_gpu else ("cpu", 0)
        self._dict_value = None
        log.info("backend %s", self.description
                 + "".join(f"; skipped {p}: {why}" for p, why in self.skipped.items()))

    def _check_io(self, graph: str, session: Any, path: Path) -> None:
        """The graph file's inputs/outputs must be the manifest's (names, and every fixed dimension)."""
        spec = self._specs[graph]
        for kind, got, want in (("input", session.get_inputs(), spec.inputs), ("output", session.get_outputs(), spec.outputs)):
            if [t.name for t in got] != [t.name for t in want]:
                raise BundleError(f"{path}: {kind}s {[t.name for t in got]} do not match the manifest's "
                                  f"{[t.name for t in want]}; the bundle is mismatched, re-export it")
            for t, w in zip(got, want):
                fixed = [(a, b) for a, b in zip(t.shape, w.shape) if isinstance(a, int) and isinstance(b, int)]
                if len(t.shape) != len(w.shape) or any(a != b for a, b in fixed):
                    raise BundleError(f"{path}: {kind} {t.name!r} has shape {list(t.shape)} but the manifest says "
                                      f"{list(w.shape)}; the bundle is mismatched, re-export it")

    @property
    def description(self) -> str:
        threads = ", threads intra {} inter {}".format(*(t or "default" for t in self.threads))
        return (f"onnxruntime {self._ort.__version__}, {self.variant}, providers {', '.join(self.providers)}"
                f"{threads}{', io binding' if self.io_binding else ''}{self.auto_note}")

    def info(self) -> dict[str, Any]:
        return {**super().info(), "providers": list(self.providers), "skipped_providers": dict(self.skipped),
                "intra_op_threads": self.threads[0], "inter_op_threads": self.threads[1],
                "io_binding": self.io_binding}

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self.check_feeds(graph, feeds)
        names = list(GRAPH_IO[graph][1])
        if not self.io_binding:
            return dict(zip(names, self.sessions[graph].run(names, feeds)))
        binding = self.sessions[graph].io_binding()
        for n, v in feeds.items():
            binding.bind_cpu_input(n, v)
        for n in names:
            binding.bind_output(n, self._device[0], self._device[1])
        self.sessions[graph].run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))

    def frame(self, images: np.ndarray, a_emb: np.ndarray, timings: dict[str, float] | None = None,
              features: bool = True) -> dict[str, np.ndarray]:
        if not self.io_binding:
            return super().frame(images, a_emb, timings, features)
        t0 = time.perf_counter()
        # image -> head with v_fea / v_emb kept on the device (no host round trip)
        x = self.check_feeds(IMAGE, {"image": images})["image"]
        b = x.shape[0]
        a = np.ascontiguousarray(np.broadcast_to(np.asarray(a_emb, np.float32), (b, np.shape(a_emb)[-1])))
        dev, idx = self._device
        ib = self.sessions[IMAGE].io_binding()
        ib.bind_cpu_input("image", x)
        for n in GRAPH_IO[IMAGE][1]:
            ib.bind_output(n, dev, idx)
        self.sessions[IMAGE].run_with_iobinding(ib)
        v_fea, v_emb = ib.get_outputs()
        t1 = time.perf_counter()
        if self._dict_value is None:
            self._dict_value = self._ort.OrtValue.ortvalue_from_numpy(self.dictionary, dev, idx)
        hb = self.sessions[HEAD].io_binding()
        hb.bind_ortvalue_input("v_fea", v_fea)
        hb.bind_ortvalue_input("v_emb", v_emb)
        hb.bind_cpu_input("a_emb", a)
        hb.bind_ortvalue_input("dictionary", self._dict_value)
        names = list(GRAPH_IO[HEAD][1])
        for n in names:
            hb.bind_output(n, dev, idx)
        self.sessions[HEAD].run_with_iobinding(hb)
        out = dict(zip(names, hb.copy_outputs_to_cpu()))
        if timings is not None:
            timings["image"], timings["head"] = (t1 - t0) * 1000.0, (time.perf_counter() - t1) * 1000.0
        if features:
            out.update(zip(GRAPH_IO[IMAGE][1], ib.copy_outputs_to_cpu()))
        return out

    def close(self) -> None:
        self.sessions = {}
        self._dict_value = None


# --------------------------------------------------------------------------------------------
# TensorRT (native engines) with CUDA driver memory through ctypes


class _CudaDriver:
    """The few CUDA driver API calls the TensorRT backend needs (primary context, one stream,
    device buffers, copies). TensorRT's runtime shares the device's primary context."""

    def __init__(self, device: int = 0):
        lib = load_libcuda()
        if lib is None:
            raise BackendError("no NVIDIA driver found (libcuda could not be loaded): the TensorRT backend "
                               "needs an NVIDIA GPU with its driver")
        self.lib = lib
        u64, vp, sz = ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t
        lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(u64), sz]
        lib.cuMemFree_v2.argtypes = [u64]
        lib.cuMemcpyHtoD_v2.argtypes = [u64, vp, sz]
        lib.cuMemcpyDtoH_v2.argtypes = [vp, u64, sz]
        lib.cuStreamCreate.argtypes = [ctypes.POINTER(vp), ctypes.c_uint]
        lib.cuStreamSynchronize.argtypes = [vp]
        lib.cuCtxSetCurrent.argtypes = [vp]
        self._check(lib.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        self._check(lib.cuDeviceGet(ctypes.byref(dev), int(device)), f"cuDeviceGet({device})")
        self.device = dev
        ctx = vp()
        self._check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
        self.ctx = ctx
        self.make_current()
        stream = vp()
        self._check(lib.cuStreamCreate(ctypes.byref(stream), 0), "cuStreamCreate")
        self.stream = stream
        self._closed = False

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc != 0:
            raise BackendError(f"CUDA driver call {what} failed with error {rc}")

    @property
    def stream_handle(self) -> int:
        return int(self.stream.value or 0)

    def make_current(self) -> None:
        self._check(self.lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    def alloc(self, nbytes: int) -> int:
        p = ctypes.c_uint64()
        self._check(self.lib.cuMemAlloc_v2(ctypes.byref(p), max(int(nbytes), 1)), f"cuMemAlloc({nbytes})")
        return int(p.value)

    def free(self, ptr: int) -> None:
        self.lib.cuMemFree_v2(ptr)

    def to_device(self, ptr: int, a: np.ndarray) -> None:
        self._check(self.lib.cuMemcpyHtoD_v2(ptr, a.ctypes.data, a.nbytes), "cuMemcpyHtoD")

    def to_host(self, a: np.ndarray, ptr: int) -> None:
        self._check(self.lib.cuMemcpyDtoH_v2(a.ctypes.data, ptr, a.nbytes), "cuMemcpyDtoH")

    def synchronize(self) -> None:
        self._check(self.lib.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.lib.cuStreamDestroy_v2(self.stream)
            self.lib.cuDevicePrimaryCtxRelease_v2(self.device)


_TRT_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
               "UINT8": np.uint8, "BOOL": np.bool_}


class _TrtGraph:
    """One engine, its execution context and its device buffers (grown on demand). An execution
    context runs one inference at a time: callers on several threads (the live loop's workers, its
    audio worker) take turns."""

    def __init__(self, trt: Any, engine: Any, record: Any, cuda: _CudaDriver):
        self.engine, self.record, self.cuda = engine, record, cuda
        self._lock = threading.RLock()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"{record.file}: TensorRT could not create an execution context")
        self.inputs, self.outputs, self.dtypes = [], [], {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
            self.dtypes[name] = _TRT_DTYPES[engine.get_tensor_dtype(name).name]
        self.buffers: dict[str, tuple[int, int]] = {}

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cuda.free(ptr)
            ptr, size = self.cuda.alloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            return self._run(feeds)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(feeds.values())).shape[0]
        step = self.record.batch_max
        if batch > step:  # the engine's profile covers batch_min..batch_max: run in chunks
            parts = [self.run({n: (v[i:i + step] if n != "dictionary" else v) for n, v in feeds.items()})
                     for i in range(0, batch, step)]
            return {n: np.concatenate([p[n] for p in parts]) for n in self.outputs}
        self.cuda.make_current()
        for name in self.inputs:
            a = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            if not self.context.set_input_shape(name, a.shape):
                raise BackendError(f"{self.record.file}: input {name} shape {a.shape} is outside the engine's "
                                   f"profile (batch {self.record.batch_min}-{self.record.batch_max})")
            ptr = self._buffer(name, a.nbytes)
            self.cuda.to_device(ptr, a)
            self.context.set_tensor_address(name, ptr)
        out = {}
        for name in self.outputs:
            a = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name])
            self.context.set_tensor_address(name, self._buffer(name, a.nbytes))
            out[name] = a
        if not self.context.execute_async_v3(self.cuda.stream_handle):
            raise BackendError(f"{self.record.file}: TensorRT execution failed")
        self.cuda.synchronize()
        for name, a in out.items():
            self.cuda.to_host(a, self.buffers[name][0])
        return {n: (a.astype(np.float32) if a.dtype != np.float32 else a) for n, a in out.items()}

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers = {}
        self.context = None


class TensorRTBackend(Backend):
    """The bundle's serialized TensorRT engines for ``variant`` (built for this GPU and TensorRT
    version; :mod:`avsl_edge.tensorrt_engine` checks that before deserialising)."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, variant: str = "fp32", device_id: int = 0):
        super().__init__(bundle, variant)
        try:
            trt = import_tensorrt()
            gpu = gpu_info(device_id)
        except TensorRTUnavailable as exc:
            raise BackendError(f"the TensorRT backend cannot run here: {exc}") from None
        self.trt, self.gpu = trt, gpu
        self.cuda = _CudaDriver(device_id)
        self.graphs: dict[str, _TrtGraph] = {}
        try:
            for g in GRAPHS:
                engine, record = load_engine(bundle, g, variant, trt=trt, gpu=gpu)
                self.graphs[g] = _TrtGraph(trt, engine, record, self.cuda)
        except BaseException:
            self.close()
            raise
        log.info("backend %s", self.description)

    @property
    def description(self) -> str:
        return (f"tensorrt {self.trt.__version__}, {self.variant}, {self.gpu.name} (sm {self.gpu.compute_capability})"
                f"{self.auto_note}")

    def info(self) -> dict[str, Any]:
        return {**super().info(), "engines": {g: r.record.file for g, r in self.graphs.items()}}

    def run(self, graph: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = self.check_feeds(graph, feeds)
        out = self.graphs[graph].run(feeds)
        return {n: out[n] for n in GRAPH_IO[graph][1]}

    def close(self) -> None:
        for g in list(getattr(self, "graphs", {}).values()):
            g.close()
        self.graphs = {}
        if getattr(self, "cuda", None) is not None:
            self.cuda.close()


# --------------------------------------------------------------------------------------------
# the choice


def tensorrt_engines_usable(bundle: Bundle, variant: str) -> str | None:
    """None when the bundle holds engines of ``variant`` for every graph that this machine can run,
    else why not (nothing is loaded)."""
    if not bundle.engines(variant=variant):
        return f"the bundle has no TensorRT engines for variant {variant!r}"
    try:
        trt = import_tensorrt()
        gpu = gpu_info()
    except TensorRTUnavailable as exc:
        return str(exc)
    for g in GRAPHS:
        if not any(not engine_mismatches(r, gpu, trt.__version__) for r in bundle.engines(variant=variant, graph=g)):
            return f"no {g} engine of variant {variant!r} was built for {gpu.name} with TensorRT {trt.__version__}"
    return None


def create_backend(bundle: Bundle, backend: str = "auto", providers: Sequence[Provider] | None = None,
                   variant: str | None = None, intra_op_threads: int = 0, inter_op_threads: int = 0,
                   io_binding: bool | None = None, device_id: int = 0) -> Backend:
    """The backend for ``bundle``: ``"onnxruntime"``, ``"tensorrt"`` or ``"auto"`` (TensorRT engines
    when usable here and no ``providers`` were given, else ONNX Runtime). ``variant`` None = fp32;
    ``"auto"``: the fastest variant here within the export's accuracy bound
    (:mod:`avsl_edge.variant_choice`), which the backend's ``variant_choice`` and description name."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if variant == AUTO_VARIANT:
        choice, chosen = choose_variant(bundle, lambda v: create_backend(
            bundle, backend, providers, v, intra_op_threads, inter_op_threads, io_binding, device_id))
        chosen.variant_choice = choice
        log.info("variant auto: %s, %s", choice.variant, choice.reason)
        return chosen
    variant = variant or "fp32"
    if variant not in bundle.manifest.variants:
        raise BundleError(f"{bundle.root}: has no {variant!r} variant (it has {sorted(bundle.manifest.variants)})")
    if backend == "tensorrt":
        if providers is not None:
            raise BackendError("providers only apply to the onnxruntime backend")
        return TensorRTBackend(bundle, variant, device_id)
    if backend == "auto" and providers is None:
        why = tensorrt_engines_usable(bundle, variant)
        if why is None:
            try:
                return TensorRTBackend(bundle, variant, device_id)
            except (BackendError, BundleError) as exc:
                why = str(exc)
        log.info("TensorRT engines not used (%s); using onnxruntime", why)
    return OnnxRuntimeBackend(bundle, variant, providers, intra_op_threads, inter_op_threads, io_binding, device_id)


def available_providers() -> list[str]:
    """onnxruntime's provider list (compiled in; see :func:`auto_providers` for what works here)."""
    import onnxruntime as ort  # noqa: PLC0415 - the engine loads with a model: `import avsl_edge.cli` stays light

    return list(ort.get_available_providers())


def default_threads() -> int:
    """A thread count for one inference stream: the CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
