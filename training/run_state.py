"""A run folder's bookkeeping: which steps are finished (``state.json``), what the run writes
(so ``--force`` removes exactly that), and whether a folder holds a run at all.

Paths in ``state.json`` are relative to the run folder, so a copied or moved run resumes from its
own files. A state file from before that (absolute paths, or paths relative to the directory the
run was started from) is read as it was written, and accepted only where a path lies inside this
run folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from avsl_edge.errors import UserError
from avsl_edge.fileio import atomic_path
from training.config import ConfigError, load_config

STATE_FORMAT = "avsl-edge/run-state"
STATE_VERSION = 2
PATH_STEPS = ("data", "stage_one", "stage_two", "report", "export")  # steps whose value is a file they wrote

# everything a run writes into its folder; --force removes these (and nothing else) before it starts.
# Folders: data/test and bundle are replaced whole by their writers anyway; of rounds/ only the
# round files go (a folder left empty goes too).
RUN_OUTPUTS = ("state.json", "config.json", "metrics.jsonl", "stage_one_last.pt", "stage_one_last.pt.sha256",
               "stage_one.json", "rounds", "stage_two_last.pt", "stage_two_last.pt.sha256", "stage_two.json",
               "model.pt", "model.pt.sha256", "eval.json", "eval.md", "report.md", "curves.png", "figure.png",
               "data/test", "data/contact_sheet.png", "bundle")
# round files, their sidecars, and the temporary siblings a crash may leave of either
ROUND_FILE = re.compile(r"round_\d{3,}\.pt(\.sha256)?|\.round_\d{3,}(\.pt)?\.[a-z0-9_]{8}\.(pt|sha256)")
FORCE_HINT = "delete the folder yourself or choose another --out"


class RunStateError(UserError):
    """A run folder whose state.json cannot be used (damaged, foreign, or pointing outside the run)."""


class RunFolderError(UserError):
    """A run folder that cannot take the run: it holds other files but no run, or cannot be written."""


def run_signature(run_dir: Path) -> str | None:
    """Why ``run_dir`` is not a run folder, or None when it is one: its config.json reads as a run's
    configuration, or its state.json as a run's state."""
    reasons = []
    try:
        load_config(run_dir / "config.json")
        return None
    except ConfigError as exc:
        reasons.append(str(exc))
    state = run_dir / "state.json"
    if state.is_file():
        try:
            read_state(state)
            return None
        except RunStateError as exc:
            reasons.append(str(exc))
    return "; ".join(reasons)


def _temp_name(name: str) -> re.Pattern:
    """Temporary siblings that :func:`avsl_edge.fileio.temp_sibling` makes for ``name`` (a crash can
    leave one behind)."""
    p = Path(name)
    return re.compile(rf"\.{re.escape(p.stem)}\.[A-Za-z0-9_]{{8}}{re.escape(p.suffix)}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def clear_run(run_dir: Path) -> list[str]:
    """Remove an earlier run's outputs from ``run_dir`` (a fresh run would otherwise append to its
    metrics log and leave its later rounds and bundle files behind); other files stay. Returns
    what was removed."""
    removed = []
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if name == "rounds" and path.is_dir() and not path.is_symlink():
            files = [p for p in sorted(path.iterdir()) if ROUND_FILE.fullmatch(p.name) and not p.is_dir()]
            for p in files:
                p.unlink()
            if files:
                removed.append(name)
            if not any(path.iterdir()):
                path.rmdir()
            continue
        if path.exists() or path.is_symlink():
            _remove(path)
            removed.append(name)
        pattern = _temp_name(Path(name).name)
        if path.parent.is_dir() and "." in name:
            for p in path.parent.iterdir():
                if pattern.fullmatch(p.name) and p.is_file():
                    p.unlink()
                    removed.append(str(p.relative_to(run_dir)))
    return removed


def read_state(path: Path) -> dict:
    """``state.json`` checked for shape (not yet for its paths): a RunStateError naming the file."""
    hint = "start afresh with --force"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunStateError(f"{path}: damaged or unreadable run state ({exc}); {hint}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("done"), dict):
        raise RunStateError(f"{path}: not a run's state (no 'done' table); {hint}")
    if "version" in data and (data.get("format") != STATE_FORMAT or data["version"] not in (STATE_VERSION,)):
        raise RunStateError(f"{path}: run state {data.get('format')!r} version {data.get('version')!r} is not "
                            f"{STATE_FORMAT!r} version {STATE_VERSION}; {hint}")
    if not isinstance(data["done"].get("timings", {}), dict):
        raise RunStateError(f"{path}: damaged run state ('timings' is not a table); {hint}")
    return data


class State:
    """Which steps of a run are finished (``state.json``), so ``--resume`` skips them. The values of
    :data:`PATH_STEPS` are files inside the run, stored relative to it and handed out as paths."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "state.json"
        if self.path.is_file():
            raw = read_state(self.path)
            legacy = "version" not in raw
            done = {step: self._inside(step, value, legacy) if step in PATH_STEPS and isinstance(value, str)
                    else value for step, value in raw["done"].items()}
        elif self.path.exists():
            raise RunStateError(f"{self.path}: is not a file; remove it and resume (every step then runs again, "
                                f"the two stages from their last checkpoints), or start afresh with --force")
        else:
            done = {}
        self.data = {"format": STATE_FORMAT, "version": STATE_VERSION, "done": done}

    def _inside(self, step: str, value: str, legacy: bool) -> str:
        """``value`` as a path relative to the run folder (POSIX form)."""
        p = Path(value)
        if not legacy and (p.is_absolute() or ".." in p.parts):
            raise RunStateError(f"{self.path}: step {step!r} points at {value}, outside the run folder; "
                                f"start afresh with --force")
        root = Path(os.path.abspath(self.run_dir))
        # the old code stored paths as it wrote them: absolute, or relative to where the run was started
        target = Path(os.path.abspath(p if legacy else self.run_dir / p))
        for a, b in ((target, root), (target.resolve(), root.resolve())):
            try:
                return a.relative_to(b).as_posix()
            except ValueError:
                continue
        raise RunStateError(f"{self.path}: step {step!r} points at {value}, outside this run folder (a run copied "
                            f"or moved from there?); resume it in its own folder, or start afresh with --force")

    def done(self, step: str) -> Any:
        """The value a finished step left (a path for :data:`PATH_STEPS`), or None."""
        value = self.data["done"].get(step)
        if step in PATH_STEPS and isinstance(value, str):
            return str(self.run_dir / value)
        return value

    def mark(self, step: str, value: Any = True) -> None:
        if step in PATH_STEPS and isinstance(value, (str, os.PathLike)):
            value = Path(os.path.abspath(value)).relative_to(os.path.abspath(self.run_dir)).as_posix()
        self.data["done"][step] = value
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2))
