"""Atomic file writing (write to a temporary sibling, then rename, so a crash never leaves a
half-written file under the final name); :func:`check_outputs`, the one guard every command runs on
its output paths before it starts (no output may replace an input or another output, and each must
be writable); and :func:`confined`, the one check that a path an index file (a bundle manifest, an
AV-COCO annotations file) names stays inside its folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import OutputExistsError, UserError


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


# --------------------------------------------------------------------------------------------
# checking a command's outputs before it starts


class OutputPathError(UserError, OSError):
    """An output that cannot be written where it was asked for (a missing or read-only folder, a
    folder where a file belongs, a device)."""


PathArg = str | os.PathLike | None


def _same_file(a: Path, b: Path) -> bool:
    """The same file or folder: equal once symlinks are resolved, or one inode (hardlinks)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _inside(path: Path, folder: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real != top and real.startswith(top.rstrip(os.sep) + os.sep)


def _probe_folder(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (None when one can): tried for real, since
    permission bits do not tell (root, read-only mounts, /proc)."""
    if not folder.exists():
        return f"the folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".avsl-write-check-")
    except OSError as exc:
        return f"cannot write in the folder {folder} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(tmp)
    return None


def writable_problem(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why ``path`` cannot be written as a file (``folder=True``: as a folder to fill), or None."""
    path = Path(path)
    if folder and path.is_dir():
        return _probe_folder(path)
    if path.is_dir():
        return "is a folder, not a file"
    if path.exists() and not path.is_file():
        return "exists and is not a regular file (a device, pipe or socket)"
    if path.exists() and folder:
        return "is a file, not a folder"
    return _probe_folder(path.absolute().parent)


def check_outputs(outputs: Mapping[str, PathArg], inputs: Mapping[str, PathArg] | None = None,
                  folders: Iterable[str] = (), replaced: Iterable[str] = ()) -> None:
    """Refuse a command's outputs before any work starts.

    ``outputs`` and ``inputs`` map an option name ("--out", "VIDEO") to its path (None: not
    given); ``folders`` names the outputs that are folders new files go into, ``replaced`` those
    that are folders replaced as a whole (a bundle). Raises :class:`OutputExistsError` when an
    output is an input (or an existing file inside an input folder), another output, or a replaced
    folder holding an input, symlinks and hardlinks included; :class:`OutputPathError` when an
    output cannot be written.
    """
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    ins = [(name, Path(p)) for name, p in (inputs or {}).items() if p is not None and str(p) != ""]
    replaced = set(replaced)
    folders = set(folders) | replaced
    for i, (name, path) in enumerate(outs):
        for in_name, src in ins:
            if _same_file(path, src):
                raise OutputExistsError(f"{name} {path} would overwrite the input {in_name} {src}")
            if src.is_dir() and path.exists() and _inside(path, src):
                raise OutputExistsError(f"{name} {path} would overwrite a file of the input {in_name} {src}")
            if name in replaced and _inside(src, path):
                raise OutputExistsError(f"{name} {path} would replace a folder holding the input {in_name} {src}")
        for other_name, other in outs[:i]:
            if _same_file(path, other):
                raise OutputExistsError(f"{name} {path} and {other_name} {other} are the same file")
        why = writable_problem(path, folder=name in folders)
        if why:
            raise OutputPathError(f"{name} {path}: {why}")


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
