"""Evaluate a trained model on an AV-COCO folder: ``python -m training.evaluate``.

    python -m training.evaluate --checkpoint runs/cpu/model.pt --data runs/cpu/data/test \\
        [--json eval.json] [--markdown eval.md]

Runs the PyTorch model over every image, then scores with the torch-free
:mod:`avsl_edge.evaluation` (the same code the edge library's ``eval`` uses on exported models),
and prints the table with the uniform and centred-Gaussian baselines beside the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from avsl_edge.avcoco import AVCoco, AVCocoError, load_avcoco, read_clip, read_frame
from avsl_edge.audio import fit_clip
from avsl_edge.errors import UserError
from avsl_edge.evaluation import EvalSettings, Prediction, class_index, score, write_report
from avsl_edge.fileio import check_outputs
from avsl_edge.metrics import ClusterMatch, Thresholds
from avsl_edge.preprocess import preprocess_frame
from training.checkpoint import CheckpointError, load_checkpoint, require
from training.config import DEVICE, EvalConfig, check_config, from_dict, inference_size
from training.model import StageTwo


@torch.no_grad()
def predict(model: StageTwo, dictionary: torch.Tensor, coco: AVCoco, image_size: int,
            device: torch.device, batch_size: int = 32, silent: bool = False,
            scenes: tuple[str, ...] | None = None, progress: bool = True) -> dict[int, Prediction]:
    """Per-image predictions of a StageTwo model (``silent``: with an all-zero clip instead)."""
    model.eval()
    images = [im for im in coco.images if scenes is None or im.scene in scenes]
    out: dict[int, Prediction] = {}
    for start in tqdm(range(0, len(images), batch_size), desc="evaluate" + (" (silent)" if silent else ""),
                      unit="batch", disable=not progress, leave=False):
        chunk = images[start:start + batch_size]
        x = torch.from_numpy(np.stack([preprocess_frame(read_frame(coco, im), image_size) for im in chunk]))
        if silent:
            w = torch.zeros((len(chunk), 16000))
        else:
            w = torch.from_numpy(np.stack([fit_clip(read_clip(coco, im)) for im in chunk]))
        o = model(x.to(device), w.to(device), dictionary)
        probs = torch.softmax(o.a_logits, dim=1).cpu().numpy()
        av = o.av_map[:, 0].cpu().numpy()
        M = o.class_maps.cpu().numpy()
        for i, im in enumerate(chunk):
            out[im.id] = Prediction(av_map=av[i], av_score=float(av[i].max()), class_maps=M[i],
                                    cluster_probs=probs[i])
    return out


def settings_from(cfg: EvalConfig) -> EvalSettings:
    return EvalSettings(
        thresholds=Thresholds(solo_tau=cfg.solo_tau, mosaic_ciou_tau=cfg.mosaic_tau, duet_ciou_tau=cfg.duet_tau,
                              nsa_threshold=cfg.nsa_threshold, softmax_scale=cfg.softmax_scale),
        sounding_threshold=cfg.sounding_threshold,
    )


def load_model(path: Path, device: torch.device) -> tuple[StageTwo, dict]:
    ck = load_checkpoint(path, "stage_two")
    if "dictionary" not in ck:
        raise CheckpointError(f"{path}: a stage-two training state, not a final model; use <run>/model.pt")
    require(ck, path, "config", "model", "classes", "cluster_to_class", "affinity", "nmi")
    try:
        cfg = from_dict(ck["config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: its configuration cannot be read ({exc})") from exc
    model = StageTwo(cfg.model)
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: the model weights do not fit its config ({exc})") from exc
    return model.to(device), ck


def evaluate(checkpoint: Path, data: Path, eval_cfg: EvalConfig | None = None, device: str = "cpu",
             progress: bool = True, overrides: dict | None = None) -> dict:
    """The table for ``checkpoint`` on ``data``: thresholds from ``eval_cfg`` (default: the run's
    own), with ``overrides`` (field -> value) on top."""
    dev = torch.device(device)
    model, ck = load_model(checkpoint, dev)
    cfg = from_dict(ck["config"])
    eval_cfg = dataclasses.replace(eval_cfg or cfg.eval, **(overrides or {}))
    check_config(dataclasses.replace(cfg, eval=eval_cfg))  # the overrides too, before the data is read
    coco = load_avcoco(data)
    if not coco.images:
        raise AVCocoError(f"{data}: the data folder has no images")
    classes = list(ck["classes"])
    class_index(coco, classes)  # data classes the model does not know: an error before the model runs
    match = ClusterMatch.from_cluster_to_class(ck["cluster_to_class"].numpy(), len(classes), ck["affinity"].numpy())
    dictionary = ck["dictionary"].to(dev)
    size = inference_size(check_config(dataclasses.replace(cfg, eval=eval_cfg)))
    preds = predict(model, dictionary, coco, size, dev, progress=progress)
    silent = predict(model, dictionary, coco, size, dev, silent=True, scenes=("solo",),
                     progress=progress) if coco.scenes("solo") else None
    table = score(coco, preds, classes, match, settings_from(eval_cfg), silent)
    table["model"]["nmi"] = float(ck["nmi"])
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path, help="a run's model.pt (or the run folder)")
    p.add_argument("--data", required=True, type=Path, help="an AV-COCO folder")
    p.add_argument("--json", type=Path, help="write the table as JSON here")
    p.add_argument("--markdown", type=Path, help="write the table as markdown here")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N")
    for f in dataclasses.fields(EvalConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type={"int": int}.get(str(f.type), float), default=None)
    args = p.parse_args(argv)
    ckpt = args.checkpoint / "model.pt" if args.checkpoint.is_dir() else args.checkpoint
    if not DEVICE.fullmatch(args.device):
        p.error(f"--device must be auto, cpu, cuda or cuda:N; got {args.device!r}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: torch sees no CUDA device here (use --device cpu)")
    try:  # the outputs are checked before the model runs, not after
        check_outputs({"--json": args.json, "--markdown": args.markdown},
                      {"--checkpoint": ckpt, "--data": args.data})
        overrides = {f: getattr(args, f) for f in EvalConfig.__dataclass_fields__ if getattr(args, f) is not None}
        table = evaluate(ckpt, args.data, device=args.device, overrides=overrides)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(write_report(table, args.json, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
