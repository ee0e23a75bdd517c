"""``avsl-edge``: the edge library on the command line (torch-free).

    avsl-edge run VIDEO --out OUT.mp4 [--audio FILE] [--json OUT.jsonl]   overlay video, original audio
    avsl-edge live --camera 0 [--mic DEVICE] [--record OUT.mp4]            camera + microphone, live
    avsl-edge eval --model BUNDLE --data AVCOCO_DIR [--json OUT]           the training-side metrics
    avsl-edge bench --model BUNDLE [--backend ...] [--variant ...]         per-stage latency, FPS
    avsl-edge info --model BUNDLE                                          manifest, variants, providers

Without --model the bundle is $AVSL_EDGE_MODEL, else the one the last `python -m
training.pipeline` registered. Exit codes: 0 ok, 2 bad usage or input (a message, no
traceback), 1 internal error, 130 interrupted.

Before any work, every command checks its outputs (avsl_edge.fileio.check_outputs): none may
replace an input or another output (symlinks and hardlinks count), and each must be writable
(an existing folder, not a folder or device itself). Numeric options are bounded when parsed
(threads 0..max(8, 4 per core), bench --size at most 4K pixels, ...). `run` stops at damaged
video data (exit 2, nothing written) and warns when a video holds fewer frames than its header
says.

Subcommands live in :data:`avsl_edge.commands.COMMANDS` (name -> :class:`Command`): this module's
eval, bench and info, then those of the ``avsl_edge.commands`` entry points (``run`` and ``live``,
the streaming commands, in the streaming layer), loaded when the parser is built; add one with
:func:`register_command` or an entry point (see :mod:`avsl_edge.commands`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import cv2  # before av: with PyAV's FFmpeg libraries loaded first, OpenCV's window (live) hangs
from tqdm import tqdm

from . import __version__, bench
from .avcoco import load_avcoco
from .backends import auto_providers, available_providers, tensorrt_engines_usable
from .bundle import json_default, load_bundle
from .bundle_eval import evaluate_bundle, images_to_predict
from .variant_choice import accuracy_exclusions
from .commands import (COMMANDS, MAX_SIDE, Command, UsageError, add_model_options, check_outputs,  # noqa: F401
                       discover_commands, model_input, open_localizer, register_command, write_json, write_text)
from .errors import UserError
from .evaluation import class_index, markdown_table
from .media import MediaError, read_sound
from .options import int_in
from .registry import PACKAGED_BUNDLE, resolve_model
from .rules import Rules, describe_combination


def _progress(total: int | None, desc: str, quiet: bool) -> Any:
    return tqdm(total=total, desc=desc, unit="image", disable=quiet,
                leave=False, file=sys.stderr)


# --------------------------------------------------------------------------------------------
# eval


def configure_eval(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="AVCOCO_DIR", type=Path, required=True, help="an AV-COCO folder")
    p.add_argument("--json", metavar="OUT", type=Path, help="write the table as JSON (like training.evaluate --json)")
    p.add_argument("--markdown", metavar="OUT", type=Path, help="write the table as markdown")
    p.add_argument("--batch-size", type=int_in(1, MAX_BATCH), default=16, metavar="N",
                   help=f"images per model run (default 16, at most {MAX_BATCH})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p)


def cmd_eval(args: argparse.Namespace) -> int:
    check_outputs({"--json": args.json, "--markdown": args.markdown},
                  {"--data": args.data, "--model": model_input(args)})
    coco = load_avcoco(args.data)
    if not coco.images:
        raise UsageError(f"{args.data}: the data folder has no images")
    loc = open_localizer(args)
    try:
        class_index(coco, loc.classes)
    except ValueError as exc:
        raise UsageError(f"the data does not fit the model: {exc}") from None
    bar = _progress(images_to_predict(coco), "eval", args.quiet)
    try:
        table = evaluate_bundle(loc.backend, coco, args.batch_size, progress=bar.update)
    finally:
        bar.close()
    nmi = loc.bundle.manifest.model.get("nmi")
    if nmi is not None:
        table["model"]["nmi"] = float(nmi)
    md = markdown_table(table)
    extra = {"data": str(args.data), "bundle": str(loc.bundle.root), "backend": loc.backend.info()}
    if args.json:
        write_json(args.json, {"table": table, **extra})
    if args.markdown:
        write_text(args.markdown, md + "\n")
    print(md)
    return 0


# --------------------------------------------------------------------------------------------
# bench


def configure_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int_in(1, MAX_RUNS), default=50, metavar="N",
                   help=f"warm runs (default 50, at most {MAX_RUNS})")
    p.add_argument("--warmup", type=int_in(0, MAX_RUNS), default=5, metavar="N",
                   help="runs before timing (default 5)")
    p.add_argument("--size", type=frame_size, default=(640, 480), metavar="WxH",
                   help=f"synthetic frame size (default 640x480; at most {MAX_SIDE} px a side and "
                        f"{MAX_PIXELS / 1e6:.1f} Mpx, a 4K frame)")
    p.add_argument("--frame", type=Path, metavar="IMAGE", help="an image file to use instead of a synthetic frame")
    p.add_argument("--audio", type=Path, metavar="FILE", help="an audio file to use instead of a synthetic clip")
    p.add_argument("--json", metavar="OUT", type=Path, help="write the report as JSON")
    add_model_options(p)


MAX_RUNS = 10_000        # bench --runs / --warmup
MAX_BATCH = 1024         # eval --batch-size
MAX_PIXELS = 3840 * 2160  # ... and at most a 4K frame's pixels (the synthetic frame needs ~50 bytes a pixel)


def frame_size(text: str) -> tuple[int, int]:
    """An argparse type: ``WIDTHxHEIGHT`` -> (width, height), each side 1..MAX_SIDE, at most MAX_PIXELS."""

    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT, e.g. 640x480, got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if not (1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE) or w * h > MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"{w}x{h} is out of range: each side 1..{MAX_SIDE} px and at most "
                                         f"{MAX_PIXELS} pixels (3840x2160)")
    return w, h


def cmd_bench(args: argparse.Namespace) -> int:
    check_outputs({"--json": args.json}, {"--frame": args.frame, "--audio": args.audio, "--model": model_input(args)})
    w, h = args.size
    rate = 48000
    if args.frame:
        if not args.frame.is_file():
            raise UsageError(f"--frame {args.frame}: no such image file")
        frame = cv2.imread(str(args.frame), cv2.IMREAD_COLOR)
        if frame is None:
            raise UsageError(f"--frame {args.frame}: unreadable image")
        if frame.shape[0] * frame.shape[1] > MAX_PIXELS:
            raise UsageError(f"--frame {args.frame}: {frame.shape[1]}x{frame.shape[0]} is larger than a 4K frame "
                             f"({MAX_PIXELS} pixels); give a smaller image")
        _, audio = bench.synthetic_inputs(16, 16)
    else:
        frame, audio = bench.synthetic_inputs(w, h)
    if args.audio:
        try:
            audio, rate = read_sound(args.audio)
        except MediaError as exc:
            raise UsageError(str(exc)) from None
    loc = open_localizer(args)
    report = bench.benchmark(loc, frame, audio, rate, args.runs, args.warmup)
    if args.json:
        write_json(args.json, report)
    print(bench.markdown(report))
    return 0


# --------------------------------------------------------------------------------------------
# info


def configure_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle's files")
    add_model_options(p, backend=False)


def bundle_info(root: Path, verify: bool = True) -> dict[str, Any]:
    b = load_bundle(root, verify=verify)
    m = b.manifest
    works, skipped = auto_providers()
    try:
        import onnxruntime  # noqa: PLC0415 - only its version; the engine loads with a model, never for --help

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    variants = {}
    for v, var in m.variants.items():
        rep = var.report
        variants[v] = {"graphs": {g: f"{gf.file} ({gf.precision})" for g, gf in var.graphs.items()},
                       "description": var.description, "cpu_ms_batch1": rep.get("cpu_ms_batch1"),
                       "eval": {k: rep["eval"]["model"].get(k) for k in ("solo_iou@0.5", "mosaic_ciou@0.3", "duet_ciou@0.3")}
                       if "eval" in rep else None,
                       "tensorrt_engines": (tensorrt_engines_usable(b, v) or "usable here") if b.engines(variant=v) else None}
    p = m.postprocessing
    return {
        "bundle": str(b.root), "format_version": m.format_version, "created": m.created,
        "packaged_default": b.root.resolve() == PACKAGED_BUNDLE.resolve(),
        "source": m.source, "classes": list(m.classes), "num_clusters": m.num_clusters,
        "image_size": m.preprocessing.image_size, "train_image_size": m.model.get("train_image_size"),
        "feature_hw": m.model.get("feature_hw"),
        "preset": m.model.get("preset"), "rules": Rules.from_postprocessing(p).to_dict(),
        "calibrated": p.in_view_threshold is not None, "calibration": p.calibration,
        "variants": variants,
        "auto_excluded": accuracy_exclusions(b),
        "engines": [{"graph": e.graph, "variant": e.variant, "file": e.file, "gpu": e.gpu_name,
                     "tensorrt": e.tensorrt_version, "batch": [e.batch_min, e.batch_max]} for e in m.engines],
        "onnxruntime": ort_version, "providers_available": available_providers() if ort_version else [],
        "providers_usable": works, "providers_skipped": skipped,
    }


def operating_point_lines(calibration: dict, score: str) -> list[str]:
    """The calibration's other in-view operating points on ``score`` (bundles from before they were
    stored have none): what ``--in-view-threshold`` to pass for another off-screen false-positive rate."""
    points = calibration.get("in_view_operating_points", {}).get(score)
    if not points:
        return []
    return [f"  operating points on {score} (off-screen lit <= bound: threshold, scenes with sound in view declared):",
            *(f"    <= {100 * q['max_fpr']:4.1f} %: {q['threshold']:.3f}, {100 * q['tpr']:.0f} % "
              f"(off-screen lit {100 * q['fpr']:.1f} %)" for q in points)]


def combination_lines(weights: dict | None) -> list[str]:
    """The calibrated combined in-view score, written out (bundles calibrated before it have none)."""
    if not weights:
        return []
    return [f"  combined = {describe_combination(weights)}"]


def cmd_info(args: argparse.Namespace) -> int:
    info = bundle_info(resolve_model(args.model), verify=not args.no_verify)
    if args.json:
        print(json.dumps(info, indent=2, default=json_default))
        return 0
    r = info["rules"]
    lines = [
        f"bundle      {info['bundle']} (format {info['format_version']}, created {info['created']}"
        f"{'; the default model shipped in the package, see its MODEL_CARD.md' if info['packaged_default'] else ''})",
        f"source      {info['source'].get('checkpoint', '?')} (preset {info['preset']})",
        f"classes     {len(info['classes'])}: {', '.join(info['classes'])}",
        f"model       image {info['image_size']} px"
        f"{f' (trained at {t} px)' if (t := info['train_image_size']) and t != info['image_size'] else ''}, "
        f"feature map {info['feature_hw']}, K = {info['num_clusters']}",
        f"rules       in view: {r['in_view_score']} >= {r['in_view_threshold']:.3f}"
        f"{' (calibrated)' if info['calibrated'] else ' (not calibrated: evaluation threshold)'}; "
        f"audio gate {r['audio_gate_db']:.1f} dBFS; class probability >= {r['class_threshold']:.2f}; "
        f"boxes: {r.get('box_method', 'map')} at tau {r['box_tau']:.2f}",
        *combination_lines(r.get("in_view_combination")),
        *(f"  warning: {w}" for w in (info["calibration"] or {}).get("warnings", [])),
        *operating_point_lines(info["calibration"] or {}, r["in_view_score"]),
        "variants",
    ]
    for v, d in info["variants"].items():
        ms = d["cpu_ms_batch1"]
        timing = ", ".join(f"{g} {t:.1f}" for g, t in ms.items()) + " ms (CPU, batch 1)" if ms else "no timings"
        ev = d["eval"]
        score = (", " + ", ".join(f"{k} {x:.1f}" for k, x in ev.items() if x is not None)) if ev else ""
        lines.append(f"  {v:5s} {timing}{score}")
        if d["tensorrt_engines"]:
            lines.append(f"        TensorRT engines: {d['tensorrt_engines']}")
    left = info["auto_excluded"]
    lines.append(f"  --variant auto picks the fastest here of {', '.join(v for v in info['variants'] if v not in left)}"
                 + (f" (left out: {'; '.join(f'{v}: {why}' for v, why in left.items())})" if left else ""))
    lines.append(f"engines     {len(info['engines'])}" + "".join(
        f"\n  {e['graph']}/{e['variant']}: {e['file']} ({e['gpu']}, TensorRT {e['tensorrt']})" for e in info["engines"]))
    lines.append(f"onnxruntime {info['onnxruntime']}: providers {', '.join(info['providers_available'])}")
    lines.append(f"  usable here: {', '.join(info['providers_usable'])}")
    for prov, why in info["providers_skipped"].items():
        lines.append(f"  skipped {prov}: {why}")
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------------------------
# main

register_command("eval", "the training-side evaluation table of the exported model on an AV-COCO folder",
                 configure_eval, cmd_eval, "Score the bundle on AV-COCO data with the same code and predictions "
                 "as `python -m training.evaluate` (model column plus uniform/Gaussian baselines).")
register_command("bench", "per-stage latency (median/p90 over warm runs) and FPS", configure_bench, cmd_bench,
                 "Time audio (resampling + audio graph), preprocess, image graph, head graph, post-processing "
                 "and overlay on a synthetic (or given) frame and audio clip.")
register_command("info", "manifest summary, classes, variants, engines, execution providers", configure_info,
                 cmd_info)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avsl-edge", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0])
    p.add_argument("--version", action="version", version=f"avsl-edge {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log the backend and provider choices")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in discover_commands().values():  # run, eval, bench, info, live, then any plug-in
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description)
        cmd.configure(sp)
        sp.set_defaults(handler=cmd.handler)
    return p


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM: the same clean stop as Ctrl-C (partial outputs removed, exit 130)


def main(argv: list[str] | None = None) -> int:
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if ours:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        if ours and signal.getsignal(signal.SIGTERM) is _terminate:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _main(argv: list[str] | None) -> int:
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version (0) and usage errors (2)
            return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(name)s: %(message)s")
        return int(args.handler(args))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `avsl-edge info --json | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # noqa: BLE001 - the last resort: a bug, reported with its traceback
        traceback.print_exc()
        print("internal error: please report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())  # `python -m avsl_edge.cli`: the commands table is avsl_edge.commands', shared
