"""What every ``avsl-edge`` subcommand shares: the :class:`Command` table, the model options,
the output guard, the JSON writer, the usage error; and how commands outside this package are found.

A leaf of the CLI: :mod:`avsl_edge.cli` and the commands defined elsewhere (``avsl-edge live`` lives
in the streaming layer, :mod:`runtime.live_command`) import this module, never each other. A
command outside this package is a :class:`Command` named in the ``avsl_edge.commands`` entry-point
group (``[project.entry-points."avsl_edge.commands"]`` in pyproject.toml: ``name = "module:OBJECT"``);
:func:`discover_commands` loads them when the parser is built, so importing the CLI loads none of them.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import load
from .backends import BACKENDS
from .boxes import BOX_METHODS
from .bundle import VARIANTS, json_default
from .variant_choice import ACCURACY_POINTS, AUTO_VARIANT
from .errors import UserError
from .fileio import atomic_path
from .fileio import check_outputs  # noqa: F401 - the output guard every command runs before any work
from .options import MAX_HOP_S, int_in, thread_count
from .overlay import STYLES
from .registry import resolve_model
from .rules import IN_VIEW_SCORES
from .streaming import DecisionHold

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "avsl_edge.commands"
# The commands this distribution ships outside avsl_edge: found without the entry-point metadata too
# (a source checkout on PYTHONPATH, an editable install made before the group existed).
BUILTIN_COMMANDS = {"run": "runtime.run_command:RUN", "live": "runtime.live_command:LIVE",
                    "demo": "runtime.demo_command:DEMO"}
# The order of ``avsl-edge --help``: the file commands, then the rest as registered.
COMMAND_ORDER = ("run", "eval", "bench", "info", "live", "demo")

MAX_SIDE = 7680  # bench --size, live --camera-size: an 8K frame's width


class UsageError(UserError, ValueError):
    """A bad command line or input file found after parsing (exit code 2)."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]  # adds the command's arguments
    handler: Callable[[argparse.Namespace], int]          # runs it, returns the exit code
    description: str = ""


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
                     handler: Callable[[argparse.Namespace], int], description: str = "") -> Command:
    """Add (or replace) a subcommand of ``avsl-edge``."""
    cmd = Command(name, help, configure, handler, description or help)
    COMMANDS[name] = cmd
    return cmd


