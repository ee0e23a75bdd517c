"""The `avsl-edge` command line: run (overlay video with its audio, JSON lines), eval (equal to the
training-side evaluation of the same model), bench, info, --help everywhere, exit codes."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from avsl_edge import cli, commands
from avsl_edge.audio import save_audio
from avsl_edge.media import probe, read_audio_track, write_video

COMMANDS = ("run", "eval", "bench", "info")


def _cli(*args: str | Path) -> int:
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A 1.5 s SynthMUSIC solo clip (12 fps, with its audio track)."""
    from training.data.synth import SynthConfig, SynthMusic, write_scene_video

    path = tmp_path_factory.mktemp("video") / "solo.mp4"
    return write_scene_video(path, "solo", 3, 1.5, fps=12, synth=SynthMusic(SynthConfig(image_size=160)))


def _streams(path: Path) -> list[str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_for_every_command(command, capsys):
    assert cli.main([command, "--help"] if command else ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: avsl-edge") and ("--model" in out or not command)


def test_run_writes_a_playable_video_with_audio_and_json_lines(video, smoke_bundle, tmp_path, capsys):
    out, jsonl = tmp_path / "overlay.mp4", tmp_path / "frames.jsonl"
    assert _cli("run", video, "--out", out, "--json", jsonl, "--model", smoke_bundle, "--threads", "1",
                "--quiet") == 0
    assert _streams(out) == ["audio", "video"]
    src, dst = probe(video), probe(out)
    assert dst.frames == src.frames == 18 and (dst.width, dst.height) == (160, 160) and dst.has_audio
    np.testing.assert_allclose(read_audio_track(out).shape[0] / 16000, 1.5, atol=0.1)
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [d["frame"] for d in lines] == list(range(18))
    assert lines[3]["media_time"] == pytest.approx(0.25) and set(lines[0]) >= {"sounding", "boxes", "scores", "speed"}
    assert "18 frames" in capsys.readouterr().out


def test_run_with_another_sound_file(video, smoke_bundle, tmp_path):
    wav = tmp_path / "other.wav"
    save_audio(wav, 0.3 * np.sin(np.linspace(0, 2000, 44100)).astype(np.float32), sample_rate=44100)
    out = tmp_path / "overlay.mkv"
    assert _cli("run", video, "--audio", wav, "--out", out, "--model", smoke_bundle, "--threads", "1", "--quiet",
                "--max-frames", "5", "--style", "contour") == 0
    assert _streams(out) == ["audio", "video"] and probe(out).frames == 5 and probe(out).audio_rate == 44100


def test_run_refuses_a_video_without_sound(smoke_bundle, tmp_path, capsys):
    silent_video = write_video(tmp_path / "mute.mp4", [np.zeros((32, 32, 3), np.uint8)] * 3, fps=10)
    assert _cli("run", silent_video, "--out", tmp_path / "o.mp4", "--model", smoke_bundle) == 2
    err = capsys.readouterr().err
    assert "has no audio track; pass --audio FILE" in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


def test_eval_equals_the_training_side_evaluation(smoke_run, smoke_bundle, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert _cli("eval", "--model", smoke_bundle, "--data", smoke_run / "data" / "test", "--json", out,
                "--threads", "1", "--quiet") == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| metric | model | uniform | gaussian |")
    edge = json.loads(out.read_text())["table"]
    training = json.loads((smoke_run / "eval.json").read_text())["table"]
    assert set(edge["model"]) == set(training["model"])
    for column in ("model", "uniform", "gaussian"):
        for key, value in training[column].items():
            assert edge[column][key] == pytest.approx(value, abs=0.5), (column, key)


def test_bench_reports_every_stage(smoke_bundle, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert _cli("bench", "--model", smoke_bundle, "--runs", "3", "--warmup", "1", "--size", "320x240",
                "--threads", "1", "--variant", "int8", "--json", out) == 0
    report = json.loads(out.read_text())
    assert set(report["stages"]) == {"audio", "preprocess", "image", "head", "postprocess", "overlay"}
    assert all(v["median_ms"] > 0 and v["p90_ms"] >= v["median_ms"] for v in report["stages"].values())
    assert report["variant"] == "int8" and report["frame"] == {"width": 320, "height": 240}
    assert report["fps"]["frames"] > report["fps"]["end_to_end"] > 0
    assert "| image |" in capsys.readouterr().out


def test_info(smoke_bundle, capsys):
    assert _cli("info", "--model", smoke_bundle) == 0
    text = capsys.readouterr().out
    assert "accordion, banjo" in text and "(calibrated)" in text and "int8" in text and "CPUExecutionProvider" in text
    assert "image 64 px, feature map [4, 4], K = 11" in text  # trained at the size it runs at
    assert "operating points on " in text and "<= 10.0 %: " in text  # other --in-view-threshold choices
    assert "combined = sigmoid(" in text and "shipped in the package" not in text
    assert _cli("info", "--model", smoke_bundle, "--json", "--no-verify") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["calibrated"] and set(info["variants"]) == {"fp32", "fp16", "int8", "int8-cpu"}
    assert "CPUExecutionProvider" in info["providers_usable"]
    assert not info["packaged_default"] and info["rules"]["in_view_combination"]


@pytest.mark.parametrize("args,message", [
    (["bogus"], "invalid choice"),
    (["run"], "the following arguments are required"),
    (["run", "missing.mp4", "--out", "o.mp4"], "missing.mp4: no such video file"),
    (["run", "{video}", "--out", "o.avi"], "must end in .mp4, .mov or .mkv"),
    (["run", "{video}", "--out", "o.mp4", "--hop", "0"], "--hop must be > 0"),
    (["eval", "--data", "nowhere"], "nowhere"),
    (["eval", "--model", "nowhere", "--data", "nowhere"], "nowhere"),
    (["bench", "--size", "big"], "--size: must be WIDTHxHEIGHT"),
    (["bench", "--backend", "tensorrt", "--providers", "CPUExecutionProvider"], "--providers applies"),
    (["bench", "--providers", "FooExecutionProvider"], "not available"),
    (["info", "--model", "nowhere"], "no such bundle folder"),
])
def test_bad_usage_exits_2_without_traceback(args, message, smoke_bundle, video, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AVSL_EDGE_MODEL", str(smoke_bundle))
    assert cli.main([a.replace("{video}", str(video)) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_internal_errors_exit_1_with_a_traceback(monkeypatch, capsys):
    """Subcommands are a table: another one (e.g. `live`) plugs in the same way."""
    def boom(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "boom", cli.Command("boom", "fails", lambda p: None, boom))
    assert cli.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "internal error" in err


@pytest.fixture
def plugin(monkeypatch):
    """A command `hello` in a module of its own, named by an `avsl_edge.commands` entry point (the
    metadata an installed distribution would carry), plus one whose module does not exist."""
    seen: list[str] = []

    def configure(p):
        p.add_argument("--who", default="world")

    def handler(args):
        seen.append(args.who)
        return 0

    module = types.ModuleType("avsl_hello_plugin")
    module.HELLO = commands.Command("hello", "greets", configure, handler)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    group = [importlib.metadata.EntryPoint("hello", "avsl_hello_plugin:HELLO", commands.ENTRY_POINT_GROUP),
             importlib.metadata.EntryPoint("gone", "avsl_no_such_plugin:GONE", commands.ENTRY_POINT_GROUP)]
    asked: list[str] = []

    def entry_points(**kwargs):
        asked.append(kwargs["group"])
        return [ep for ep in group if ep.group == kwargs["group"]]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    before = dict(commands.COMMANDS)
    yield seen, asked
    commands.COMMANDS.clear()
    commands.COMMANDS.update(before)


def test_commands_from_entry_points_run_like_the_built_in_ones(plugin, capsys, caplog):
    seen, asked = plugin
    assert cli.main(["hello", "--who", "edge"]) == 0 and seen == ["edge"]
    assert asked and set(asked) == {"avsl_edge.commands"}
    assert cli.main(["--help"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("    ")
              and line[4] != " "]  # a command's first line, not a wrapped help line
    assert listed[:4] == ["run", "eval", "bench", "info"] and {"live", "hello"} <= set(listed[4:])
    assert "gone" not in listed  # its module does not exist: left out, with a warning, the others still work
    assert "left out the command 'gone' (avsl_no_such_plugin:GONE)" in caplog.text


def test_the_streaming_commands_are_found_without_the_entry_point_metadata(monkeypatch):
    """A source checkout (or an install made before the group existed) has no entry points: the
    built-in list still names `avsl-edge run`, `live` and `demo`, in the streaming layer."""
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: [])
    before = dict(commands.COMMANDS)
    commands.COMMANDS.pop("live", None)
    commands.COMMANDS.pop("run", None)
    commands.COMMANDS.pop("demo", None)
    try:
        assert commands.command_sources() == {"run": "runtime.run_command:RUN", "live": "runtime.live_command:LIVE",
                                              "demo": "runtime.demo_command:DEMO"}
        found = commands.discover_commands()
        assert list(found)[:6] == ["run", "eval", "bench", "info", "live", "demo"]
        assert found["demo"].handler.__module__ == "runtime.demo_command"
        assert found["live"].handler.__module__ == "runtime.live_command"
        assert found["run"].handler.__module__ == "runtime.run_command"
    finally:
        commands.COMMANDS.clear()
        commands.COMMANDS.update(before)


def test_an_entry_point_must_name_the_command_it_is_listed_as(monkeypatch):
    module = types.ModuleType("avsl_mislabelled_plugin")
    module.OTHER = commands.Command("other", "not hello", lambda p: None, lambda a: 0)
    module.NOT_A_COMMAND = print
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for value in ("avsl_mislabelled_plugin:OTHER", "avsl_mislabelled_plugin:NOT_A_COMMAND"):
        with pytest.raises(TypeError, match="is not the Command 'hello'"):
            commands.load_command("hello", value)


def test_console_script_runs_in_a_fresh_interpreter(smoke_bundle):
    out = subprocess.run([sys.executable, "-m", "avsl_edge.cli", "info", "--model", str(smoke_bundle), "--no-verify"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "classes" in out.stdout, out.stderr
