"""Training throughput of a preset's steps on this machine, before and after side by side.

    python -m benchmarks.training_speed [--preset cpu] [--runs 5] [--curve 100] [--json out.json]

"before" is the contiguous (NCHW) layout training used until ``--channels_last``; "after" is the
preset as it stands (``channels_last`` on). For each step (stage one's all_pairs location step,
classification step and feature-extraction batch; stage two's all_pairs step) it prints pairs/s
(median of warm steps; the p90 is in the JSON), the FLOP/s the step achieved (FLOPs of forward and
backward counted by torch's FlopCounterMode) as a fraction of this CPU's fp32 GEMM peak measured in
the same run, and a torch profiler table of one location step of each layout. The two layouts'
steps alternate (this machine's speed drifts within minutes). These use synthetic tensors at the
preset's sizes, so data generation is not in them.

``--curve N`` also trains the first N location steps on the preset's own rendered data, three
times: before with seed 0 and seed 1 (the run-to-run noise) and after with seed 0. It prints the
three loss curves as 10-step means and the pairs/s of those steps, data generation included (the
three run one after the other: compare their pairs/s with the drift in mind).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from avsl_edge.timing import measure, summary
from benchmarks import torch_side
from training import distributed as du
from training.config import RunConfig, preset
from training.metrics_log import MetricsLog
from training.model import AudioTeacher, StageTwo, object_features
from training.stage_one import (all_pairs_loss, build_model, classification_loss, load_data, location_epoch,
                                lr_scheduler, place_frames, place_model)
from training.stage_two import all_pairs_losses, train_mode, trainable_parameters

LAYOUTS = {"before": False, "after": True}  # column -> --channels_last
CPU = torch.device("cpu")
WINDOW = 10  # steps per point of the printed loss curves


def steps(cfg: RunConfig) -> dict:
    """The preset's steps as closures over models placed as training places them
    (:func:`training.stage_one.place_model`, :func:`training.stage_one.place_frames`); name -> (fn, pairs)."""
    torch.manual_seed(0)
    s, b = cfg.data.image_size, cfg.stage_one.batch_size
    model = place_model(build_model(cfg), cfg, CPU).train()
    opt = torch.optim.Adam(model.main_parameters(), lr=cfg.stage_one.lr)
    opt_cls = torch.optim.Adam(model.classifier_parameters(), lr=cfg.stage_one.class_lr)
    images, clips = place_frames(torch.randn(b, 3, s, s), cfg, CPU), torch.randn(b, 16000) * 0.1
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

    b2 = cfg.stage_two.batch_size
    student = place_model(StageTwo.from_stage_one(model.state_dict(), cfg.model), cfg, CPU)
    teacher = AudioTeacher.from_stage_one(model.state_dict(), cfg.model, cfg.stage_two.temperature).eval()
    opt2 = torch.optim.Adam(trainable_parameters(student, cfg), lr=cfg.stage_two.lr)
    dictionary = F.normalize(torch.randn(cfg.model.num_clusters, 512), dim=1)
    mosaics, clips2 = place_frames(torch.randn(b2, 3, s, s), cfg, CPU), torch.randn(b2, 16000) * 0.1

    def stage_two():
        train_mode(student, cfg)
        with torch.no_grad():
            p_a = teacher(clips2)
        losses, _ = all_pairs_losses(student, mosaics, clips2, p_a, dictionary, cfg)
        opt2.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt2.step()

    return {"location": (location, b), "classification": (classification, b), "features": (features, b),
            "stage_two": (stage_two, b2)}


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def profile_table(fn, rows: int = 12) -> str:
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


class _Losses(MetricsLog):
    """The stage-one location losses a :func:`training.stage_one.location_epoch` logs, in memory."""

    def __init__(self):
        super().__init__(None)
        self.losses: list[float] = []

    def write(self, **record) -> None:
        if record.get("phase") == "stage1_location":
            self.losses.append(record["loss"])


def loss_curve(cfg: RunConfig, data, n_steps: int) -> dict:
    """Losses of the first ``n_steps`` location steps of a fresh stage one (seed ``cfg.seed``, the
    pipeline's init), whole epochs run and the rest cut; pairs/s of those epochs, data included."""
    torch.manual_seed(cfg.seed)
    model = place_model(build_model(cfg), cfg, CPU)
    opt = torch.optim.Adam(model.main_parameters(), lr=cfg.stage_one.lr, weight_decay=cfg.stage_one.weight_decay)
    sched = lr_scheduler(opt, cfg)
    log, epoch, t0 = _Losses(), 0, time.perf_counter()
    while len(log.losses) < n_steps:
        location_epoch(model, opt, data, cfg, epoch, du.Dist(), CPU, log, progress=False)
        if sched is not None:
            sched.step()
        epoch += 1
    seconds = time.perf_counter() - t0
    return {"seed": cfg.seed, "channels_last": cfg.channels_last, "loss": log.losses[:n_steps],
            "pairs_per_s_with_data": len(log.losses) * cfg.stage_one.batch_size / seconds}


def window_means(losses: list[float]) -> list[float]:
    return [sum(losses[i:i + WINDOW]) / len(losses[i:i + WINDOW]) for i in range(0, len(losses), WINDOW)]


def curves(cfg: RunConfig, n_steps: int) -> dict:
    data = load_data(cfg, du.Dist(), progress=False)
    runs = {"before seed 0": (False, 0), "before seed 1": (False, 1), "after seed 0": (True, 0)}
    out = {name: loss_curve(dataclasses.replace(cfg, channels_last=cl, seed=seed), data, n_steps)
           for name, (cl, seed) in runs.items()}
    means = {name: window_means(c["loss"]) for name, c in out.items()}
    noise = max(abs(a - b) for a, b in zip(means["before seed 0"], means["before seed 1"]))
    drift = max(abs(a - b) for a, b in zip(means["before seed 0"], means["after seed 0"]))
    return {"steps": n_steps, "runs": out, "window": WINDOW, "window_means": means,
            "noise_max_abs": noise, "after_vs_before_max_abs": drift, "within_noise": drift <= noise}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "paper"))
    p.add_argument("--runs", type=int, default=5, help="warm steps timed per step and layout (>= 1)")
    p.add_argument("--curve", type=int, default=0, help="also train the first N location steps on real data "
                                                         "(before seeds 0 and 1, after seed 0; 0 = skip)")
    p.add_argument("--json", default="", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.curve < 0:
        p.error("--curve must be 0 (skip) or a number of steps")
    cfg = preset(args.preset)
    if not cfg.channels_last:
        p.error(f"preset {args.preset} trains contiguous: 'after' would be the same layout as 'before'")
    out = {"machine": torch_side.machine(), "preset": args.preset, "threads": torch.get_num_threads(),
           "peak_gemm_gflops": torch_side.peak_gemm_flops() / 1e9, "steps": {}, "profile_top": {}}
    fns = {layout: steps(dataclasses.replace(cfg, channels_last=cl)) for layout, cl in LAYOUTS.items()}
    for name in fns["before"]:
        for layout in LAYOUTS:  # warm-up: oneDNN picks and caches its kernels on the first call
            fns[layout][name][0]()
        ms: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
        for _ in range(args.runs):  # interleaved: this machine's speed drifts within minutes
            for layout in LAYOUTS:
                ms[layout].append(measure(fns[layout][name][0], warmup=0, runs=1).median_ms)
        row = out["steps"][name] = {"gflop": flops(fns["before"][name][0]) / 1e9}
        for layout in LAYOUTS:
            t, pairs = summary(ms[layout]), fns[layout][name][1]
            row[layout] = {"pairs_per_s": pairs / (t.median_ms / 1000), **t.to_dict(),
                           "of_peak": row["gflop"] / (t.median_ms / 1000) / out["peak_gemm_gflops"]}
    for layout in LAYOUTS:
        out["profile_top"][layout] = profile_table(fns[layout]["location"][0])
    print(f"{out['machine']['cpu']} ({', '.join(out['machine']['isa'])}), {out['threads']} threads, "
          f"peak fp32 GEMM {out['peak_gemm_gflops']:.0f} GFLOP/s; preset {args.preset}, {args.runs} warm steps each")
    print("before: contiguous NCHW; after: channels_last (nets and frames in NHWC), the preset's default")
    print(f"{'step':<15}{'GFLOP':>8}" + "".join(f"{n + ' pairs/s':>17}{'of peak':>9}" for n in LAYOUTS)
          + f"{'speed-up':>10}")
    for name, row in out["steps"].items():
        cells = "".join(f"{row[n]['pairs_per_s']:>17.1f}{row[n]['of_peak']:>9.0%}" for n in LAYOUTS)
        print(f"{name:<15}{row['gflop']:>8.1f}{cells}{row['after']['pairs_per_s'] / row['before']['pairs_per_s']:>9.2f}x")
    for layout in LAYOUTS:
        print(f"\nprofile of one location step ({layout}), top rows by self CPU time:\n" + out["profile_top"][layout])
    if args.curve:
        c = out["curve"] = curves(cfg, args.curve)
        names = list(c["runs"])
        print(f"first {args.curve} location steps on the preset's data: loss, mean of each {WINDOW} steps")
        print(f"{'steps':<10}" + "".join(f"{n:>16}" for n in names))
        for i in range(math.ceil(args.curve / WINDOW)):
            print(f"{f'{i * WINDOW + 1}-{min(args.curve, (i + 1) * WINDOW)}':<10}"
                  + "".join(f"{c['window_means'][n][i]:>16.4f}" for n in names))
        print(f"{'pairs/s':<10}" + "".join(f"{c['runs'][n]['pairs_per_s_with_data']:>16.1f}" for n in names)
              + "   (data generation included)")
        print(f"after vs before (seed 0): max |difference| of the {WINDOW}-step means {c['after_vs_before_max_abs']:.4f}; "
              f"run-to-run noise (before, seed 0 vs 1) {c['noise_max_abs']:.4f}: "
              + ("within the noise" if c["within_noise"] else "OUTSIDE the noise"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
