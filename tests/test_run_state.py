"""A run folder's state and the hostile or clumsy inputs around it: damaged or foreign files, copied
runs, --force where no run is. Each is a one-line error with exit code 2 that names the file and
says what to do, and leaves every file as it was; or, where the inputs allow, the run goes on.

Most examples build a tiny run folder by hand (config.json, state.json, a checkpoint) instead of
training one; the copied-run examples use the session's trained smoke run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from training.checkpoint import digest_path, load_checkpoint, save_checkpoint
from training.config import apply_overrides, preset, save_config
from training.pipeline import main as pipeline_main
from training.run_state import RunStateError, State, clear_run

TINY = {"data.train_scenes": "16", "data.val_scenes": "8", "data.stage_two_scenes": "8", "data.image_size": "48",
        "data.test_per_kind": "1", "stage_one.batch_size": "8", "stage_two.batch_size": "8", "export": "false"}


def exit_code(argv: list[str]) -> int:
    """The pipeline's exit code, whether it stopped in argument parsing (SystemExit) or later."""
    try:
        return pipeline_main(argv)
    except SystemExit as e:
        return e.code


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_run(tmp_path: Path) -> Path:
    """A run folder whose data step counts as done (stand-in files), ready for stage one."""
    run = tmp_path / "run"
    (run / "data" / "test").mkdir(parents=True)
    save_config(apply_overrides(preset("smoke"), {"out": str(run), **TINY}), run / "config.json")
    (run / "data" / "test" / "annotations.json").write_text("{}")
    (run / "data" / "contact_sheet.png").write_bytes(b"")
    State(run).mark("data", run / "data" / "contact_sheet.png")
    return run


