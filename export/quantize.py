"""Precision variants of the fp32 graphs, as ONNX files that ONNX Runtime and TensorRT both run.

* FP16 (:func:`to_fp16`): onnxconverter-common's ``convert_float_to_float16(keep_io_types=True)``:
  weights and compute in half precision, float32 inputs and outputs. The audio graph's log-mel
  front end stays float32 (its 1e-10 floor underflows in half precision; see training.model.LogMel).
* INT8 (:func:`to_int8`): explicit QDQ from ONNX Runtime's static quantization, calibrated on
  SynthMUSIC samples: per-channel symmetric int8 weights, per-tensor symmetric int8 activations
  (zero point 0, as TensorRT requires), float biases. Only the convolutional trunk is quantized: the nodes
  between the first and the last 2-D convolution. The audio front end and the small MLP/classifier
  after the global max pool stay float32. TensorRT 10/11 builds such a file as a strongly typed
  network (no INT8 builder flag, no calibrator), and ONNX Runtime's CPU EP runs it with VNNI.

The head graph is not converted: it is tiny (one K x 512 matmul per position) and holds the cosine
normalisation and the class softmax, which half precision or int8 would only make worse.

    to_fp16("fp32/audio.onnx", "fp16/audio.onnx")
    to_int8("fp32/image.onnx", "int8/image.onnx", [{"image": x} for x in batches])
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)

from avsl_edge.errors import UserError

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
INT8_WEIGHT_TYPES = ("int8", "uint8")
#: The forms of the ONNX Runtime CPU variant (``int8-cpu``), as :func:`to_int8` options beside
#: ``symmetric=False``; ``python -m benchmarks.int8_forms`` measures each.
CPU_FORMS: dict[str, dict[str, object]] = {
    "u8s8": {},
    "u8s8-reduce-range": {"reduce_range": True},
    "u8u8": {"weights": "uint8"},
    "u8s8-per-tensor": {"per_channel": False},
    "u8s8-qoperator": {"qoperator": True},
}
#: 7-bit weights: without VNNI (AVX2, AVX-512 without VNNI) ONNX Runtime's u8s8 kernels add two
#: uint8 x int8 products into a saturating int16, and at full range that clips in the first
#: convolutions; at the same speed with VNNI and within 1 point of fp32 on validation
#: (docs/performance.md, "The INT8 form").
INT8_CPU_FORM = "u8s8-reduce-range"


class QuantizeError(UserError, RuntimeError):
    """A graph that could not be converted."""


# --------------------------------------------------------------------------------------------
# graph analysis


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _ancestors(graph: onnx.GraphProto, tensors: Iterable[str]) -> set[str]:
    """Names of the nodes that (transitively) produce any of ``tensors``."""
    prod = _producers(graph)
    seen: set[str] = set()
    stack = [prod[t] for t in tensors if t in prod]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(prod[i] for i in n.input if i in prod)
    return seen


def _convs_2d(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Conv nodes with a 4-D weight initializer, in graph (topological) order."""
    inits = {i.name: i for i in graph.initializer}
    return [n for n in graph.node
            if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits and len(inits[n.input[1]].dims) == 4]


def frontend_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes before the first 2-D convolution (the audio graph's log-mel front end; empty for
    the image graph, whose first node is that convolution)."""
    convs = _convs_2d(model.graph)
    if not convs:
        raise QuantizeError("graph has no 2-D convolution")
    names = _ancestors(model.graph, [convs[0].input[0]])
    return [n.name for n in model.graph.node if n.name in names]


def trunk_nodes(model: onnx.ModelProto) -> list[str]:
    """The nodes from the first to the last 2-D convolution: the part worth quantizing."""
    convs = _convs_2d(model.graph)
    if not convs:
        raise QuantizeError("graph has no 2-D convolution")
    before_last = _ancestors(model.graph, convs[-1].output)
    before_first = _ancestors(model.graph, [convs[0].input[0]])
    keep = before_last - before_first
    return [n.name for n in model.graph.node if n.name in keep]


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (the converters address nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def _separate_outputs(model: onnx.ModelProto) -> None:
    """A graph output that is also read inside the graph (v_fea feeds the projection) becomes an
    Identity of an inner tensor. Without this, keep_io_types leaves the inner reader on the fp32
    output while its weights are fp16 (an invalid graph)."""
    g = model.graph
    consumed = {i for n in g.node for i in n.input}
    for out in [o.name for o in g.output if o.name in consumed]:
        inner = f"{out}__inner"
        for n in g.node:
            for k, o in enumerate(n.output):
                if o == out:
                    n.output[k] = inner
            for k, i in enumerate(n.input):
                if i == out:
                    n.input[k] = inner
        g.node.append(helper.make_node("Identity", [inner], [out], name=f"{out}__output"))


def _drop_cast_round_trips(graph: onnx.GraphProto) -> int:
    """Remove Cast(fp16) -> Cast(fp32) pairs. The fp16 converter casts the output of every blocked
    node to fp16 and back when the consumer is blocked too, which would round the fp32 front end
    through half precision. Returns the number of Cast nodes removed."""
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    graph_outputs = {o.name for o in graph.output}

    def cast_to(n: onnx.NodeProto) -> int | None:
        return next((a.i for a in n.attribute if a.name == "to"), None) if n.op_type == "Cast" else None

    removed = 0
    for down in [n for n in graph.node if cast_to(n) == fp16]:
        readers = [n for n in graph.node if down.output[0] in n.input]
        ups = [n for n in readers if cast_to(n) == fp32]
        for up in ups:  # every reader of up's output now reads the original fp32 tensor
            if up.output[0] in graph_outputs:
                continue
            for n in graph.node:
                for k, i in enumerate(n.input):
                    if i == up.output[0]:
                        n.input[k] = down.input[0]
            graph.node.remove(up)
            removed += 1
        if down.output[0] not in graph_outputs and not any(down.output[0] in n.input for n in graph.node):
            graph.node.remove(down)
            removed += 1
    return removed


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Keep only the opset imports whose domain a node uses (the ORT quantizer adds ms/ml/training
    domains); a plain-ONNX file is what TensorRT's parser expects."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _save(model: onnx.ModelProto, dst: Path) -> Path:
    _drop_unused_opsets(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))
    return dst


# --------------------------------------------------------------------------------------------
# FP16


def to_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Half-precision copy of ``src`` with float32 IO; the front end (if any) stays float32."""
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    _name_nodes(model)
    _separate_outputs(model)
    # The converter re-runs shape inference; stale exporter value_info would leave duplicate entries
    # that hide the fp32 -> fp16 boundary after the blocked front end.
    del model.graph.value_info[:]
    block = frontend_nodes(model)
    with warnings.catch_warnings():
        # "the float32 number 3e-09 will be truncated to 1e-07": expected for tiny weights
        warnings.filterwarnings("ignore", message="the float32 number")
        half = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=block or None)
    _drop_cast_round_trips(half.graph)
    del half.graph.value_info[:]  # stale types of removed casts; the checker re-infers them
    try:
        return _save(half, Path(dst))
    except onnx.checker.ValidationError as exc:
        raise QuantizeError(f"{src}: the fp16 conversion produced an invalid graph ({exc})") from exc


