"""The performance table, side by side in one process: ``python -m benchmarks.run``.

    python -m benchmarks.run                         # 224 px model, everything, JSON in benchmarks/results.json
    python -m benchmarks.run --bundle runs/cpu/bundle --size 96 --quick

Measures (batch 1, warm runs, median and p90): PyTorch eager, ONNX Runtime fp32 and ONNX Runtime
INT8 (QDQ) per stage (audio front-end + net, image net, head, pre/post-processing, overlay);
``localize()`` end to end with the audio embedding reused; the live loop's FPS and latency (file
camera + file microphone); the model's MACs against the machine's measured peak fp32 GEMM rate;
training throughput of the presets. Without --bundle a randomly initialised model at --size is
exported first (speed does not depend on the weights). GPU rows appear where a GPU is present.
Targets (issue 7) are printed beside the figures; nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import avsl_edge
from avsl_edge.bench import benchmark as edge_benchmark
from avsl_edge.bench import synthetic_inputs
from benchmarks import torch_side

REPO = Path(__file__).resolve().parents[1]


def random_bundle(size: int, workdir: Path) -> Path:
    """Export a randomly initialised StageTwo at ``size`` px (fp32 + int8) for speed measurements."""
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
    return export_run(ckpt, workdir / "bundle", None, variants=("int8",), evaluate=False, log=lambda s: None)


def live_loop(bundle: Path, variant: str, frames: int, workdir: Path) -> dict:
    """`avsl-edge live` on a SynthMUSIC video and its audio file, headless; its JSON summary."""
    from avsl_edge.audio import save_audio
    from training.data.synth import write_scene_video

    video = workdir / "live.mp4"
    if not video.is_file():
        write_scene_video(video, "duet", seed=3, seconds=frames / 30 + 2, fps=30.0)
        save_audio(workdir / "live.wav", avsl_edge.media.read_audio_track(video))
    summary = workdir / f"live_{variant}.json"
    cmd = [sys.executable, "-m", "avsl_edge.cli", "live", "--camera", str(video), "--mic", str(workdir / "live.wav"),
           "--model", str(bundle), "--variant", variant, "--no-display", "--max-frames", str(frames),
           "--summary-json", str(summary)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not summary.is_file():
        return {"error": (proc.stderr or proc.stdout)[-500:]}
    return json.loads(summary.read_text())


def stage_row(report: dict) -> dict:
    return {s: v["median_ms"] for s, v in report["stages"].items()} | {
        s + "_p90": v["p90_ms"] for s, v in report["stages"].items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, help="a bundle to measure (default: export a random model at --size)")
    p.add_argument("--size", type=int, default=224, help="model input size when no --bundle is given")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--quick", action="store_true", help="fewer runs, no live loop, no training throughput")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = 10 if args.quick else args.runs
    out: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                             "onnxruntime_providers": avsl_edge.backends.available_providers()},
                 "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = args.bundle or random_bundle(args.size, work)
        size = avsl_edge.load_bundle(bundle).manifest.preprocessing.image_size
        out["bundle"], out["image_size"] = str(bundle), size

        peak = torch_side.peak_gemm_flops()
        macs = torch_side.count_macs(size)
        out["peak_gemm_gflops"] = peak / 1e9
        out["macs_g"] = {k: v / 1e9 for k, v in macs.items()}

        rows = {"pytorch eager": {k: t.median_ms for k, t in torch_side.eager_stages(size, runs=runs).items()}}
        frame, audio = synthetic_inputs(640, 480)
        for variant in ("fp32", "int8"):
            loc = avsl_edge.load(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"], variant=variant,
                                 intra_op_threads=args.threads)
            rows[f"onnxruntime {variant}"] = stage_row(edge_benchmark(loc, frame, audio, 48000, runs, 3))
            loc.close()
        out["stages_ms"] = rows

        image_fp32 = rows["onnxruntime fp32"]["image"]
        image_int8 = rows["onnxruntime int8"]["image"]
        bound_ms = 2 * macs["image"] / peak * 1000
        per_frame = sum(rows["onnxruntime fp32"][s] for s in ("preprocess", "image", "head", "postprocess"))
        out["targets"] = {
            "fp32 image / GEMM bound (<= 1.1)": image_fp32 / bound_ms,
            "int8 speed-up over fp32 image (>= 2)": image_fp32 / image_int8,
            "localize per frame / image net (<= 1.15)": per_frame / image_fp32,
            "fp32 achieved / peak": bound_ms / image_fp32,
        }
        if not args.quick:
            out["live"] = {v: live_loop(bundle, v, 150, work) for v in ("fp32", "int8")}
            out["training_pairs_per_s"] = {name: torch_side.training_throughput(name, steps=2)
                                           for name in ("cpu", "paper")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(report(out))
    return 0


def report(out: dict) -> str:
    lines = [f"# Benchmarks ({out['machine']['cpu']}, {out['machine']['cores']} cores, image {out['image_size']} px, "
             f"{out['time']})", "",
             f"Peak fp32 GEMM: {out['peak_gemm_gflops']:.0f} GFLOP/s; image net {out['macs_g']['image']:.2f} GMAC, "
             f"audio net {out['macs_g']['audio']:.2f} GMAC -> image bound "
             f"{2 * out['macs_g']['image'] / out['peak_gemm_gflops'] * 1000:.1f} ms", "",
             "| backend | audio | preprocess | image | head | postprocess | overlay |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in out["stages_ms"].items():
        cells = [f"{row[s]:.2f}" if s in row else "–" for s in ("audio", "preprocess", "image", "head", "postprocess",
                                                               "overlay")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| target | value |", "|---|---:|"] + [f"| {k} | {v:.2f} |" for k, v in out["targets"].items()]
    for variant, live in out.get("live", {}).items():
        if "error" in live:
            lines.append(f"\nlive {variant}: failed: {live['error']}")
        else:
            lines.append(f"\nlive {variant}: {json.dumps(live)[:400]}")
    if "training_pairs_per_s" in out:
        lines.append("\ntraining (stage-one steps, pairs/s): " + ", ".join(
            f"{k} {v:.1f}" for k, v in out["training_pairs_per_s"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
