"""The main job: data -> stage one -> stage two -> evaluation -> report -> ONNX export.

    python -m training.pipeline                       # the `cpu` preset into runs/cpu
    python -m training.pipeline --preset smoke --out runs/smoke
    python -m training.pipeline --preset paper --device cuda
    python -m training.pipeline --out runs/cpu --resume       # continue a stopped run
    torchrun --nproc-per-node 2 -m training.pipeline --preset paper   # DDP (gloo on CPU, NCCL on GPU)

Everything lands in one run folder: config.json, metrics.jsonl, the fixed test split and its
contact sheet (data/), stage-one rounds (rounds/), model.pt, eval.json/eval.md, report.md with
curves.png and figure.png, and (when the export package is importable) the ONNX bundle.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from avsl_edge.avcoco import load_avcoco
from avsl_edge.errors import UserError
from avsl_edge.evaluation import markdown_table, write_report
from avsl_edge.metrics import ClusterMatch
from training import distributed as du
from training import stage_one, stage_two
from training.banks import synth_config
from training.checkpoint import verify_checkpoint
from training.config import (RunConfig, add_override_arguments, apply_overrides, check_config,
                             collect_overrides, inference_size, load_config, preset, save_config)
from training.run_state import (FORCE_HINT, PATH_STEPS, RUN_OUTPUTS, RunFolderError, State, clear_run,  # noqa: F401
                                run_signature)
from training.data.synth import SynthMusic, contact_sheet, scene_seed, write_split
from training.evaluate import evaluate, load_model, predict
from training.metrics_log import MetricsLog
from training.report import figure_grid, plot_curves


TEST_SEED_OFFSET = 1_000_003  # the fixed test split never shares a seed with training scenes

# what each step's result is made from: a step runs again when one of these ran in this call
DEPENDS = {"stage_two": ("stage_one",), "evaluate": ("data", "stage_two"), "report": ("evaluate",),
           "export": ("data", "stage_two")}
CHECKPOINT_STEPS = ("stage_one", "stage_two")  # their value is a checkpoint, verified when it is reused


def check_out(out: Path, resume: bool, force: bool) -> str | None:
    """Why ``out`` cannot take this run (a usage error), or None. Nothing is written or removed here."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder"
    if resume:
        if not out.is_dir():
            return f"--resume: {out} does not exist"
        if not (out / "config.json").is_file():
            return f"--resume: {out} holds no run (no config.json)"
    elif out.is_dir() and any(out.iterdir()):
        why = run_signature(out)
        if why is not None:
            return (f"{out} is not empty and holds no run ({why}); --force removes only a run's own outputs, "
                    f"so {FORCE_HINT}")
        if not force:
            return f"{out} already holds a run; pass --resume to continue it or --force to start afresh"
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        return f"--out {out}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--out {out}: cannot write into {existing} (permission denied)"
    return None


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, RunConfig]:
    p = argparse.ArgumentParser(prog="python -m training.pipeline", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "paper"])
    p.add_argument("--out", help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--force", action="store_true", help="start afresh in --out: the earlier run's outputs are "
                   "removed first (only in a folder that holds a run, and only the files a run writes)")
    p.add_argument("--no-alternate", action="store_true", help="ablation: location epochs only (no alternating optimisation)")
    p.add_argument("--visual-init", choices=["scratch", "imagenet"], help="visual backbone init (default scratch)")
    p.add_argument("--visual-weights", help="LOCAL torchvision resnet18 state dict for --visual-init imagenet")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export step")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_override_arguments(p)
    args = p.parse_args(argv)
    if args.resume and args.force:
        p.error("--resume continues a run and --force starts it afresh: pass one of them")
    overrides = collect_overrides(args)
    if args.no_alternate:
        overrides["stage_one.alternate"] = "false"
    if args.visual_init:
        overrides["visual_init"] = args.visual_init
    if args.visual_weights:
        overrides["visual_weights"] = args.visual_weights
    if args.device:
        overrides["device"] = args.device
    if args.no_export:
        overrides["export"] = "false"
    out = Path(args.out or overrides.get("out") or preset(args.preset).out)
    overrides["out"] = str(out)
    if (why := check_out(out, args.resume, args.force)) is not None:
        p.error(why)
    try:
        if args.resume:
            saved = load_config(out / "config.json")
            cfg = apply_overrides(saved, overrides)
            ran, asked = saved.stage_one.lr_schedule, cfg.stage_one.lr_schedule
            if ran != asked and (out / "stage_one_last.pt").is_file():
                p.error(f"--resume: stage one in {out} ran with --stage_one.lr_schedule {ran}; it cannot go on "
                        f"with {asked} (resume without that option, or start afresh with --force)")
            State(out)  # a damaged state.json is a usage error before anything is written
        else:
            cfg = apply_overrides(preset(args.preset), overrides)
        check_config(cfg)
    except (ValueError, UserError) as exc:
        p.error(str(exc))
    if cfg.visual_init == "imagenet" and not cfg.visual_weights:
        p.error("--visual-init imagenet needs --visual-weights PATH (a local torchvision resnet18 state dict); "
                "nothing is downloaded")
    if cfg.visual_init == "imagenet" and not Path(cfg.visual_weights).is_file():
        p.error(f"--visual-weights {cfg.visual_weights}: no such file (nothing is downloaded)")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {cfg.device}: torch sees no CUDA device here (use --device cpu or auto)")
    if cfg.device.startswith("cuda:") and int(cfg.device[5:]) >= torch.cuda.device_count():
        p.error(f"--device {cfg.device}: torch sees {torch.cuda.device_count()} CUDA device(s) only")
    return args, cfg


