"""Property tests of the bundle loader against damaged manifests and hostile bundle trees: whatever
the bundle holds, ``load_bundle`` either loads it or raises BundleError (never another exception),
and it never opens (so never hashes) a file outside the bundle folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import opened_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avsl_edge.bundle import BundleError, load_bundle

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def slim_bundle(smoke_bundle, tmp_path_factory) -> Path:
    """The smoke bundle's manifest and dictionary, with every graph file replaced by a few bytes
    (re-checksummed): ``load_bundle`` never opens a graph, and hashing 200 MB per example would
    make the properties slow."""
    root = tmp_path_factory.mktemp("slim") / "bundle"
    m = json.loads((smoke_bundle / "manifest.json").read_text())
    for rel in m["files"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == m["dictionary"]["file"]:
            shutil.copy(smoke_bundle / rel, root / rel)
        else:
            (root / rel).write_bytes(f"stand-in for {rel}".encode())
        m["files"][rel] = hashlib.sha256((root / rel).read_bytes()).hexdigest()
    (root / "manifest.json").write_text(json.dumps(m))
    load_bundle(root)  # the unmodified slim bundle loads
    return root


@contextlib.contextmanager
def scratch(slim: Path) -> Iterator[tuple[Path, Path]]:
    """(bundle, outside): a fresh hard-linked copy of the slim bundle, and a folder next to it
    holding a secret file that no bundle may open."""
    with tempfile.TemporaryDirectory(prefix="fuzz-bundle-") as tmp:
        root, outside = Path(tmp) / "bundle", Path(tmp) / "outside"
        shutil.copytree(slim, root, copy_function=os.link)
        (root / "manifest.json").unlink()
        shutil.copy(slim / "manifest.json", root / "manifest.json")
        outside.mkdir()
        (outside / "secret.txt").write_text("secret\n")
        shutil.copy(slim / "dictionary.npy", outside / "dictionary.npy")
        yield root, outside


def load_outcome(root: Path, verify: bool = True) -> tuple[BundleError | None, list[str]]:
    """Load; any exception but BundleError fails the test. Returns (the refusal or None, files opened)."""
    with opened_files() as seen:
        try:
            load_bundle(root, verify=verify)
            error = None
        except BundleError as exc:
            error = exc
    return error, seen


# what else a load may open: Python's own files (a lazy import), never anything a bundle names
_PYTHON = tuple(os.path.realpath(p) + os.sep for p in {sys.prefix, sys.base_prefix, *sys.path} if p)


def assert_stayed_inside(root: Path, seen: list[str]) -> None:
    inside = os.path.realpath(root) + os.sep
    outside = [p for p in seen if not p.startswith(inside) and not p.startswith(_PYTHON)]
    assert not outside, f"opened outside the bundle: {outside}"


# --------------------------------------------------------------------------------------------
# damaged manifests: random values, types and nesting in random places


json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, 1, -1, 16, 64, 97, 10**6]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "batch", "fp32", "../x", "/etc/passwd", "dictionary.npy", "0" * 64, "\x00"]))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=10)


def entries(v: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every (key/index) path into a JSON value, the root excluded."""
    items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
    for k, x in items:
        yield path + (k,)
        yield from entries(x, path + (k,))


def nested(depth: int) -> Any:
    v: Any = []
    for _ in range(depth):
        v = [v]
    return v


mutations = st.one_of(
    st.tuples(st.just("set"), json_values),
    st.tuples(st.just("set"), st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 1e308, True, 1.0])),
    st.tuples(st.just("delete"), st.none()),
    st.tuples(st.just("wrap"), st.none()),            # x -> [x]
    st.tuples(st.just("nest"), st.integers(1, 60)),   # x -> [[...[]...]]
)


def mutate(m: dict, path: tuple, kind: str, arg: Any) -> None:
    parent = m
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if kind == "delete":
        del parent[key]
    elif kind == "wrap":
        parent[key] = [parent[key]]
    elif kind == "nest":
        parent[key] = nested(arg)
    else:
        parent[key] = arg


FREE_FORM = ("metrics", "export", "report", "calibration", "affinity")  # many entries the loader only carries


def interpreted_entries(m: dict) -> list[tuple]:
    """The entries the loader interprets (sampling all would mostly hit the free-form reports)."""
    return [p for p in entries(m) if not set(FREE_FORM) & set(p)]