# --------------------------------------------------------------------------------------------
# INT8


class FeedReader(CalibrationDataReader):
    """ONNX Runtime's calibration reader over a list of feed dicts."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]):
        self.feeds = list(feeds)
        self._it = iter(self.feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)


def to_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration: Sequence[Mapping[str, np.ndarray]],
            method: str = "minmax", symmetric: bool = True, *, reduce_range: bool = False,
            weights: str = "int8", per_channel: bool = True, qoperator: bool = False) -> Path:
    """Explicit-QDQ int8 copy of ``src`` calibrated on ``calibration`` (a list of input feeds).

    ``quant_pre_process`` (shape inference + basic fusions) runs first, then ``quantize_static``
    with QuantFormat.QDQ and per-channel symmetric int8 weights. Activations:

    * ``symmetric=True`` (the ``int8`` variant, for TensorRT): int8 with zero point 0, float biases.
    * ``symmetric=False`` (the ``int8-cpu`` variant, for ONNX Runtime's CPU EP, whose export adds
      :data:`INT8_CPU_FORM`'s options): uint8 with a
      calibrated zero point and int32 biases, the u8s8 form for which ONNX Runtime fuses every
      DQ -> Conv -> Q into a QLinearConv (VNNI kernels on x86). With symmetric int8 activations
      the CPU EP keeps about half of the convolutions in float.

    The other forms ONNX Runtime's CPU EP takes (``benchmarks.int8_forms`` measures them; the
    TensorRT form allows none of them): ``reduce_range`` (7-bit weights, so that AVX2's
    ``vpmaddubsw`` pair sums cannot saturate), ``weights="uint8"`` (u8u8: asymmetric uint8
    weights, the form without saturating multiply-adds on any ISA), ``per_channel=False`` (one
    weight scale per tensor) and ``qoperator`` (QLinearConv nodes written into the file).
    """
    if weights not in INT8_WEIGHT_TYPES:
        raise ValueError(f"weights must be one of {INT8_WEIGHT_TYPES}, got {weights!r}")
    if symmetric and (reduce_range or weights != "int8" or not per_channel or qoperator):
        raise ValueError("the symmetric (TensorRT) form takes per-channel int8 QDQ weights at full range only")
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if not calibration:
        raise ValueError("int8 calibration needs at least one input feed")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="avsl-int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # ONNX shape inference suffices (static shapes but the batch); ORT's symbolic inference
        # trips over the log-mel front end.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        _name_nodes(model)
        onnx.save(model, str(pre))
        quantize_static(
            str(pre), str(dst), FeedReader(calibration),
            quant_format=QuantFormat.QOperator if qoperator else QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8 if weights == "int8" else QuantType.QUInt8,
            nodes_to_quantize=trunk_nodes(model),
            calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                              "entropy": CalibrationMethod.Entropy}[method],
            # zero points 0 and float biases: what TensorRT's explicit quantization takes (it has no
            # int32 DequantizeLinear); ONNX Runtime folds the float bias into QLinearConv all the same
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
            if symmetric else {"ActivationSymmetric": False, "WeightSymmetric": weights == "int8", "QuantizeBias": True},
        )
    try:
        return _save(onnx.load(str(dst)), dst)
    except onnx.checker.ValidationError as exc:
        raise QuantizeError(f"{src}: the int8 quantization produced an invalid graph ({exc})") from exc


# --------------------------------------------------------------------------------------------
# measuring


def cpu_session(path: str | os.PathLike, threads: int = 0):
    """An ONNX Runtime CPU session (``threads`` 0 = ORT's default, one per physical core)."""
    from avsl_edge.backends import CPU_EP, ort_session

    return ort_session(path, [CPU_EP], threads, 1 if threads else 0)


def time_ms(session, feeds: Mapping[str, np.ndarray], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``session.run`` in milliseconds."""
    for _ in range(warmup):
        session.run(None, dict(feeds))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, dict(feeds))
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def max_abs_errors(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)))) for k in a}
