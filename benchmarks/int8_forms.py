"""Which INT8 form suits ONNX Runtime's CPU EP: ``python -m benchmarks.int8_forms --bundle B --data VAL``.

    python -m training.data.synth --out data/val --kinds solo,solo_distractor,duet,mosaic,offscreen \\
        --n 1000 --seed 2000029
    python -m benchmarks.int8_forms --bundle runs/cpu/bundle --data data/val --json int8_forms.json

Every form is built from the bundle's fp32 graphs and the export's calibration samples
(:func:`export.quantize.to_int8`, QDQ on the convolutional trunks unless named):

* ``u8s8``: uint8 activations, per-channel int8 weights (the ``int8-cpu`` variant);
* ``u8s8-reduce-range``: the same with 7-bit weights;
* ``u8u8``: asymmetric uint8 weights;
* ``u8s8-per-tensor``: one weight scale per tensor;
* ``u8s8-qoperator``: QLinearConv nodes in the file instead of QDQ pairs.

For each: the batch-1 median milliseconds of the image and audio graphs on this host (the forms
interleaved over ``--repeat`` passes, the range over the passes beside the median), the
evaluation table on ``--data`` against fp32 (a validation split: the choice of form is a model
choice), and what AVX2 would do to it. Without VNNI, ONNX Runtime's u8s8 kernels multiply with
``vpmaddubsw``, which adds two neighbouring uint8 x int8 products into a saturating int16; this
host may have VNNI, so that arithmetic is emulated exactly on the calibration inputs' quantized
activations (:func:`pair_saturation`): the share of pair sums that would clip, the share of conv
outputs that would change, and the largest change against the layer's largest output. u8u8 and
reduce-range forms cannot clip (255 x 64 x 2 < 32768), so their accuracy is the same on every ISA.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import avsl_edge
from avsl_edge import bundle as B
from avsl_edge.backends import CPU_EP, OnnxRuntimeBackend, ort_session
from avsl_edge.bundle_eval import evaluate_bundle
from avsl_edge.options import thread_count
from avsl_edge.variant_choice import HEADLINE
from benchmarks.torch_side import machine
from export import quantize
from export.quantize import CPU_FORMS
from export.to_onnx import CALIBRATION_SEED, load_samples

INT16 = (-32768, 32767)
#: how K may be packed for a layer of few channels (pair_saturation's channel_block); both are reported
PACKINGS = {"flat": 1, "blocks of 4": 4}


def _log(msg: str) -> None:
    print(f"[int8-forms] {msg}", file=sys.stderr, flush=True)


def pair_saturation(x: np.ndarray, w: np.ndarray, zero_point: int, strides=(1, 1), pads=(0, 0, 0, 0),
                    dilations=(1, 1), channel_block: int = 1, max_elements: int = 1 << 24) -> dict[str, float]:
    """What AVX2's ``vpmaddubsw`` does to a u8s8 convolution of ``x`` (uint8, N x C x H x W, zero
    point ``zero_point``) with ``w`` (int8, O x C x kh x kw).

    ONNX Runtime's CPU QLinearConv runs channels-last: each output is a dot product over
    K = kh x kw x C in that order (channels innermost), and the AVX2 kernel adds the raw products
    of neighbouring K entries (2j, 2j + 1) into an int16 with saturation before widening (the zero
    point is corrected separately, from row sums). How K is packed for a layer of few channels is
    the kernel's business: ``channel_block`` 1 takes K as one flat run (pairs may join two taps);
    4 pads each tap's channels to a multiple of 4 with zero weights first (an image's 3 channels
    become R,G | B,0; one audio channel never pairs). Returns the share of those pair sums that clip,
    the share of outputs whose int32 sum changes, and the largest change over the largest
    |zero-point-corrected output|."""
    if x.dtype != np.uint8 or w.dtype != np.int8 or x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(f"need uint8 N x C x H x W and int8 O x C x kh x kw of the same C, "
                         f"got {x.dtype}{x.shape} and {w.dtype}{w.shape}")
    if channel_block > 1 and x.shape[1] % channel_block:
        extra = channel_block - x.shape[1] % channel_block
        x = np.pad(x, ((0, 0), (0, extra), (0, 0), (0, 0)), constant_values=zero_point)
        w = np.pad(w, ((0, 0), (0, extra), (0, 0), (0, 0)))
    (n, c, h, wd), (o, _, kh, kw) = x.shape, w.shape
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilations, pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=zero_point)
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    taps = [xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            for i in range(kh) for j in range(kw)]
    cols = np.stack(taps, axis=-1).transpose(0, 2, 3, 4, 1).reshape(n * ho * wo, kh * kw * c).astype(np.int32)
    wk = w.transpose(0, 2, 3, 1).reshape(o, kh * kw * c).astype(np.int32)
    if cols.shape[1] % 2:  # the kernel pads K with zeros
        cols = np.pad(cols, ((0, 0), (0, 1)), constant_values=zero_point)
        wk = np.pad(wk, ((0, 0), (0, 1)))
    a0, a1, b0, b1 = cols[:, 0::2], cols[:, 1::2], wk[:, 0::2].T, wk[:, 1::2].T  # (R, J), (J, O)
    rows = max(1, max_elements // (a0.shape[1] * o))
    clipped = changed = 0
    worst = 0
    for s in range(0, len(cols), rows):
        pair = a0[s:s + rows, :, None] * b0[None] + a1[s:s + rows, :, None] * b1[None]  # (r, J, O)
        over = (pair < INT16[0]) | (pair > INT16[1])
        clipped += int(over.sum())
        err = (np.clip(pair, *INT16) - pair).sum(axis=1)  # (r, O)
        changed += int((err != 0).sum())
        worst = max(worst, int(np.abs(err).max()))
    exact = (cols - zero_point) @ wk.T
    return {"pair_sums": int(a0.size * o), "clipped_share": clipped / (a0.size * o),
            "outputs_changed_share": changed / exact.size,
            "max_change_over_max_output": worst / max(1, int(np.abs(exact).max()))}


def conv_operands(model: onnx.ModelProto) -> list[dict]:
    """Per QDQ convolution of ``model``: its name, the uint8 activation tensor it reads, that
    tensor's zero point, its int8 weight and its stride/pad/dilation attributes."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        dq_x, dq_w = prod.get(n.input[0]), prod.get(n.input[1])
        if dq_x is None or dq_w is None or dq_x.op_type != "DequantizeLinear" or dq_w.op_type != "DequantizeLinear":
            continue
        w = inits.get(dq_w.input[0])
        zp = inits.get(dq_x.input[2]) if len(dq_x.input) > 2 else None
        if w is None or w.dtype != np.int8 or zp is None or zp.dtype != np.uint8:
            continue
        if any(a.name == "group" and a.i != 1 for a in n.attribute):
            continue
        attrs = {a.name: list(a.ints) for a in n.attribute}
        out.append({"name": n.name, "activation": dq_x.input[0], "zero_point": int(zp.reshape(-1)[0]), "weight": w,
                    "strides": tuple(attrs.get("strides", [1, 1])), "pads": tuple(attrs.get("pads", [0, 0, 0, 0])),
                    "dilations": tuple(attrs.get("dilations", [1, 1]))})
    return out