@SETTINGS
@given(data=st.data())
def test_a_damaged_manifest_loads_or_is_one_bundle_error(slim_bundle, data):
    m = json.loads((slim_bundle / "manifest.json").read_text())
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = interpreted_entries(m)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="entry")
        kind, arg = data.draw(mutations, label="mutation")
        mutate(m, path, kind, arg)
    with scratch(slim_bundle) as (root, _):
        (root / "manifest.json").write_text(json.dumps(m))
        error, seen = load_outcome(root)
        assert_stayed_inside(root, seen)
        if error is not None:
            assert str(error).strip() and "Traceback" not in str(error)


@SETTINGS
@given(text=st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                      st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
                      st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n)))
def test_any_manifest_text_loads_or_is_one_bundle_error(slim_bundle, text):
    with scratch(slim_bundle) as (root, _):
        (root / "manifest.json").write_text(text, errors="surrogateescape")
        error, seen = load_outcome(root)
        assert error is not None  # none of these is a manifest
        assert_stayed_inside(root, seen)


# --------------------------------------------------------------------------------------------
# hostile trees: traversal paths and symlinks out of the folder


PATH_ENTRIES = ("dictionary", "graph", "files", "engine")
escaping_paths = st.one_of(
    st.integers(1, 6).map(lambda n: "../" * n + "outside/secret.txt"),
    st.sampled_from(["fp32/../../outside/secret.txt", "./../outside/dictionary.npy", "..", "../outside",
                     "/etc/passwd", "//etc/passwd", "fp32/../..", "../bundle/../outside/secret.txt"]),
)


def point(m: dict, entry: str, rel: str, checksum: str) -> None:
    """Make manifest entry ``entry`` name ``rel`` (and list it with ``checksum``)."""
    if entry == "dictionary":
        m["dictionary"]["file"] = rel
    elif entry == "graph":
        m["variants"]["fp32"]["graphs"]["image"]["file"] = rel
    elif entry == "engine":
        m["engines"] = [dict(graph="image", variant="fp32", precision="fp32", file=rel,
                             onnx_file=m["variants"]["fp32"]["graphs"]["image"]["file"],
                             onnx_sha256=m["files"]["fp32/image.onnx"], batch_min=1, batch_opt=1, batch_max=1,
                             gpu_name="GPU", compute_capability="9.0", tensorrt_version="10.3.0")]
    m["files"][rel] = checksum


@SETTINGS
@given(entry=st.sampled_from(PATH_ENTRIES), rel=escaping_paths, verify=st.booleans())
def test_a_path_leaving_the_bundle_is_refused_without_touching_the_outside(slim_bundle, entry, rel, verify):
    with scratch(slim_bundle) as (root, outside):
        secret = hashlib.sha256((outside / "secret.txt").read_bytes()).hexdigest()
        m = json.loads((root / "manifest.json").read_text())
        point(m, entry, rel, secret)  # even the right checksum must not help
        (root / "manifest.json").write_text(json.dumps(m))
        error, seen = load_outcome(root, verify)
        assert error is not None
        assert_stayed_inside(root, seen)
        assert secret[:16] not in str(error)


@SETTINGS
@given(victim=st.sampled_from(["dictionary.npy", "fp32/image.onnx", "fp16/audio.onnx", "fp32", "int8"]),
       target=st.sampled_from(["same bytes", "secret", "outside folder", "/etc/passwd", "/nonexistent", "itself"]),
       verify=st.booleans())
def test_a_symlink_out_of_the_bundle_is_refused_without_touching_the_outside(slim_bundle, victim, target, verify):
    """A file or folder the manifest names, replaced by a symlink out of the bundle (to a copy of
    itself that every checksum accepts, to a secret, to a missing file, to itself): refused,
    verified or not, and nothing outside is opened."""
    with scratch(slim_bundle) as (root, outside):
        path = root / victim
        copy = outside / "copy"
        if path.is_dir():
            shutil.copytree(path, copy)
            shutil.rmtree(path)
        else:
            shutil.copy(path, copy)
            path.unlink()
        link = {"same bytes": copy, "secret": outside / "secret.txt", "outside folder": outside,
                "itself": path}.get(target, Path(target))
        path.symlink_to(link)
        error, seen = load_outcome(root, verify)
        assert error is not None
        assert_stayed_inside(root, seen)
        assert hashlib.sha256((outside / "secret.txt").read_bytes()).hexdigest()[:16] not in str(error)