def command_sources() -> dict[str, str]:
    """name -> "module:OBJECT" of the commands outside this package: the built-in ones, then the
    ``avsl_edge.commands`` entry points (an entry point of the same name replaces a built-in)."""
    found = dict(BUILTIN_COMMANDS)
    found.update({ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
    return found


def load_command(name: str, source: str) -> Command:
    """The :class:`Command` that ``source`` ("module:OBJECT") names."""
    module, _, attr = source.partition(":")
    cmd = getattr(importlib.import_module(module), attr or "COMMAND")
    if not isinstance(cmd, Command) or cmd.name != name:
        raise TypeError(f"{source} (command {name!r}) is not the Command {name!r}: {cmd!r}")
    return cmd


def discover_commands() -> dict[str, Command]:
    """Register every command of :func:`command_sources` not registered yet; returns the commands
    in :data:`COMMAND_ORDER`, then any others as registered.
    A third-party command that cannot be imported is left out with a warning, so it cannot break the others."""
    for name, source in command_sources().items():
        if name in COMMANDS:
            continue
        try:
            COMMANDS[name] = load_command(name, source)
        except ImportError as exc:
            if name in BUILTIN_COMMANDS and source == BUILTIN_COMMANDS[name]:
                raise
            log.warning("avsl-edge: left out the command %r (%s): %s", name, source, exc)
    rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
    return {name: COMMANDS[name] for name in sorted(COMMANDS, key=lambda n: rank.get(n, len(rank)))}


# --------------------------------------------------------------------------------------------
# shared options


def add_model_options(p: argparse.ArgumentParser, backend: bool = True, variant: str = "fp32") -> None:
    """--model, and unless ``backend`` is False the engine options; ``variant`` is --variant's default
    (fp32 where figures must match the training side, auto where speed matters)."""
    p.add_argument("--model", metavar="BUNDLE", help="bundle folder (default: $AVSL_EDGE_MODEL, else the bundle "
                   "the last `python -m training.pipeline` registered)")
    if not backend:
        return
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (TensorRT engines of the bundle when built for this GPU, else ONNX Runtime), "
                        "onnxruntime or tensorrt (default: auto)")
    p.add_argument("--variant", choices=(*VARIANTS, AUTO_VARIANT), default=variant,
                   help=f"precision variant (default: {variant}; auto: the fastest here within {ACCURACY_POINTS:g} "
                        "points of fp32 on the export's test split, timed at start)")
    p.add_argument("--providers", metavar="LIST",
                   help="ONNX Runtime execution providers, comma-separated, used as given "
                        "(default: TensorRT EP, CUDA EP, CPU, as far as they work here)")
    p.add_argument("--threads", type=thread_count, default=0, metavar="N",
                   help="ONNX Runtime intra-op threads (default 0: its default; at most 4 per core)")
    p.add_argument("--inter-threads", type=thread_count, default=0, metavar="N",
                   help="ONNX Runtime inter-op threads (default 0: its default; at most 4 per core)")


def add_stream_options(p: argparse.ArgumentParser) -> None:
    """The options of the streaming commands (``run``, ``live``): the hop schedule, the
    :class:`avsl_edge.streaming.DecisionHold`, the JSON lines, the drawing, the frame limit, the rules."""
    p.add_argument("--hop", type=float, default=0.25, metavar="SECONDS",
                   help="recompute the audio embedding every SECONDS on the last 1 s of sound (default 0.25); "
                        "frames in between reuse it")
    p.add_argument("--hold", type=float, default=0.5, metavar="SECONDS",
                   help="keep a class's box for SECONDS after the last frame that named it, so boxes do not "
                        "flicker (default 0.5; 0 = every frame on its own)")
    p.add_argument("--json", metavar="OUT.jsonl", type=Path,
                   help="one JSON line per frame drawn: frame, media_time, camera_index, elapsed, latency_ms, "
                        "audio_level_db, audio_class, then the result (boxes in the video's pixels)")
    p.add_argument("--style", choices=STYLES, default="heat", help="map drawing (default heat)")
    p.add_argument("--max-frames", type=int_in(1, 10**9), metavar="N", help="stop after N frames")
    p.add_argument("--in-view-threshold", type=float, metavar="X",
                   help="override the bundle's calibrated in-view threshold (0..1; 0 names the heard class "
                        "whenever the audio gate is open)")
    p.add_argument("--in-view-score", choices=IN_VIEW_SCORES,
                   help="what the in-view threshold applies to: the av map's max (av_score), how much the frame "
                        "shows the heard class (presence), the av map where the heard class is seen (heard_av), "
                        "the peak of the heard class's map (heard_class) or the calibrated mix (combined); "
                        "default: the bundle's calibrated choice")
    p.add_argument("--box-tau", type=float, metavar="X",
                   help="override the bundle's calibrated box cut (0..1: a class's box bounds where the av map is "
                        "above X times its max, or GrabCut's probable foreground)")
    p.add_argument("--box-method", choices=BOX_METHODS,
                   help="override the bundle's calibrated way of cutting boxes: map (the av map's blob, cheap) or "
                        "grabcut (the objects' outlines on the frame, 20-30 ms a frame on one core)")


def check_stream_options(args: argparse.Namespace) -> dict[str, float | str | None]:
    """Check what :func:`add_stream_options` parsed (before any model or device opens); returns the
    rule overrides for :func:`open_localizer`."""
    if not 0 < args.hop <= MAX_HOP_S:  # NaN fails too
        raise UsageError(f"--hop must be > 0 and at most {MAX_HOP_S:g} seconds, got {args.hop}")
    DecisionHold(args.hold)  # HoldError (a UserError) names a bad --hold
    for name in ("in_view_threshold", "box_tau"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    return {"in_view_threshold": args.in_view_threshold, "in_view_score": args.in_view_score,
            "box_tau": args.box_tau, "box_method": args.box_method}


def model_input(args: argparse.Namespace) -> Path | None:
    """The bundle folder the command will read (for the output guard), None when none is found
    (the command then reports that when it loads the model)."""
    try:
        return resolve_model(args.model)
    except UserError:
        return None


def open_localizer(args: argparse.Namespace, **rules: float | str) -> Any:
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers is not None else None
    if providers == []:
        raise UsageError(f"--providers {args.providers!r} names no provider; give a comma-separated list, "
                         "e.g. CUDAExecutionProvider,CPUExecutionProvider")
    if providers is not None and args.backend == "tensorrt":
        raise UsageError("--providers applies to the onnxruntime backend, not --backend tensorrt")
    return load(args.model, args.backend, providers, args.variant, intra_op_threads=args.threads,
                inter_op_threads=args.inter_threads, **rules)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")
