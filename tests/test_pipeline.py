"""The two-stage pipeline end to end on the `smoke` preset, its resume, its errors, and DDP.

These are examples of use: `python -m training.pipeline --preset smoke --out DIR` must leave a
complete run folder behind; a second call with --resume must skip the finished steps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.pipeline import main as pipeline_main

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "smoke", "--quiet", "--no-export"]


def test_smoke_run_leaves_a_complete_run_folder(smoke_run: Path):
    for name in ("config.json", "metrics.jsonl", "state.json", "model.pt", "eval.json", "eval.md",
                 "report.md", "curves.png", "figure.png", "data/contact_sheet.png",
                 "data/test/annotations.json", "rounds/round_000.pt", "stage_one.json", "stage_two.json",
                 "bundle/manifest.json"):
        assert (smoke_run / name).is_file(), name
    table = json.loads((smoke_run / "eval.json").read_text())["table"]
    assert set(table) == {"model", "uniform", "gaussian"}
    for key in ("solo_iou@0.5", "solo_auc", "mosaic_ciou@0.3", "mosaic_auc", "mosaic_nsa",
                "duet_ciou@0.3", "offscreen_fp", "silent_fp", "distractor_lit", "nmi"):
        assert key in table["model"], key
    assert 0.0 <= table["model"]["nmi"] <= 1.0
    # the baselines are computed on the same images
    assert table["uniform"]["solo_n"] == table["model"]["solo_n"] > 0


def test_round_files_carry_a_round_id_that_stage_two_checks(smoke_run: Path):
    rnd = load_checkpoint(smoke_run / "rounds" / "round_000.pt", "stage_one")
    final = load_checkpoint(smoke_run / "model.pt", "stage_two")
    assert rnd["dictionary"].shape == (11, 512)
    assert final["round"] == rnd["round"]
    assert torch.equal(final["dictionary"], rnd["dictionary"])


def test_resume_skips_finished_steps(smoke_run: Path, capsys):
    before = (smoke_run / "model.pt").stat().st_mtime_ns
    assert pipeline_main(["--out", str(smoke_run), "--resume", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "[stage_one] done earlier, skipped" in out and "[stage_two] done earlier, skipped" in out
    assert (smoke_run / "model.pt").stat().st_mtime_ns == before


def test_evaluate_cli_prints_the_table(smoke_run: Path, tmp_path: Path, capsys):
    from training.evaluate import main as evaluate_main

    assert evaluate_main(["--checkpoint", str(smoke_run), "--data", str(smoke_run / "data" / "test"),
                          "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    assert "| metric | model | uniform | gaussian |" in out
    again = json.loads((tmp_path / "e.json").read_text())["table"]
    first = json.loads((smoke_run / "eval.json").read_text())["table"]
    assert again["model"]["mosaic_ciou@0.3"] == pytest.approx(first["model"]["mosaic_ciou@0.3"])


def test_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path: Path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an avsl-edge checkpoint"):
        load_checkpoint(foreign)
    ok = save_checkpoint(tmp_path / "s1.pt", "stage_one", round=0)
    with pytest.raises(CheckpointError, match="expected stage_two"):
        load_checkpoint(ok, "stage_two")


def test_bad_options_are_usage_errors(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as e:
        pipeline_main([*SMALL, "--out", str(tmp_path / "a"), "--model.num_clusters", "5"])
    assert e.value.code == 2 and "smaller than the 11 classes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        pipeline_main([*SMALL, "--out", str(tmp_path / "b"), "--visual-init", "imagenet"])
    assert e.value.code == 2 and "nothing is downloaded" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        pipeline_main([*SMALL, "--out", str(tmp_path / "c"), "--stage_one.epochs", "many"])
    assert e.value.code == 2


def test_evaluate_runs_the_model_at_the_asked_input_size(smoke_run: Path, tmp_path: Path, capsys):
    from training.evaluate import main as evaluate_main

    data = str(smoke_run / "data" / "test")
    assert evaluate_main(["--checkpoint", str(smoke_run), "--data", data, "--image-size", "96",
                          "--json", str(tmp_path / "e96.json")]) == 0
    at_96 = json.loads((tmp_path / "e96.json").read_text())["table"]["model"]
    assert at_96 != json.loads((smoke_run / "eval.json").read_text())["table"]["model"]
    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(smoke_run), "--data", data, "--image-size", "16"]) == 2
    assert "--eval.image_size must be 0 (= --data.image_size) or at least 32; got 16" in capsys.readouterr().err


def test_an_existing_run_is_not_overwritten_without_force(smoke_run: Path, capsys):
    with pytest.raises(SystemExit) as e:
        pipeline_main([*SMALL, "--out", str(smoke_run)])
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err


def test_force_clears_the_earlier_runs_outputs_and_nothing_else(tmp_path: Path):
    from training.pipeline import clear_run

    run = tmp_path / "run"
    (run / "rounds").mkdir(parents=True)
    (run / "rounds" / "round_009.pt").write_bytes(b"from a longer run")
    (run / "metrics.jsonl").write_text('{"phase": "old"}\n')
    (run / "data" / "test").mkdir(parents=True)
    (run / "data" / "mine.txt").write_text("a user's file")
    (run / "notes.md").write_text("a user's file")
    assert set(clear_run(run)) == {"rounds", "metrics.jsonl", "data/test"}
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["data", "data/mine.txt", "notes.md"]
    assert clear_run(run) == []


def test_force_knows_every_file_a_run_writes(smoke_run: Path):
    """RUN_OUTPUTS names what --force may delete; a step that writes a new file must be listed
    there, or --force would leave the earlier run's copy behind."""
    from training.pipeline import RUN_OUTPUTS

    def unlisted(folder: Path) -> list[str]:
        out = []
        for p in sorted(folder.iterdir()):
            name = str(p.relative_to(smoke_run))
            if name not in RUN_OUTPUTS:
                out += unlisted(p) if p.is_dir() else [name]
        return out

    assert unlisted(smoke_run) == []


