"""Training throughput of a preset's steps on this machine, old and new layouts side by side.

    python -m benchmarks.training_speed [--preset cpu] [--runs 5] [--json out.json]

For each step of stage one (all_pairs location step, classification step, feature-extraction
batch) it prints pairs/s (median of warm steps, with the range), the FLOP/s the step achieved
(FLOPs of forward and backward counted by torch's FlopCounterMode) as a fraction of this CPU's fp32
GEMM peak measured in the same run, and a torch profiler table of one location step. Synthetic
tensors at the preset's sizes: data generation is not in these figures.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import torch_side
from training.config import preset
from training.model import StageOne, contrastive_loss_all_pairs, localization_loss_all_pairs, object_features

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def steps(cfg, layout: torch.memory_format) -> dict:
    """The preset's stage-one steps as closures over one model, in ``layout``; name -> (fn, pairs)."""
    torch.manual_seed(0)
    s, b = cfg.data.image_size, cfg.stage_one.batch_size
    model = StageOne(cfg.model).to(memory_format=layout).train()
    opt = torch.optim.Adam(model.main_parameters(), lr=cfg.stage_one.lr)
    opt_cls = torch.optim.Adam(model.classifier_parameters(), lr=cfg.stage_one.class_lr)
    images = torch.randn(b, 3, s, s).contiguous(memory_format=layout)
    clips = torch.randn(b, 16000) * 0.1
    positive = torch.eye(b, dtype=torch.bool)
    pseudo = torch.randint(0, cfg.model.num_clusters, (b,))

    def location():
        logits = model(images, clips, all_pairs=True).amax(dim=(2, 3))
        loss = localization_loss_all_pairs(logits, positive)
        loss = loss + cfg.stage_one.nce_weight * contrastive_loss_all_pairs(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def classification():
        out = model(images, clips)
        loss = F.cross_entropy(out.v_logits, pseudo) + F.cross_entropy(out.a_logits, pseudo)
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


def timed(fn, runs: int) -> list[float]:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return sorted(out)


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
    for layout_name, layout in LAYOUTS.items():
        for name, (fn, pairs) in steps(cfg, layout).items():
            t = timed(fn, args.runs)
            median = t[len(t) // 2]
            row = out["steps"].setdefault(name, {"gflop": flops(fn) / 1e9})
            row[layout_name] = {"pairs_per_s": pairs / median, "range_s": [t[0], t[-1]], "median_s": median,
                                "of_peak": row["gflop"] / median / out["peak_gemm_gflops"]}
    fn, _ = steps(cfg, torch.contiguous_format)["location"]
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
