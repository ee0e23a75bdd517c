"""Memory soak of ``avsl-edge live``: ``python -m benchmarks.soak --bundle B [--minutes 10]``.

Runs ``avsl-edge live`` headless on a file camera and a file microphone that loop a SynthMUSIC
duet for ``--minutes`` (the clip is repeated by stream copy with ffmpeg, the sound tiled), samples
the process's resident memory (``/proc/<pid>/status`` VmRSS, or psutil where /proc is absent) every
``--interval`` seconds, and prints the peak, the RSS after the first minute (warm) and at the end,
and the drift: the least-squares slope of RSS over the run after its first minute, in MB per
minute. Writes a JSON summary (default benchmarks/soak.json) with every sample. Target (issue 7):
peak under 500 MB and no upward drift over a 10-minute run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from avsl_edge.options import thread_count

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MB (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        pass
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss / 2 ** 20
    except Exception:  # noqa: BLE001 - psutil missing or the process gone
        return None


def looping_inputs(workdir: Path, seconds: float, clip_seconds: float = 10.0) -> tuple[Path, Path]:
    """A ``seconds``-long video that repeats a ``clip_seconds`` SynthMUSIC duet (stream copy, no
    re-encoding) and the matching WAV: a camera and a microphone that loop."""
    from avsl_edge.audio import save_audio
    from avsl_edge.media import read_audio_track
    from training.data.synth import write_scene_video

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("benchmarks.soak needs the ffmpeg program to loop the test clip (apt-get install ffmpeg)")
    clip = workdir / "clip.mp4"
    write_scene_video(clip, "duet", seed=3, seconds=clip_seconds, fps=30.0)
    loops = int(np.ceil(seconds / clip_seconds))
    video, wav = workdir / "soak.mp4", workdir / "soak.wav"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(clip), "-an", "-c", "copy",
                    str(video)], check=True)
    save_audio(wav, np.tile(read_audio_track(clip), loops))
    return video, wav


def drift_mb_per_min(t: np.ndarray, mb: np.ndarray, skip_s: float = 60.0) -> float | None:
    keep = t >= min(skip_s, t[-1] / 2) if len(t) else t
    if keep.sum() < 3:
        return None
    slope = np.polyfit(t[keep] / 60.0, mb[keep], 1)[0]
    return float(slope)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--variant", default="int8-cpu")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples")
    p.add_argument("--threads", type=thread_count, default=2)
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "soak.json")
    p.add_argument("extra", nargs="*", help="more `avsl-edge live` options (after --)")
    args = p.parse_args(argv)
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="avsl-soak-") as tmp:
        work = Path(tmp)
        video, wav = looping_inputs(work, seconds + 15)
        summary = work / "summary.json"
        cmd = [sys.executable, "-m", "avsl_edge.cli", "live", "--camera", str(video), "--mic", str(wav),
               "--model", str(args.bundle), "--variant", args.variant, "--backend", "onnxruntime",
               "--threads", str(args.threads), "--no-display", "--max-frames", str(int(seconds * 30)),
               "--summary-json", str(summary), *args.extra]
        print(f"[soak] {' '.join(cmd)}", file=sys.stderr, flush=True)
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t0 = time.monotonic()
        samples: list[tuple[float, float]] = []
        last_print = 0.0
        while proc.poll() is None:
            now = time.monotonic() - t0
            mb = rss_mb(proc.pid)
            if mb is not None:
                samples.append((now, mb))
            if now - last_print >= 30:
                print(f"[soak] {now / 60:5.1f} min: RSS {mb} MB", file=sys.stderr, flush=True)
                last_print = now
            if now > seconds + 120:  # the live loop should have stopped at --max-frames
                proc.terminate()
            time.sleep(args.interval)
        output = proc.stdout.read() if proc.stdout else ""
        live = json.loads(summary.read_text()) if summary.is_file() else None
    t = np.asarray([s[0] for s in samples])
    mb = np.asarray([s[1] for s in samples])
    if proc.returncode != 0 or live is None or len(t) == 0:
        print(output[-2000:], file=sys.stderr)
        print(f"[soak] avsl-edge live failed (exit {proc.returncode})", file=sys.stderr)
        return 1
    warm = mb[t >= min(60.0, t[-1] / 2)]
    result = {
        "bundle": str(args.bundle), "variant": args.variant, "minutes": args.minutes, "threads": args.threads,
        "run_s": round(float(t[-1]), 1), "peak_rss_mb": round(float(mb.max()), 1),
        "rss_after_1min_mb": round(float(warm[0]), 1), "rss_end_mb": round(float(mb[-1]), 1),
        "drift_mb_per_min": None if (d := drift_mb_per_min(t, mb)) is None else round(d, 3),
        "live": {k: live[k] for k in ("frames", "fps", "latency_ms", "stages_ms", "camera_dropped", "mic_overflows",
                                      "reason")},
        "samples": [[round(a, 2), round(b, 1)] for a, b in samples],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    ok = result["peak_rss_mb"] < 500 and (result["drift_mb_per_min"] or 0.0) < 1.0
    print(f"soak {args.minutes:g} min ({args.variant}): peak RSS {result['peak_rss_mb']} MB, after 1 min "
          f"{result['rss_after_1min_mb']} MB, end {result['rss_end_mb']} MB, drift {result['drift_mb_per_min']} "
          f"MB/min; live {live['fps']} FPS over {live['frames']} frames, latency median "
          f"{live['latency_ms']['median_ms']} ms; target (peak < 500 MB, drift < 1 MB/min): {'met' if ok else 'MISSED'}")
    print(f"(JSON: {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