def test_evaluate_refuses_data_with_classes_the_model_does_not_know(smoke_run: Path, tmp_path: Path, capsys):
    from training.evaluate import main as evaluate_main

    data = tmp_path / "data"
    shutil.copytree(smoke_run / "data" / "test", data)
    ann = json.loads((data / "annotations.json").read_text())
    ann["categories"][0]["name"] = "theremin"
    (data / "annotations.json").write_text(json.dumps(ann))
    assert evaluate_main(["--checkpoint", str(smoke_run), "--data", str(data)]) == 2
    assert "theremin" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate_main(["--checkpoint", str(smoke_run), "--data", str(empty)]) == 2
    assert "annotations.json" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_gloo_processes(tmp_path: Path):
    """DistributedDataParallel on CPU: 2 processes, gloo, K-means on gathered features (with the
    original one-negative-per-clip objective; the smoke preset itself trains with all_pairs)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "training.pipeline", *SMALL, "--out", str(out), "--data.train_scenes", "48",
           "--data.stage_two_scenes", "32", "--data.test_per_kind", "4", "--stage_one.batch_size", "8",
           "--stage_two.batch_size", "8", "--stage_one.objective", "pairs"]  # the paper's pairs objective under DDP
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    rnd = load_checkpoint(out / "rounds" / "round_000.pt", "stage_one")
    assert rnd["pseudo_labels"].shape == (48,)  # k-means saw every rank's features
    assert (out / "model.pt").is_file() and (out / "eval.json").is_file()


def test_ablation_compares_with_and_without_alternation(tmp_path: Path, capsys):
    from training.ablation import main as ablation_main

    tiny = ["--quiet", "--data.train_scenes", "32", "--data.val_scenes", "8", "--data.stage_two_scenes", "16",
            "--data.test_per_kind", "2", "--data.test_kinds", "solo,mosaic", "--stage_one.batch_size", "8",
            "--stage_two.batch_size", "8", "--data.image_size", "48"]
    assert ablation_main(["--preset", "smoke", "--out", str(tmp_path), *tiny]) == 0
    md = (tmp_path / "ablation.md").read_text()
    assert "| metric | w/ alternation | w/o alternation |" in md and "mosaic CIoU@0.3" in md
    with_alt = load_checkpoint(tmp_path / "alternate" / "rounds" / "round_000.pt", "stage_one")
    without = json.loads((tmp_path / "no_alternate" / "stage_one.json").read_text())
    assert with_alt["epoch"] == 1  # smoke: a round after location epoch 1 (init_num 1)
    assert without["rounds"] == 1  # no alternation: one round from the final model


def test_stage_two_can_train_the_class_head_alone(tmp_path: Path):
    """--stage_two.trainable class_head: the stage-one backbones, their BN statistics and the av map
    come out of stage two exactly as the round left them; only obj_conv moves."""
    out = tmp_path / "head"
    tiny = ["--data.train_scenes", "32", "--data.val_scenes", "8", "--data.stage_two_scenes", "16",
            "--data.test_per_kind", "2", "--data.test_kinds", "solo", "--stage_one.batch_size", "8",
            "--stage_two.batch_size", "8", "--data.image_size", "48", "--stage_two.lr", "0.05"]
    assert pipeline_main([*SMALL, "--out", str(out), *tiny, "--stage_two.trainable", "class_head"]) == 0
    final = load_checkpoint(out / "model.pt", "stage_two")
    for key, value in final["stage_one_model"].items():
        if not key.startswith(("image.classifier", "audio.classifier")):
            torch.testing.assert_close(final["model"][key], value, rtol=0, atol=0, msg=key)
    head = {k: v.item() for k, v in final["model"].items() if k.startswith("class_aware.")}
    assert head and head != {k: 1.0 if k.endswith("weight") else 0.0 for k in head}, "obj_conv did not train"


def test_choice_options_are_checked_before_anything_runs(tmp_path: Path, capsys):
    for option, value in (("--stage_two.trainable", "everything"), ("--stage_one.objective", "triplets"),
                          ("--stage_one.mask_relative", "1.5"), ("--stage_one.mosaic_prob", "-0.1"),
                          ("--stage_one.lr_schedule", "linear"), ("--stage_one.lr_min_ratio", "2"),
                          ("--model.similarity", "euclid"), ("--model.obj_affine_init", "zeros"),
                          ("--model.obj_affine_scale", "0"), ("--stage_one.nce_weight", "-0.5")):
        with pytest.raises(SystemExit) as e:
            pipeline_main([*SMALL, "--out", str(tmp_path / "bad"), option, value])
        assert e.value.code == 2 and option in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the contrastive term scores the all_pairs logits
        pipeline_main([*SMALL, "--out", str(tmp_path / "bad"), "--stage_one.objective", "pairs",
                       "--stage_one.nce_weight", "0.5"])
    assert e.value.code == 2 and "--stage_one.nce_weight needs --stage_one.objective all_pairs" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_class_head_options_reach_the_config():
    from training.config import apply_overrides, preset

    cfg = apply_overrides(preset("paper"), {"model.similarity": "cosine", "model.obj_affine_scale": "20",
                                            "model.obj_affine_init": "default"})
    assert (cfg.model.similarity, cfg.model.obj_affine_scale, cfg.model.obj_affine_init) == ("cosine", 20.0, "default")
    assert preset("paper").model.similarity == "dot"  # docs/method.md §4.1; the cpu preset compares cosines
    assert preset("cpu").model.similarity == "cosine"


def test_resume_cannot_switch_the_lr_schedule_of_a_started_stage_one(tmp_path: Path, capsys):
    from training.config import preset, save_config

    run = tmp_path / "run"
    run.mkdir()
    save_config(preset("cpu"), run / "config.json")  # the preset's constant lr
    save_checkpoint(run / "stage_one_last.pt", "stage_one", epoch=3)
    with pytest.raises(SystemExit) as e:
        pipeline_main(["--out", str(run), "--resume", "--stage_one.lr_schedule", "cosine"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "ran with --stage_one.lr_schedule constant" in err and "--force" in err


def test_cosine_schedule_runs_from_lr_to_its_floor_and_resumes_where_it_stopped():
    """With ``--stage_one.lr_schedule cosine`` the main Adam starts at lr and ends at lr_min_ratio x lr
    on the last epoch; a scheduler rebuilt from a checkpoint (as ``--resume`` does) goes on from there."""
    from training.config import apply_overrides, preset
    from training.stage_one import lr_scheduler

    cfg = apply_overrides(preset("cpu"), {"stage_one.epochs": "5", "stage_one.lr": "1e-3",
                                          "stage_one.lr_schedule": "cosine", "stage_one.lr_min_ratio": "0.05"})

    def fresh():
        opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=cfg.stage_one.lr)
        return opt, lr_scheduler(opt, cfg)

    opt, sched = fresh()
    lrs = []
    for epoch in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # an epoch's steps
        sched.step()
        if epoch == 1:
            saved = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(5e-5)
    assert lrs[2] == pytest.approx((1e-3 + 5e-5) / 2)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))

    opt2, sched2 = fresh()
    opt2.load_state_dict(saved["optimizer"])
    sched2.load_state_dict(saved["scheduler"])
    resumed = []
    for _ in range(3):
        resumed.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert resumed == pytest.approx(lrs[2:])
    assert lr_scheduler(opt, preset("cpu")) is None  # the preset keeps the original's constant lr
