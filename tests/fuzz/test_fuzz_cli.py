"""Property-based command lines: random thread counts, sizes, counts, floats and output paths for
every `avsl-edge` command. Whatever the values, the command ends with exit 0 or 2 (a one-line
message), never 1 and never a traceback; a value is accepted exactly when it is in its documented
range. The model is never loaded (a stand-in refuses politely once every check has passed), so
these run in seconds."""

from __future__ import annotations

import contextlib
import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avsl_edge import cli
from runtime import live_command as live
from runtime import run_command
from avsl_edge.errors import UserError
from avsl_edge.options import max_threads

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PASSED = "all checks passed"


class ChecksPassed(UserError):
    """Raised instead of loading the model: the command line got through every check."""


@pytest.fixture
def world(tmp_path_factory, monkeypatch):
    """A folder with one of everything a clumsy command line points at, and no model to load."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "video.mp4").write_bytes(b"\x00" * 64)  # parsed as a path only: the model stand-in stops first
    (root / "sound.wav").write_bytes(b"\x00" * 64)
    (root / "folder").mkdir()
    (root / "data").mkdir()
    (root / "data" / "annotations.json").write_text("{}")
    os.mkfifo(root / "pipe.json")
    (root / "link.mp4").symlink_to(root / "video.mp4")
    os.link(root / "sound.wav", root / "hard.wav")

    def stand_in(*args, **kwargs):
        raise ChecksPassed(PASSED)

    import numpy as np

    from avsl_edge import bench

    monkeypatch.setattr(cli, "open_localizer", stand_in)
    # bench draws its synthetic frame before the model loads: a 4K one takes seconds, too slow here
    monkeypatch.setattr(bench, "synthetic_inputs", lambda w=640, h=480, *a, **k: (
        np.zeros((2, 2, 3), np.uint8), np.zeros((16, 2), np.int16)))
    monkeypatch.setattr(live, "open_localizer", stand_in)
    monkeypatch.setattr(run_command, "open_localizer", stand_in)
    monkeypatch.setenv("AVSL_EDGE_MODEL", str(root / "no-bundle"))
    monkeypatch.chdir(root)
    return root


def run(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(args)
    return code, err.getvalue()


def ends_cleanly(code: int, err: str) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err and "internal error" not in err, err


numbers = st.one_of(st.integers(-10**7, 10**7).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["", " ", "1e3", "0x10", "nan", "-0", "+3", "08", "1_000", "٣"]),
                    st.text(max_size=6))
output_paths = st.sampled_from(["out.json", "video.mp4", "link.mp4", "hard.wav", "sound.wav", "folder", "pipe.json",
                                "missing/out.json", "data/annotations.json", "data", ".", "", "/proc/x.json",
                                "folder/../video.mp4", "out.mp4"])


@FUZZ
@given(threads=numbers, inter=numbers, command=st.sampled_from(["bench", "live"]))
def test_thread_counts_are_accepted_exactly_in_range(world, threads, inter, command):
    base = {"bench": ["bench"], "live": ["live", "--camera", "video.mp4", "--mic", "sound.wav", "--no-display"]}
    code, err = run(base[command] + ["--threads", threads, "--inter-threads", inter])
    ends_cleanly(code, err)

    def in_range(text: str) -> bool:
        try:
            return 0 <= int(text.strip()) <= max_threads()
        except ValueError:
            return False

    assert (PASSED in err) == (in_range(threads) and in_range(inter)), err


@FUZZ
@given(width=st.integers(-5, 10**6), height=st.integers(-5, 10**6), runs=numbers, warmup=numbers)
def test_bench_sizes_and_runs(world, width, height, runs, warmup):
    code, err = run(["bench", "--size", f"{width}x{height}", "--runs", runs, "--warmup", warmup])
    ends_cleanly(code, err)
    if PASSED in err:
        assert 1 <= width <= cli.MAX_SIDE and 1 <= height <= cli.MAX_SIDE and width * height <= cli.MAX_PIXELS
        assert 1 <= int(runs) <= cli.MAX_RUNS and 0 <= int(warmup) <= cli.MAX_RUNS


@FUZZ
@given(hop=numbers, max_frames=numbers, out=output_paths, json_out=output_paths)
def test_run_options_and_output_paths(world, hop, max_frames, out, json_out):
    before = {p: (world / p).read_bytes() for p in ("video.mp4", "sound.wav")}
    code, err = run(["run", "video.mp4", "--audio", "hard.wav", "--out", out, "--json", json_out, "--hop", hop,
                     "--max-frames", max_frames])
    ends_cleanly(code, err)
    assert {p: (world / p).read_bytes() for p in before} == before  # no input is ever touched
    assert (world / "pipe.json").is_fifo() and not (world / "out.json").exists()


@FUZZ
@given(record=output_paths, json_out=output_paths, summary=output_paths, workers=numbers, display_min=numbers,
       camera_size=st.one_of(numbers, st.tuples(st.integers(-3, 10**5), st.integers(-3, 10**5)).map(
           lambda wh: f"{wh[0]}x{wh[1]}")),
       threshold=numbers)
def test_live_options_and_output_paths(world, record, json_out, summary, workers, display_min, camera_size, threshold):
    code, err = run(["live", "--camera", "video.mp4", "--mic", "sound.wav", "--no-display", "--record", record,
                     "--json", json_out, "--summary-json", summary, "--workers", workers, "--display-min",
                     display_min, "--camera-size", camera_size, "--in-view-threshold", threshold])
    ends_cleanly(code, err)
    if PASSED in err:
        assert len({os.path.realpath(world / p) for p in (record, json_out, summary)}) == 3


@FUZZ
@given(batch=numbers, json_out=output_paths, markdown=output_paths)
def test_eval_options_and_output_paths(world, batch, json_out, markdown):
    code, err = run(["eval", "--data", "data", "--batch-size", batch, "--json", json_out, "--markdown", markdown])
    ends_cleanly(code, err)
    assert (world / "data" / "annotations.json").read_text() == "{}"