def avx2_saturation(path: Path, feeds: list[Mapping[str, np.ndarray]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per packing of :data:`PACKINGS`, :func:`pair_saturation` of every u8s8 convolution of the QDQ
    graph ``path`` (by node name), its quantized activations computed by ONNX Runtime (graph
    optimisations off, so that the Q nodes' outputs exist)."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    convs = conv_operands(model)
    for c in convs:
        model.graph.output.append(helper.make_tensor_value_info(c["activation"], TensorProto.UINT8, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=[CPU_EP])
    acts = [session.run([c["activation"] for c in convs], dict(f)) for f in feeds]
    xs = [np.concatenate([a[k] for a in acts]) for k in range(len(convs))]
    return {packing: {c["name"]: pair_saturation(x, c["weight"], c["zero_point"], c["strides"], c["pads"],
                                                 c["dilations"], block) for x, c in zip(xs, convs)}
            for packing, block in PACKINGS.items()}


def saturation_summary(layers: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Over all layers: the share of clipped pair sums; the worst layer's share of changed outputs
    and its largest change."""
    total = sum(r["pair_sums"] for r in layers.values())
    return {"clipped_share": sum(r["clipped_share"] * r["pair_sums"] for r in layers.values()) / total,
            "worst_layer_outputs_changed_share": max(r["outputs_changed_share"] for r in layers.values()),
            "worst_layer_max_change": max(r["max_change_over_max_output"] for r in layers.values())}


def calibration_inputs(samples, graph: str, n: int | None = None) -> list[np.ndarray]:
    """The first ``n`` calibration inputs of ``graph``, one batch-1 array each."""
    arr = samples.waveforms if graph == B.AUDIO else samples.images
    return [arr[i:i + 1] for i in range(len(arr) if n is None else min(n, len(arr)))]


def build_forms(fp32: B.Bundle, out: Path, samples, forms: list[str]) -> dict[str, dict[str, Path]]:
    """Each form's audio and image graphs under ``out/<form>/``."""
    paths = {}
    for form in forms:
        paths[form] = {}
        for g in (B.AUDIO, B.IMAGE):
            dst = out / form / f"{g}.onnx"
            quantize.to_int8(fp32.graph_path(g, "fp32"), dst,
                             [{B.GRAPH_IO[g][0][0]: x} for x in calibration_inputs(samples, g)],
                             symmetric=False, **CPU_FORMS[form])
            paths[form][g] = dst
        _log(f"built {form}")
    return paths


def speeds(paths: dict[str, dict[str, Path]], feeds: dict[str, dict[str, np.ndarray]], threads: int,
           repeat: int, runs: int) -> dict[str, dict[str, dict[str, float]]]:
    """Median ms of every form's graphs over ``repeat`` interleaved passes of ``runs`` runs."""
    sessions = {f: {g: ort_session(p, [CPU_EP], threads, 1 if threads else 0) for g, p in gs.items()}
                for f, gs in paths.items()}
    passes: dict[str, dict[str, list[float]]] = {f: {g: [] for g in gs} for f, gs in sessions.items()}
    for _ in range(repeat):
        for f, gs in sessions.items():
            for g, s in gs.items():
                passes[f][g].append(quantize.time_ms(s, feeds[g], repeats=runs))
    return {f: {g: {"median_ms": round(float(np.median(v)), 3), "range_ms": [round(min(v), 3), round(max(v), 3)]}
                for g, v in gs.items()} for f, gs in passes.items()}


def accuracy(fp32: B.Bundle, paths: dict[str, dict[str, Path]], data: Path, workdir: Path) -> dict[str, dict]:
    """The evaluation table of fp32 and of each form, each form loaded as the ``int8-cpu`` variant
    of a copy of the bundle."""
    coco = avsl_edge.avcoco.load_avcoco(data)
    tables = {"fp32": evaluate_bundle(OnnxRuntimeBackend(fp32, "fp32", [CPU_EP]), coco)["model"]}
    copy = workdir / "bundle"
    shutil.copytree(fp32.root, copy)
    for form, gs in paths.items():
        for g, p in gs.items():
            shutil.copyfile(p, copy / "int8-cpu" / f"{g}.onnx")
        B.write_manifest(copy, B.read_manifest(copy))
        tables[form] = evaluate_bundle(OnnxRuntimeBackend(B.load_bundle(copy), "int8-cpu", [CPU_EP]), coco)["model"]
        _log(f"scored {form}")
    return tables


def report(out: dict) -> str:
    m, sp, acc, sat = out["machine"], out["speed"], out["accuracy"], out["avx2_saturation"]
    fp32_ms = sp["fp32"]["image"]["median_ms"] + sp["fp32"]["audio"]["median_ms"]
    lines = [f"ISA: {', '.join(m.get('isa', [])) or 'none of avx2/avx512/vnni/amx'}; {m.get('cpu', '')}",
             f"data: {out['data']}; calibration: {out['calibration']}", "",
             "| form | image ms | audio ms | speed-up | " + " | ".join(HEADLINE) + " | worst vs fp32 "
             "| AVX2: pairs clipped | outputs changed, worst layer | largest change |",
             "|---" * (7 + len(HEADLINE)) + "|"]
    tail = [f"AVX2 columns: packed {' / '.join(PACKINGS)} (see pair_saturation), on {out['saturation_inputs']} "
            "calibration inputs per graph; speed-up: fp32's image + audio ms over the form's"]
    for form in sp:
        s, a = sp[form], acc.get(form, {})
        cells = [f"{s[g]['median_ms']:.2f} [{s[g]['range_ms'][0]:.2f}-{s[g]['range_ms'][1]:.2f}]" for g in ("image", "audio")]
        speed = fp32_ms / (s["image"]["median_ms"] + s["audio"]["median_ms"])
        worst = min((a[k] - acc["fp32"][k] for k in HEADLINE), default=float("nan")) if form != "fp32" else 0.0
        z = sat.get(form) or {}
        satc = [" / ".join(f"{100 * z[k][key]:.{d}f} %" for k in PACKINGS) if z else "–"
                for key, d in (("clipped_share", 4), ("worst_layer_outputs_changed_share", 2),
                               ("worst_layer_max_change", 2))]
        lines.append(f"| {form} | " + " | ".join(cells) + f" | {speed:.2f}x | "
                     + " | ".join(f"{a[k]:.1f}" for k in HEADLINE) + f" | {worst:+.1f} | " + " | ".join(satc) + " |")
    return "\n".join(lines + [""] + tail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_forms", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--bundle", type=Path, required=True, help="an exported bundle with its fp32 variant")
    p.add_argument("--data", type=Path, required=True, help="AV-COCO validation folder to score each form on")
    p.add_argument("--forms", default=",".join(CPU_FORMS), help=f"comma-separated forms (default: all of {','.join(CPU_FORMS)})")
    p.add_argument("--calibration-size", type=int, default=32, help="calibration scenes (default 32, the export's)")
    p.add_argument("--saturation-inputs", type=int, default=8, help="calibration inputs the AVX2 emulation runs on")
    p.add_argument("--repeat", type=int, default=3, help="interleaved timing passes (default 3)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per graph and pass (default 30)")
    p.add_argument("--threads", type=thread_count, default=0, help="ONNX Runtime threads (0 = its default)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args(argv)
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    unknown = [f for f in forms if f not in CPU_FORMS]
    if unknown or not forms:
        p.error(f"--forms: unknown {unknown}; choose from {', '.join(CPU_FORMS)}")
    bundle = avsl_edge.load_bundle(args.bundle)
    if not {"fp32", "int8-cpu"} <= set(bundle.variants):
        p.error(f"--bundle {args.bundle}: needs the fp32 variant (quantized here) and int8-cpu (each form is "
                f"scored in its place); it has {', '.join(bundle.variants)}")
    avsl_edge.avcoco.load_avcoco(args.data)  # a bad folder fails before minutes of work
    samples = load_samples(None, bundle.image_size, args.calibration_size, CALIBRATION_SEED, {"pack": "v1"})
    with tempfile.TemporaryDirectory(prefix="avsl-int8-forms-") as tmp:
        paths = build_forms(bundle, Path(tmp), samples, forms)
        feeds = {g: {B.GRAPH_IO[g][0][0]: calibration_inputs(samples, g, 1)[0]} for g in (B.AUDIO, B.IMAGE)}
        all_paths = {"fp32": {g: bundle.graph_path(g, "fp32") for g in (B.AUDIO, B.IMAGE)}, **paths}
        sat = {}
        for form in paths:  # u8u8 cannot clip; the QOperator file holds the same arithmetic as u8s8
            if CPU_FORMS[form].get("qoperator") or CPU_FORMS[form].get("weights", "int8") != "int8":
                continue
            per_graph = {g: avx2_saturation(gp, [{B.GRAPH_IO[g][0][0]: x} for x in
                                                 calibration_inputs(samples, g, args.saturation_inputs)])
                         for g, gp in paths[form].items()}
            sat[form] = {}
            for packing in PACKINGS:
                layers = {f"{g}/{k}": v for g, r in per_graph.items() for k, v in r[packing].items()}
                sat[form][packing] = {**saturation_summary(layers), "inputs": args.saturation_inputs, "layers": layers}
            _log(f"AVX2 emulation of {form}: " + ", ".join(
                f"{100 * r['clipped_share']:.4f} % of pair sums clip ({k})" for k, r in sat[form].items()))
        out = {"machine": machine(), "data": str(args.data), "calibration": samples.source,
               "saturation_inputs": args.saturation_inputs,
               "speed": speeds(all_paths, feeds, args.threads, args.repeat, args.runs),
               "accuracy": accuracy(bundle, paths, args.data, Path(tmp)), "avx2_saturation": sat}
    print(report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