def flip_a_tensor_byte(path: Path) -> None:
    """One bit of the largest tensor record, rewritten as a new file (as a faulty disk would leave it)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        record = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack_from("<HH", data, record.header_offset + 26)  # the local header's
    data[record.header_offset + 30 + name_len + extra_len + record.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------- state.json


def test_state_json_keeps_paths_relative_to_the_run_folder(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    State(run).mark("stage_one", run / "rounds" / "round_002.pt")
    assert json.loads((run / "state.json").read_text())["done"]["stage_one"] == "rounds/round_002.pt"
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert State(copy).done("stage_one") == str(copy / "rounds" / "round_002.pt")


def test_an_old_state_file_is_read_where_its_paths_lie_inside_the_run(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"done": {"stage_two": str(run / "model.pt"), "evaluate": {"a": 1}}}))
    state = State(run)
    assert state.done("stage_two") == str(run / "model.pt") and state.done("evaluate") == {"a": 1}
    state.mark("report", run / "report.md")  # written back in the new form
    assert json.loads((run / "state.json").read_text())["done"]["stage_two"] == "model.pt"

    copy = tmp_path / "copy"  # an old run, copied: its paths name the original's files
    copy.mkdir()
    (copy / "state.json").write_text(json.dumps({"done": {"stage_two": str(run / "model.pt")}}))
    with pytest.raises(RunStateError, match="outside this run folder"):
        State(copy)


@pytest.mark.parametrize("text", ['{"done": {"data": "data/cont', "", "\x00\xff", "[1, 2]", '{"done": 3}',
                                  '{"format": "avsl-edge/run-state", "version": 9, "done": {}}',
                                  '{"format": "avsl-edge/run-state", "version": 2, "done": {"stage_one": "../x.pt"}}'])
def test_a_damaged_or_foreign_state_json_is_a_clear_error_on_resume(tmp_path: Path, capsys, text: str):
    run = tiny_run(tmp_path)
    (run / "state.json").write_bytes(text.encode("utf-8", "surrogateescape") if text != "\x00\xff" else b"\x00\xff")
    before = snapshot(run)
    assert exit_code(["--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "state.json" in err and "--force" in err and "Traceback" not in err
    assert snapshot(run) == before


def test_a_state_json_that_is_a_folder_is_a_clear_error(tmp_path: Path, capsys):
    run = tiny_run(tmp_path)
    (run / "state.json").unlink()
    (run / "state.json").mkdir()
    assert exit_code(["--out", str(run), "--resume", "--quiet"]) == 2
    assert "state.json: is not a file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- config.json


@pytest.mark.parametrize("change", ["truncate", "garbage", "list", "section", "field", "unknown"])
def test_a_damaged_or_foreign_config_json_is_a_clear_error_on_resume(tmp_path: Path, capsys, change: str):
    run = tiny_run(tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    text = (run / "config.json").read_text()
    if change == "section":
        cfg["data"] = 5
    elif change == "field":
        cfg["stage_one"]["epochs"] = "many"
    elif change == "unknown":
        cfg["data"]["colour"] = "red"
    written = {"truncate": text[:len(text) // 2], "garbage": "\x00garbage", "list": "[1, 2]"}.get(change)
    (run / "config.json").write_text(written if written is not None else json.dumps(cfg))
    before = snapshot(run)
    assert exit_code(["--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err
    expected = {"section": "config: data is int, not a table", "field": "config: stage_one.epochs is 'many'; expected int",
                "unknown": "config: unknown key DataConfig.colour", "list": "the configuration is list, not a table"}
    assert expected.get(change, "damaged or foreign run configuration") in err
    assert snapshot(run) == before


# ---------------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_with_a_flipped_tensor_byte_stops_the_resume(tmp_path: Path, capsys):
    run = tiny_run(tmp_path)
    save_checkpoint(run / "stage_one_last.pt", "stage_one", epoch=0, next_round=0, history="[]",
                    model={"w": torch.linspace(0, 1, 4096)}, optimizer={})
    flip_a_tensor_byte(run / "stage_one_last.pt")
    before = snapshot(run)
    assert exit_code(["--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'stage_one_last.pt'}: damaged checkpoint" in err
    assert "delete it and rerun with --resume" in err and "--force" in err
    assert snapshot(run) == before


def test_a_checkpoint_of_the_wrong_kind_stops_the_resume(tmp_path: Path, capsys):
    run = tiny_run(tmp_path)
    save_checkpoint(run / "stage_one_last.pt", "stage_two", epoch=0, round=0)
    assert exit_code(["--out", str(run), "--resume", "--quiet"]) == 2
    assert "stage_one_last.pt: is a stage_two checkpoint, expected stage_one" in capsys.readouterr().err


def test_a_stage_two_state_of_another_round_stops_the_resume(tmp_path: Path, capsys):
    from training.data.classes import CLASSES
    from training.model import StageOne

    run = tiny_run(tmp_path)
    cfg = apply_overrides(preset("smoke"), TINY)
    k = cfg.model.num_clusters
    save_checkpoint(run / "rounds" / "round_000.pt", "stage_one", round=0, epoch=1, classes=list(CLASSES),
                    model=StageOne(cfg.model).state_dict(), dictionary=torch.zeros(k, 512), centroids=torch.zeros(k, 512),
                    cluster_to_class=torch.arange(k) % len(CLASSES), affinity=torch.zeros(k, len(CLASSES)), nmi=0.0)
    State(run).mark("stage_one", run / "rounds" / "round_000.pt")
    save_checkpoint(run / "stage_two_last.pt", "stage_two", epoch=0, round=4, model={}, optimizer={}, history="[]")
    before = snapshot(run)
    assert exit_code(["--out", str(run), "--resume", "--quiet"]) == 2
    assert "stage_two_last.pt: was trained with round 4, not 0" in capsys.readouterr().err
    assert snapshot(run) == before


def test_a_damaged_model_in_a_copied_run_is_named_and_deleting_it_lets_resume_remake_it(smoke_run: Path,
                                                                                            tmp_path: Path, capsys):
    """The copy's state.json names its own files: the copy's damaged model.pt stops the resume, and
    once deleted, resume remakes it (from the copy's stage-two state) without touching the original."""
    copy = tmp_path / "copy"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("bundle"))
    original = (smoke_run / "model.pt").stat().st_mtime_ns
    flip_a_tensor_byte(copy / "model.pt")
    assert pipeline_main(["--out", str(copy), "--resume", "--quiet", "--no-export"]) == 2
    assert f"{copy / 'model.pt'}: damaged checkpoint" in capsys.readouterr().err

    (copy / "model.pt").unlink()
    assert pipeline_main(["--out", str(copy), "--resume", "--quiet", "--no-export"]) == 0
    out = capsys.readouterr().out
    assert f"[stage_two] done earlier, but {copy / 'model.pt'} is gone: running it again" in out
    assert "[stage_one] done earlier, skipped" in out
    remade, first = load_checkpoint(copy / "model.pt", "stage_two"), load_checkpoint(smoke_run / "model.pt", "stage_two")
    assert remade["model"].keys() == first["model"].keys()
    assert all(torch.equal(remade["model"][k], first["model"][k]) for k in first["model"])
    assert (smoke_run / "model.pt").stat().st_mtime_ns == original


