"""A catalogue of bad inputs and faults, run against the library and every CLI, each in its own
subprocess, and what each did: a before/after table for the reliability work.

    python tests/fuzz/catalogue.py --bundle RUN/bundle --json OUT.json [--only PATTERN] [--jobs 2]

Run it from a repository checkout's root (that checkout's code is what runs). ``--bundle`` is a
finished smoke run's bundle; its run folder (the bundle's parent: checkpoints, config, the test
split) is copied into a temporary folder first, and every case works on its own copies there,
so nothing under ``--bundle``'s run folder is ever written. Each case is classified as

  clear error      exit 2, no traceback (the message is its last stderr line)
  traceback        exit 1, another non-zero exit (a crash), or any traceback in stderr
  hang             still running at the case's timeout (killed)
  silent acceptance  exit 0 although the input is bad (or the result is provably wrong)
  data lost        an input or pre-existing file modified or deleted (hashed before and after)
  correct result   exit 0 for the few inputs that are fine after all

Library cases run a small script that maps the library's user errors to exit 2 (the
``avsl_edge.errors.UserError`` base class where the checkout has it, else the error classes the
library documents). Every case runs with OMP_NUM_THREADS=1 and an address-space limit, so a case
that asks for absurd amounts of memory fails instead of starving the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

OUTCOMES = ("clear error", "traceback", "hang", "silent acceptance", "data lost", "correct result")
MEMORY_LIMIT = 6 * 2**30  # address space per case
SMALL = 1 << 20  # files up to this size are hashed; larger ones are compared by size, mtime and inode
IMAGES = 4  # AV-COCO images kept in the cases' small test split
THREADS_TIMEOUT = 30.0  # --threads 10000: a good run takes a few seconds; longer is a hang


@dataclass
class Job:
    argv: list[str]
    watch: list[Path] = field(default_factory=list)  # inputs and pre-existing files that must stay as they are
    timeout: float | None = None
    cwd: Path | None = None


@dataclass
class Case:
    name: str
    group: str
    build: Callable[[Ctx, Path], Job]
    bad: bool = True  # exit 0 is silent acceptance (False: the input is fine; exit 0 is correct)
    timeout_means: str = "hang"  # some cases only hang by doing what they should have refused
    note: str = ""
    started: str | None = None  # a line of stdout that shows the input was accepted (the case is then stopped)


@dataclass
class Outcome:
    name: str
    group: str
    outcome: str
    rc: int | None
    seconds: float
    message: str
    note: str = ""


# ------------------------------------------------------------------------------------------ context


class Ctx:
    """The copies every case starts from: the run folder (its bundle, model, test split), a small
    AV-COCO split, a short video with sound and a WAV."""

    def __init__(self, bundle: Path, root: Path, repo: Path, timeout: float):
        self.repo, self.root, self.timeout = repo, root, timeout
        self.python = sys.executable
        src_run = bundle.resolve().parent
        self.run = root / "base" / "run"
        copy_run(src_run, self.run)
        self.bundle = self.run / "bundle"
        self.data = root / "base" / "avcoco"
        small_split(self.run / "data" / "test", self.data, IMAGES)
        self.video, self.wav = make_media(self.data, root / "base")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(self.repo), XDG_CACHE_HOME=str(self.root / "cache"),
                   AVSL_EDGE_MODEL=str(self.bundle), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
                   PYTHONUNBUFFERED="1")
        env.pop("DISPLAY", None)
        return env

    # builders shared by the cases
    def lib(self, body: str, *, bundle: Path | None = None, watch: list[Path] | None = None,
            timeout: float | None = None) -> Job:
        code = LIB_PRELUDE + "\ndef main():\n" + textwrap.indent(textwrap.dedent(body), "    ") + LIB_MAIN
        return Job([self.python, "-c", code.replace("@BUNDLE@", repr(str(bundle or self.bundle)))],
                   watch=watch or [], timeout=timeout)

    def cli(self, *args: str | Path, watch: list[Path] | None = None, timeout: float | None = None,
            model: Path | None = None) -> Job:
        argv = [self.python, "-m", "avsl_edge.cli", *map(str, args)]
        if model is not False and "--model" not in argv and len(args) and args[0] in ("run", "eval", "bench", "info", "live"):
            argv += ["--model", str(model or self.bundle)]
        if len(args) and args[0] in ("run", "eval", "bench", "live") and "--backend" not in argv:
            argv += ["--backend", "onnxruntime"]
        return Job(argv, watch=watch or [], timeout=timeout)

    def module(self, mod: str, *args: str | Path, watch: list[Path] | None = None, timeout: float | None = None) -> Job:
        return Job([self.python, "-m", mod, *map(str, args)], watch=watch or [], timeout=timeout)

    def script(self, path: str, *args: str | Path, watch: list[Path] | None = None, timeout: float | None = None) -> Job:
        return Job([self.python, str(self.repo / path), *map(str, args)], watch=watch or [], timeout=timeout)


LIB_PRELUDE = r'''
import math, sys
import numpy as np
import avsl_edge
try:  # (an installed copy of another checkout may provide avsl_edge.errors: it must be this one's)
    from avsl_edge.errors import UserError as USER_ERRORS
    assert issubclass(avsl_edge.BundleError, USER_ERRORS)
except (ImportError, AssertionError):  # before the one base class: the error classes the library documents
    from avsl_edge.avcoco import AVCocoError
    from avsl_edge.media import MediaError
    USER_ERRORS = (avsl_edge.BundleError, avsl_edge.BackendError, avsl_edge.InputError, avsl_edge.AudioError,
                   avsl_edge.ModelNotFoundError, avsl_edge.TensorRTUnavailable, AVCocoError, MediaError)
BUNDLE = @BUNDLE@
FRAME = np.zeros((48, 64, 3), np.uint8)
def load(model=BUNDLE, **kw):
    kw.setdefault("backend", "onnxruntime")
    kw.setdefault("providers", ["CPUExecutionProvider"])
    kw.setdefault("intra_op_threads", 1)
    kw.setdefault("inter_op_threads", 1)
    return avsl_edge.load(model, **kw)
def verdict(ok, what):
    print(f"verdict: {'correct' if ok else 'wrong'} ({what})")
'''

LIB_MAIN = r'''

try:
    main()
except USER_ERRORS as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
'''


# ------------------------------------------------------------------------------------------ files


def copy_run(src: Path, dst: Path) -> None:
    """A real copy of a run folder whose recorded paths (state.json) point into the copy."""
    shutil.copytree(src, dst, symlinks=True)
    state = dst / "state.json"
    if state.is_file():
        state.write_text(state.read_text().replace(str(src), str(dst)))


def clone(src: Path, dst: Path) -> Path:
    """A copy of a folder for one case: small files copied, large ones hard-linked to the base copy
    (never to the source run: a case writing through a link would reach only the base copy, and
    every case's watched files are compared by inode too)."""
    for p in sorted(src.rglob("*")):
        q = dst / p.relative_to(src)
        if p.is_dir() and not p.is_symlink():
            q.mkdir(parents=True, exist_ok=True)
        elif p.is_file() and not p.is_symlink():
            q.parent.mkdir(parents=True, exist_ok=True)
            if p.stat().st_size > SMALL:
                os.link(p, q)
            else:
                shutil.copy2(p, q)
    dst.mkdir(parents=True, exist_ok=True)
    return dst


def small_split(src: Path, dst: Path, n: int) -> None:
    a = json.loads((src / "annotations.json").read_text())
    keep = a["images"][:n]
    ids = {im["id"] for im in keep}
    for im in keep:
        for key in ("file_name", "audio"):
            (dst / im[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / im[key], dst / im[key])
    a["images"] = keep
    a["annotations"] = [o for o in a["annotations"] if o["image_id"] in ids]
    (dst / "annotations.json").write_text(json.dumps(a))


def make_media(data: Path, out: Path) -> tuple[Path, Path]:
    """A 12-frame 64x64 video with a 1 s sound, and that sound as a WAV, from the split's first
    image (written in a subprocess of the checkout under test)."""
    video, wav = out / "clip.mp4", out / "clip.wav"
    a = json.loads((data / "annotations.json").read_text())
    im = a["images"][0]
    code = textwrap.dedent(f"""
        import cv2, numpy as np
        from avsl_edge.audio import load_audio, save_audio
        from avsl_edge.media import write_video
        rgb = cv2.cvtColor(cv2.resize(cv2.imread({str(data / im['file_name'])!r}), (64, 64)), cv2.COLOR_BGR2RGB)
        clip = load_audio({str(data / im['audio'])!r})
        save_audio({str(wav)!r}, clip)
        write_video({str(video)!r}, [rgb] * 12, fps=12.0, audio=clip, sample_rate=16000)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    return video, wav


def signature(path: Path) -> dict[str, object]:
    """What a watched path holds: per file its hash (small) or size/mtime/inode (large)."""
    out: dict[str, object] = {}
    if not path.exists() and not path.is_symlink():
        return out
    files = [path] if not path.is_dir() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        if st.st_size <= SMALL:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    if path.is_dir():
        out[str(path) + "/"] = "dir"
    return out


RUNNING: set[subprocess.Popen] = set()  # the cases' processes (each leads its own process group)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def limit_memory(pid: int) -> None:
    """Cap a case's address space (set from outside: a preexec_fn is unsafe with threads)."""
    try:
        resource.prlimit(pid, resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except ProcessLookupError:  # already gone
        pass


# ------------------------------------------------------------------------------------------ running


def run_case(ctx: Ctx, case: Case) -> Outcome:
    d = ctx.root / "cases" / case.name
    d.mkdir(parents=True)
    t0 = time.monotonic()
    try:
        job = case.build(ctx, d)
    except Exception as exc:  # noqa: BLE001 - a case that cannot even be prepared is the catalogue's bug
        return Outcome(case.name, case.group, "traceback", None, 0.0, f"catalogue could not prepare the case: {exc!r}")
    before = {str(w): signature(w) for w in job.watch}
    timeout = job.timeout or ctx.timeout
    proc = subprocess.Popen(job.argv, cwd=job.cwd or d, env=ctx.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    RUNNING.add(proc)
    limit_memory(proc.pid)
    out_lines: list[bytes] = []
    err_data: list[bytes] = []
    accepted = threading.Event()

    def read_stdout() -> None:
        for line in iter(proc.stdout.readline, b""):
            out_lines.append(line)
            if case.started and case.started.encode() in line and not accepted.is_set():
                accepted.set()  # it went on with the input: that is the answer, the rest would only take time
                kill_group(proc)

    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=lambda: err_data.append(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    try:
        rc: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.wait()
        rc = None
    finally:
        RUNNING.discard(proc)
    for t in readers:
        t.join()
    seconds = time.monotonic() - t0
    out_s, err_s = b"".join(out_lines).decode(errors="replace"), b"".join(err_data).decode(errors="replace")
    lost = [w for w in job.watch if signature(w) != before[str(w)]]
    last = next((ln for ln in reversed(err_s.strip().splitlines()) if ln.strip()), "")
    if lost:
        outcome, message = "data lost", "changed or removed: " + ", ".join(
            os.path.relpath(w, d) if str(w).startswith(str(d)) else str(w) for w in lost)
    elif accepted.is_set():
        outcome = "silent acceptance" if case.bad else "correct result"
        message = "went on: " + next(ln for ln in out_s.splitlines() if case.started in ln)
    elif rc is None:
        outcome, message = case.timeout_means, f"still running after {timeout:g} s"
    elif "Traceback (most recent call last)" in err_s or rc not in (0, 2):
        exc_line = last if "Traceback" in err_s else f"exit {rc}: {last}"
        outcome, message = "traceback", exc_line
    elif rc == 2:
        outcome, message = "clear error", last
    else:
        verdicts = [ln for ln in out_s.splitlines() if ln.startswith("verdict: ")]
        if verdicts and all(v.startswith("verdict: correct") for v in verdicts):
            outcome = "correct result"
        elif verdicts:
            outcome = "silent acceptance"
        else:
            outcome = "silent acceptance" if case.bad else "correct result"
        message = verdicts[-1] if verdicts else (out_s.strip().splitlines() or [""])[-1]
    message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message[:300])
    return Outcome(case.name, case.group, outcome, rc, round(seconds, 1), message, case.note)


# ------------------------------------------------------------------------------------------ cases

CASES: list[Case] = []


def add(name: str, group: str, fn: Callable[[Ctx, Path], Job], bad: bool = True, **kw) -> None:
    CASES.append(Case(name, group, fn, bad, **kw))


LOCALIZE = """
loc = load()
r = loc.localize(FRAME, np.zeros(16000, np.float32) + 0.01)
print("loaded", loc.rules.to_dict() if hasattr(loc.rules, "to_dict") else loc.rules)
"""


def manifest_case(name: str, edit: Callable[[dict, Path], None], bad: bool = True, note: str = "") -> None:
    """A bundle whose manifest ``edit`` changes (it gets the bundle folder too), loaded and used."""
    def build(ctx: Ctx, d: Path) -> Job:
        b = clone(ctx.bundle, d / "bundle")
        m = json.loads((b / "manifest.json").read_text())
        edit(m, b)
        (b / "manifest.json").unlink()
        (b / "manifest.json").write_text(json.dumps(m, allow_nan=True))
        return ctx.lib(LOCALIZE, bundle=b, watch=[d / "outside"] if (d / "outside").exists() else [])
    add(f"bundle: {name}", "bundle", build, bad, note=note)


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def graph(m: dict, kind: str = "audio") -> dict:
    return m["variants"]["fp32"]["graphs"][kind]


def outside_copy(b: Path, rel: str) -> Path:
    """A copy of one of the bundle's files in a folder next to the bundle."""
    out = b.parent / "outside" / Path(rel).name
    out.parent.mkdir(exist_ok=True)
    shutil.copy2(b / rel, out)
    return out


def _graph_up(m, b):
    outside_copy(b, "fp32/audio.onnx")
    graph(m)["file"] = "../outside/audio.onnx"
    m["files"]["../outside/audio.onnx"] = m["files"].pop("fp32/audio.onnx")


def _graph_dotdot(m, b):
    graph(m)["file"] = "../../../../../../../../etc/hostname"


def _graph_abs(m, b):
    graph(m)["file"] = str(outside_copy(b, "fp32/audio.onnx"))


def _graph_symlink(m, b):
    target = outside_copy(b, "fp32/audio.onnx")
    (b / "fp32/audio.onnx").unlink()
    (b / "fp32/audio.onnx").symlink_to(target)


def _dict_up(m, b):
    outside_copy(b, "dictionary.npy")
    m["dictionary"]["file"] = "../outside/dictionary.npy"
    m["files"]["../outside/dictionary.npy"] = m["files"].pop("dictionary.npy")


def _dict_abs(m, b):
    m["dictionary"]["file"] = str(outside_copy(b, "dictionary.npy"))


def _dict_symlink(m, b):
    target = outside_copy(b, "dictionary.npy")
    (b / "dictionary.npy").unlink()
    (b / "dictionary.npy").symlink_to(target)


def _files_abs(m, b):
    m["files"]["/etc/hostname"] = sha256(Path("/etc/hostname"))


def _files_up(m, b):
    f = b.parent / "outside" / "secret.txt"
    f.parent.mkdir(exist_ok=True)
    f.write_text("not the bundle's")
    m["files"]["../outside/secret.txt"] = sha256(f)


def _dictionary_values(values) -> Callable[[dict, Path], None]:
    def edit(m, b):
        import numpy as np
        arr = np.load(b / "dictionary.npy")
        new = values(arr)
        (b / "dictionary.npy").unlink()
        np.save(b / "dictionary.npy", new)
        m["files"]["dictionary.npy"] = sha256(b / "dictionary.npy")
    return edit


def _set(path: str, value) -> Callable[[dict, Path], None]:
    def edit(m, b):
        keys = path.split(".")
        node = m
        for k in keys[:-1]:
            node = node[k]
        if value is DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return edit


DELETE = object()


def _replace_file(rel: str, data: bytes, rehash: bool = True) -> Callable[[dict, Path], None]:
    def edit(m, b):
        (b / rel).unlink()
        (b / rel).write_bytes(data)
        if rehash:
            m["files"][rel] = hashlib.sha256(data).hexdigest()
    return edit


def register_bundle_cases() -> None:
    manifest_case("graph path ../outside (verified)", _graph_up)
    manifest_case("graph path ../../../etc/hostname", _graph_dotdot)
    manifest_case("graph path absolute", _graph_abs)
    manifest_case("graph file a symlink out of the bundle", _graph_symlink)
    manifest_case("dictionary path ../outside", _dict_up)
    manifest_case("dictionary path absolute", _dict_abs)
    manifest_case("dictionary a symlink out of the bundle", _dict_symlink)
    manifest_case("files lists /etc/hostname", _files_abs)
    manifest_case("files lists ../outside/secret.txt", _files_up)
    for key, values in [("in_view_threshold", [float("nan"), 5.0, "high"]), ("audio_gate_db", [float("nan"), 50.0]),
                        ("class_threshold", [2.0]), ("box_tau", [float("nan"), -0.5]),
                        ("softmax_scale", [float("nan"), 0.0]), ("in_view_score", ["bogus"]), ("box_method", ["bogus"]),
                        ("in_view_combination", [[1.0], {"bias": float("inf")}])]:
        for v in values:
            manifest_case(f"postprocessing.{key} = {v!r}", _set(f"postprocessing.{key}", v))
    manifest_case("postprocessing missing", _set("postprocessing", DELETE))
    manifest_case("dictionary of NaN", _dictionary_values(lambda a: a * float("nan")))
    manifest_case("dictionary of int64", _dictionary_values(lambda a: a.astype("int64")))
    manifest_case("dictionary of the wrong shape", _dictionary_values(lambda a: a[:, :10]))
    manifest_case("dictionary of object dtype (pickle)", _dictionary_values(lambda a: __import__("numpy").array([{"x": 1}] * 3, dtype=object)))
    manifest_case("dictionary file is garbage", _replace_file("dictionary.npy", b"not numpy at all"))
    manifest_case("audio graph empty (0 bytes, hash matches)", _replace_file("fp32/audio.onnx", b""))
    manifest_case("audio graph garbage (hash matches)", _replace_file("fp32/audio.onnx", b"\x08\x07garbage" * 100))
    manifest_case("audio graph flipped bytes (hash stale)", lambda m, b: flip_bytes(b / "fp32/audio.onnx"))
    manifest_case("classes duplicated", lambda m, b: m.__setitem__("classes", [m["classes"][0]] * len(m["classes"])))
    manifest_case("classes a string", _set("classes", "accordion,banjo"))
    manifest_case("classes empty", _set("classes", []))
    manifest_case("classes one short", lambda m, b: m.__setitem__("classes", m["classes"][:-1]))
    manifest_case("num_clusters 0", _set("num_clusters", 0))
    for v in (True, "1", 2):
        manifest_case(f"format_version {v!r}", _set("format_version", v))
    manifest_case("format missing", _set("format", DELETE))
    for v in (0, -64, 97, "64"):
        manifest_case(f"image_size {v!r}", _set("preprocessing.image_size", v))
    manifest_case("preprocessing.mean NaN", _set("preprocessing.mean", [float("nan")] * 3))
    manifest_case("preprocessing.std zeros", _set("preprocessing.std", [0.0, 0.0, 0.0]))
    manifest_case("preprocessing.sample_rate 0", _set("preprocessing.sample_rate", 0))
    manifest_case("variants empty", _set("variants", {}))
    manifest_case("files not a dict", _set("files", ["dictionary.npy"]))
    manifest_case("graphs missing", _set("graphs", DELETE))

    def raw_manifest(name: str, text: str | bytes) -> None:
        def build(ctx: Ctx, d: Path) -> Job:
            b = clone(ctx.bundle, d / "bundle")
            (b / "manifest.json").unlink()
            (b / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
            return ctx.lib(LOCALIZE, bundle=b)
        add(f"bundle: manifest {name}", "bundle", build)

    raw_manifest("absurdly nested", '{"classes": ' + "[" * 100000 + "]" * 100000 + "}")
    raw_manifest("a list", "[]")
    raw_manifest("empty", "")
    raw_manifest("not UTF-8", b"\xff\xfe\x00garbage")
    raw_manifest("with a 1e400 number", '{"format": "avsl-edge/bundle", "format_version": 1e400}')

    def build_dir_manifest(ctx: Ctx, d: Path) -> Job:
        b = clone(ctx.bundle, d / "bundle")
        (b / "manifest.json").unlink()
        (b / "manifest.json").mkdir()
        return ctx.lib(LOCALIZE, bundle=b)
    add("bundle: manifest.json a directory", "bundle", build_dir_manifest)

    def build_no_manifest(ctx: Ctx, d: Path) -> Job:
        b = clone(ctx.bundle, d / "bundle")
        (b / "manifest.json").unlink()
        return ctx.lib(LOCALIZE, bundle=b)
    add("bundle: no manifest.json", "bundle", build_no_manifest)

    def build_graph_dir(ctx: Ctx, d: Path) -> Job:
        b = clone(ctx.bundle, d / "bundle")
        (b / "fp32/audio.onnx").unlink()
        (b / "fp32/audio.onnx").mkdir()
        return ctx.lib(LOCALIZE, bundle=b)
    add("bundle: audio graph a directory", "bundle", build_graph_dir)

    def build_file_bundle(ctx: Ctx, d: Path) -> Job:
        (d / "bundle.txt").write_text("a file, not a bundle")
        return ctx.lib(LOCALIZE, bundle=d / "bundle.txt")
    add("bundle: a file instead of a folder", "bundle", build_file_bundle)


def flip_bytes(p: Path, n: int = 64) -> None:
    data = bytearray(p.read_bytes())
    p.unlink()
    mid = len(data) // 2
    for i in range(mid, min(len(data), mid + n)):
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))


# ---------------------------------------------------------------- library: load, localize, audio


def lib_case(name: str, body: str, bad: bool = True, group: str = "library", note: str = "") -> None:
    add(f"{group}: {name}", group, lambda ctx, d: ctx.lib(body), bad, note=note)


def register_library_cases() -> None:
    lib_case("load(backend='bogus')", "load(backend='bogus')")
    lib_case("load(variant='fp64')", "load(variant='fp64')")
    lib_case("load(intra_op_threads=-1)", "load(intra_op_threads=-1).localize(FRAME, np.zeros(100))")
    add("library: load(intra_op_threads=10000)", "library",
        lambda ctx, d: ctx.lib("load(intra_op_threads=10000).localize(FRAME, np.zeros(100))", timeout=THREADS_TIMEOUT))
    lib_case("load('/no/such/bundle')", "load('/no/such/bundle')")
    lib_case("load(123)", "load(123)")
    lib_case("load(model with a NUL byte)", "load('bundle\\x00x')")
    lib_case("load(in_view_threshold=nan)", "load(in_view_threshold=float('nan')).localize(FRAME, np.zeros(100))")
    lib_case("load(box_tau=2)", "load(box_tau=2.0).localize(FRAME, np.zeros(100))")
    lib_case("load(bogus_rule=1)", "load(bogus_rule=1)")
    lib_case("load(providers='CPUExecutionProvider'), one name for a list",  # accepted by design: one provider
             "load(providers='CPUExecutionProvider').localize(FRAME, np.zeros(100))", bad=False)
    lib_case("load(providers=['Bogus'])", "load(providers=['BogusExecutionProvider'])")
    lib_case("localize float frame", "load().localize(np.zeros((48, 64, 3), np.float32), np.zeros(100))")
    lib_case("localize 0x0 frame", "load().localize(np.zeros((0, 0, 3), np.uint8), np.zeros(100))")
    lib_case("localize 1x20000 frame", "load().localize(np.zeros((1, 20000, 3), np.uint8), np.zeros(100))", bad=False)
    lib_case("localize frame None", "load().localize(None, np.zeros(100))")
    lib_case("localize_frame with an array as state", "load().localize_frame(FRAME, np.zeros(16000))")
    lib_case("localize rgb='yes'", "load().localize(FRAME, np.zeros(100), rgb='yes')")
    for rate in ("-1", "float('nan')", "True", "10**12"):
        lib_case(f"sample_rate={rate}", f"load().encode_audio(np.zeros(100, np.float32), sample_rate={rate})")


def audio_case(name: str, make: str, check: str | None = None, bad: bool = True) -> None:
    """encode_audio on the audio ``make`` builds; ``check`` (an expression of ``s``, the AudioState)
    says whether an accepted result is right."""
    body = f"x = {make}\ns = load().encode_audio(x)\nprint('level', s.audio_db)\n"
    if check:
        body += f"verdict({check}, {check!r})\n"
    add(f"audio: {name}", "audio", lambda ctx, d: ctx.lib(body), bad)


def register_audio_cases() -> None:
    noise = "np.random.default_rng(0).uniform(-0.5, 0.5, {n})"
    audio_case("int64 holding int16 samples", f"({noise.format(n=16000)} * 32767).astype(np.int64)")
    audio_case("uint64 audio", f"({noise.format(n=16000)} * 2**63 + 2**63).astype(np.uint64)")
    audio_case("Python list of ints (int16 values)", "[1000, -1000] * 8000",
               "abs(s.audio_db - 20 * math.log10(1000 / 32768)) < 0.5")
    audio_case("Python list of ints beyond int16", "[100000, -100000] * 8000")
    audio_case("tuple of ints", "tuple([1000, -1000] * 8000)", "abs(s.audio_db - 20 * math.log10(1000 / 32768)) < 0.5")
    audio_case("Python list of floats", "[0.25, -0.25] * 8000", "abs(s.audio_db - 20 * math.log10(0.25)) < 0.5", bad=False)
    audio_case("ragged list", "[[0.1, 0.2], [0.3]]")
    audio_case("list of strings", "['a', 'b', 'c']")
    audio_case("(2, 20) array", "np.full((2, 20), 0.5, np.float32)")
    audio_case("(32, 32) array", "np.full((32, 32), 0.5, np.float32)")
    audio_case("(4, 4) array", "np.full((4, 4), 0.5, np.float32)")
    audio_case("(2, 48000) int16 channels-first", "np.zeros((2, 48000), np.int16)")
    audio_case("(16000, 2) int16 stereo", f"np.repeat(({noise.format(n=16000)} * 32767).astype(np.int16)[:, None], 2, 1)",
               "-12 < s.audio_db < -8", bad=False)
    audio_case("int8 full-scale square", "np.resize(np.array([-128, 127], np.int8), 16000)", "s.audio_db > -0.1", bad=False)
    audio_case("uint16 full-scale square", "np.resize(np.array([0, 65535], np.uint16), 16000)", "s.audio_db > -0.1", bad=False)
    audio_case("uint32 full-scale square", "np.resize(np.array([0, 2**32 - 1], np.uint32), 16000)", "s.audio_db > -0.1", bad=False)
    audio_case("uint16 silence (offset binary)", "np.full(16000, 32768, np.uint16)", "s.audio_db <= -119", bad=False)
    audio_case("float16 audio", "np.full(16000, 0.5, np.float16)", "abs(s.audio_db - 20 * math.log10(0.5)) < 0.1", bad=False)
    audio_case("float 1.5 (over full scale)", "np.full(16000, 1.5, np.float32)", "-120 <= s.audio_db <= 0")
    audio_case("float peaks 20000 (unscaled int16)", "np.full(16000, 20000.0, np.float32)")
    audio_case("3-D array", "np.zeros((10, 2, 2), np.float32)")
    audio_case("0-d array", "np.array(0.5)")
    audio_case("empty array", "np.zeros(0, np.float32)")
    audio_case("NaN sample", "np.array([0.1, np.nan, 0.2], np.float32)")
    audio_case("complex audio", "np.zeros(100, np.complex64)")
    audio_case("bool audio", "np.zeros(100, bool)")
    audio_case("a string", "'noise.wav'")
    audio_case("10 M samples float32", "np.zeros(10_000_000, np.float32) + 0.1", "abs(s.audio_db + 20) < 0.1", bad=False)


# ---------------------------------------------------------------- AV-COCO


COCO_READ = """
from avsl_edge.avcoco import load_avcoco, read_clip, read_frame
coco = load_avcoco(DATA)
for im in coco.images:
    read_frame(coco, im)
    read_clip(coco, im)
print(len(coco.images), "images")
"""


def coco_case(name: str, edit: Callable[[dict, Path], None] | None, bad: bool = True) -> None:
    def build(ctx: Ctx, d: Path) -> Job:
        data = clone(ctx.data, d / "avcoco")
        a = json.loads((data / "annotations.json").read_text())
        if edit is not None:
            edit(a, data)
        (data / "annotations.json").unlink()
        (data / "annotations.json").write_text(json.dumps(a, allow_nan=True))
        return ctx.lib(f"DATA = {str(data)!r}\n" + COCO_READ, watch=[data])
    add(f"avcoco: {name}", "avcoco", build, bad)


def _im(key: str, value) -> Callable[[dict, Path], None]:
    def edit(a, data):
        a["images"][0][key] = value
    return edit


def _obj(key: str, value) -> Callable[[dict, Path], None]:
    def edit(a, data):
        a["annotations"][0][key] = value
    return edit


def register_avcoco_cases() -> None:
    coco_case("the split as it is", None, bad=False)
    coco_case("NUL byte in file_name", _im("file_name", "frames/000001\x00.png"))
    coco_case("NUL byte in audio", _im("audio", "audio/000001\x00.flac"))
    coco_case("file_name absolute", _im("file_name", "/etc/hostname"))
    coco_case("file_name ../ out of the root", lambda a, d: (shutil.copy2(d / a["images"][0]["file_name"], d.parent / "out.png"),
                                                            a["images"][0].__setitem__("file_name", "../out.png")))
    coco_case("audio ../ out of the root", lambda a, d: (shutil.copy2(d / a["images"][0]["audio"], d.parent / "out.flac"),
                                                        a["images"][0].__setitem__("audio", "../out.flac")))
    coco_case("file_name an int", _im("file_name", 7))
    coco_case("width 0", _im("width", 0))
    coco_case("id a bool", _im("id", True))
    coco_case("duplicate image ids", lambda a, d: a["images"][1].__setitem__("id", a["images"][0]["id"]))
    coco_case("audio_offset NaN", _im("audio_offset", float("nan")))
    coco_case("audio_offset past the clip", _im("audio_offset", 30.0))
    coco_case("audio_duration 0", _im("audio_duration", 0))
    coco_case("bbox NaN", _obj("bbox", [float("nan"), 0, 10, 10]))
    coco_case("bbox negative size", _obj("bbox", [0, 0, -10, 10]))
    coco_case("bbox far outside the image", _obj("bbox", [1e9, 1e9, 10, 10]))
    coco_case("unknown category_id", _obj("category_id", 999))
    coco_case("annotation for a missing image", _obj("image_id", 999))
    coco_case("categories duplicated", lambda a, d: a["categories"].__setitem__(1, dict(a["categories"][0], id=2)))
    coco_case("images not a list", lambda a, d: a.__setitem__("images", {"0": a["images"][0]}))
    coco_case("frame file missing", lambda a, d: (d / a["images"][0]["file_name"]).unlink())
    coco_case("frame file a directory", lambda a, d: ((d / a["images"][0]["file_name"]).unlink(),
                                                    (d / a["images"][0]["file_name"]).mkdir()))
    coco_case("frame file garbage", lambda a, d: ((d / a["images"][0]["file_name"]).unlink(),
                                                (d / a["images"][0]["file_name"]).write_bytes(b"garbage")))
    coco_case("audio file garbage", lambda a, d: ((d / a["images"][0]["audio"]).unlink(),
                                                (d / a["images"][0]["audio"]).write_bytes(b"garbage")))

    def raw(name: str, text: str) -> None:
        def build(ctx: Ctx, d: Path) -> Job:
            data = clone(ctx.data, d / "avcoco")
            (data / "annotations.json").unlink()
            (data / "annotations.json").write_text(text)
            return ctx.lib(f"DATA = {str(data)!r}\n" + COCO_READ, watch=[data])
        add(f"avcoco: annotations {name}", "avcoco", build)

    raw("not JSON", "{not json")
    raw("a list", "[]")
    raw("absurdly nested", '{"images": ' + "[" * 100000 + "]" * 100000 + "}")
    add("avcoco: root with a NUL byte", "avcoco", lambda ctx, d: ctx.lib("DATA = 'data\\x00x'\n" + COCO_READ))


# ---------------------------------------------------------------- CLIs: run, eval, bench, info, live


def cli_case(name: str, group: str, build: Callable[[Ctx, Path], Job], bad: bool = True, **kw) -> None:
    add(f"{group}: {name}", group, build, bad, **kw)


def video_copy(ctx: Ctx, d: Path) -> Path:
    v = d / "clip.mp4"
    shutil.copy2(ctx.video, v)
    return v


def register_run_cases() -> None:
    def run(*extra, watch_video=True, video=None, timeout=None):
        def build(ctx: Ctx, d: Path) -> Job:
            v = video(ctx, d) if video else video_copy(ctx, d)
            args = [a(d, v) if callable(a) else a for a in extra]
            return ctx.cli("run", v, *args, "--quiet", watch=[v] if watch_video else [], timeout=timeout)
        return build

    def out(d, v):
        return d / "out.mp4"

    cli_case("a good run", "run", run("--out", out), bad=False)
    cli_case("--out the input video", "run", run("--out", lambda d, v: v))
    cli_case("--json the input video", "run", run("--out", out, "--json", lambda d, v: v))
    cli_case("--json X --out X", "run", run("--out", out, "--json", out))
    cli_case("--out under a file", "run", run("--out", lambda d, v: v / "out.mp4"))
    cli_case("--out in /proc", "run", run("--out", "/proc/catalogue-out.mp4"))
    cli_case("--json in /proc", "run", run("--out", out, "--json", "/proc/catalogue.jsonl"))
    cli_case("--out an existing folder", "run", run("--out", lambda d, v: (d / "folder.mp4").mkdir() or d / "folder.mp4"))
    cli_case("--out in a missing folder", "run", run("--out", lambda d, v: d / "new" / "out.mp4"), bad=False)
    cli_case("--out .avi", "run", run("--out", lambda d, v: d / "out.avi"))
    for hop in ("0", "nan", "1e308"):
        cli_case(f"--hop {hop}", "run", run("--out", out, "--hop", hop))
    cli_case("--max-frames -5", "run", run("--out", out, "--max-frames", "-5"))
    cli_case("--threads 10000", "run", run("--out", out, "--threads", "10000", timeout=THREADS_TIMEOUT))
    cli_case("--threads -1", "run", run("--out", out, "--threads", "-1"))
    cli_case("--providers Bogus", "run", run("--out", out, "--providers", "BogusExecutionProvider"))
    cli_case("--audio missing", "run", run("--out", out, "--audio", lambda d, v: d / "missing.wav"))
    cli_case("--audio a text file", "run", run("--out", out, "--audio", lambda d, v: write(d / "a.wav", b"text")))
    cli_case("--audio an empty file", "run", run("--out", out, "--audio", lambda d, v: write(d / "e.wav", b"")))

    def truncated(ctx, d):
        v = d / "cut.mp4"
        data = ctx.video.read_bytes()
        v.write_bytes(data[: len(data) // 2])
        return v

    def mid_corrupt(ctx, d):
        v = d / "bad.mp4"
        data = bytearray(ctx.video.read_bytes())
        for i in range(len(data) // 3, 2 * len(data) // 3):
            data[i] = (data[i] * 7 + 13) & 0xFF
        v.write_bytes(bytes(data))
        return v

    cli_case("a truncated video", "run", run("--out", out, video=truncated))
    cli_case("a video that fails mid-decode", "run", run("--out", out, video=mid_corrupt))
    cli_case("an empty video file", "run", run("--out", out, video=lambda ctx, d: write(d / "empty.mp4", b"")))
    cli_case("a text file as video", "run", run("--out", out, video=lambda ctx, d: write(d / "text.mp4", b"hello")))
    cli_case("a folder as video", "run", run("--out", out, video=lambda ctx, d: d, watch_video=False))
    cli_case("a missing video", "run", run("--out", out, video=lambda ctx, d: d / "missing.mp4", watch_video=False))

    def silent_video(ctx, d):
        code = ("import numpy as np; from avsl_edge.media import write_video; "
                f"write_video({str(d / 'mute.mp4')!r}, [np.zeros((64, 64, 3), np.uint8)] * 6, fps=6.0)")
        subprocess.run([ctx.python, "-c", code], check=True, env=ctx.env())
        return d / "mute.mp4"

    cli_case("a video without sound (no --audio)", "run", run("--out", out, video=silent_video), bad=False)


def write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def register_eval_cases() -> None:
    def ev(*extra, data_edit=None):
        def build(ctx: Ctx, d: Path) -> Job:
            data = clone(ctx.data, d / "avcoco")
            if data_edit:
                data_edit(data)
            args = [a(d, data) if callable(a) else a for a in extra]
            return ctx.cli("eval", "--data", data, "--quiet", *args, watch=[data])
        return build

    cli_case("a good eval", "eval", ev("--json", lambda d, data: d / "t.json"), bad=False)
    cli_case("--markdown into a missing folder", "eval", ev("--markdown", lambda d, data: d / "missing" / "t.md"), bad=False)
    cli_case("--json X --markdown X", "eval", ev("--json", lambda d, data: d / "t", "--markdown", lambda d, data: d / "t"))
    cli_case("--json the annotations", "eval", ev("--json", lambda d, data: data / "annotations.json"))
    cli_case("--json under a file", "eval", ev("--json", lambda d, data: data / "annotations.json" / "t.json"))
    cli_case("--markdown in /proc", "eval", ev("--markdown", "/proc/catalogue.md"))
    cli_case("--json in /proc", "eval", ev("--json", "/proc/catalogue.json"))
    for n in ("0", "-1", "1000000000"):
        cli_case(f"--batch-size {n}", "eval", ev("--batch-size", n), bad=n == "1000000000")
    cli_case("--data missing", "eval", lambda ctx, d: ctx.cli("eval", "--data", d / "missing", "--quiet"))
    cli_case("--data a file", "eval", lambda ctx, d: ctx.cli("eval", "--data", write(d / "f.json", b"{}"), "--quiet"))
    cli_case("--data an empty folder", "eval", lambda ctx, d: ctx.cli("eval", "--data", d, "--quiet"))

    def corrupt_audio(data: Path) -> None:
        a = json.loads((data / "annotations.json").read_text())
        p = data / a["images"][-1]["audio"]
        p.unlink()
        p.write_bytes(b"RIFF....garbage")
    cli_case("--data with a corrupt audio file", "eval", ev(data_edit=corrupt_audio))

    def nan_box(data: Path) -> None:
        p = data / "annotations.json"
        a = json.loads(p.read_text())
        a["annotations"][0]["bbox"] = [float("nan")] * 4
        p.unlink()
        p.write_text(json.dumps(a, allow_nan=True))
    cli_case("--data with a NaN box", "eval", ev(data_edit=nan_box))


def register_bench_cases() -> None:
    def bench(*extra, timeout=None):
        def build(ctx: Ctx, d: Path) -> Job:
            args = [a(ctx, d) if callable(a) else a for a in extra]
            return ctx.cli("bench", "--runs", "2", "--warmup", "1", *args, timeout=timeout)
        return build

    cli_case("a good bench", "bench", bench("--json", lambda ctx, d: d / "b.json"), bad=False)
    for size in ("100000x100000", "1000000000x1000000000", "0x0", "-5x5", "abc"):
        cli_case(f"--size {size}", "bench", bench("--size", size))
    for opt, v in (("--runs", "0"), ("--warmup", "-1"), ("--threads", "-2")):
        cli_case(f"{opt} {v}", "bench", bench(opt, v))
    cli_case("--threads 10000", "bench", bench("--threads", "10000", timeout=THREADS_TIMEOUT))
    cli_case("--frame missing", "bench", bench("--frame", lambda ctx, d: d / "missing.png"))
    cli_case("--frame a text file", "bench", bench("--frame", lambda ctx, d: write(d / "t.png", b"text")))
    cli_case("--audio a text file", "bench", bench("--audio", lambda ctx, d: write(d / "t.wav", b"text")))
    cli_case("--json in /proc", "bench", bench("--json", "/proc/catalogue.json"))
    cli_case("--variant int8-cpu", "bench", bench("--variant", "int8-cpu"), bad=False)


def register_info_cases() -> None:
    cli_case("info of the bundle", "info", lambda ctx, d: ctx.cli("info", "--json"), bad=False)
    cli_case("--model missing", "info", lambda ctx, d: ctx.cli("info", "--model", d / "missing"))
    cli_case("--model a file", "info", lambda ctx, d: ctx.cli("info", "--model", write(d / "m.json", b"{}")))
    cli_case("--model a folder without manifest", "info", lambda ctx, d: ctx.cli("info", "--model", d))

    def stale(ctx: Ctx, d: Path) -> Job:
        b = clone(ctx.bundle, d / "bundle")
        flip_bytes(b / "dictionary.npy", 8)
        return ctx.cli("info", "--model", b, "--no-verify")
    cli_case("--no-verify on a corrupt dictionary", "info", stale, bad=False)
    cli_case("no subcommand", "info", lambda ctx, d: Job([ctx.python, "-m", "avsl_edge.cli"]))
    cli_case("an unknown subcommand", "info", lambda ctx, d: Job([ctx.python, "-m", "avsl_edge.cli", "frobnicate"]))


def register_live_cases() -> None:
    def live(*extra, mic=None, camera=None):
        def build(ctx: Ctx, d: Path) -> Job:
            v = camera(ctx, d) if camera else video_copy(ctx, d)
            w = mic(ctx, d) if mic else shutil.copy2(ctx.wav, d / "mic.wav") and d / "mic.wav"
            args = [a(d, v) if callable(a) else a for a in extra]
            watch = [p for p in (v, w) if isinstance(p, Path) and p.is_file()]
            return ctx.cli("live", "--camera", v, "--mic", w, "--no-display", "--max-frames", "3", *args, watch=watch)
        return build

    cli_case("a good live run", "live", live("--summary-json", lambda d, v: d / "s.json"), bad=False)
    cli_case("--record the camera's video", "live", live("--record", lambda d, v: v))
    cli_case("--record in /proc", "live", live("--record", "/proc/catalogue.mp4"))
    cli_case("--record under a file", "live", live("--record", lambda d, v: v / "r.mp4"))
    cli_case("--summary-json in /proc", "live", live("--summary-json", "/proc/catalogue.json"))
    cli_case("--json X --summary-json X", "live", live("--json", lambda d, v: d / "x", "--summary-json", lambda d, v: d / "x"))
    cli_case("--json X --record X", "live", live("--json", lambda d, v: d / "x.mp4", "--record", lambda d, v: d / "x.mp4"))
    cli_case("--camera missing", "live", live(camera=lambda ctx, d: d / "missing.mp4"))
    cli_case("--camera a text file", "live", live(camera=lambda ctx, d: write(d / "cam.mp4", b"text")))
    cli_case("--mic a missing file", "live", live(mic=lambda ctx, d: d / "missing.wav"))
    cli_case("--mic a text file", "live", live(mic=lambda ctx, d: write(d / "mic.wav", b"text")))
    cli_case("--mic an empty file", "live", live(mic=lambda ctx, d: write(d / "mic.wav", b"")))

    def tiny_stereo(ctx, d):
        code = ("import numpy as np, soundfile; "
                f"soundfile.write({str(d / 'tiny.wav')!r}, np.full((3, 2), 0.1, np.float32), 16000)")
        subprocess.run([ctx.python, "-c", code], check=True, env=ctx.env())
        return d / "tiny.wav"
    cli_case("--mic a 3-frame stereo WAV", "live", live(mic=tiny_stereo), bad=False)
    for opt, v in (("--hop", "nan"), ("--workers", "0"), ("--workers", "10000"), ("--display-min", "-1"),
                   ("--camera-size", "0x0"), ("--in-view-threshold", "nan"), ("--box-tau", "nan")):
        cli_case(f"{opt} {v}", "live", live(opt, v))


# ---------------------------------------------------------------- training and export (torch)

TRAIN_TIMEOUT = 150.0
RUN_STARTED = "run folder "  # what training.pipeline prints once it has taken its options and begins


def run_copy(ctx: Ctx, d: Path, name: str = "run") -> Path:
    """A run folder of this case: the base run (state paths pointing into it) cloned."""
    dst = d / name
    clone(ctx.run, dst)
    state = dst / "state.json"
    if state.is_file():
        text = state.read_text()
        state.unlink()
        state.write_text(text.replace(str(ctx.run), str(dst)))
    return dst


def undo(run: Path, *steps: str) -> None:
    state = run / "state.json"
    s = json.loads(state.read_text())
    for step in steps:
        s["done"].pop(step, None)
    state.unlink()
    state.write_text(json.dumps(s, indent=2))


def register_train_cases() -> None:
    pipe = "training.pipeline"

    def flipped_resume(ckpt: str, steps: tuple[str, ...]):
        def build(ctx: Ctx, d: Path) -> Job:
            r = run_copy(ctx, d)
            undo(r, *steps)
            flip_bytes(r / ckpt, 4096)
            return ctx.module(pipe, "--out", r, "--resume", "--no-export", "--quiet", timeout=TRAIN_TIMEOUT,
                              watch=[r / ckpt, r / "data" / "test"])
        return build

    add("train: --resume with a flipped-byte stage-two checkpoint", "train",
        flipped_resume("stage_two_last.pt", ("stage_two", "evaluate", "report", "export")))
    add("train: --resume with a flipped-byte model.pt", "train",
        flipped_resume("model.pt", ("evaluate", "report", "export")))

    def copied_resume(ctx: Ctx, d: Path) -> Job:
        src = run_copy(ctx, d, "original")
        undo(src, "evaluate", "report", "export")
        dst = d / "copy"
        shutil.copytree(src, dst)
        moved = d / "original-moved"
        src.rename(moved)  # the original is gone from where its state.json says it is
        return ctx.module(pipe, "--out", dst, "--resume", "--no-export", "--quiet", timeout=TRAIN_TIMEOUT,
                          watch=[moved])
    add("train: a copied run folder resuming (original moved away)", "train", copied_resume, bad=False)

    def copied_resume_original_there(ctx: Ctx, d: Path) -> Job:
        src = run_copy(ctx, d, "original")
        undo(src, "evaluate", "report", "export")
        dst = d / "copy"
        shutil.copytree(src, dst)
        return ctx.module(pipe, "--out", dst, "--resume", "--no-export", "--quiet", timeout=TRAIN_TIMEOUT,
                          watch=[src])
    add("train: a copied run folder resuming (original still there)", "train", copied_resume_original_there, bad=False)

    def force_foreign(ctx: Ctx, d: Path) -> Job:
        out = d / "mine"
        (out / "data" / "test").mkdir(parents=True)
        (out / "notes.txt").write_text("my notes")
        (out / "config.json").write_text('{"mine": true}')
        (out / "data" / "test" / "keep.txt").write_text("my data")
        (out / "bundle").mkdir()
        (out / "bundle" / "mine.txt").write_text("my bundle")
        return ctx.module(pipe, "--preset", "smoke", "--out", out, "--force", "--no-export", "--quiet",
                          timeout=TRAIN_TIMEOUT, watch=[out])
    add("train: --force on a folder that never held a run", "train", force_foreign, started=RUN_STARTED,
        note="stopped once the run starts")

    def resume_bad(what: str, text: str):
        def build(ctx: Ctx, d: Path) -> Job:
            r = run_copy(ctx, d)
            (r / what).unlink()
            (r / what).write_text(text)
            return ctx.module(pipe, "--out", r, "--resume", "--no-export", "--quiet", timeout=TRAIN_TIMEOUT,
                              watch=[r / "model.pt", r / "data" / "test"])
        return build

    add("train: --resume with config.json garbage", "train", resume_bad("config.json", "{garbage"))
    add("train: --resume with state.json garbage", "train", resume_bad("state.json", "{garbage"))
    add("train: --resume with state.json a list", "train", resume_bad("state.json", "[]"))
    add("train: --resume on an empty folder", "train",
        lambda ctx, d: ctx.module(pipe, "--out", d, "--resume", "--quiet", timeout=TRAIN_TIMEOUT))
    add("train: --out an existing file", "train",
        lambda ctx, d: ctx.module(pipe, "--preset", "smoke", "--out", write(d / "f", b"x"), "--quiet",
                                  watch=[d / "f"], timeout=TRAIN_TIMEOUT))
    add("train: --preset bogus", "train", lambda ctx, d: ctx.module(pipe, "--preset", "bogus", "--out", d / "r"))
    for opt, v in (("--stage_one.lr", "nan"), ("--stage_one.batch_size", "0"), ("--data.image_size", "-64")):
        add(f"train: {opt} {v}", "train",
            lambda ctx, d, opt=opt, v=v: ctx.module(pipe, "--preset", "smoke", "--out", d / "r", opt, v,
                                                    "--no-export", "--quiet", timeout=TRAIN_TIMEOUT),
            started=RUN_STARTED, note="stopped once the run starts")

    ev = "training.evaluate"

    def evaluate(ckpt: Callable[[Ctx, Path], Path], *extra, bad=True):
        def build(ctx: Ctx, d: Path) -> Job:
            data = clone(ctx.data, d / "avcoco")
            c = ckpt(ctx, d)
            args = [a(d, data) if callable(a) else a for a in extra]
            return ctx.module(ev, "--checkpoint", c, "--data", data, *args, timeout=TRAIN_TIMEOUT,
                              watch=[data] + ([c] if c.exists() else []))
        return build

    def model_copy(ctx, d):
        p = d / "model.pt"
        os.link(ctx.run / "model.pt", p)
        return p

    def flipped(ctx, d):
        p = d / "model.pt"
        shutil.copy2(ctx.run / "model.pt", p)
        flip_bytes(p, 4096)
        return p

    add("evaluate: a good evaluation", "evaluate", evaluate(model_copy, "--json", lambda d, data: d / "t.json"), bad=False)
    add("evaluate: a flipped-byte checkpoint", "evaluate", evaluate(flipped))
    add("evaluate: an empty checkpoint", "evaluate", evaluate(lambda ctx, d: write(d / "model.pt", b"")))
    add("evaluate: a text file as checkpoint", "evaluate", evaluate(lambda ctx, d: write(d / "model.pt", b"text")))
    add("evaluate: a folder without model.pt", "evaluate", evaluate(lambda ctx, d: (d / "empty").mkdir() or d / "empty"))
    add("evaluate: a missing checkpoint", "evaluate", evaluate(lambda ctx, d: d / "missing.pt"))
    add("evaluate: --markdown into a missing folder", "evaluate",
        evaluate(model_copy, "--markdown", lambda d, data: d / "missing" / "t.md"), bad=False)
    add("evaluate: --json the annotations", "evaluate",
        evaluate(model_copy, "--json", lambda d, data: data / "annotations.json"))
    add("evaluate: --json X --markdown X", "evaluate",
        evaluate(model_copy, "--json", lambda d, data: d / "t", "--markdown", lambda d, data: d / "t"))
    add("evaluate: --solo-tau nan", "evaluate", evaluate(model_copy, "--solo-tau", "nan"))
    add("evaluate: --data missing", "evaluate",
        lambda ctx, d: ctx.module(ev, "--checkpoint", ctx.run / "model.pt", "--data", d / "missing", timeout=TRAIN_TIMEOUT))

    exp = "export/to_onnx.py"

    def export(*extra, ckpt=None, timeout=60.0):
        def build(ctx: Ctx, d: Path) -> Job:
            c = ckpt(ctx, d) if ckpt else model_copy(ctx, d)
            args = [a(ctx, d) if callable(a) else a for a in extra]
            return ctx.script(exp, "--checkpoint", c, *args, timeout=timeout, watch=[c] if c.exists() else [])
        return build

    add("export: a flipped-byte checkpoint", "export", export("--out", lambda ctx, d: d / "b", ckpt=flipped),
        timeout_means="silent acceptance", note="a timeout means it was exporting the damaged weights")
    add("export: an empty checkpoint", "export", export("--out", lambda ctx, d: d / "b",
                                                        ckpt=lambda ctx, d: write(d / "model.pt", b"")))
    add("export: a missing checkpoint", "export", export("--out", lambda ctx, d: d / "b", ckpt=lambda ctx, d: d / "no.pt"))

    def foreign_out(ctx, d):
        out = d / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("my notes")
        return out

    def export_into_foreign(ctx: Ctx, d: Path) -> Job:
        job = export("--out", foreign_out, "--variants", "", "--no-eval")(ctx, d)
        job.watch.append(d / "mine")
        return job
    add("export: --out a folder with other files", "export", export_into_foreign, timeout_means="silent acceptance",
        note="a timeout means it was writing a bundle among the folder's files")
    for opt, v in (("--calibration-size", "-1"), ("--max-fpr", "nan"), ("--variants", "bogus"),
                   ("--calibration-data", "/no/such/data")):
        add(f"export: {opt} {v}", "export", export("--out", lambda ctx, d: d / "b", opt, v, timeout=45),
            timeout_means="silent acceptance", note="a timeout means the export went on with the value")


def register_all() -> None:
    register_bundle_cases()
    register_library_cases()
    register_audio_cases()
    register_avcoco_cases()
    register_run_cases()
    register_eval_cases()
    register_bench_cases()
    register_info_cases()
    register_live_cases()
    register_train_cases()


# ------------------------------------------------------------------------------------------ main


def table(results: list[Outcome]) -> str:
    counts = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
    lines = [f"{len(results)} cases: " + ", ".join(f"{o} {n}" for o, n in counts.items()), ""]
    lines += [f"| {'outcome':<17} | {'cases':>5} |", f"|{'-' * 19}|{'-' * 7}|"]
    lines += [f"| {o:<17} | {n:>5} |" for o, n in counts.items()]
    lines.append("")
    width = max((len(r.name) for r in results), default=10)
    for r in results:
        lines.append(f"{r.outcome:<17}  {r.name:<{width}}  {r.seconds:>5.1f}s  {r.message}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True, help="a finished smoke run's bundle (only read)")
    p.add_argument("--json", type=Path, required=True, help="write the outcomes here")
    p.add_argument("--only", default="", help="run only the cases whose name contains this")
    p.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case unless it says otherwise")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = p.parse_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        p.error(f"--bundle {args.bundle}: no manifest.json there")
    register_all()
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    cases = [c for c in CASES if args.only in c.name]
    root = Path(tempfile.mkdtemp(prefix="avsl-catalogue-"))
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, stop)  # stopped: kill the running cases and remove the copies
    try:
        ctx = Ctx(args.bundle, root, Path.cwd(), args.timeout)
        print(f"{len(cases)} cases, {args.jobs} at a time, in {root}", file=sys.stderr)
        pool = ThreadPoolExecutor(args.jobs)
        results = []
        try:
            for r in pool.map(lambda c: run_case(ctx, c), cases):
                print(f"  {r.outcome:<17} {r.name}", file=sys.stderr, flush=True)
                results.append(r)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in list(RUNNING):
                kill_group(proc)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = table(results)
    print(text)
    counts = {o: sum(r.outcome == o for r in results) for o in OUTCOMES}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"cases": len(results), "counts": counts, "seconds": round(time.monotonic() - t0, 1),
                                     "results": [asdict(r) for r in results]}, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
