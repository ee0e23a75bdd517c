"""Training throughput of a preset's steps on this machine, old and new layouts side by side.

    python -m benchmarks.training_speed [--preset cpu] [--runs 5] [--json out.json]

For each step of stage one (all_pairs location step, classification step, feature-extraction
batch) it prints pairs/s (median of warm steps; the p90 is in the JSON), the FLOP/s the step achieved
(FLOPs of forward and backward counted by torch's FlopCounterMode) as a fraction of this CPU's fp32
GEMM peak measured in the same run, and a torch profiler table of one location step. Synthetic
tensors at the preset's sizes: data generation is not in these figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from avsl_edge.bench import measure
from benchmarks import torch_side
from training.config import preset
from training.model import object_features
from training.stage_one import all_pairs_loss, build_model, classification_loss, place_model

LAYOUTS = {"contiguous": False, "channels_last": True}  # column -> --channels_last


def steps(cfg) -> dict:
    """The preset's stage-one steps as closures over one model placed as training places it
    (:func:`training.stage_one.place_model`); name -> (fn, pairs)."""
    torch.manual_seed(0)
    s, b = cfg.data.image_size, cfg.stage_one.batch_size
    model = place_model(build_model(cfg), cfg, torch.device("cpu")).train()
    opt = torch.optim.Adam(model.main_parameters(), lr=cfg.stage_one.lr)
    opt_cls = torch.optim.Adam(model.classifier_parameters(), lr=cfg.stage_one.class_lr)
    images, clips = torch.randn(b, 3, s, s), torch.randn(b, 16000) * 0.1
    pseudo = torch.randint(0, cfg.model.num_clusters, (b,))

    def location():
        loss, _ = all_pairs_loss(model, images, clips, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def classification():
        loss = classification_loss(model(images, clips), pseudo)
        opt.zero_grad(set_to_none=True)
        opt_cls.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt_cls.step()

    @torch.no_grad()
    def features():
        model.eval()
        out = model(images, clips)
        object_features(out.v_fea, out.av_map, cfg.stage_one.mask_threshold, cfg.stage_one.mask_relative)
        model.train()

    return {"location": (location, b), "classification": (classification, b), "features": (features, b)}


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "paper"))
    p.add_argument("--runs", type=int, default=5, help="warm steps timed per step and layout (>= 1)")
    p.add_argument("--json", default="", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    cfg = preset(args.preset)
    out = {"machine": torch_side.machine(), "preset": args.preset, "threads": torch.get_num_threads(),
           "peak_gemm_gflops": torch_side.peak_gemm_flops() / 1e9, "steps": {}}
    for layout_name, channels_last in LAYOUTS.items():
        layout_cfg = dataclasses.replace(cfg, channels_last=channels_last)
        for name, (fn, pairs) in steps(layout_cfg).items():
            # warm-up 1: oneDNN picks and caches its kernels on the first call
            t = measure(fn, warmup=1, runs=args.runs)
            median = t.median_ms / 1000
            row = out["steps"].setdefault(name, {"gflop": flops(fn) / 1e9})
            row[layout_name] = {"pairs_per_s": pairs / median, **t.to_dict(),
                                "of_peak": row["gflop"] / median / out["peak_gemm_gflops"]}
    fn, _ = steps(dataclasses.replace(cfg, channels_last=False))["location"]
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    print(f"{out['machine']['cpu']} ({', '.join(out['machine']['isa'])}), {out['threads']} threads, "
          f"peak fp32 GEMM {out['peak_gemm_gflops']:.0f} GFLOP/s; preset {args.preset}, {args.runs} warm steps each")
    print(f"{'step':<15}{'GFLOP':>8}" + "".join(f"{n + ' pairs/s':>26}{'of peak':>9}" for n in LAYOUTS))
    for name, row in out["steps"].items():
        cells = "".join(f"{row[n]['pairs_per_s']:>26.1f}{row[n]['of_peak']:>9.0%}" for n in LAYOUTS)
        print(f"{name:<15}{row['gflop']:>8.1f}{cells}")
    print("\nprofile of one location step (contiguous), top rows by self CPU time:\n" + table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**out, "profile_top": table}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
