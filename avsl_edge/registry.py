"""Where the edge library finds a model when none is named.

``python -m training.pipeline`` registers the bundle it exported in a small text file in the
user's cache folder; :func:`resolve_model` looks, in order, at

1. the ``model`` argument (a bundle folder),
2. the ``AVSL_EDGE_MODEL`` environment variable,
3. the bundle the last pipeline run registered (``$XDG_CACHE_HOME/avsl-edge/last_bundle``,
   ``~/.cache/avsl-edge/last_bundle`` when XDG_CACHE_HOME is unset),
4. the default model shipped inside the package (:data:`PACKAGED_BUNDLE`, see its model card
   ``MODEL_CARD.md`` there),

and otherwise (a source tree without the shipped model) raises :class:`ModelNotFoundError` saying
how to get a bundle.

    >>> import os, tempfile
    >>> os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp()
    >>> _ = register_bundle(tempfile.mkdtemp())
    >>> last_bundle() is not None
    True
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError
from .fileio import atomic_path

ENV_MODEL = "AVSL_EDGE_MODEL"
PACKAGED_BUNDLE = Path(__file__).parent / "models" / "default"  # the shipped default model
LAST_BUNDLE_FILE = "last_bundle"
HOW_TO_GET_A_MODEL = (
    "train and export one with `python -m training.pipeline --preset cpu` (it registers its bundle), "
    "export an existing run with `python export/to_onnx.py --checkpoint RUN --out BUNDLE`, "
    f"then pass model=BUNDLE (CLI: --model BUNDLE) or set {ENV_MODEL}=BUNDLE"
)


class ModelNotFoundError(UserError, FileNotFoundError):
    """No bundle was named and none is configured or registered."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/avsl-edge`` (default ``~/.cache/avsl-edge``); not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "avsl-edge"


def register_bundle(path: str | os.PathLike) -> Path:
    """Remember ``path`` (made absolute) as the default bundle; returns the registry file."""
    target = cache_dir() / LAST_BUNDLE_FILE
    with atomic_path(target) as tmp:
        tmp.write_text(str(Path(path).resolve()) + "\n")
    return target


def last_bundle() -> Path | None:
    """The bundle the last pipeline run registered, or None (it may no longer exist)."""
    target = cache_dir() / LAST_BUNDLE_FILE
    try:
        text = target.read_text().strip()
    except OSError:
        return None
    return Path(text) if text else None


def resolve_model(model: str | os.PathLike | None = None) -> Path:
    """The bundle folder to use: ``model``, else ``$AVSL_EDGE_MODEL``, else the registered one,
    else the packaged default."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise ModelNotFoundError(f"model must be the path of a bundle folder (str or os.PathLike), got {model!r}")
    if model is not None and str(model) != "":
        return Path(model)
    env = os.environ.get(ENV_MODEL)
    if env:
        return Path(env)
    registered = last_bundle()
    if registered is not None:
        if not registered.is_dir():
            raise ModelNotFoundError(
                f"the bundle registered by the last pipeline run, {registered}, no longer exists "
                f"(registry: {cache_dir() / LAST_BUNDLE_FILE}); {HOW_TO_GET_A_MODEL}")
        return registered
    if (PACKAGED_BUNDLE / "manifest.json").is_file():
        return PACKAGED_BUNDLE
    raise ModelNotFoundError(f"no model given, {ENV_MODEL} is not set and no pipeline run has registered a "
                             f"bundle; {HOW_TO_GET_A_MODEL}")
