"""Shared fixtures: one `smoke` pipeline run (trained, evaluated, exported) per test session, and a
private PulseAudio server (`pulse`) for the microphone tests of the live runtime."""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import sys
import subprocess
import tempfile
import time
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests share 2 cores with each other's subprocesses: keep every process single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The smoke pipeline registers its bundle in the avsl-edge cache: keep that out of the user's cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="avsl-edge-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A finished `python -m training.pipeline --preset smoke` run folder (with its ONNX bundle).

    ``AVSL_EDGE_TEST_SMOKE_RUN=DIR`` copies the finished smoke run DIR instead of training one (for
    quick reruns of a few tests while the code that trains and exports is unchanged)."""
    out = tmp_path_factory.mktemp("runs") / "smoke"
    reuse = os.environ.get("AVSL_EDGE_TEST_SMOKE_RUN")
    if reuse:  # a developer's shortcut: a copy of a finished smoke run (CI always trains one)
        shutil.copytree(reuse, out, symlinks=True)
        from avsl_edge.registry import register_bundle

        register_bundle(out / "bundle")  # as the pipeline does after its export
        return out
    from training.pipeline import main as pipeline_main

    assert pipeline_main(["--preset", "smoke", "--quiet", "--out", str(out)]) == 0
    return out


sys.path.append(str(Path(__file__).parent / "edge"))  # tiny_bundle: the edge suite's onnx.helper bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A valid bundle of three ``onnx.helper`` graphs with random weights (3 classes, 64 px input,
    fp32 only; tests/edge/tiny_bundle.py), never modified; no torch needed."""
    from tiny_bundle import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture
def tiny_bundle_copy(tmp_path) -> Path:
    """A bundle of the same graphs that a test may modify."""
    from tiny_bundle import write_tiny_bundle

    return write_tiny_bundle(tmp_path / "bundle")


@pytest.fixture(scope="session")
def smoke_bundle(smoke_run: Path) -> Path:
    """The ONNX bundle the smoke run exported."""
    bundle = smoke_run / "bundle"
    assert (bundle / "manifest.json").is_file()
    return bundle


# ------------------------------------------------------------------------- which files a block opens

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # once per test session (an audit hook cannot be removed)


@contextlib.contextmanager
def opened_files() -> Iterator[list[str]]:
    """The real paths of every file opened in the block (``from conftest import opened_files``)."""
    global _opened
    _opened = seen = []
    try:
        yield seen
    finally:
        _opened = None
        seen[:] = [os.path.realpath(p) for p in seen]


# ------------------------------------------------------------------------- PulseAudio (microphone tests)


@dataclass
class Pulse:
    server: str  # PULSE_SERVER value
    sink: str  # what paplay plays into; its monitor is the default source
    env: dict  # environment for pactl / paplay
    root: Path

    def play(self, wav: Path) -> subprocess.Popen:
        return subprocess.Popen(["paplay", f"--device={self.sink}", "--latency-msec=250", str(wav)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _die_with_parent() -> None:
    """In the child (Linux): get SIGTERM when the test process dies, so a crashed run leaves no
    PulseAudio server behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _pactl(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, timeout=10, check=check)


@pytest.fixture(scope="module")
def pulse():
    """A private PulseAudio server for this test module: a 16 kHz mono null sink ``avsl_test``
    whose monitor is the default source, reached through ALSA's ``pulse`` PCM by PortAudio.

    * runs as the current user (root included: ``--system=false``, a private HOME /
      XDG_RUNTIME_DIR / PULSE_RUNTIME_PATH, no D-Bus, no default.pa: ``-n``);
    * ``--exit-idle-time=-1 --disallow-exit``: it lives until this fixture stops it;
    * clients connect via ``PULSE_SERVER=unix:<tmp>/native`` (anonymous auth, no cookie);
    * a null sink renders in 2 s chunks while nobody asks for low latency, so a ``parec`` at 10 ms
      keeps its monitor live, and a suspend/resume makes the sink re-time at once (else the first
      capture waits up to 2 s);
    * PortAudio lists ALSA devices when it initialises, so sounddevice is re-initialised once
      the server runs (and again after it is gone);
    * the server and parec get SIGTERM if the test process dies (PR_SET_PDEATHSIG).
    """
    missing = [t for t in ("pulseaudio", "pactl", "paplay", "parec") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"PulseAudio tools missing: {missing} (Debian: apt-get install pulseaudio pulseaudio-utils)")
    if not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so") + glob.glob("/usr/lib*/alsa-lib/libasound_module_pcm_pulse.so"):
        pytest.skip("ALSA's pulse plugin is missing (Debian: apt-get install libasound2-plugins)")
    try:
        import sounddevice as sd
    except OSError as exc:
        pytest.skip(f"PortAudio is missing ({exc}; Debian: apt-get install libportaudio2)")
    root = Path(tempfile.mkdtemp(prefix="avsl-pa-"))  # short: a unix socket path has at most 107 bytes
    sock = root / "native"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
    env.update(HOME=str(root), XDG_RUNTIME_DIR=str(root), PULSE_RUNTIME_PATH=str(root / "runtime"),
               PULSE_STATE_PATH=str(root / "state"), PULSE_SERVER=f"unix:{sock}")
    cmd = ["pulseaudio", "--daemonize=no", "--system=false", "-n", "--exit-idle-time=-1", "--disallow-exit",
           "--use-pid-file=false", "--log-target=stderr", "--log-level=warning",
           "--load=module-null-sink sink_name=avsl_test rate=16000 channels=1",
           f"--load=module-native-protocol-unix auth-anonymous=1 socket={sock}"]
    log = open(root / "pulseaudio.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              preexec_fn=_die_with_parent)
    keeper = None
    try:
        deadline = time.monotonic() + 10
        while _pactl(env, "info", check=False).returncode != 0:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"PulseAudio did not start here ({' '.join(cmd)} -> exit {server.poll()}): "
                            + (root / "pulseaudio.log").read_text()[-800:])
            time.sleep(0.05)
        _pactl(env, "set-default-source", "avsl_test.monitor")
        keeper = subprocess.Popen(["parec", "--latency-msec=10", "-d", "avsl_test.monitor", "--rate=16000",
                                   "--channels=1", "--format=s16le"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        while not _pactl(env, "list", "short", "source-outputs").stdout.strip():  # parec connected
            assert keeper.poll() is None and time.monotonic() < deadline, "parec could not record the monitor"
            time.sleep(0.02)
        _pactl(env, "suspend-sink", "avsl_test", "1")
        _pactl(env, "suspend-sink", "avsl_test", "0")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PULSE_SERVER", f"unix:{sock}")
            sd._terminate()
            sd._initialize()
            names = [d["name"] for d in sd.query_devices()]
            if "pulse" not in names:
                pytest.skip(f"PortAudio does not list ALSA's 'pulse' device with the server running (it lists {names})")
            try:
                yield Pulse(f"unix:{sock}", "avsl_test", env, root)
            finally:
                sd._terminate()
        sd._initialize()  # back to the machine's own devices
    finally:
        for p in (keeper, server):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
