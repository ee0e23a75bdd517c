"""Checkpoints: plain dicts of tensors and primitives, loaded with ``torch.load(weights_only=True)``.

Every file carries ``format`` and ``kind`` so a foreign or mismatched file is a clear error, and
stage-one files carry the clustering ``round`` that stage two checks against the dictionary.

Each checkpoint ``x.pt`` gets a sidecar ``x.pt.sha256`` (``sha256sum`` format) written with it;
every load checks the file against it, because torch.load reads tensor bytes without checking
them: a flipped byte in a tensor would load as a silently different weight. Files without a
sidecar (written before sidecars, or copied alone) are still checked against the zip's own CRCs.
"""

from __future__ import annotations

import hashlib
import io
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
DIGEST_SUFFIX = ".sha256"
REMEDY = ("delete it and rerun with --resume to remake it (in a run folder), "
          "or start the run afresh with --force")


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, corrupt, foreign, or of the wrong kind/round."""


def digest_path(path: str | os.PathLike) -> Path:
    """The sidecar that records ``path``'s sha256."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recorded_digests(path: str | os.PathLike) -> list[str] | None:
    """The digests ``path``'s sidecar accepts (one; two while a save is replacing the file), or
    None when there is no sidecar. A sidecar that cannot be read is a CheckpointError."""
    sidecar = digest_path(path)
    if not sidecar.exists():
        return None
    try:
        lines = sidecar.read_text(encoding="ascii").splitlines()
        digests = [line.split()[0].lower() for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{sidecar}: unreadable checksum file ({exc}); {REMEDY}") from exc
    if not digests or not all(len(d) == 64 and all(c in "0123456789abcdef" for c in d) for d in digests):
        raise CheckpointError(f"{sidecar}: damaged checksum file (no sha256 in it); {REMEDY}")
    return digests


def _write_digests(path: Path, digests: list[str]) -> None:
    with atomic_path(digest_path(path)) as tmp:
        tmp.write_text("".join(f"{d}  {path.name}\n" for d in digests), encoding="ascii")


def save_checkpoint(path: str | os.PathLike, kind: str, **payload: Any) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a truncated checkpoint. The
    sidecar accepts the old and the new digest while the file is swapped, so a crash between the
    two renames leaves a pair that still verifies."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    try:
        previous = (recorded_digests(path) or []) if path.is_file() else []
    except CheckpointError:
        previous = []  # a damaged sidecar only ever vouched for a file this save replaces
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, "kind": kind, **payload}, tmp)
        digest = sha256_of(tmp)
        _write_digests(path, [digest, *(d for d in previous if d != digest)])
    _write_digests(path, [digest])
    return path


def verify_checkpoint(path: str | os.PathLike) -> bytes:
    """The bytes of ``path`` once they match its sidecar (when it has one) and the zip's CRCs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from exc
    expected = recorded_digests(path)
    if expected is not None and hashlib.sha256(data).hexdigest() not in expected:
        raise CheckpointError(f"{path}: damaged checkpoint: its sha256 is not the one {digest_path(path).name} "
                              f"recorded when it was written; {REMEDY}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            bad = z.testzip()
    except Exception as exc:  # zipfile raises many kinds on a damaged directory
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint (not a torch.save archive: "
                              f"{type(exc).__name__}: {exc}); {REMEDY}") from exc
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: the zip CRC of its record {bad!r} does not match; {REMEDY}")
    return data


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location: Any = "cpu") -> dict:
    path = Path(path)
    data = verify_checkpoint(path)
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # a damaged pickle raises anything; the restricted unpickler refuses non-tensors
        raise CheckpointError(f"{path}: corrupt, unreadable or unsafe checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an avsl-edge checkpoint (no '{FORMAT}' format tag)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not {VERSION}")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: is a {ckpt.get('kind')} checkpoint, expected {kind}")
    return ckpt


def require(ckpt: dict, path: str | os.PathLike, *keys: str) -> None:
    """A CheckpointError naming ``path`` when ``ckpt`` lacks any of ``keys``."""
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a complete {ckpt.get('kind', 'avsl-edge')} checkpoint "
                              f"(missing {', '.join(missing)}); {REMEDY}")
