"""``avsl-edge demo``: the default model on the built-in clips, the way a user tries it before
anything else (the ``avsl_edge.commands`` command ``demo``; see :mod:`avsl_edge.commands`).

    avsl-edge demo                       # -> avsl-demo/: overlay videos with sound, grid.png, JSON lines
    avsl-edge demo --out /tmp/d --model runs/cpu/bundle

Each clip of ``avsl_edge/demo`` (short SynthMUSIC videos with their sound, listed with what they
show and what is heard in ``clips.json``) goes through ``avsl-edge run``'s loop; the command prints
a line per clip (what was heard in view, for how many frames, and where in the middle frame,
beside what the clip holds) and writes a picture grid of the middle frames.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from avsl_edge.commands import Command, UsageError, add_model_options, check_outputs, model_input, open_localizer
from avsl_edge.media import read_sound
from avsl_edge.result import Box
from avsl_edge.variant_choice import AUTO_VARIANT

from .run_command import run_file

GRID_COLUMNS = 3
TILE_HEIGHT = 256


def demo_folder() -> Path:
    """The built-in clips (package data of avsl_edge)."""
    return Path(str(importlib.resources.files("avsl_edge") / "demo"))


def configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR", type=Path, default=Path("avsl-demo"),
                   help="where the overlays, JSON lines and grid.png go (default: ./avsl-demo)")
    add_model_options(p, variant=AUTO_VARIANT)


def clip_line(clip: dict[str, Any], frames: int, heard: dict[str, int], audio: dict[str, int],
              middle: Sequence[Box]) -> str:
    """One clip's printed line: what the model heard (the top audio class), what it named in view and
    where, beside what the clip holds."""
    top = ", ".join(f"{c} ({100 * n / frames:.0f} %)" for c, n in list(audio.items())[:2]) or "silence"
    named = ", ".join(f"{c} ({100 * n / frames:.0f} % of frames)" for c, n in heard.items()) or "nothing"
    boxes = "; ".join(f"{b.label} at x {b.x:.0f}, y {b.y:.0f}, {b.w:.0f}x{b.h:.0f} px" for b in middle) or "no box"
    truth = ", ".join(clip["heard_in_view"]) or f"nothing (the {', '.join(clip['heard'])} is off-screen)"
    return (f"{clip['file']}: sounds like {top}; in view: {named}; middle frame: {boxes}. "
            f"The clip shows {', '.join(clip['shown'])}; sounding in view: {truth}")


def grid(tiles: list[np.ndarray], captions: list[str], columns: int = GRID_COLUMNS) -> np.ndarray:
    """RGB tiles scaled to one height, captioned, in rows of ``columns`` (black where a row is short)."""
    scaled = []
    for img, text in zip(tiles, captions):
        img = cv2.resize(img, (int(round(img.shape[1] * TILE_HEIGHT / img.shape[0])), TILE_HEIGHT),
                         interpolation=cv2.INTER_AREA)
        img = cv2.copyMakeBorder(img, 0, 28, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        cv2.putText(img, text, (6, TILE_HEIGHT + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        scaled.append(img)
    width = max(t.shape[1] for t in scaled)
    scaled = [cv2.copyMakeBorder(t, 0, 0, 0, width - t.shape[1], cv2.BORDER_CONSTANT, value=(0, 0, 0)) for t in scaled]
    blank = np.zeros_like(scaled[0])
    rows = [scaled[i:i + columns] for i in range(0, len(scaled), columns)]
    return np.vstack([np.hstack(r + [blank] * (columns - len(r))) for r in rows])


def cmd_demo(args: argparse.Namespace) -> int:
    folder = demo_folder()
    index = folder / "clips.json"
    if not index.is_file():
        raise UsageError(f"{folder}: the built-in clips are missing (reinstall avsl-edge)")
    meta = json.loads(index.read_text())
    clips = meta["clips"]
    out = args.out
    names = {f"{Path(c['file']).stem}_overlay.mp4" for c in clips} | {f"{Path(c['file']).stem}.jsonl" for c in clips}
    check_outputs({"--out": out}, {"--model": model_input(args)}, folders=("--out",))
    out.mkdir(parents=True, exist_ok=True)
    check_outputs({**{n: out / n for n in sorted(names)}, "grid.png": out / "grid.png"}, {"--model": model_input(args)})
    loc = open_localizer(args)
    print(f"demo: {len(clips)} built-in clips -> {out}/ ({loc.bundle.root}, {loc.backend.description})")
    tiles, captions = [], []
    for clip in clips:
        video = folder / clip["file"]
        sound, rate = read_sound(video)
        stem = Path(clip["file"]).stem
        middle = int(meta["seconds"] * meta["fps"]) // 2
        done = run_file(loc, video, sound, rate, out / f"{stem}_overlay.mp4", out / f"{stem}.jsonl", keep_frame=middle)
        print(clip_line(clip, done.frames, dict(done.log.heard.most_common()),
                        dict(done.log.audio_classes.most_common()),
                        done.kept_result.boxes if done.kept_result is not None else []))
        tiles.append(done.kept if done.kept is not None else np.zeros((TILE_HEIGHT, TILE_HEIGHT, 3), np.uint8))
        captions.append(clip["file"])
    picture = grid(tiles, captions)
    if not cv2.imwrite(str(out / "grid.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise UsageError(f"{out / 'grid.png'}: could not be written")
    print(f"overlay videos with their sound: {out}/*_overlay.mp4; middle frames: {out}/grid.png; "
          f"one JSON line per frame: {out}/*.jsonl")
    return 0


DEMO = Command(
    "demo", "the model on the built-in clips: overlay videos with sound, a picture grid, a line per clip",
    configure_demo, cmd_demo,
    "Run the model (default: the one shipped in the package) on the built-in SynthMUSIC clips through the "
    "loop of `avsl-edge run`: an overlay video with its sound and JSON lines per clip, grid.png with each clip's "
    "middle frame, and one printed line per clip of what was heard in view and where, beside what the clip holds.")
