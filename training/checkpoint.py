"""Checkpoints: plain dicts of tensors and primitives, loaded with ``torch.load(weights_only=True)``.

Every file carries ``format`` and ``kind`` so a foreign or mismatched file is a clear error, and
stage-one files carry the clustering ``round`` that stage two checks against the dictionary.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from avsl_edge.errors import UserError
from avsl_edge.fileio import atomic_path

FORMAT = "avsl-edge/checkpoint"
VERSION = 1
KINDS = ("stage_one", "stage_two")


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, corrupt, foreign, or of the wrong kind/round."""


def save_checkpoint(path: str | os.PathLike, kind: str, **payload: Any) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a truncated checkpoint."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, "kind": kind, **payload}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location: Any = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint (not a torch.save archive)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({exc})") from exc
    except Exception as exc:  # the restricted unpickler refuses anything but tensors & primitives
        raise CheckpointError(f"{path}: not a safe avsl-edge checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an avsl-edge checkpoint (no '{FORMAT}' format tag)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not {VERSION}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: is a {ckpt.get('kind')} checkpoint, expected {kind}")
    return ckpt
