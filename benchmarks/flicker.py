"""How steady streaming decisions are: ``python -m benchmarks.flicker --model BUNDLE``.

Renders steady SynthMUSIC scene videos (solo and duet layouts that drift a little, the same
instruments playing throughout) whose sound starts after ``--lead`` seconds of silence, runs them
through the path of ``avsl-edge run`` (the audio embedding every ``--hop`` seconds on the second of
sound ending at the frame, the image path on every frame), and applies each ``--holds`` value of
:class:`avsl_edge.streaming.DecisionHold` to the same results. Per hold it prints, over the steady
part (from ``--lead`` + 1 s, when the window is full of sound):

- flicker: state changes per second (a class going from shown to dark or back), median and mean;
- coverage: the share of steady frames that show every visible sounding class, and of those that
  show a class that is not sounding in view;
- onset delay: from the sound's onset to the first frame that shows a visible sounding class
  (median over the scenes that show it at all, and how many never do).

Writes the figures as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

import avsl_edge
from avsl_edge.audio import SAMPLE_RATE
from avsl_edge.metrics import onset_delay, state_changes_per_second
from avsl_edge.streaming import DecisionHold, HopSchedule, window_ending_at
from training.data.synth import SynthConfig, SynthMusic


def scene_stream(loc, video, lead: float, hop: float) -> tuple[list, list[float]]:
    """Raw per-frame results of one scene video whose sound starts at ``lead`` seconds."""
    sound = np.concatenate([np.zeros(int(round(lead * SAMPLE_RATE)), np.float32), video.audio])
    hops, state, results, times = HopSchedule(hop), None, [], []
    for i, frame in enumerate(video.frames):
        t = i / video.fps
        if hops.due(t):
            state = loc.encode_audio(window_ending_at(sound, t), SAMPLE_RATE)
        results.append(loc.localize_frame(frame, state, rgb=True))
        times.append(t)
    return results, times


def figures(streams, holds: list[float], lead: float) -> list[dict]:
    out = []
    for h in holds:
        flicker, full, wrong, delays, never = [], [], [], [], 0
        for (results, times), truth in streams:
            hold = DecisionHold(h)
            shown = [hold.update(t, r).sounding for r, t in zip(results, times)]
            steady = [i for i, t in enumerate(times) if t >= lead + 1.0]
            flicker.append(state_changes_per_second([shown[i] for i in steady], [times[i] for i in steady]))
            full.append(np.mean([set(truth) <= set(shown[i]) for i in steady]))
            wrong.append(np.mean([bool(set(shown[i]) - set(truth)) for i in steady]))
            first = [d for c in truth if (d := onset_delay(shown, times, c, lead)) is not None]
            if first:
                delays.append(min(first))
            else:
                never += 1
        out.append({"hold_s": h, "flicker_per_s_median": float(np.median(flicker)),
                    "flicker_per_s_mean": float(np.mean(flicker)),
                    "frames_showing_all_sounding": float(np.mean(full)), "frames_showing_a_wrong_class": float(np.mean(wrong)),
                    "onset_delay_s_median": float(np.median(delays)) if delays else None,
                    "scenes_never_shown": never, "scenes": len(streams)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flicker", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="bundle folder")
    p.add_argument("--variant", default="fp32")
    p.add_argument("--scenes", type=int, default=12, help="scene videos per kind (solo, duet)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each video, after the lead")
    p.add_argument("--lead", type=float, default=1.0, help="seconds of silence before the sound starts")
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--hop", type=float, default=0.25)
    p.add_argument("--holds", default="0,0.25,0.5,1.0", help="hold times to compare, seconds")
    p.add_argument("--pack", default="v1", choices=("v1", "v2"), help="SynthMUSIC asset pack of the scenes")
    p.add_argument("--in-view-threshold", type=float, help="override the bundle's calibrated in-view threshold")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    holds = [float(x) for x in args.holds.split(",") if x.strip()]
    rules = {} if args.in_view_threshold is None else {"in_view_threshold": args.in_view_threshold}
    loc = avsl_edge.load(args.model, variant=args.variant, **rules)
    size = max(64, loc.bundle.manifest.preprocessing.image_size)
    synth = SynthMusic(SynthConfig(image_size=size, pack=args.pack))
    streams = []
    for kind in ("solo", "duet"):
        for seed in range(args.scenes):
            video = synth.render_video(kind, 1000 + seed, args.seconds + args.lead, fps=args.fps)
            video = dataclasses.replace(video, audio=video.audio[:int(round(args.seconds * SAMPLE_RATE))])
            visible = {o.category for o in video.objects[0]}
            streams.append((scene_stream(loc, video, args.lead, args.hop), sorted(set(video.audio_classes) & visible)))
        print(f"[flicker] {kind}: {args.scenes} scenes", file=sys.stderr, flush=True)
    rows = figures(streams, holds, args.lead)
    print(f"{args.model} ({loc.backend.variant}), rules {loc.rules.to_dict()}")
    print("| hold s | flicker /s median (mean) | frames showing all sounding | frames showing a wrong class "
          "| onset delay s (median) | scenes never shown |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        d = r["onset_delay_s_median"]
        print(f"| {r['hold_s']:g} | {r['flicker_per_s_median']:.2f} ({r['flicker_per_s_mean']:.2f}) "
              f"| {100 * r['frames_showing_all_sounding']:.1f} % | {100 * r['frames_showing_a_wrong_class']:.1f} % "
              f"| {'-' if d is None else f'{d:.2f}'} | {r['scenes_never_shown']} / {r['scenes']} |")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "variant": loc.backend.variant,
                                         "rules": loc.rules.to_dict(), "options": vars(args) | {"model": str(args.model),
                                         "json": str(args.json)}, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