def run(cfg: RunConfig, resume: bool = False, progress: bool = True) -> Path:
    d, device = du.init(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.out)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"--out {run_dir}: cannot create the run folder ({exc.strerror or exc})") from exc
    if not resume:
        if d.is_main:
            if (why := run_signature(run_dir)) is not None and any(run_dir.iterdir()):
                raise RunFolderError(f"{run_dir} is not empty and holds no run ({why}); {FORCE_HINT}")
            if removed := clear_run(run_dir):
                print(f"run folder {run_dir}: removed the earlier run's {', '.join(removed)}")
        du.barrier(d)
    state = State(run_dir)
    if d.is_main:  # first: config.json is what marks the folder as a run's
        try:
            save_config(cfg, run_dir / "config.json")
        except OSError as exc:
            raise RunFolderError(f"--out {run_dir}: cannot write into the run folder ({exc.strerror or exc})") from exc
        print(f"run folder {run_dir} (preset {cfg.preset}, {d.world_size} process(es), device {device})")
    log = MetricsLog(run_dir / "metrics.jsonl" if d.is_main else None)
    timings: dict[str, float] = state.done("timings") or {}
    test_dir = run_dir / "data" / "test"
    ran: set[str] = set()

    def reusable(name: str):
        """A resumed run's value of ``name`` when the step need not run again: it finished, what
        it is made from did not run again, and the file it left is still there (and intact)."""
        value = state.done(name) if resume else None
        if not value or any(dep in ran for dep in DEPENDS.get(name, ())):
            return None
        if isinstance(value, str) and name in PATH_STEPS:
            gone = [p for p in (value, *((test_dir / "annotations.json",) if name == "data" else ()))
                    if not Path(p).exists()]
            if gone:
                if d.is_main:
                    print(f"[{name}] done earlier, but {gone[0]} is gone: running it again")
                return None
            if name in CHECKPOINT_STEPS:
                verify_checkpoint(value)
        return value

    def step(name: str, fn, all_ranks: bool = True):
        """Run ``fn`` unless a resumed run finished it; ``all_ranks``: every process takes part
        (and they meet at a barrier after it), else only rank 0 runs it."""
        value = reusable(name)
        if value is not None:
            if d.is_main:
                print(f"[{name}] done earlier, skipped")
            return value
        t0 = time.time()
        value = fn()
        ran.add(name)
        timings[name] = round(time.time() - t0, 1)
        if d.is_main:
            state.mark(name, value if value is not None else True)
            state.mark("timings", timings)
            print(f"[{name}] {timings[name]:.0f} s")
        if all_ranks:
            du.barrier(d)
        return value

    def make_data():
        if d.is_main:
            kinds, seed = cfg.data.test_kinds, cfg.data.seed + TEST_SEED_OFFSET
            if not (test_dir / "annotations.json").is_file():
                write_split(test_dir, kinds, cfg.data.test_per_kind * len(kinds), seed, image_size=224, force=True,
                            synth=SynthMusic(synth_config(cfg.data, 224, "test")))
            load_avcoco(test_dir)  # validate what was written
            # the first scenes of the split, re-rendered from their seeds (write_split's round-robin)
            synth = SynthMusic(synth_config(cfg.data, 224, "test"))
            first = [synth.scene(kinds[i % len(kinds)], scene_seed(seed, i)) for i in range(2 * len(kinds))]
            sheet = contact_sheet(first, run_dir / "data" / "contact_sheet.png", cols=len(kinds))
            return str(sheet)
        return None

    step("data", make_data)
    round_path = step("stage_one", lambda: str(stage_one.train(cfg, run_dir, d, device, log, resume, progress)))
    model_path = step("stage_two", lambda: str(stage_two.train(cfg, Path(round_path), run_dir, d, device, log,
                                                                 resume, progress)))
    if d.is_main:
        # evaluation, report and export run on rank 0 alone; the other ranks are done
        table = step("evaluate", lambda: evaluate(Path(model_path), test_dir, cfg.eval, str(device), progress),
                     all_ranks=False)
        write_report(table, run_dir / "eval.json", run_dir / "eval.md", {"data": str(test_dir)})
        step("report", lambda: write_run_report(cfg, run_dir, Path(model_path), test_dir, table, timings, device),
             all_ranks=False)
        if cfg.export:
            step("export", lambda: export_bundle(run_dir, Path(model_path), test_dir), all_ranks=False)
        print(markdown_table(table))
        print(f"report: {run_dir / 'report.md'}")
    log.close()
    du.shutdown()
    return run_dir


