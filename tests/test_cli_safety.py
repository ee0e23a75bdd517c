"""Hostile and clumsy command lines: every `avsl-edge` command (and the training/export CLIs'
output options) refuses outputs that would replace an input or each other, and outputs it cannot
write, before any work starts; bounds thread counts and sizes at parse time; stops at damaged video
data with nothing half-written; warns about a truncated video; and Ctrl-C during start-up is one
line and exit 130. Exit 2 with a one-line message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from avsl_edge import cli
from avsl_edge.audio import save_audio
from avsl_edge.fileio import OutputPathError, check_outputs, writable_problem
from avsl_edge.errors import OutputExistsError
from avsl_edge.media import probe
from avsl_edge.options import max_threads

REPO = Path(__file__).resolve().parents[1]


def make_video(path: Path, seconds: float = 3.0, fps: int = 10) -> Path:
    """A 64x64 H.264 test pattern with a sine track, its index at the front (as streaming files
    are), so a cut-off copy still opens and plays up to the cut."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=64x64:rate={fps}",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", str(seconds),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "1000", "-c:a", "aac", "-shortest",
                    "-movflags", "+faststart", str(path)], check=True)
    return path


def video_packets(path: Path) -> list[tuple[int, int]]:
    """(file offset, size) of every video packet, in file order."""
    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(video=0) if p.size]


def damaged_copy(src: Path, dst: Path, packet: int) -> Path:
    """``src`` with the NAL length of video packet ``packet`` overwritten (a broken frame mid-file)."""
    data = bytearray(src.read_bytes())
    pos, _ = video_packets(src)[packet]
    data[pos:pos + 4] = b"\xff\xff\xff\xff"
    dst.write_bytes(bytes(data))
    return dst


def truncated_copy(src: Path, dst: Path, keep: float) -> Path:
    """The first ``keep`` share of ``src``'s bytes, as an interrupted download or copy leaves it."""
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * keep)])
    return dst


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("safety-media")
    video = make_video(root / "clip.mp4")
    wav = root / "tone.wav"
    save_audio(wav, 0.3 * np.sin(np.linspace(0, 3000, 48000)).astype(np.float32), sample_rate=16000)
    return {"video": video, "wav": wav, "damaged": damaged_copy(video, root / "damaged.mp4", 15),
            "truncated": truncated_copy(video, root / "truncated.mp4", 0.6)}


@pytest.fixture
def no_model_load(monkeypatch, tmp_path):
    """Every check below must fire before the model loads: loading it is a bug here (exit 1)."""
    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded: the check came too late")

    from runtime import live_command as live
    from runtime import run_command as run

    monkeypatch.setattr(cli, "open_localizer", must_not_load)
    monkeypatch.setattr(live, "open_localizer", must_not_load)
    monkeypatch.setattr(run, "open_localizer", must_not_load)
    monkeypatch.setenv("AVSL_EDGE_MODEL", str(tmp_path / "no-bundle-needed"))
    monkeypatch.chdir(tmp_path)


