"""Stage one: single-source localization with alternating pseudo-label classification.

Each epoch (docs/method.md §3.5): one localization epoch (BCE on interleaved positive/negative pairs),
validation, checkpoint; then, from epoch ``init_num`` on (``alternate``), object-feature
extraction over the training split, K-means into K pseudo-classes, the object dictionary, and
``class_epochs`` classification epochs with fresh classifiers. Each clustering round is saved as
``rounds/round_<r>.pt`` (dictionary + pseudo-labels + model) with a round id stage two checks.
Without ``alternate`` (the ablation) the location epochs run alone and one round is made at the
end from the final model, so stage two still gets a dictionary and a matching teacher.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from avsl_edge.metrics import match_clusters
from training import distributed as du
from training.banks import (SceneBank, augment, build_bank, eval_transform, negatives, outside, render_size,
                            shrink_into_mosaics, train_transform)
from training.checkpoint import CheckpointError, load_checkpoint, require, save_checkpoint
from training.config import ConfigError, RunConfig, check_config, to_dict
from training.data.classes import CLASSES
from training.metrics_log import MetricsLog
from training.model import (StageOne, contrastive_loss_all_pairs, global_score, load_imagenet_weights,
                            localization_loss_all_pairs, localization_loss_stage_one, object_features)


@dataclass
class StageOneData:
    train: SceneBank          # rendered at render_size(S) for random crops
    val: SceneBank            # rendered at S
    warmup: SceneBank | None = None  # the first data.warmup_epochs location epochs train on it (v2 curriculum)

    def location_bank(self, cfg: RunConfig, epoch: int) -> SceneBank:
        """The split a location epoch trains on."""
        return self.warmup if self.warmup is not None and epoch < cfg.data.warmup_epochs else self.train


def load_data(cfg: RunConfig, d: du.Dist, progress: bool) -> StageOneData:
    s = cfg.data.image_size
    return StageOneData(
        train=build_bank("solo", cfg.data.train_scenes, render_size(s), cfg.data.seed, "train", progress,
                         data=cfg.data),
        val=build_bank("solo", cfg.data.val_scenes, s, cfg.data.seed, "val", progress, data=cfg.data),
        warmup=build_bank("solo", cfg.data.train_scenes, render_size(s), cfg.data.seed, "warmup", progress,
                          data=cfg.data) if cfg.data.warmup_epochs else None,
    )


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """rows 2i = a[i], 2i+1 = b[i] (docs/method.md §3.2)."""
    return torch.stack([a, b], dim=1).flatten(0, 1)


def build_model(cfg: RunConfig) -> StageOne:
    model = StageOne(cfg.model)
    if cfg.visual_init == "imagenet":
        try:
            load_imagenet_weights(model.image.backbone, cfg.visual_weights or None)
        except (OSError, ValueError, RuntimeError) as exc:  # missing, unreadable, or not a resnet18 state dict
            raise ConfigError(f"--visual-weights: {exc}") from exc
    elif cfg.visual_init != "scratch":
        raise ConfigError(f"--visual_init must be 'scratch' or 'imagenet', got {cfg.visual_init!r}")
    return model


def place_model(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """``model`` (either stage's) on ``device``, its weights in NHWC memory with ``channels_last`` (convolutions then
    run in that layout whatever the input's; checkpoints load into either layout)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def place_frames(images: torch.Tensor, cfg: RunConfig, device: torch.device) -> torch.Tensor:
    """``images`` on ``device``, in NHWC memory with ``channels_last``: the first convolution then
    reads them as they are instead of reordering the batch on every call."""
    images = images.to(device)
    return images.contiguous(memory_format=torch.channels_last) if cfg.channels_last else images


def train_frames(bank: SceneBank, scenes: torch.Tensor, batch: torch.Tensor, cfg: RunConfig,
                 gen: torch.Generator, epoch: int = 0) -> torch.Tensor:
    """Location-step frames of ``scenes``: train transforms (or eval ones without ``augment``), then,
    from epoch ``mosaic_from`` on, with probability ``mosaic_prob`` each, shrunk into a 2x2 mosaic
    of scenes outside ``batch`` (every scene whose clip the step uses), so the mosaic is a positive
    for its own clip only."""
    s, augmented = cfg.data.image_size, cfg.data.augment
    frames = train_transform(bank.images[scenes], s, gen, augmented)
    p = cfg.stage_one.mosaic_prob
    if p <= 0 or epoch < cfg.stage_one.mosaic_from:
        return frames
    chosen = torch.rand(len(scenes), generator=gen) < p
    fill = outside(len(bank), batch, 3 * int(chosen.sum()), gen)
    return shrink_into_mosaics(frames, train_transform(bank.images[fill], s, gen, augmented), chosen, gen)


def location_epoch(model, opt, data: StageOneData, cfg: RunConfig, epoch: int, d: du.Dist,
                   device: torch.device, log: MetricsLog, progress: bool) -> dict:
    """One pass of pair-matching BCE over this rank's share of the training split."""
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch * 10 + d.rank)
    bank = data.location_bank(cfg, epoch)
    n = len(bank)
    mine = torch.tensor(list(du.shard(n, d)))
    order = mine[torch.randperm(len(mine), generator=gen)]
    bs = cfg.stage_one.batch_size
    steps = len(order) // bs or 1
    tot_loss = tot_acc = 0.0
    bar = tqdm(range(steps), desc=f"stage1 e{epoch} location", unit="step", disable=not progress)
    for step in bar:
        idx = order[step * bs:(step + 1) * bs]
        if cfg.stage_one.objective == "all_pairs":
            loss, acc = _all_pairs_step(model, bank, idx, cfg, gen, device, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot_loss += loss.item()
            tot_acc += acc
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
            if d.is_main:
                log.write(phase="stage1_location", epoch=epoch, step=step, loss=loss.item(), acc=acc)
            continue
        neg = negatives(n, len(idx), gen, bank.labels if cfg.data.neg_different_class else None, idx)
        pos_img = train_frames(bank, idx, idx, cfg, gen, epoch)
        neg_img = train_frames(bank, neg, idx, cfg, gen, epoch)
        images = place_frames(_interleave(pos_img, neg_img), cfg, device)
        wave = bank.audio[idx].to(device)  # one clip per pair
        labels = torch.tensor([1.0, 0.0], device=device).repeat(len(idx))
        out = model(images, wave)
        loss = localization_loss_stage_one(global_score(out.av_logits), labels, from_logits=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        acc = ((out.av_score.detach() >= 0.5).float() == labels).float().mean().item()
        tot_loss += loss.item()
        tot_acc += acc
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
        if d.is_main:
            log.write(phase="stage1_location", epoch=epoch, step=step, loss=loss.item(), acc=acc)
    return {"loss": du.mean_scalar(tot_loss / steps, d, device), "acc": du.mean_scalar(tot_acc / steps, d, device)}


def _all_pairs_step(model, bank: SceneBank, idx: torch.Tensor, cfg: RunConfig, gen: torch.Generator,
                    device: torch.device, epoch: int) -> tuple[torch.Tensor, float]:
    """The ``all_pairs`` objective: B scenes, every clip scored against every image (global max of
    its av logits); a clip's own image is its positive, the B-1 others its negatives; with
    ``nce_weight`` > 0 plus that times the symmetric InfoNCE of the same logits. Returns the loss
    and the balanced accuracy (mean of positive and negative accuracy)."""
    images = train_frames(bank, idx, idx, cfg, gen, epoch)
    loss, logits = all_pairs_loss(model, place_frames(images, cfg, device), bank.audio[idx].to(device), cfg)
    positive = torch.eye(len(idx), dtype=torch.bool, device=device)
    hit = ((logits.detach() >= 0) == positive).float()
    return loss, 0.5 * (hit[positive].mean().item() + hit[~positive].mean().item())


def all_pairs_loss(model, images: torch.Tensor, clips: torch.Tensor, cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``all_pairs`` loss of one batch (clip i's positive is image i) and its (A, I) pair logits."""
    logits = model(images, clips, all_pairs=True).amax(dim=(2, 3))
    loss = localization_loss_all_pairs(logits, torch.eye(len(images), dtype=torch.bool, device=logits.device))
    if cfg.stage_one.nce_weight > 0:
        loss = loss + cfg.stage_one.nce_weight * contrastive_loss_all_pairs(logits)
    return loss, logits


def classification_loss(out, pseudo: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of both class layers against the pseudo-labels (docs/method.md §3.4)."""
    return F.cross_entropy(out.v_logits, pseudo) + F.cross_entropy(out.a_logits, pseudo)


@torch.no_grad()
def validate(model, data: StageOneData, cfg: RunConfig, device: torch.device) -> float:
    """Pair-matching accuracy on the validation split with eval transforms and fixed negatives."""
    model.eval()
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    n = len(data.val)
    neg = negatives(n, n, gen)
    correct = 0
    for start in range(0, n, 64):
        idx = torch.arange(start, min(n, start + 64))
        images = _interleave(eval_transform(data.val.images[idx], cfg.data.image_size),
                             eval_transform(data.val.images[neg[idx]], cfg.data.image_size))
        images = place_frames(images, cfg, device)
        wave = data.val.audio[idx].to(device)  # one clip per pair
        labels = torch.tensor([1.0, 0.0], device=device).repeat(len(idx))
        score = _unwrap(model)(images, wave).av_score
        correct += ((score >= 0.5).float() == labels).sum().item()
    return correct / (2 * n)


@torch.no_grad()
def extract_features(model, bank: SceneBank, cfg: RunConfig, d: du.Dist, device: torch.device,
                     progress: bool) -> torch.Tensor:
    """Masked object features (docs/method.md §3.3) of every scene of ``bank``, gathered on all ranks.
    Eval transforms (docs/method.md, 'eval transforms for clustering') unless
    ``eval_transforms_for_features`` is off."""
    net = _unwrap(model)
    net.eval()
    mine = list(du.shard(len(bank), d))
    gen = torch.Generator().manual_seed(cfg.seed + 11)
    feats = []
    for start in tqdm(range(0, len(mine), 64), desc="features", unit="batch", disable=not progress, leave=False):
        idx = torch.tensor(mine[start:start + 64])
        if cfg.stage_one.eval_transforms_for_features:
            images = eval_transform(bank.images[idx], cfg.data.image_size)
        else:
            images = augment(bank.images[idx], cfg.data.image_size, gen)
        out = net(place_frames(images, cfg, device), bank.audio[idx].to(device))
        feats.append(object_features(out.v_fea, out.av_map, cfg.stage_one.mask_threshold,
                                     cfg.stage_one.mask_relative).cpu())
    local = torch.cat(feats) if feats else torch.zeros((0, 512))
    return du.all_gather_rows(local.to(device), len(bank), d).cpu()


def cluster(features: torch.Tensor, cfg: RunConfig, round_id: int) -> dict:
    """K-means on L2-normalised features (lloyd, k-means++, seeded: docs/method.md §6.1), the dictionary of raw
    per-cluster means, and NMI against the ground truth where it is known."""
    k = cfg.model.num_clusters
    x = F.normalize(features.double(), dim=1).numpy()
    km = KMeans(n_clusters=k, algorithm="lloyd", init="k-means++", n_init=cfg.stage_one.kmeans_n_init,
                max_iter=cfg.stage_one.kmeans_max_iter, random_state=cfg.seed + round_id).fit(x)
    pseudo = km.labels_.astype(np.int64)
    dictionary = torch.zeros((k, features.shape[1]), dtype=torch.float32)
    for c in range(k):
        members = features[torch.from_numpy(pseudo == c)]
        if len(members):
            dictionary[c] = members.mean(0)
    return {"pseudo": torch.from_numpy(pseudo), "centroids": torch.from_numpy(km.cluster_centers_).float(),
            "dictionary": dictionary}


def classification_phase(model, opt_main, data: StageOneData, pseudo: torch.Tensor, cfg: RunConfig,
                         round_id: int, d: du.Dist, device: torch.device, log: MetricsLog,
                         progress: bool) -> dict:
    """Fresh classifiers (N(0, 0.01)) trained on the pseudo-labels with their own Adam (1e-3);
    every step also steps the main Adam, so the backbones are fine-tuned too (docs/method.md §3.4).
    Gradients are set to None, so the localization head is untouched here (docs/method.md, 'untouched
    head in classification phases')."""
    net = _unwrap(model)
    net.reset_classifiers()  # in place: DDP and the main optimiser keep their references
    du.broadcast_parameters(net.classifier_parameters(), d)
    opt_cls = torch.optim.Adam(net.classifier_parameters(), lr=cfg.stage_one.class_lr,
                               weight_decay=cfg.stage_one.weight_decay)
    model.train()
    n = len(data.train)
    mine = torch.tensor(list(du.shard(n, d)))
    bs = cfg.stage_one.batch_size
    best, stale, stats = -1.0, 0, {}
    for ce in range(cfg.stage_one.class_epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + round_id * 101 + ce * 13 + d.rank)
        order = mine[torch.randperm(len(mine), generator=gen)]
        steps = len(order) // bs or 1
        acc_v = acc_a = tot = 0.0
        bar = tqdm(range(steps), desc=f"stage1 r{round_id} classify {ce + 1}/{cfg.stage_one.class_epochs}",
                   unit="step", disable=not progress)
        for step in bar:
            idx = order[step * bs:(step + 1) * bs]
            images = train_transform(data.train.images[idx], cfg.data.image_size, gen, cfg.data.augment)
            y = pseudo[idx].to(device)
            out = model(place_frames(images, cfg, device), data.train.audio[idx].to(device))
            loss = classification_loss(out, y)
            opt_cls.zero_grad(set_to_none=True)
            opt_main.zero_grad(set_to_none=True)
            loss.backward()
            opt_cls.step()
            opt_main.step()
            av = (out.v_logits.argmax(1) == y).float().mean().item()
            aa = (out.a_logits.argmax(1) == y).float().mean().item()
            acc_v, acc_a, tot = acc_v + av, acc_a + aa, tot + loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}", v=f"{av:.2f}", a=f"{aa:.2f}")
            if d.is_main:
                log.write(phase="stage1_classify", round=round_id, epoch=ce, step=step, loss=loss.item(),
                          acc_visual=av, acc_audio=aa)
        stats = {"loss": tot / steps, "acc_visual": acc_v / steps, "acc_audio": acc_a / steps}
        if cfg.stage_one.class_plateau_stop:
            score = stats["acc_visual"] + stats["acc_audio"]
            stale = stale + 1 if score <= best + 1e-3 else 0
            best = max(best, score)
            if stale >= 1:
                break
    return {k: du.mean_scalar(v, d, device) for k, v in stats.items()}


def _unwrap(model):
    return model.module if isinstance(model, DDP) else model


def make_round(model, opt_main, data, cfg, round_id, epoch, run_dir, d, device, log, progress) -> dict:
    """Features -> K-means -> dictionary -> classification phase -> round file (docs/method.md §3.3-3.4).
    The dictionary is computed before the classification phase, the paired checkpoint after it
    (faithful to the original: docs/method.md, 'dictionary before the classification phase')."""
    feats = extract_features(model, data.train, cfg, d, device, progress)
    result = du.broadcast(cluster(feats, cfg, round_id) if d.is_main else None, d)
    gt = data.train.labels.numpy()
    pseudo = result["pseudo"].numpy()
    nmi = float(normalized_mutual_info_score(gt, pseudo, average_method="arithmetic"))
    match = match_clusters(pseudo_labels=pseudo, gt_labels=gt, n_clusters=cfg.model.num_clusters, n_classes=len(CLASSES))
    cls = classification_phase(model, opt_main, data, result["pseudo"], cfg, round_id, d, device, log, progress)
    stats = {"round": round_id, "epoch": epoch, "nmi": nmi, **{f"class_{k}": v for k, v in cls.items()}}
    if d.is_main:
        log.write(phase="stage1_round", **stats)
        save_checkpoint(
            round_file(run_dir, round_id), "stage_one",
            round=round_id, epoch=epoch, config=to_dict(cfg), classes=list(CLASSES),
            model=_unwrap(model).state_dict(), dictionary=result["dictionary"],
            centroids=result["centroids"], pseudo_labels=result["pseudo"],
            gt_labels=data.train.labels, cluster_to_class=torch.from_numpy(np.array(match.cluster_to_class)),
            affinity=torch.from_numpy(np.array(match.affinity, dtype=np.float64)),
            nmi=nmi,
        )
    du.barrier(d)
    return stats


def lr_scheduler(opt: torch.optim.Optimizer, cfg: RunConfig):
    """With ``lr_schedule cosine``: the main Adam's learning rate follows a half cosine, stepped once
    per stage-one epoch (location and classification steps alike), from ``lr`` at epoch 0 to
    ``lr_min_ratio x lr`` at the last epoch. ``None`` for ``constant`` (the original's fixed lr)."""
    s = cfg.stage_one
    if s.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(s.epochs - 1, 1), eta_min=s.lr * s.lr_min_ratio)


def train(cfg: RunConfig, run_dir: Path, d: du.Dist, device: torch.device, log: MetricsLog,
          resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) stage one; returns the path of the round file stage two should use."""
    check_config(cfg)
    t0 = time.time()
    data = load_data(cfg, d, progress and d.is_main)
    model = place_model(build_model(cfg), cfg, device)
    opt = torch.optim.Adam(model.main_parameters(), lr=cfg.stage_one.lr, weight_decay=cfg.stage_one.weight_decay)
    sched = lr_scheduler(opt, cfg)  # before the optimiser's state is loaded: it would take the resumed lr as its base
    state_path = run_dir / "stage_one_last.pt"
    start, round_id, history = 0, 0, []
    if resume and state_path.is_file():
        ck = load_checkpoint(state_path, "stage_one")
        require(ck, state_path, "epoch", "next_round", "model", "optimizer", "history")
        if sched is not None and not ck.get("scheduler"):
            raise CheckpointError(f"{state_path}: stage one ran with a constant learning rate; resume it with "
                                  f"--stage_one.lr_schedule constant, or start afresh with --force")
        gone = [p.name for p in (round_file(run_dir, r) for r in range(ck["next_round"])) if not p.is_file()]
        if gone:  # a round cannot be remade from the last epoch's state: stage one starts over
            if d.is_main:
                print(f"stage one: {', '.join(gone)} gone from {run_dir / 'rounds'}: training stage one again")
        else:
            try:
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                if sched is not None:
                    sched.load_state_dict(ck["scheduler"])
                start, round_id, history = ck["epoch"] + 1, ck["next_round"], json.loads(ck["history"])
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{state_path}: does not fit this run's model or optimiser "
                                      f"({type(exc).__name__}: {exc}); start afresh with --force") from exc
            if d.is_main:
                print(f"stage one: resuming after epoch {ck['epoch']} (next round {round_id})")
    wrapped = DDP(model, find_unused_parameters=True) if d.enabled else model
    for epoch in range(start, cfg.stage_one.epochs):
        if cfg.stage_one.lr_after_warmup and epoch >= cfg.data.warmup_epochs:
            for group in opt.param_groups:
                group["lr"] = cfg.stage_one.lr_after_warmup
        stats = location_epoch(wrapped, opt, data, cfg, epoch, d, device, log, progress and d.is_main)
        stats["val_acc"] = validate(model, data, cfg, device)
        stats["w"] = model.localization.fusion.weight.item()  # the fusion scalar: how far Adam moved it
        stats["lr"] = opt.param_groups[0]["lr"]  # this epoch's (the classification phase below uses it too)
        if cfg.stage_one.alternate and epoch >= cfg.stage_one.init_num:
            stats.update(make_round(wrapped, opt, data, cfg, round_id, epoch, run_dir, d, device, log,
                                    progress and d.is_main))
            round_id += 1
        history.append({"epoch": epoch, **stats})
        if sched is not None:
            sched.step()
        if d.is_main:
            log.write(phase="stage1_epoch", **history[-1])
            print(f"stage one epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in stats.items()
                                                          if isinstance(v, float)))
            save_checkpoint(state_path, "stage_one", epoch=epoch, next_round=round_id, config=to_dict(cfg),
                            model=model.state_dict(), optimizer=opt.state_dict(), history=json.dumps(history),
                            scheduler=sched.state_dict() if sched is not None else {})
        du.barrier(d)
    if round_id == 0:  # no alternation (or too few epochs): one round from the final model
        stats = make_round(wrapped, opt, data, cfg, round_id, cfg.stage_one.epochs - 1, run_dir, d, device,
                           log, progress and d.is_main)
        history.append({"epoch": cfg.stage_one.epochs - 1, **stats})
        round_id += 1
    if d.is_main:
        (run_dir / "stage_one.json").write_text(json.dumps(
            {"history": history, "rounds": round_id, "seconds": time.time() - t0}, indent=2))
    chosen = cfg.stage_two.round if cfg.stage_two.round >= 0 else round_id - 1
    return round_file(run_dir, chosen)


def round_file(run_dir: Path, round_id: int) -> Path:
    return run_dir / "rounds" / f"round_{round_id:03d}.pt"
