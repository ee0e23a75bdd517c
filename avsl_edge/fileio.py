"""Atomic file writing (write to a temporary sibling, then rename, so a crash never leaves a
half-written file under the final name), and the one check that a path an index file names stays
inside its folder (:func:`confined`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def temp_sibling(path: Path) -> Path:
    """A new empty temporary file next to ``path`` (same folder, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    return Path(tmp)


def commit(tmp: Path, path: Path) -> Path:
    """Give ``tmp`` the usual permissions (mkstemp makes it 0600) and rename it to ``path``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write(tmp)``: ``p`` appears only if the block succeeds."""
    path = Path(path)
    tmp = temp_sibling(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_dir(d) as tmp: fill(tmp)``: the folder ``d`` is replaced by the filled one only
    if the block succeeds (an existing ``d`` is moved aside, swapped, then removed); otherwise the
    temporary folder is removed and ``d`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            old.rmdir()
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def confined(root: str | os.PathLike, rel: Any, where: str, error: type[Exception] = ValueError,
             folder: str = "folder") -> Path:
    """``root / rel`` for a path that an index file (a bundle manifest, an AV-COCO annotation file)
    names, else ``error``. The path must be a non-empty relative string without ``..`` and, with
    every symlink resolved, stay inside ``root``: a hostile index can then neither read nor probe
    a file outside its folder. The message names the entry and the path as written, never what it
    resolves to (so it tells nothing about a file outside: whether it exists, its size, its hash)."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise error(f"{where}: path must be a non-empty string without NUL characters, got {rel!r}")
    p = Path(rel)
    root = Path(root)
    leaves = error(f"{where}: path {rel!r} leaves the {folder} {root}")
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise leaves
    try:
        resolved, top = (root / p).resolve(), root.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable folder: treated as leaving
        raise leaves from None
    if resolved == top or not resolved.is_relative_to(top):
        raise leaves
    return root / p