def exits_2(capsys, *args: str | Path) -> str:
    """Run the CLI; assert exit 2 with one error line and no traceback; return that line."""
    code = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def leftovers(folder: Path) -> list[str]:
    """Temporary siblings of atomic writes left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------- 1. data loss


@pytest.mark.parametrize("how", ["same path", "symlink", "hardlink", "through ..", "relative to another folder"])
def test_run_refuses_an_overlay_that_would_replace_its_video(how, media, no_model_load, tmp_path, capsys):
    video = tmp_path / "mine.mp4"
    video.write_bytes(media["video"].read_bytes())
    out = {"same path": video, "through ..": tmp_path / "sub" / ".." / "mine.mp4",
           "relative to another folder": Path("mine.mp4")}.get(how, tmp_path / "alias.mp4")
    (tmp_path / "sub").mkdir()
    if how == "symlink":
        out.symlink_to(video)
    elif how == "hardlink":
        os.link(video, out)
    line = exits_2(capsys, "run", video, "--out", out)
    assert "would overwrite the input VIDEO" in line
    assert video.read_bytes() == media["video"].read_bytes() and leftovers(tmp_path) == []


def test_run_refuses_json_lines_onto_the_overlay_or_the_sound(media, no_model_load, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert exits_2(capsys, "run", media["video"], "--out", out, "--json", out).endswith(
        f"--json {out} and --out {out} are the same file")
    wav = tmp_path / "sound.wav"
    wav.write_bytes(media["wav"].read_bytes())
    assert "would overwrite the input --audio" in exits_2(capsys, "run", media["video"], "--audio", wav,
                                                            "--out", out, "--json", wav)
    assert wav.read_bytes() == media["wav"].read_bytes() and not out.exists()


def test_live_refuses_a_recording_onto_its_camera_file_and_two_outputs_on_one_file(media, no_model_load, tmp_path,
                                                                                  capsys):
    video = tmp_path / "cam.mp4"
    video.write_bytes(media["video"].read_bytes())
    base = ["live", "--camera", video, "--mic", media["wav"], "--no-display"]
    assert "would overwrite the input --camera" in exits_2(capsys, *base, "--record", video)
    assert "would overwrite the input --mic" in exits_2(capsys, *base, "--json", media["wav"])
    j = tmp_path / "j.json"
    assert "are the same file" in exits_2(capsys, *base, "--json", j, "--summary-json", j)
    assert video.read_bytes() == media["video"].read_bytes() and not j.exists()


def test_eval_refuses_to_write_over_a_file_of_its_data_folder(no_model_load, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "annotations.json").write_text("{}")
    line = exits_2(capsys, "eval", "--data", data, "--json", data / "annotations.json")
    assert "would overwrite a file of the input --data" in line and (data / "annotations.json").read_text() == "{}"


def test_bench_refuses_a_report_onto_its_frame(no_model_load, tmp_path, capsys):
    frame = tmp_path / "frame.png"
    frame.write_bytes(b"not really a png")
    assert "would overwrite the input --frame" in exits_2(capsys, "bench", "--frame", frame, "--json", frame)
    assert frame.read_bytes() == b"not really a png"


def test_the_guard_compares_files_not_spellings(tmp_path):
    a = tmp_path / "a.mp4"
    a.write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path)
    with pytest.raises(OutputExistsError, match="would overwrite the input VIDEO"):
        check_outputs({"--out": tmp_path / "link" / "a.mp4"}, {"VIDEO": a})
    with pytest.raises(OutputExistsError, match="are the same file"):  # neither exists yet: resolved paths
        check_outputs({"--out": tmp_path / "new.mp4", "--json": tmp_path / "link" / "new.mp4"})
    with pytest.raises(OutputExistsError, match="would replace a folder holding the input"):
        check_outputs({"--out": tmp_path}, {"--checkpoint": a}, replaced=("--out",))
    check_outputs({"--snapshot-dir": tmp_path}, {"--camera": a}, folders=("--snapshot-dir",))  # only adds files
    check_outputs({"--out": tmp_path / "b.mp4", "--json": tmp_path / "b.jsonl"}, {"VIDEO": a, "--audio": None})


# --------------------------------------------------------------------------------- 2. unwritable


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: then /proc)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if writable_problem(folder / "x") is None:
        if not Path("/proc/self").is_dir():
            pytest.skip("running as root without /proc: no unwritable folder to test with")
        return Path("/proc")
    return folder


@pytest.mark.parametrize("problem", ["missing folder", "a folder", "a pipe", "read-only folder"])
@pytest.mark.parametrize("command", [
    ["run", "{video}", "--out", "{bad}"],
    ["run", "{video}", "--out", "{tmp}/o.mp4", "--json", "{bad}"],
    ["eval", "--data", "{data}", "--json", "{bad}"],
    ["eval", "--data", "{data}", "--markdown", "{bad}"],
    ["bench", "--json", "{bad}"],
    ["live", "--camera", "{video}", "--mic", "{wav}", "--no-display", "--record", "{bad}"],
    ["live", "--camera", "{video}", "--mic", "{wav}", "--no-display", "--json", "{bad}"],
    ["live", "--camera", "{video}", "--mic", "{wav}", "--no-display", "--summary-json", "{bad}"],
], ids=lambda c: " ".join(a for a in c if a.startswith("--")) if isinstance(c, list) else c)
def test_an_output_that_cannot_be_written_is_exit_2_before_any_work(command, problem, media, no_model_load,
                                                                   tmp_path, capsys):
    name = "out.mp4" if "--record" in command or command[2:3] == ["--out"] else "out.json"
    if problem == "missing folder":
        bad = tmp_path / "no-such-folder" / name
    elif problem == "a folder":
        bad = tmp_path / f"folder-{name}"
        bad.mkdir()
    elif problem == "a pipe":
        bad = tmp_path / f"pipe-{name}"
        os.mkfifo(bad)
    else:
        bad = unwritable_folder(tmp_path) / name
    (tmp_path / "data").mkdir()
    args = [a.format(video=media["video"], wav=media["wav"], tmp=tmp_path, data=tmp_path / "data", bad=bad)
            for a in command]
    line = exits_2(capsys, *args)
    assert str(bad) in line and any(w in line for w in ("does not exist", "is a folder", "not a regular file",
                                                        "cannot write"))
    if problem == "a pipe":
        assert bad.is_fifo()  # not replaced by a file


def test_live_snapshot_dir_must_be_a_folder_it_can_write(media, no_model_load, tmp_path, capsys, monkeypatch):
    from runtime import live_command as live

    monkeypatch.setattr(live, "display_unavailable", lambda: None)  # a window would open: no X needed here
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    line = exits_2(capsys, "live", "--camera", media["video"], "--mic", media["wav"], "--snapshot-dir", not_a_folder)
    assert "--snapshot-dir" in line and "is a file, not a folder" in line


def test_training_evaluate_checks_its_outputs_before_loading_the_checkpoint(tmp_path, capsys):
    from training import evaluate

    ck = tmp_path / "model.pt"
    ck.write_bytes(b"never read")
    assert evaluate.main(["--checkpoint", str(ck), "--data", str(tmp_path), "--markdown",
                          str(tmp_path / "missing" / "eval.md")]) == 2
    assert "--markdown" in capsys.readouterr().err and ck.read_bytes() == b"never read"
    assert evaluate.main(["--checkpoint", str(ck), "--data", str(tmp_path), "--json", str(ck)]) == 2
    assert "would overwrite the input --checkpoint" in capsys.readouterr().err


def test_export_refuses_a_bundle_folder_holding_its_checkpoint_and_absurd_threads(tmp_path, capsys):
    to_onnx = pytest.importorskip("export.to_onnx")
    ck = tmp_path / "model.pt"
    ck.write_bytes(b"never read")
    assert to_onnx.main(["--checkpoint", str(ck), "--out", str(tmp_path)]) == 2
    assert "would replace a folder holding the input --checkpoint" in capsys.readouterr().err
    assert to_onnx.main(["--checkpoint", str(ck), "--out", str(ck)]) == 2
    assert "would overwrite the input --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        to_onnx.main(["--checkpoint", str(ck), "--threads", "10000"])
    assert exc.value.code == 2 and "argument --threads" in capsys.readouterr().err


# -------------------------------------------------------------------------------------- 3. bounds


@pytest.mark.parametrize("args,option", [
    (["run", "{video}", "--out", "o.mp4", "--threads", "10000"], "--threads"),
    (["run", "{video}", "--out", "o.mp4", "--inter-threads", "-1"], "--inter-threads"),
    (["run", "{video}", "--out", "o.mp4", "--max-frames", "0"], "--max-frames"),
    (["eval", "--data", ".", "--batch-size", "100000000"], "--batch-size"),
    (["bench", "--size", "100000x100000"], "--size"),
    (["bench", "--size", "7680x4320"], "--size"),  # each side fits, but 33 Mpx is over the 4K bound
    (["bench", "--size", "0x480"], "--size"),
    (["bench", "--runs", "100000000"], "--runs"),
    (["bench", "--warmup", "-1"], "--warmup"),
    (["live", "--camera", "{video}", "--no-display", "--threads", "99999"], "--threads"),
    (["live", "--camera", "{video}", "--no-display", "--display-min", "100000"], "--display-min"),
    (["live", "--camera", "{video}", "--no-display", "--camera-size", "100000x100000"], "--camera-size"),
    (["run", "{video}", "--out", "o.mp4", "--hop", "1e308"], "--hop must be > 0 and at most 60 seconds"),
    (["live", "--camera", "{video}", "--no-display", "--hop", "nan"], "--hop must be > 0 and at most 60 seconds"),
])
def test_absurd_numbers_are_refused_when_parsing(args, option, media, no_model_load, capsys):
    line = exits_2(capsys, *[a.format(video=media["video"]) for a in args])
    assert option in line


def test_thread_counts_scale_with_the_machine():
    assert max_threads() == max(8, 4 * (os.cpu_count() or 1))
    assert cli.build_parser().parse_args(["bench", "--threads", str(max_threads())]).threads == max_threads()


# ------------------------------------------------------------------------- 4. damaged and cut videos


def test_run_stops_at_damaged_video_data_with_nothing_written(media, smoke_bundle, tmp_path, capsys):
    out, jsonl = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    line = exits_2(capsys, "run", media["damaged"], "--audio", media["wav"], "--out", out, "--json", jsonl,
                   "--model", smoke_bundle, "--threads", "1", "--quiet")
    assert "decoding failed at frame" in line and "of 30" in line and "nothing was written" in line
    assert not out.exists() and not jsonl.exists() and leftovers(tmp_path) == []


def test_run_warns_about_a_truncated_video_and_keeps_what_it_read(media, smoke_bundle, tmp_path, capsys):
    out, jsonl = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    assert cli.main([str(a) for a in ("run", media["truncated"], "--out", out, "--json", jsonl, "--audio",
                                      media["wav"], "--model", smoke_bundle, "--threads", "1", "--quiet")]) == 0
    err = capsys.readouterr().err
    n = len(jsonl.read_text().splitlines())
    assert 0 < n < 30 and f"looks truncated: {n} frames read, 30 expected" in err
    assert probe(out).frames == n


def test_live_stops_at_a_damaged_camera_file_with_the_recording_saved(media, smoke_bundle, tmp_path, capsys):
    rec = tmp_path / "r.mp4"
    line = exits_2(capsys, "live", "--camera", media["damaged"], "--mic", media["wav"], "--no-display", "--record",
                   rec, "--model", smoke_bundle, "--threads", "1")
    assert "the file is damaged" in line and f"the recording is saved: {rec}" in line
    assert probe(rec).frames >= 1


def test_live_warns_about_a_truncated_camera_file(media, smoke_bundle, tmp_path, capsys):
    summary = tmp_path / "s.json"
    assert cli.main([str(a) for a in ("live", "--camera", media["truncated"], "--mic", media["wav"], "--no-display",
                                      "--summary-json", summary, "--model", smoke_bundle, "--threads", "1")]) == 0
    import json

    s = json.loads(summary.read_text())
    assert s["reason"] == "camera_ended" and len(s["warnings"]) == 1
    assert "looks truncated" in s["warnings"][0] and "30 expected" in s["warnings"][0]
    assert s["warnings"][0] in capsys.readouterr().err


# --------------------------------------------------------------------------------- 5. Ctrl-C early

# Delivers SIGINT to itself the moment the CLI's start-up imports reach numpy (deterministically
# inside them), then runs the console entry point.
_CTRL_C_DURING_IMPORTS = """
import builtins, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job inherits SIGINT ignored
real_import = builtins.__import__
def importing(name, *args, **kwargs):
    if name == "numpy":
        builtins.__import__ = real_import
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = importing
from avsl_edge.console import main
sys.exit(main(["info"]))
"""


def test_ctrl_c_during_start_up_imports_is_one_line_and_exit_130():
    out = subprocess.run([sys.executable, "-c", _CTRL_C_DURING_IMPORTS], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 130 and out.stderr == "interrupted\n", out.stderr


def test_python_dash_m_avsl_edge_is_the_console_script():
    out = subprocess.run([sys.executable, "-m", "avsl_edge", "--version"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("avsl-edge "), out.stderr


def test_importing_the_package_loads_nothing_heavy():
    code = "import sys, avsl_edge.console; print(sorted({'numpy', 'cv2', 'onnxruntime', 'av'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_output_path_errors_are_user_errors():
    from avsl_edge.errors import UserError

    assert issubclass(OutputPathError, UserError) and issubclass(OutputExistsError, UserError)


def test_sigterm_during_run_leaves_nothing_half_written(smoke_bundle, tmp_path):
    import time

    video = make_video(tmp_path / "long.mp4", seconds=60)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "avsl_edge", "run", str(video), "--out", str(out_dir / "o.mp4"),
                             "--json", str(out_dir / "o.jsonl"), "--model", str(smoke_bundle), "--threads", "1",
                             "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size for p in out_dir.glob(".o.*.jsonl")):  # frames are being written
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err.strip().endswith("interrupted") and "Traceback" not in err, err
    assert list(out_dir.iterdir()) == []


def test_the_lazy_package_keeps_its_public_names():
    import inspect

    import avsl_edge
    from avsl_edge.audio import SAMPLE_RATE

    assert inspect.signature(avsl_edge.localize).parameters["sample_rate"].default == SAMPLE_RATE
    assert all(getattr(avsl_edge, name) is not None for name in avsl_edge.__all__)


def test_bench_refuses_a_frame_image_larger_than_4k(no_model_load, tmp_path, capsys):
    import cv2

    big = tmp_path / "big.png"
    assert cv2.imwrite(str(big), np.zeros((2161, 3841, 3), np.uint8))
    assert "larger than a 4K frame" in exits_2(capsys, "bench", "--frame", big)



@pytest.mark.parametrize("option,value", [("--solo-tau", "nan"), ("--mosaic-tau", "1.5"), ("--softmax-scale", "-3")])
def test_training_evaluate_refuses_a_threshold_override_out_of_range(smoke_run, option, value, capsys):
    from training import evaluate

    data = smoke_run / "data" / "test"
    assert evaluate.main(["--checkpoint", str(smoke_run), "--data", str(data), option, value]) == 2
    err = capsys.readouterr().err
    assert f"--eval.{option[2:].replace('-', '_')} must be" in err and "Traceback" not in err
