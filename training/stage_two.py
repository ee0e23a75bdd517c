"""Stage two: class-aware localization on multi-source (mosaic, optionally duet) scenes.

The student starts from a stage-one round's weights; the frozen audio teacher and the object
dictionary come from the SAME clustering round (the round id is checked: docs/method.md, 'one round
for teacher and dictionary'). Loss per docs/method.md §4.4: KL(p_a || softmax(GAP(M))) on
positives + 0.5 * 0.5 * (BCE of the positive global max, BCE of the four negative quadrant
maxima). With ``objective = "all_pairs"`` (a documented deviation) every other mosaic of the
batch, not one random one, gives a clip its negative quadrants.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from training import distributed as du
from training.banks import SceneBank, build_bank, negatives, train_transform
from training.checkpoint import CheckpointError, load_checkpoint, require, save_checkpoint, sha256_of
from training.config import ConfigError, RunConfig, check_config, to_dict
from training.metrics_log import MetricsLog
from training.model import AudioTeacher, StageTwo, global_score, quadrant_scores, stage_two_losses
from training.stage_one import place_frames, place_model


def load_round(path: Path, cfg: RunConfig) -> dict:
    """A stage-one round file: model + dictionary + pseudo-label bookkeeping of one round."""
    ck = load_checkpoint(path, "stage_one")
    for key in ("round", "dictionary", "model", "cluster_to_class", "classes", "affinity", "centroids", "nmi"):
        if key not in ck:
            raise CheckpointError(f"{path}: not a clustering-round file (no '{key}'); use rounds/round_NNN.pt")
    k = ck["dictionary"].shape[0]
    if k != cfg.model.num_clusters:
        raise CheckpointError(f"{path}: dictionary has K = {k} entries but the run uses K = {cfg.model.num_clusters}")
    return ck


def _epoch(student, teacher, dictionary, bank: SceneBank, cfg: RunConfig, epoch: int, phase: str, opt,
           d: du.Dist, device: torch.device, log: MetricsLog, progress: bool) -> dict:
    student.train()  # the DDP wrapper's mode too
    net = student.module if isinstance(student, DDP) else student
    train_mode(net, cfg)
    net.class_aware.gate = epoch >= cfg.stage_two.gate_warmup_epochs and cfg.model.gate
    gen = torch.Generator().manual_seed(cfg.seed * 31 + epoch * 7 + d.rank + (1000 if phase == "duet" else 0))
    n = len(bank)
    mine = torch.tensor(list(du.shard(n, d)))
    order = mine[torch.randperm(len(mine), generator=gen)]
    bs = cfg.stage_two.batch_size
    steps = len(order) // bs or 1
    sums: dict[str, float] = {}
    s = cfg.data.image_size

    def frames(scenes: torch.Tensor) -> torch.Tensor:  # mosaics are rendered at S: flip/colour, no crop
        return train_transform(bank.images[scenes], s, gen, cfg.data.augment, crop=False)

    bar = tqdm(range(steps), desc=f"stage2 {phase} e{epoch}", unit="step", disable=not progress)
    for step in bar:
        idx = order[step * bs:(step + 1) * bs]
        wave = bank.audio[idx].to(device)
        p_a = teacher(wave)
        if cfg.stage_two.objective == "all_pairs":
            if len(idx) < 2:
                raise ConfigError("--stage_two.objective all_pairs needs at least 2 mosaics per batch (per process)")
            losses, (pos_logits, neg_q, sounding) = all_pairs_losses(
                student, place_frames(frames(idx), cfg, device), wave, p_a, dictionary, cfg)
        else:
            neg = negatives(n, len(idx), gen, index=idx)
            images = place_frames(torch.stack([frames(idx), frames(neg)], 1).flatten(0, 1), cfg, device)
            out = student(images, wave, dictionary)  # one clip per pair
            pos_logits, neg_q = global_score(out.av_logits[0::2]), quadrant_scores(out.av_logits[1::2])
            sounding = out.sounding_objects[0::2]
            losses = stage_two_losses(pos_logits, neg_q, sounding, p_a, cfg.stage_two.loc_weight, from_logits=True)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        vals = {k: v.item() for k, v in losses.items()}
        with torch.no_grad():
            vals["acc_pos"] = (pos_logits >= 0).float().mean().item()
            vals["acc_neg"] = (neg_q < 0).float().mean().item()
            vals["match_top1"] = (sounding.argmax(1) == p_a.argmax(1)).float().mean().item()
        for k, v in vals.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{vals['total']:.3f}", kl=f"{vals['kl']:.3f}")
        if d.is_main:
            log.write(phase=f"stage2_{phase}", epoch=epoch, step=step, **vals)
    return {k: du.mean_scalar(v / steps, d, device) for k, v in sums.items()}


def trainable_parameters(student: StageTwo, cfg: RunConfig) -> list[torch.nn.Parameter]:
    """What ``stage_two.trainable`` trains; with ``class_head`` every other part is frozen."""
    if cfg.stage_two.trainable == "class_head":
        for name, p in student.named_parameters():
            p.requires_grad_(name.startswith("class_aware."))
    return [p for p in student.parameters() if p.requires_grad]


def train_mode(student: StageTwo, cfg: RunConfig) -> None:
    """``student.train()``, except that frozen stage-one parts keep their BN statistics (eval mode)."""
    student.train()
    if cfg.stage_two.trainable == "class_head":
        for part in (student.image, student.audio, student.localization):
            part.eval()


def all_pairs_losses(student, images: torch.Tensor, clips: torch.Tensor, p_a: torch.Tensor, dictionary: torch.Tensor,
                     cfg: RunConfig) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
    """Stage two's ``all_pairs`` losses of one batch of mosaics (every other mosaic of the batch gives
    a clip 4 negative quadrants) and what its accuracies read: positive logits, negative quadrant
    scores, sounding-object scores."""
    pos, pairs = student(images, clips, dictionary, all_pairs=True)
    off = ~torch.eye(len(images), dtype=torch.bool, device=images.device)
    pos_logits, neg_q = global_score(pos.av_logits), quadrant_scores(pairs[off].unsqueeze(1))
    losses = stage_two_losses(pos_logits, neg_q, pos.sounding_objects, p_a, cfg.stage_two.loc_weight, from_logits=True)
    return losses, (pos_logits, neg_q, pos.sounding_objects)


def train(cfg: RunConfig, round_path: Path, run_dir: Path, d: du.Dist, device: torch.device, log: MetricsLog,
          resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) stage two from ``round_path``; returns the final model checkpoint path."""
    check_config(cfg)
    t0 = time.time()
    rnd = load_round(round_path, cfg)
    rnd_digest = sha256_of(round_path)  # stage_two_last.pt names the round file it was trained from
    dictionary = rnd["dictionary"].to(device)
    try:
        teacher = AudioTeacher.from_stage_one(rnd["model"], cfg.model, cfg.stage_two.temperature).to(device)
        student = place_model(StageTwo.from_stage_one(rnd["model"], cfg.model), cfg, device)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{round_path}: its model does not fit this run's config ({type(exc).__name__}: "
                              f"{exc})") from exc
    params = trainable_parameters(student, cfg)
    opt = torch.optim.Adam(params, lr=cfg.stage_two.lr, weight_decay=cfg.stage_two.weight_decay)
    state_path = run_dir / "stage_two_last.pt"
    start, history = 0, []
    if resume and state_path.is_file():
        ck = load_checkpoint(state_path, "stage_two")
        require(ck, state_path, "epoch", "round", "model", "optimizer", "history")
        if ck["round"] != rnd["round"]:
            raise CheckpointError(f"{state_path}: was trained with round {ck['round']}, not {rnd['round']}")
        if ck.get("round_sha256", rnd_digest) != rnd_digest:  # stage one was trained again since
            if d.is_main:
                print(f"stage two: {round_path.name} was remade since {state_path.name}: training stage two again")
        else:
            try:
                student.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                start, history = ck["epoch"] + 1, json.loads(ck["history"])
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{state_path}: does not fit this run's model or optimiser "
                                      f"({type(exc).__name__}: {exc}); start afresh with --force") from exc
            if d.is_main:
                print(f"stage two: resuming after epoch {ck['epoch']}")
    s = cfg.data.image_size
    plan = [("mosaic", e) for e in range(cfg.stage_two.epochs)]
    plan += [("duet", cfg.stage_two.epochs + e) for e in range(cfg.stage_two.duet_epochs)]
    if cfg.stage_two.duet_epochs and cfg.data.duet_scenes <= 0:
        raise ConfigError("--stage_two.duet_epochs > 0 needs --data.duet_scenes > 0")
    banks: dict[str, SceneBank] = {}
    wrapped = DDP(student, find_unused_parameters=True) if d.enabled else student
    for phase, epoch in plan:
        if epoch < start:
            continue
        if phase not in banks:
            n = cfg.data.stage_two_scenes if phase == "mosaic" else cfg.data.duet_scenes
            banks[phase] = build_bank(phase, n, s, cfg.data.seed, "stage_two" if phase == "mosaic" else "duet",
                                      progress and d.is_main, data=cfg.data)
        stats = _epoch(wrapped, teacher, dictionary, banks[phase], cfg, epoch, phase, opt, d, device, log,
                       progress and d.is_main)
        history.append({"epoch": epoch, "data": phase, **stats})
        if d.is_main:
            log.write(phase="stage2_epoch", **history[-1])
            print(f"stage two {phase} epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()))
            save_checkpoint(state_path, "stage_two", epoch=epoch, round=rnd["round"], round_sha256=rnd_digest,
                            config=to_dict(cfg),
                            model=student.state_dict(), optimizer=opt.state_dict(), history=json.dumps(history))
        du.barrier(d)
    final = run_dir / "model.pt"
    if d.is_main:
        save_checkpoint(final, "stage_two", round=rnd["round"], config=to_dict(cfg), classes=rnd["classes"],
                        model=student.state_dict(), dictionary=rnd["dictionary"],
                        cluster_to_class=rnd["cluster_to_class"], affinity=rnd["affinity"],
                        centroids=rnd["centroids"], nmi=rnd["nmi"],
                        stage_one_model=rnd["model"])
        (run_dir / "stage_two.json").write_text(json.dumps(
            {"history": history, "round": rnd["round"], "seconds": time.time() - t0}, indent=2))
    du.barrier(d)
    return final