def write_run_report(cfg: RunConfig, run_dir: Path, model_path: Path, test_dir: Path, table: dict,
                     timings: dict, device: torch.device) -> str:
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    model, ck = load_model(model_path, device)
    coco = load_avcoco(test_dir)
    # the paper's Figure 1 kinds where the split has them, else whatever kinds it holds
    kinds = tuple(k for k in ("mosaic", "duet", "solo_distractor", "offscreen") if coco.scenes(k)) \
        or tuple(dict.fromkeys(im.scene for im in coco.images if im.scene))
    preds = predict(model, ck["dictionary"].to(device), coco, inference_size(cfg), device, scenes=kinds,
                    progress=False)
    match = ClusterMatch.from_cluster_to_class(ck["cluster_to_class"].numpy(), len(ck["classes"]),
                                               ck["affinity"].numpy())
    figure_grid(coco, preds, list(ck["classes"]), match, run_dir / "figure.png", kinds,
                per_kind=max(1, cfg.eval.figure_examples // len(kinds)), softmax_scale=cfg.eval.softmax_scale)
    lines = [f"# Run report: {run_dir.name} (preset `{cfg.preset}`)", "",
             f"Image size {cfg.data.image_size} px in training, {inference_size(cfg)} px in evaluation and export, "
             f"K = {cfg.model.num_clusters}, visual init `{cfg.visual_init}`, "
             f"alternating optimisation {'on' if cfg.stage_one.alternate else 'off'}, stage-two round {ck['round']}.",
             "", "## Evaluation (fixed SynthMUSIC test split)", "", markdown_table(table), "",
             "## Wall time per step (s)", "", "| step | seconds |", "|---|---:|",
             *[f"| {k} | {v:.0f} |" for k, v in timings.items()], "",
             "## Curves", "", "![curves](curves.png)", "",
             "## Class-aware maps (green boxes: sounding, red: silent)", "", "![figure](figure.png)", "",
             "Test-split contact sheet: [data/contact_sheet.png](data/contact_sheet.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    return str(run_dir / "report.md")


def export_bundle(run_dir: Path, model_path: Path, test_dir: Path):
    """ONNX export of the trained model into ``<run>/bundle`` (the export package does the work)."""
    try:
        from export.to_onnx import export_run
    except ImportError as exc:
        print(f"[export] skipped: {exc}")
        return None
    # INT8 is calibrated on fresh SynthMUSIC scenes and every variant is scored on the test split,
    # so the INT8 figures are not flattered by calibrating on the images they are scored on.
    bundle = export_run(model_path, run_dir / "bundle", calibration_data=None, eval_data=test_dir)
    from avsl_edge.registry import register_bundle  # the edge library's default model (avsl_edge.load())
    register_bundle(bundle)
    return str(bundle)


def main(argv: list[str] | None = None) -> int:
    args, cfg = parse_args(argv)
    try:
        run(cfg, resume=args.resume, progress=not args.quiet)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