def test_an_old_copied_run_whose_state_names_the_original_is_a_clear_error(smoke_run: Path, tmp_path: Path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(smoke_run / "config.json", copy / "config.json")
    state = {"done": {"stage_one": str(smoke_run / "rounds" / "round_000.pt")}}  # as runs wrote it before
    (copy / "state.json").write_text(json.dumps(state))
    assert exit_code(["--out", str(copy), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "outside this run folder" in err and str(smoke_run / "rounds" / "round_000.pt") in err


# ----------------------------------------------------------------------------- --force and --out


def test_force_refuses_a_folder_that_never_held_a_run(tmp_path: Path, capsys):
    mine = tmp_path / "mine"
    (mine / "bundle").mkdir(parents=True)
    (mine / "model.pt").write_text("a user's own model")
    (mine / "metrics.jsonl").write_text("a user's own log")
    (mine / "bundle" / "notes.md").write_text("a user's file")
    before = snapshot(mine)
    assert exit_code(["--preset", "smoke", "--out", str(mine), "--force", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds no run" in err and "config.json" in err
    assert snapshot(mine) == before


def test_a_run_folder_that_is_a_file_or_lies_under_one_is_a_usage_error(tmp_path: Path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for argv in (["--preset", "smoke", "--out", str(afile)], ["--out", str(afile), "--resume"],
                 ["--preset", "smoke", "--out", str(afile / "run")]):
        assert exit_code([*argv, "--quiet"]) == 2
        assert "is a file, not a folder" in capsys.readouterr().err
    assert afile.read_text() == "not a folder"


def test_an_out_that_cannot_be_created_is_a_clear_error(capsys):
    assert exit_code(["--preset", "smoke", "--out", "/proc/avsl-edge-run", "--quiet", "--no-export"]) == 2
    assert "/proc/avsl-edge-run" in capsys.readouterr().err


def test_resume_and_force_together_are_a_usage_error(tmp_path: Path, capsys):
    run = tiny_run(tmp_path)
    before = snapshot(run)
    assert exit_code(["--out", str(run), "--resume", "--force"]) == 2
    assert "pass one of them" in capsys.readouterr().err
    assert snapshot(run) == before


def test_force_removes_round_files_but_not_other_files_in_rounds(tmp_path: Path):
    run = tmp_path / "run"
    (run / "rounds").mkdir(parents=True)
    for name in ("round_000.pt", "round_000.pt.sha256", ".round_001.ab3_x9kq.pt", "my_notes.txt"):
        (run / "rounds" / name).write_text("x")
    (run / ".stage_one_last.q1w2e3r4.pt").write_text("a crash's temporary file")
    removed = clear_run(run)
    assert "rounds" in removed and ".stage_one_last.q1w2e3r4.pt" in removed
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == ["rounds", "rounds/my_notes.txt"]


# ------------------------------------------------------------------------- options checked first


@pytest.mark.parametrize("option, value", [("--stage_one.batch_size", "0"), ("--data.test_kinds", "solo,jazz"),
                                           ("--model.num_clusters", "200"), ("--stage_one.lr", "-1"),
                                           ("--device", "gpu0"), ("--stage_two.round", "7"),
                                           ("--stage_two.temperature", "0"), ("--data.image_size", "8")])
def test_options_a_run_could_not_finish_with_are_refused_before_anything_runs(tmp_path: Path, capsys, option, value):
    assert exit_code(["--preset", "smoke", "--out", str(tmp_path / "run"), "--quiet", option, value]) == 2
    err = capsys.readouterr().err
    assert f"error: {option}" in err and value.split(",")[-1] in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_missing_imagenet_weights_are_a_usage_error(tmp_path: Path, capsys):
    assert exit_code(["--preset", "smoke", "--out", str(tmp_path / "run"), "--visual-init", "imagenet",
                      "--visual-weights", str(tmp_path / "resnet18.pth")]) == 2
    assert "resnet18.pth: no such file" in capsys.readouterr().err


def test_evaluate_checks_its_device_and_outputs_before_running_the_model(tmp_path: Path, capsys):
    from training.evaluate import main as evaluate_main

    (tmp_path / "data").mkdir()
    common = ["--checkpoint", str(tmp_path / "model.pt"), "--data", str(tmp_path / "data")]
    with pytest.raises(SystemExit) as e:
        evaluate_main([*common, "--device", "gpu0"])
    assert e.value.code == 2 and "--device must be" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    for extra, message in ((["--json", str(tmp_path / "no" / "e.json")], f"the folder {tmp_path / 'no'} does not exist"),
                           (["--markdown", str(tmp_path / "out")], "is a folder")):
        assert evaluate_main([*common, *extra]) == 2
        assert message in capsys.readouterr().err


def test_evaluate_names_a_checkpoint_whose_config_it_cannot_read(tmp_path: Path, capsys):
    from training.config import to_dict
    from training.evaluate import main as evaluate_main

    cfg = to_dict(preset("smoke"))
    cfg["data"]["colour"] = "red"
    path = save_checkpoint(tmp_path / "model.pt", "stage_two", round=0, config=cfg, model={}, dictionary=torch.zeros(1),
                           classes=[], cluster_to_class=torch.zeros(1), affinity=torch.zeros(1), nmi=0.0)
    assert digest_path(path).is_file()
    assert evaluate_main(["--checkpoint", str(path), "--data", str(tmp_path)]) == 2
    assert "model.pt: its configuration cannot be read (config: unknown key DataConfig.colour)" \
        in capsys.readouterr().err
