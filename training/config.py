"""Run configuration: plain dataclasses, three presets, every field overridable from the CLI.

    cfg = preset("cpu")
    cfg = apply_overrides(cfg, {"stage_one.epochs": "4", "data.image_size": "96"})

Defaults are the method's (docs/method.md §9; the § numbers below are its sections) wherever it gives
one; deviations are documented fields (docs/method.md §6).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avsl_edge.errors import UserError
from avsl_edge.fileio import atomic_path
from training.data.classes import CLASSES
from training.model import ModelConfig


class ConfigError(UserError, ValueError):
    """A configuration (file or option) that cannot be used; the message names the option or file."""


@dataclass
class DataConfig:
    image_size: int = 224          # square model input; train frames are rendered at size*256/224, then cropped
    train_scenes: int = 4000       # stage-one solo training split (fixed, the "videos")
    val_scenes: int = 400          # stage-one validation pairs
    stage_two_scenes: int = 4000   # mosaic training scenes (Music-Synthetic protocol)
    duet_scenes: int = 0           # duet scenes for the optional stage-two duet fine-tuning
    test_per_kind: int = 200       # fixed test split written to disk (AV-COCO), per scene kind
    test_kinds: tuple[str, ...] = ("solo", "solo_distractor", "duet", "mosaic", "offscreen")
    augment: bool = True           # flip + brightness/saturation U[0.7,1.3] + resize/random-crop (docs/method.md §1.2)
    neg_different_class: bool = False  # negatives of another class (default: any other scene; docs/method.md §6.1)
    pack: str = "v1"               # SynthMUSIC asset pack: v1 (the published figures) or v2 (many art and sound sources)
    hold_out_pictures: str | None = None  # v2: a picture source training never sees; val and test show it alone
    hold_out_sounds: str | None = None    # v2: the same for a sound source
    easy_share: float = 0.0        # v2: this fraction of the stage-one training scenes drawn gentle (v1's scales,
                                   # clean frames and sound on v2's sources): a curriculum (deviation)
    warmup_epochs: int = 0         # v2: the first N stage-one location epochs on a warm-up split of gentle scenes
                                   # with one picture and one sound source per class: a curriculum (deviation)
    seed: int = 0


@dataclass
class StageOneConfig:
    epochs: int = 15
    batch_size: int = 32           # pairs (2x images per localization step)
    lr: float = 1e-4
    weight_decay: float = 1e-4     # coupled L2 (Adam), as the original
    lr_schedule: str = "constant"  # constant: as the original; cosine: the main Adam's lr follows a cosine
                                   # over the epochs, from lr at epoch 0 to lr_min_ratio x lr at the last (deviation)
    lr_min_ratio: float = 0.05
    lr_after_warmup: float = 0.0   # > 0: the main Adam's lr from epoch data.warmup_epochs on (0 = lr throughout;
                                   # v2: at 1e-3 the switch to the training split collapses the nets; deviation)
    alternate: bool = True         # False = the "w/o alternating optimisation" ablation
    init_num: int = 1              # clustering + classification after location epoch e >= init_num
    class_epochs: int = 3          # fixed, as the code (docs/method.md, 'fixed classification epochs')
    class_lr: float = 1e-3
    class_plateau_stop: bool = False  # opt-in: stop a classification phase at saturation (docs/method.md §6.1)
    objective: str = "pairs"       # pairs: §3.2 (one negative per clip); all_pairs: every clip vs every image of the batch
    nce_weight: float = 0.0        # all_pairs only, > 0: + this x a symmetric InfoNCE over the same pair logits (deviation)
    mosaic_prob: float = 0.0       # > 0: a location frame is shrunk into a 2x2 mosaic of other scenes with this
                                   # probability (deviation: scale augmentation for the mosaic tiles; 0 = §3.2)
    mosaic_from: int = 0           # first location epoch with mosaics (a scratch net learns solo frames first)
    mask_threshold: float = 0.05
    mask_relative: float = 0.0     # > 0: object mask = av_map > this x the map's max (deviation; 0 = absolute, §3.3)
    kmeans_n_init: int = 10
    kmeans_max_iter: int = 300
    eval_transforms_for_features: bool = True  # deterministic frames/transforms for clustering (docs/method.md §6.1)


@dataclass
class StageTwoConfig:
    epochs: int = 5                # synthetic (mosaic) epochs
    duet_epochs: int = 0           # optional duet fine-tuning epochs (paper: 1)
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    loc_weight: float = 0.5        # total = KL + loc_weight * 0.5 * (BCE_pos + BCE_neg)
    trainable: str = "all"         # all: §4.4 (every student parameter); class_head: only obj_conv, the
                                   # stage-one backbones and av_map stay as they are (deviation)
    objective: str = "pairs"       # pairs: §4.4 (a random other mosaic's quadrants are the negatives);
                                   # all_pairs: every other mosaic of the batch is a clip's negative
    temperature: float = 1.0       # teacher softmax temperature
    gate_warmup_epochs: int = 0    # epochs without av gating first (code comment's suggestion; default 0)
    round: int = -1                # stage-one clustering round used for teacher + dictionary (-1 = last)


@dataclass
class EvalConfig:
    image_size: int = 0              # model input at evaluation, in the report's figure and in the exported
                                     # bundle; 0 = data.image_size (as the original). Larger than the training
                                     # size is a documented deviation (test-time resolution, see inference_size)
    solo_tau: float = 0.1
    mosaic_tau: float = 0.5
    duet_tau: float = 0.2
    nsa_threshold: float = 0.2
    softmax_scale: float = 3.0
    sounding_threshold: float = 0.5  # av_score >= this: "something in view is sounding"
    figure_examples: int = 8


@dataclass
class RunConfig:
    preset: str = "cpu"
    out: str = "runs/latest"
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    threads: int = 0               # torch intra-op threads (0 = torch default)
    workers: int = 0               # DataLoader workers
    channels_last: bool = True     # nets and frames of both stages in NHWC memory (oneDNN's fast conv layout;
                                   # same maths, float sums in another order): benchmarks/training_speed.py
    visual_init: str = "scratch"   # scratch | imagenet (from a LOCAL torchvision resnet18 state dict)
    visual_weights: str = ""
    export: bool = True            # ONNX bundle at the end (when the export package is present)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage_one: StageOneConfig = field(default_factory=StageOneConfig)
    stage_two: StageTwoConfig = field(default_factory=StageTwoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


_CHOICES = {"stage_one.objective": ("pairs", "all_pairs"), "stage_two.objective": ("pairs", "all_pairs"),
            "stage_two.trainable": ("all", "class_head"),
            "stage_one.lr_schedule": ("constant", "cosine")}


def inference_size(cfg: RunConfig) -> int:
    """The square model input used after training: ``eval.image_size``, or ``data.image_size`` when 0.

    The nets are fully convolutional, so a model trained on small random crops can run on larger
    frames: its object features and maps stay, on a finer grid, and the instruments of a 2x2 mosaic
    get closer to the size the solo-trained localizer saw (Touvron et al. 2019, "Fixing the
    train-test resolution discrepancy", for the classification case). The ``cpu`` preset's value
    was chosen on a held-out validation split, never on the test split (docs/experiments.md, "Evaluation at 144 px")."""
    return cfg.eval.image_size or cfg.data.image_size


def check_config(cfg: RunConfig) -> RunConfig:
    """Raise ValueError naming the option when a choice field holds something else, or when K
    leaves a class without a cluster."""
    for key, allowed in _CHOICES.items():
        section, leaf = key.split(".")
        value = getattr(getattr(cfg, section), leaf)
        if value not in allowed:
            raise ConfigError(f"--{key} must be one of {', '.join(allowed)}; got {value!r}")
    if not 0.0 <= cfg.stage_one.mask_relative < 1.0:
        raise ConfigError(f"--stage_one.mask_relative must be in [0, 1); got {cfg.stage_one.mask_relative}")
    if not 0.0 <= cfg.stage_one.lr_min_ratio <= 1.0:
        raise ConfigError(f"--stage_one.lr_min_ratio must be in [0, 1]; got {cfg.stage_one.lr_min_ratio}")
    if not (math.isfinite(cfg.stage_one.nce_weight) and cfg.stage_one.nce_weight >= 0):
        raise ConfigError(f"--stage_one.nce_weight must be a number >= 0; got {cfg.stage_one.nce_weight}")
    if cfg.stage_one.nce_weight > 0 and cfg.stage_one.objective != "all_pairs":
        raise ConfigError("--stage_one.nce_weight needs --stage_one.objective all_pairs (it scores the same "
                         f"clip-image pairs); got objective {cfg.stage_one.objective!r}")
    if not 0.0 <= cfg.stage_one.mosaic_prob <= 1.0:
        raise ConfigError(f"--stage_one.mosaic_prob must be in [0, 1]; got {cfg.stage_one.mosaic_prob}")
    if not (math.isfinite(cfg.model.obj_affine_scale) and cfg.model.obj_affine_scale > 0):
        raise ConfigError(f"--model.obj_affine_scale must be a positive number; got {cfg.model.obj_affine_scale}")
    if cfg.eval.image_size < 0 or 0 < cfg.eval.image_size < 32:
        raise ConfigError(f"--eval.image_size must be 0 (= --data.image_size) or at least 32; got {cfg.eval.image_size}")
    for name in ("solo_tau", "mosaic_tau", "duet_tau", "nsa_threshold", "sounding_threshold"):
        value = getattr(cfg.eval, name)
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:  # NaN fails too
            raise ConfigError(f"--eval.{name} must be a number in [0, 1]; got {value!r}")
    if not (isinstance(cfg.eval.softmax_scale, (int, float)) and 0 < cfg.eval.softmax_scale < math.inf):
        raise ConfigError(f"--eval.softmax_scale must be a positive number; got {cfg.eval.softmax_scale!r}")
    if cfg.data.pack not in ("v1", "v2"):
        raise ConfigError(f"--data.pack must be v1 or v2; got {cfg.data.pack!r}")
    if cfg.stage_one.lr_after_warmup and not cfg.data.warmup_epochs:
        raise ConfigError("--stage_one.lr_after_warmup needs --data.warmup_epochs > 0")
    if cfg.stage_one.lr_after_warmup and cfg.stage_one.lr_schedule != "constant":
        raise ConfigError("--stage_one.lr_after_warmup sets the lr itself; use it with --stage_one.lr_schedule constant")
    if not 0.0 <= cfg.data.easy_share <= 1.0:  # NaN fails too
        raise ConfigError(f"--data.easy_share must be in [0, 1]; got {cfg.data.easy_share}")
    if cfg.data.pack == "v1" and cfg.data.warmup_epochs > 0:
        raise ConfigError("--data.warmup_epochs needs --data.pack v2 (v1 has one source per class already)")
    if 0 < cfg.data.warmup_epochs >= cfg.stage_one.epochs:
        raise ConfigError(f"--data.warmup_epochs {cfg.data.warmup_epochs} leaves no stage-one epoch on the training "
                          f"split (--stage_one.epochs {cfg.stage_one.epochs})")
    if cfg.data.pack == "v1" and cfg.data.easy_share > 0:
        raise ConfigError("--data.easy_share needs --data.pack v2 (v1 scenes are the gentle ones already)")
    if cfg.data.pack == "v1" and (cfg.data.hold_out_pictures or cfg.data.hold_out_sounds):
        raise ConfigError("--data.hold_out_pictures/--data.hold_out_sounds need --data.pack v2")
    if cfg.model.num_clusters < len(CLASSES):
        raise ConfigError(f"--model.num_clusters {cfg.model.num_clusters} is smaller than the {len(CLASSES)} classes; "
                         f"every class needs at least one cluster")
    _check_counts(cfg)
    return cfg


DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check_counts(cfg: RunConfig) -> None:
    """Sizes, rates and names a run cannot go on with (they would fail deep inside training)."""
    at_least = {"data.image_size": 32, "data.train_scenes": 1, "data.val_scenes": 1, "data.stage_two_scenes": 1,
                "data.test_per_kind": 1, "data.duet_scenes": 0, "data.seed": 0, "seed": 0, "threads": 0,
                "workers": 0, "stage_one.epochs": 1, "data.warmup_epochs": 0, "stage_one.batch_size": 1,
                "stage_one.init_num": 0,
                "stage_one.class_epochs": 0, "stage_one.kmeans_n_init": 1, "stage_one.kmeans_max_iter": 1,
                "stage_one.mosaic_from": 0, "stage_two.epochs": 0, "stage_two.duet_epochs": 0,
                "stage_two.batch_size": 1, "stage_two.gate_warmup_epochs": 0, "stage_two.round": -1,
                "eval.figure_examples": 0}
    if cfg.stage_one.objective == "all_pairs":  # every other image of the batch is a clip's negative
        at_least.update({"stage_one.batch_size": 2, "data.train_scenes": 2})
    if cfg.stage_two.objective == "all_pairs":
        at_least.update({"stage_two.batch_size": 2, "data.stage_two_scenes": 2})
    for key, low in at_least.items():
        value = _get(cfg, key)
        if value < low:
            raise ConfigError(f"--{key} must be at least {low}; got {value}")
    for key in ("stage_one.lr", "stage_one.class_lr", "stage_one.lr_after_warmup", "stage_one.weight_decay",
                "stage_one.mask_threshold", "stage_two.lr", "stage_two.weight_decay", "stage_two.loc_weight", "stage_two.temperature"):
        value, positive = _get(cfg, key), key.endswith("temperature")
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise ConfigError(f"--{key} must be a finite number {'>' if positive else '>='} 0; got {value}")
    if cfg.model.num_clusters > cfg.data.train_scenes:
        raise ConfigError(f"--model.num_clusters {cfg.model.num_clusters} is more than the "
                          f"{cfg.data.train_scenes} training scenes (--data.train_scenes) K-means can split")
    if cfg.stage_two.duet_epochs and cfg.data.duet_scenes <= 0:
        raise ConfigError("--stage_two.duet_epochs > 0 needs --data.duet_scenes > 0")
    s1 = cfg.stage_one
    rounds = max(s1.epochs - s1.init_num, 0) if s1.alternate else 0
    if cfg.stage_two.round >= max(rounds, 1):
        raise ConfigError(f"--stage_two.round {cfg.stage_two.round}: stage one makes rounds 0-{max(rounds, 1) - 1} "
                          f"only (-1 = the last)")
    from training.data.synth import KINDS  # the kinds a test split can hold (imported late: synth is large)

    bad = [k for k in cfg.data.test_kinds if k not in KINDS] or ([] if cfg.data.test_kinds else ["(none)"])
    if bad:
        raise ConfigError(f"--data.test_kinds: unknown scene kind(s) {', '.join(bad)}; choose from {', '.join(KINDS)}")
    if not DEVICE.fullmatch(cfg.device):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N; got {cfg.device!r}")


def _get(cfg: RunConfig, key: str) -> Any:
    owner = cfg
    for part in key.split("."):
        owner = getattr(owner, part)
    return owner


def preset(name: str) -> RunConfig:
    """``paper``: 224 px, the method's defaults (for a GPU). ``cpu``: 26 minutes on 2 cores of an
    AVX-512 Xeon, 44-47 on 2 EPYC cores before ``channels_last`` (docs/experiments.md, "Results of the
    `cpu` preset", "Training throughput").
    ``smoke``: everything end to end in a couple of minutes (CI)."""
    if name == "paper":
        return RunConfig(preset="paper", out="runs/paper")
    if name == "cpu":
        # From scratch on 2 cores: 96 px frames (6x6 maps), a higher learning rate, the all_pairs
        # objective (with the original one negative per clip, a scratch net stays at chance for
        # hundreds of steps and then lights a fixed corner), a relative object mask, and
        # clustering only in the last five epochs (init_num 11 of 16: eleven location epochs first; with
        # 10 epochs and init_num 5, solo IoU@0.5 15.0 and NMI 0.641 -> 31.5 and 0.737), and a fusion
        # weight that starts at 10, not 5: w barely moves in ~670 Adam steps, and sigmoid(5 cos)
        # leaves the background above 0.1 x the peak (the solo IoU threshold), lighting ~95 % of
        # the frame (solo IoU@0.5 1.7 -> 15 at the first clustering round, same steps). Stage two
        # trains obj_conv alone: training everything on mosaics (lr 3e-4 or 1e-4) moved the
        # solo-frame av_map peak off the instrument (inside its box on 85 % -> 1-25 % of frames).
        # Evaluation and export run the 96 px-trained nets on 144 px frames (9x9 maps), chosen on a
        # held-out validation split: 96 / 128 / 144 / 160 / 192 px gave mosaic CIoU@0.3 4.0 / 7.5 /
        # 10.0 / 9.5 / 11.5 and solo IoU@0.5 28.0 / 30.0 / 31.0 / 31.0 / 25.0 (docs/experiments.md).
        # The class head compares cosines, not raw dot products, with a starting at 20: a key's norm
        # grows with its cluster's mask area (docs/method.md), and with raw dot products a map cell inside an
        # object's box on the test mosaics picked that object's cluster 30 % of the time (cosine:
        # 38 %). Stage two moves a by < 1 in its 64 steps, so the start sets how sharp P is; on the
        # validation split a = 5 / 10 / 20 / 40 / 80 gave mosaic CIoU@0.3 11.5 / 16.5 / 20.0 / 20.0 /
        # 20.0 and NSA 99.4 / 98.9 / 98.0 / 96.8 / 95.3 (raw dot products: 10.0 and 92.7); 20 is the
        # best CIoU at the highest NSA. The all_pairs BCE gets half a symmetric InfoNCE on the same
        # logits (nce_weight 0.5): over 4 location epochs of this preset (validation split, 144 px),
        # the map's peak fell inside the instrument's box on 17 / 20.5 / 30.5 / 44 % of solo frames
        # after epochs 0-3 against 2.5 / 1.5 / 2 / 17.5 % with the BCE alone, which stays at chance
        # for ~80 steps. The full preset then met every paper figure on the test split (docs/experiments.md).
        return RunConfig(
            preset="cpu", out="runs/cpu", model=ModelConfig(fusion_init=10.0, similarity="cosine",
                                                            obj_affine_scale=20.0),
            data=DataConfig(image_size=96, train_scenes=2048, val_scenes=192, stage_two_scenes=1024,
                            test_per_kind=200),
            stage_one=StageOneConfig(epochs=16, batch_size=48, lr=1e-3, init_num=11, class_epochs=1,
                                     kmeans_n_init=4, objective="all_pairs", nce_weight=0.5, mask_relative=0.5),
            stage_two=StageTwoConfig(epochs=2, batch_size=32, lr=1e-2, objective="all_pairs",
                                     trainable="class_head"),
            eval=EvalConfig(image_size=144),
        )
    if name == "smoke":
        return RunConfig(
            preset="smoke", out="runs/smoke",
            data=DataConfig(image_size=64, train_scenes=96, val_scenes=32, stage_two_scenes=64,
                            test_per_kind=12),
            stage_one=StageOneConfig(epochs=2, batch_size=16, lr=3e-4, class_epochs=1, kmeans_n_init=2,
                                     objective="all_pairs", mask_relative=0.5),
            stage_two=StageTwoConfig(epochs=1, batch_size=16, lr=3e-4, objective="all_pairs"),
            eval=EvalConfig(figure_examples=4),
        )
    raise ConfigError(f"unknown preset {name!r}; choose one of: smoke, cpu, paper")


# ---------------------------------------------------------------------------------------------
# overrides: every leaf field is a "--section.field VALUE" option


def _leaves(obj: Any, prefix: str = ""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, name + ".")
        else:
            yield name, f, value


def _field_type(obj: Any, name: str) -> Any:
    return typing.get_type_hints(type(obj))[name]


def _parse(text: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--{key}: expected true/false, got {text!r}")
    if origin is tuple:
        return tuple(s for s in (p.strip() for p in text.split(",")) if s)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if text == str(choice):
                return choice
        raise ConfigError(f"--{key}: expected one of {', '.join(map(str, choices))}; got {text!r}")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return _parse(text, args[0], key)
    try:
        return tp(text)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--{key}: cannot read {text!r} as {getattr(tp, '__name__', tp)}") from exc


def apply_overrides(cfg: RunConfig, overrides: dict[str, str]) -> RunConfig:
    """Return ``cfg`` with dotted-name overrides (strings, parsed by the field's type) applied."""
    cfg = from_dict(to_dict(cfg))
    known = {name for name, _, _ in _leaves(cfg)}
    for key, text in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown option --{key}")
        *path, leaf = key.split(".")
        owner = cfg
        for p in path:
            owner = getattr(owner, p)
        setattr(owner, leaf, _parse(text, _field_type(owner, leaf), key))
    return cfg


def add_override_arguments(parser: argparse.ArgumentParser, cfg: RunConfig | None = None,
                           skip: tuple[str, ...] = ("preset", "out", "device")) -> None:
    """One ``--section.field`` option per leaf of :class:`RunConfig` (default: keep the preset's);
    ``skip`` names fields the caller offers as options of its own."""
    cfg = cfg or RunConfig()
    group = parser.add_argument_group("configuration (override any preset value)")
    for name, _f, value in _leaves(cfg):
        if name in skip:
            continue
        group.add_argument(f"--{name}", dest=f"set:{name}", default=None, metavar="V",
                           help=f"(default for the chosen preset; {type(value).__name__})")


def collect_overrides(args: argparse.Namespace) -> dict[str, str]:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("set:") and v is not None}


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _check_value(key: str, tp: Any, v: Any) -> Any:
    """``v`` as JSON gives it, checked against the field type (ints are fine for floats)."""
    if tp is bool or tp is str:
        ok = isinstance(v, tp)
    elif tp is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif tp is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        v = float(v) if ok else v
    elif typing.get_origin(tp) is tuple:
        ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
        v = tuple(v) if ok else v
    elif typing.get_origin(tp) is typing.Literal:
        ok = v in typing.get_args(tp)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"config: {key} is {v!r}; expected {getattr(tp, '__name__', tp)}")
    return v


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of :func:`to_dict` (tuples restored; unknown keys and values of the wrong type are a
    ConfigError; missing keys keep their defaults)."""

    def build(cls, values, prefix):
        if not isinstance(values, dict):
            raise ConfigError(f"config: {prefix.rstrip('.') or 'the configuration'} is {type(values).__name__}, "
                              f"not a table")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for k, v in values.items():
            if k not in names:
                raise ConfigError(f"config: unknown key {cls.__name__}.{k}")
            tp = hints[k]
            if dataclasses.is_dataclass(tp):
                kwargs[k] = build(tp, v, f"{prefix}{k}.")
            else:
                kwargs[k] = _check_value(f"{prefix}{k}", tp, v)
        return cls(**kwargs)

    return build(RunConfig, d, "")


def save_config(cfg: RunConfig, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load_config(path: Path) -> RunConfig:
    """A run's config.json; a ConfigError naming the file when it is missing, damaged or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no run configuration (config.json) there")
    try:
        return from_dict(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ConfigError is a ValueError too
        raise ConfigError(f"{path}: damaged or foreign run configuration ({exc})") from exc
