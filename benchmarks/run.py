"""The performance table, side by side in one process: ``python -m benchmarks.run``.

    python -m benchmarks.run                                   # 224 px random model, everything
    python -m benchmarks.run --bundle runs/cpu/bundle --quick  # a trained bundle, fewer runs, no live/training

Measures (batch 1, warm runs, median and p90): PyTorch eager, ONNX Runtime fp32, ONNX Runtime INT8
in both QDQ forms (``int8``: symmetric activations, the TensorRT form; ``int8-cpu``: uint8
activations, the ONNX Runtime CPU form) per stage (audio front-end + net, preprocessing, image
net, head, post-processing, overlay); ``localize()`` per frame with the audio embedding reused;
the live loop's FPS and latency (``avsl-edge live`` on a file camera + file microphone); the
model's MACs against the machine's peak fp32 GEMM rate measured in the same run; training
throughput of the ``cpu`` and ``paper`` presets. Without --bundle a randomly initialised model at
--size is exported first (speed does not depend on the weights). GPU rows (PyTorch CUDA) appear
where a GPU is present. ``--repeat N`` measures the stages N times, the backends interleaved in
each pass (the machine's speed drifts), and reports the median over the passes with their range,
so a figure's stability is visible. ``variant="auto"`` (the default of ``load()`` and ``live``) is
loaded as a user gets it: which variant it chose, why, and its speed-up over fp32. The edge targets
(ONNX Runtime against eager, auto's speed-up for the host's ISA class, the live loop, the audio hop)
are printed beside the figures with met/missed; nothing here is a pass/fail test. The JSON
(default benchmarks/results.json) holds every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# idle OpenMP workers sleep instead of spinning (as ONNX Runtime's do, see avsl_edge.backends.ort_session):
# on a 2-core machine shared with other work, spinning PyTorch threads are several times slower
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import avsl_edge  # noqa: E402
from avsl_edge.bench import benchmark as edge_benchmark  # noqa: E402
from avsl_edge.bench import synthetic_inputs  # noqa: E402
from avsl_edge.options import thread_count  # noqa: E402
from benchmarks import torch_side  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ORT_VARIANTS = ("fp32", "int8", "int8-cpu")
STAGES = ("audio", "preprocess", "image", "head", "postprocess", "overlay")
PER_FRAME = ("preprocess", "image", "head", "postprocess")


def random_bundle(size: int, workdir: Path, calibration_size: int = 16) -> Path:
    """Export a randomly initialised StageTwo at ``size`` px (fp32 + both int8 forms) for speed."""
    from export.to_onnx import export_run
    from training.checkpoint import save_checkpoint
    from training.config import preset, to_dict
    from training.data.classes import CLASSES
    from training.model import StageTwo

    cfg = preset("paper")
    cfg.data.image_size = size
    torch.manual_seed(0)
    model = StageTwo(cfg.model)
    k, c = cfg.model.num_clusters, len(CLASSES)
    ckpt = save_checkpoint(workdir / "model.pt", "stage_two", round=0, config=to_dict(cfg), classes=list(CLASSES),
                           model=model.state_dict(), dictionary=torch.randn(k, 512).abs(),
                           cluster_to_class=torch.arange(k) % c, affinity=torch.eye(c, k, dtype=torch.float64),
                           centroids=torch.randn(k, 512), nmi=0.0)
    return export_run(ckpt, workdir / "bundle", None, variants=("int8", "int8-cpu"), evaluate=False,
                      calibration_size=calibration_size, log=lambda s: None)


def live_clip(workdir: Path, seconds: float, fps: float = 30.0) -> tuple[Path, Path]:
    """A SynthMUSIC duet video and its sound as a WAV: the file camera (paced at ``fps``, like a
    camera) and the file microphone (replayed in real time) of the live loop."""
    from avsl_edge.audio import save_audio
    from training.data.synth import write_scene_video

    video, wav = workdir / "live.mp4", workdir / "live.wav"
    if not video.is_file():
        write_scene_video(video, "duet", seed=3, seconds=seconds, fps=fps)
        save_audio(wav, avsl_edge.media.read_audio_track(video))
    return video, wav


def live_loop(bundle: Path, variant: str, frames: int, workdir: Path, threads: int,
              extra: tuple[str, ...] = ()) -> dict:
    """`avsl-edge live` on a SynthMUSIC video and its audio file, headless; its JSON summary."""
    video, wav = live_clip(workdir, frames / 30 + 3)
    summary = workdir / f"live_{variant}.json"
    summary.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "avsl_edge.cli", "live", "--camera", str(video), "--mic", str(wav),
           "--model", str(bundle), "--variant", variant, "--backend", "onnxruntime", "--threads", str(threads),
           "--no-display", "--max-frames", str(frames), "--summary-json", str(summary), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    if proc.returncode != 0 or not summary.is_file():
        return {"error": (proc.stderr or proc.stdout)[-800:], "command": " ".join(cmd)}
    return json.loads(summary.read_text())


def isa_class(machine: dict) -> str:
    """"AVX-512 VNNI", "AVX2" or "other": the host classes whose INT8 gains differ (3.3x vs 1.3x)."""
    isa = set(machine.get("isa", ()))
    return "AVX-512 VNNI" if "avx512_vnni" in isa else "AVX2" if "avx2" in isa else "other"


AUTO_GOAL = {"AVX-512 VNNI": 2.5, "AVX2": 1.5}  # auto's image + audio speed-up over fp32 per ISA class


def auto_choice(bundle: Path, threads: int) -> dict:
    """What ``variant="auto"`` chooses here, loaded as ``avsl_edge.load`` does by default."""
    loc = avsl_edge.load(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"],
                         intra_op_threads=threads, inter_op_threads=1)
    try:
        choice = loc.backend.variant_choice
        scored = any(((v.report or {}).get("eval") or {}).get("delta_vs_fp32")
                     for v in loc.bundle.manifest.variants.values())
        return choice.to_dict() | {"speedup": choice.speedup, "scored": scored}
    finally:
        loc.close()


def stage_rows(bundle: Path, size: int, variants: list[str], threads: int, runs: int) -> dict[str, dict]:
    """One pass: PyTorch eager (and CUDA where present), then ONNX Runtime per variant."""
    rows = {"pytorch eager": {"stages": {k: t.to_dict() for k, t in
                                         torch_side.eager_stages(size, runs=runs).items()}}}
    if torch.cuda.is_available():
        rows["pytorch cuda"] = {"stages": {k: t.to_dict() for k, t in
                                           torch_side.eager_stages(size, runs=runs, device="cuda").items()}}
    rows.update(ort_rows(bundle, variants, threads, runs))
    return rows


def _over_passes(cells: list[dict]) -> dict:
    """One timing from the passes' timings: the median of their medians and p90s, the medians' range."""
    med = sorted(c["median_ms"] for c in cells)
    p90 = sorted(c["p90_ms"] for c in cells)
    out = dict(cells[0])
    out.update(median_ms=med[len(med) // 2], p90_ms=p90[len(p90) // 2], range_ms=[med[0], med[-1]],
               passes=len(cells))
    return out


def merge_passes(passes: list[dict[str, dict]]) -> dict[str, dict]:
    """The rows of several passes as one table (each timing over the passes, see _over_passes)."""
    merged = {}
    for name, row in passes[0].items():
        out = dict(row)
        out["stages"] = {k: _over_passes([p[name]["stages"][k] for p in passes]) for k in row["stages"]}
        for k in ("per_frame_ms", "end_to_end_ms"):
            if k in row:
                out[k] = _over_passes([p[name][k] for p in passes])
        merged[name] = out
    return merged


def ort_rows(bundle: Path, variants: list[str], threads: int, runs: int) -> dict[str, dict]:
    frame, audio = synthetic_inputs(640, 480)
    rows = {}
    for variant in variants:
        loc = avsl_edge.load(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"], variant=variant,
                             intra_op_threads=threads, inter_op_threads=1)
        rep = edge_benchmark(loc, frame, audio, 48000, runs, 5)
        loc.close()
        rows[f"onnxruntime {variant}"] = {"stages": rep["stages"], "per_frame_ms": rep["per_frame_ms"],
                                          "end_to_end_ms": rep["end_to_end_ms"], "fps": rep["fps"],
                                          "backend": rep["backend"]["description"]}
    return rows


def int8_accuracy(bundle: Path, eval_data: Path | None) -> dict:
    """CIoU@0.3 (mosaic and duet) of fp32 vs int8-cpu: the scores the export recorded on its
    evaluation split, else scored here on ``eval_data``."""
    from avsl_edge.backends import CPU_EP, create_backend
    from avsl_edge.bundle_eval import evaluate_bundle

    b = avsl_edge.load_bundle(bundle)
    keys = ("mosaic_ciou@0.3", "duet_ciou@0.3", "solo_iou@0.5")
    tables, data = {}, None
    for v in ("fp32", "int8", "int8-cpu"):
        if v not in b.variants:
            continue
        ev = (b.manifest.variants[v].report or {}).get("eval")
        if eval_data is not None:
            coco = avsl_edge.avcoco.load_avcoco(eval_data)
            tables[v] = evaluate_bundle(create_backend(b, "onnxruntime", [CPU_EP], v), coco)["model"]
            data = str(eval_data)
        elif ev:
            tables[v], data = ev["model"], ev["data"]
    if "fp32" not in tables or "int8-cpu" not in tables:
        return {}
    out = {"data": data, **{v: {k: round(t[k], 2) for k in keys if k in t} for v, t in tables.items()}}
    ciou = ("mosaic_ciou@0.3", "duet_ciou@0.3")
    out["delta_ciou"] = min(tables["int8-cpu"][k] - tables["fp32"][k] for k in ciou)
    out["note"] = "worst of mosaic/duet CIoU@0.3, int8-cpu minus fp32, on " + str(data)
    return out


def _ms(row: dict, stage: str) -> float:
    return row["stages"][stage]["median_ms"]


def _image_audio_ms(rows: dict, variant: str) -> float:
    return _ms(rows[f"onnxruntime {variant}"], "image") + _ms(rows[f"onnxruntime {variant}"], "audio")


def auto_stand_in(out: dict) -> tuple[str, str]:
    """The variant that stands for ``auto`` in the targets and the live run, and why. A bundle whose
    variants the export never scored (random weights) has no accuracy bound, so auto keeps fp32
    there; its fastest variant in the stage rows is then measured instead."""
    auto = out["auto"]
    if auto.get("scored", True):
        return auto["variant"], auto["reason"]
    fastest = min(out["variants"], key=lambda v: _image_audio_ms(out["stages_ms"], v))
    return fastest, (f"the export scored no variant (random weights), so auto keeps fp32 here; this is the "
                     f"fastest variant, {fastest}, which auto picks where it keeps the accuracy bound")


def targets(out: dict) -> list[dict]:
    """The edge targets: value, goal, met."""
    rows = out["stages_ms"]
    fp32, int8 = rows.get("onnxruntime fp32"), rows.get("onnxruntime int8-cpu")
    bound_ms = out["image_bound_ms"]
    t = []

    def add(name: str, value: float | None, goal: str, met: bool | None, note: str = "") -> None:
        t.append({"target": name, "value": None if value is None else round(value, 3), "goal": goal,
                  "met": met, "note": note})

    eager = rows.get("pytorch eager")
    if eager is not None:
        r = _ms(fp32, "image") / _ms(eager, "image")
        add("ORT fp32 image / PyTorch eager image", r, "<= 0.8", r <= 0.8,
            f"{_ms(fp32, 'image'):.1f} vs {_ms(eager, 'image'):.1f} ms")
    auto = out.get("auto")
    if auto and auto.get("variant") in out["variants"]:
        cls = isa_class(out["machine"])
        goal = AUTO_GOAL.get(cls)
        variant, note = auto_stand_in(out)
        r = _image_audio_ms(rows, "fp32") / _image_audio_ms(rows, variant)
        add(f"auto ({variant}) image + audio speed-up over fp32 ({cls})", r,
            f">= {goal}" if goal else "report", r >= goal if goal else None, note)
    r = _ms(fp32, "image") / bound_ms
    add("ORT fp32 image / GEMM bound (2 x MACs / peak)", r, "<= 1.1", r <= 1.1,
        f"{_ms(fp32, 'image'):.1f} ms vs bound {bound_ms:.1f} ms; achieved/peak {1 / r:.0%}")
    if int8 is not None:
        r = _ms(fp32, "image") / _ms(int8, "image")
        add("INT8 (int8-cpu) image speed-up over fp32", r, ">= 2", r >= 2,
            f"{_ms(int8, 'image'):.1f} vs {_ms(fp32, 'image'):.1f} ms")
    if "onnxruntime int8" in rows:
        r = _ms(fp32, "image") / _ms(rows["onnxruntime int8"], "image")
        add("INT8 (int8, TensorRT form) image speed-up over fp32 on CPU", r, "report", None)
    for name, row in (("fp32", fp32), ("int8-cpu", int8)):
        if row is not None:
            per_frame = sum(_ms(row, s) for s in PER_FRAME)
            r = per_frame / _ms(row, "image")
            add(f"localize() per frame / image net ({name})", r, "<= 1.15", r <= 1.15,
                f"{per_frame:.2f} ms per frame, image {_ms(row, 'image'):.2f} ms (head and pre/post-processing "
                f"{per_frame - _ms(row, 'image'):.2f} ms)")
    acc = out.get("accuracy")
    if acc and "delta_ciou" in acc:
        d = acc["delta_ciou"]
        add("INT8 (int8-cpu) accuracy, CIoU@0.3 vs fp32 (points)", d, ">= -2", d >= -2, acc.get("note", ""))
    live = out.get("live", {}).get("auto")
    if live and "error" not in live:
        name = f"auto: {live['variant']}" if out["auto"].get("scored", True) else f"for auto: {live['variant']}"
        add(f"live FPS ({name})", live["fps"], ">= 30", live["fps"] >= 30,
            f"{live['frames']} frames, camera file at 30 fps")
        lat = live["latency_ms"]["median_ms"]
        add(f"live end-to-end latency median ms ({name})", lat, "< 50", lat < 50,
            f"p90 {live['latency_ms']['p90_ms']} ms")
        audio = live["stages_ms"].get("audio")
        if audio:
            add(f"live audio path per hop ms ({name})", audio["median_ms"], "< 10", audio["median_ms"] < 10,
                f"p90 {audio['p90_ms']} ms")
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, help="a bundle to measure (default: export a random model at --size)")
    p.add_argument("--size", type=int, default=224, help="model input size when no --bundle is given")
    p.add_argument("--threads", type=thread_count, default=os.cpu_count() or 2, help="ORT intra-op and torch threads")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--repeat", type=int, metavar="N",
                   help="passes over the stages, backends interleaved in each (default 3; with --quick 1)")
    p.add_argument("--quick", action="store_true", help="fewer runs, no live loop, no training throughput")
    p.add_argument("--live-frames", type=int, default=300)
    p.add_argument("--live-workers", type=int, default=2,
                   help="avsl-edge live --workers (default 2: frames processed at once, README \"Live\")")
    p.add_argument("--eval-data", type=Path, help="AV-COCO split to score fp32 vs int8-cpu on (CIoU@0.3)")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results.json")
    p.add_argument("--keep-bundle", type=Path, help="export the random model here (and keep it) instead of a temp dir")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = 10 if args.quick else args.runs
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        p.error(f"--repeat must be at least 1, got {args.repeat}")
    out: dict = {"machine": torch_side.machine(), "threads": args.threads,
                 "time": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs, "batch": 1}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        if args.bundle is None and args.keep_bundle is not None:
            args.keep_bundle.mkdir(parents=True, exist_ok=True)
        bundle = args.bundle or random_bundle(args.size, args.keep_bundle or work)
        if args.bundle is None:
            out["export_s"] = round(time.perf_counter() - t0, 1)
        b = avsl_edge.load_bundle(bundle)
        size = b.manifest.preprocessing.image_size
        variants = [v for v in ORT_VARIANTS if v in b.variants]
        out["bundle"], out["image_size"], out["variants"] = str(bundle), size, variants
        print(f"[bench] bundle {bundle} ({size} px, variants {variants}); measuring...", file=sys.stderr, flush=True)

        peaks = {"torch.matmul": torch_side.peak_gemm_flops(),
                 "onnxruntime MatMul": torch_side.peak_gemm_flops_onnxruntime(threads=args.threads)}
        peak = max(peaks.values())
        macs = torch_side.count_macs(size)
        out["peak_gemm_gflops"] = round(peak / 1e9, 1)
        out["peak_gemm_gflops_by"] = {k: round(v / 1e9, 1) for k, v in peaks.items()}
        out["macs_g"] = {k: round(v / 1e9, 4) for k, v in macs.items()}
        out["image_bound_ms"] = 2 * macs["image"] / peak * 1000

        passes = []
        for i in range(args.repeat):
            passes.append(stage_rows(bundle, size, variants, args.threads, runs))
            print(f"[bench] pass {i + 1}/{args.repeat} done", file=sys.stderr, flush=True)
        out["repeat"] = args.repeat
        out["stages_ms"] = merge_passes(passes)
        out["auto"] = auto_choice(bundle, args.threads)
        out["peak_gemm_gflops_after"] = round(max(torch_side.peak_gemm_flops(seconds=1.0), torch_side.
                                                  peak_gemm_flops_onnxruntime(threads=args.threads, seconds=1.0)) / 1e9, 1)
        out["accuracy"] = int8_accuracy(bundle, args.eval_data)
        if not args.quick:
            live_auto = "auto" if out["auto"]["scored"] else auto_stand_in(out)[0]
            out["live"] = {k: live_loop(bundle, v, args.live_frames, work, args.threads,
                                        ("--workers", str(args.live_workers)))
                           for k, v in (("fp32", "fp32"), ("auto", live_auto))}
            out["training_pairs_per_s"] = {name: torch_side.training_throughput(name, steps=2, batch=8)
                                           for name in ("cpu", "paper")}
        out["targets"] = targets(out)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(report(out))
    print(f"\n(JSON: {args.json})")
    return 0


def _cell(t: dict) -> str:
    span = f" [{t['range_ms'][0]:.2f}-{t['range_ms'][1]:.2f}]" if t.get("passes", 1) > 1 else ""
    return f"{t['median_ms']:.2f} ({t['p90_ms']:.2f}){span}"


def report(out: dict) -> str:
    m = out["machine"]
    repeat = out.get("repeat", 1)
    lines = [f"# Benchmarks: {m['cpu']}, {m['cores']} cores, {out['threads']} threads, image {out['image_size']} px, "
             f"batch 1, {out['runs']} warm runs x {repeat} passes ({out['time']})", "",
             f"ISA: {isa_class(m)} ({', '.join(m.get('isa', [])) or 'none of avx2/avx512/vnni/amx'})", "",
             f"Peak fp32 GEMM (2048^2, best of {out['peak_gemm_gflops_by']}): {out['peak_gemm_gflops']:.0f} GFLOP/s "
             f"(again after the "
             f"stages: {out['peak_gemm_gflops_after']:.0f}); image net {out['macs_g']['image']:.3f} GMAC, audio net "
             f"{out['macs_g']['audio']:.3f} GMAC -> image bound {out['image_bound_ms']:.2f} ms", "",
             "median ms (p90)" + (f" [range of the {repeat} passes' medians]" if repeat > 1 else ""), "",
             "| backend | " + " | ".join(STAGES) + " | per frame | end to end |",
             "|---|" + "---:|" * (len(STAGES) + 2)]
    for name, row in out["stages_ms"].items():
        st = row["stages"]
        cells = [_cell(st[s]) if s in st else "–" for s in STAGES]
        cells += [_cell(row[k]) if k in row else "–" for k in ("per_frame_ms", "end_to_end_ms")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for variant, live in out.get("live", {}).items():
        if "error" in live:
            lines.append(f"\nlive {variant}: FAILED: {live['error']}")
        else:
            st = ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in live["stages_ms"].items() if v)
            lines.append(f"\nlive {variant}: {live['fps']:.1f} FPS over {live['frames']} frames, latency median "
                         f"{live['latency_ms']['median_ms']:.1f} ms p90 {live['latency_ms']['p90_ms']:.1f} ms, camera "
                         f"dropped {live['camera_dropped']}; stages (median ms): {st}")
    if out.get("auto"):
        lines.append(f"\nvariant auto: {out['auto']['variant']}, {out['auto']['reason']}")
    if "training_pairs_per_s" in out:
        lines.append("\ntraining throughput (stage-one steps, batch 8 pairs + 8 negatives, pairs/s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in out["training_pairs_per_s"].items()))
    if "accuracy" in out:
        lines.append(f"\naccuracy: {json.dumps(out['accuracy'])}")
    lines += ["", "| target | value | goal | met | note |", "|---|---:|---|---|---|"]
    for t in out["targets"]:
        met = {True: "yes", False: "NO", None: "–"}[t["met"]]
        lines.append(f"| {t['target']} | {t['value']} | {t['goal']} | {met} | {t['note']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
