"""The MUSIC data layout (docs/method.md §7): reading, the solo dataset, and preparation from mp4.

Processed root::

    <root>/audio_frames/<stem>/<SSS>.npy               float32 (201, 64) log-mel of second SSS
                                                       (.pkl: the original pickles, read safely)
    <root>/video_frames/<stem>/frame_<SSS>/<NNNNN>.jpg 4 frames of second SSS, NNNNN = global index
    <root>/index.txt                                   "<stem>.flac <stem>.mp4" per prepared video

plus a label JSON ``{"videos": {"<category>" or "<catA> <catB>": ["<video id>", ...]}}``. Stems
are ``<video id>_<start>_<end>`` (``<11-char YouTube id>_0_1000`` in MUSIC).

Prepare a root from raw videos (any frame rate; audio is taken from the video's own track)::

    python -m training.data.music prepare --videos raw/ --out data/music_solo

Frames are chosen by timestamp (docs/method.md, 'frames by timestamp'): within whole second ``s``
the kept frames are ``floor(t * fps)`` for ``t = s + j * interval / fps``, ``j = 0..3``,
``interval = int(fps / 4)``; at 30 fps that is in-second offsets 0, 7, 14, 21 exactly as the
original, and at 29.97 fps every second gets its 4 frames. The log-mel is the model's own front
end (``training.model.LogMel``).

Read it for stage one (docs/method.md §1.4)::

    ds = MusicSolo("data/music_solo", index="data/music_solo/index.txt", labels="solo.json", train=True)
    item = ds[0]   # audio (1, 201, 64), pos_image / neg_image (3, 224, 224), pos_label, neg_label
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import re
import shutil
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from avsl_edge.audio import SAMPLE_RATE
from avsl_edge.errors import UserError
from avsl_edge.fileio import atomic_path
from avsl_edge.media import MediaError, probe, read_audio_track
from avsl_edge.preprocess import normalize_chw, preprocess_frame, resize_rgb

LOGMEL_SHAPE = (201, 64)
FRAMES_PER_SECOND = 4
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
AUDIO_DIR = "audio_frames"
VIDEO_DIR = "video_frames"
_SECOND_RE = re.compile(r"^(\d+)$")
_FRAME_DIR_RE = re.compile(r"^frame_(\d+)$")
_STEM_SUFFIX_RE = re.compile(r"^(.+)_\d+_\d+$")


class MusicError(UserError, ValueError):
    """A problem with MUSIC-layout data; the message names the file and the entry."""


# --------------------------------------------------------------------------------------------
# log-mel files: .npy (what `prepare` writes) and the original .pkl, read without running code


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else: any other global (os.system,
    builtins.eval, ...) is refused before it is looked up, so a malicious file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),  # protocol 0-2 pickles spell bytes this way
    }

    def find_class(self, module: str, name: str) -> Any:
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed (numpy arrays only)")
        return super().find_class(*target)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_load_pickled_array(path: str | os.PathLike) -> np.ndarray:
    """A numeric numpy array from a pickle file, refusing anything that is not one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MusicError(f"{path}: cannot read ({exc})") from exc
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:
        raise MusicError(f"{path}: refused or unreadable pickle ({exc})") from exc
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "fiub":
        what = type(obj).__name__ if not isinstance(obj, np.ndarray) else f"array of dtype {obj.dtype}"
        raise MusicError(f"{path}: expected a numeric numpy array, got {what}")
    return obj


def load_logmel(path: str | os.PathLike) -> np.ndarray:
    """One second's log-mel as float32 (201, 64) from ``.npy`` (no pickles) or ``.pkl``."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise MusicError(f"{path}: unreadable .npy ({exc})") from exc
    elif path.suffix == ".pkl":
        arr = safe_load_pickled_array(path)
    else:
        raise MusicError(f"{path}: log-mel files must be .npy or .pkl")
    if arr.shape != LOGMEL_SHAPE:
        raise MusicError(f"{path}: log-mel must have shape {LOGMEL_SHAPE}, got {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise MusicError(f"{path}: log-mel contains NaN or infinite values")
    return arr


# --------------------------------------------------------------------------------------------
# label JSON and index files


def video_id(stem: str) -> str:
    """``"<id>_0_1000"`` -> ``"<id>"`` (the ``_<start>_<end>`` suffix dropped); other stems as is."""
    m = _STEM_SUFFIX_RE.match(stem)
    return m.group(1) if m else stem


@dataclass(frozen=True)
class MusicLabels:
    """Categories of the label JSON (alphabetical: index = position) and each video's categories."""

    categories: tuple[str, ...]
    videos: Mapping[str, tuple[str, ...]]  # video id -> category names (1 for solo, 2 for duet)

    def index(self, vid: str) -> int:
        """Category index of a solo video; -1 for a multi-source (duet) video."""
        cats = self.videos[vid]
        return self.categories.index(cats[0]) if len(cats) == 1 else -1


def load_labels(path: str | os.PathLike) -> MusicLabels:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MusicError(f"{path}: no such label file") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MusicError(f"{path}: not valid JSON ({exc})") from exc
    videos = doc.get("videos") if isinstance(doc, dict) else None
    if not isinstance(videos, dict) or not videos:
        raise MusicError(f"{path}: expected a non-empty object under 'videos'")
    owner: dict[str, tuple[str, ...]] = {}
    names: set[str] = set()
    for key, ids in videos.items():
        cats = tuple(key.split())
        if not cats or not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise MusicError(f"{path}: videos[{key!r}] must be a list of video ids")
        names.update(cats)
        for vid in ids:
            if vid in owner and owner[vid] != cats:
                raise MusicError(
                    f"{path}: video {vid!r} is listed under both {' '.join(owner[vid])!r} and {key!r}"
                )
            owner[vid] = cats
    return MusicLabels(categories=tuple(sorted(names)), videos=owner)


def read_index(path: str | os.PathLike) -> list[str]:
    """Stems of an index file: lines ``"<stem>.flac <stem>.mp4"`` (a single name is accepted)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise MusicError(f"{path}: no such index file") from exc
    stems: list[str] = []
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise MusicError(f"{path}:{n}: expected '<stem>.flac <stem>.mp4', got {line!r}")
        found = {Path(p).stem for p in parts}
        if len(found) != 1:
            raise MusicError(f"{path}:{n}: the audio and video names differ: {line!r}")
        stems.append(found.pop())
    if not stems:
        raise MusicError(f"{path}: the index file lists no video")
    return stems


def write_index(path: str | os.PathLike, stems: Iterable[str]) -> Path:
    path = Path(path)
    text = "".join(f"{s}.flac {s}.mp4\n" for s in stems)
    _atomic_write_text(path, text)
    return path


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# (audio second, frame folder) pairs


@dataclass(frozen=True)
class MusicPair:
    stem: str
    video_id: str
    second: int
    audio: Path  # <root>/audio_frames/<stem>/<SSS>.npy|.pkl
    frames: tuple[Path, ...]  # the JPEGs of <root>/video_frames/<stem>/frame_<SSS>/, sorted


def _numbered(folder: Path, pattern: re.Pattern, want_dir: bool) -> dict[int, Path]:
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        key = p.name if want_dir else p.stem
        m = pattern.match(key)
        if m is None or p.is_dir() != want_dir:
            continue
        if not want_dir and p.suffix not in (".npy", ".pkl"):
            continue
        s = int(m.group(1))
        if s in out and not want_dir:
            if p.suffix == ".npy":  # prefer the safe format when both exist
                out[s] = p
            continue
        out[s] = p
    return out


def scan_pairs(root: str | os.PathLike, stems: Sequence[str] | None = None) -> list[MusicPair]:
    """Every (second, frame folder) pair of ``stems`` (default: all videos under ``video_frames``)
    where both the audio second and a non-empty frame folder exist, sorted by video id, stem,
    second. Videos without any pair are simply absent; no pair at all is an error."""
    root = Path(root)
    if not (root / VIDEO_DIR).is_dir() or not (root / AUDIO_DIR).is_dir():
        raise MusicError(f"{root}: not a MUSIC data root (needs {AUDIO_DIR}/ and {VIDEO_DIR}/)")
    if stems is None:
        stems = sorted(p.name for p in (root / VIDEO_DIR).iterdir() if p.is_dir() and not p.name.startswith("."))
    pairs: list[MusicPair] = []
    for stem in stems:
        audio = _numbered(root / AUDIO_DIR / stem, _SECOND_RE, want_dir=False)
        folders = _numbered(root / VIDEO_DIR / stem, _FRAME_DIR_RE, want_dir=True)
        for s in sorted(set(audio) & set(folders)):
            frames = tuple(sorted(folders[s].glob("*.jpg")))
            if frames:
                pairs.append(MusicPair(stem, video_id(stem), s, audio[s], frames))
    if not pairs:
        raise MusicError(
            f"{root}: no (audio second, frame folder) pair found for {len(stems)} video(s)"
            + (f" (first: {stems[0]!r})" if stems else "")
        )
    pairs.sort(key=lambda p: (p.video_id, p.stem, p.second))
    return pairs


def read_jpeg(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MusicError(f"{path}: unreadable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# training-time augmentation (docs/method.md §1.2) on uint8 RGB


def _augment(rgb: np.ndarray, g: torch.Generator | None) -> np.ndarray:
    """Horizontal flip (p = 0.5), then PIL-style Brightness and Color (saturation) enhancement
    with factors ~ U[0.7, 1.3]."""
    u = torch.rand(3, generator=g).tolist()
    if u[0] < 0.5:
        rgb = rgb[:, ::-1]
    x = rgb.astype(np.float32) * np.float32(0.7 + 0.6 * u[1])  # blend with black
    x = np.clip(np.rint(x), 0, 255)
    gray = (x @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None]  # PIL "L"
    x = gray + np.float32(0.7 + 0.6 * u[2]) * (x - gray)  # blend with grey
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _random_crop(rgb: np.ndarray, size: int, g: torch.Generator | None) -> np.ndarray:
    h, w = rgb.shape[:2]
    top = int(torch.randint(h - size + 1, (1,), generator=g))
    left = int(torch.randint(w - size + 1, (1,), generator=g))
    return rgb[top : top + size, left : left + size]


# --------------------------------------------------------------------------------------------
# the solo dataset (docs/method.md §1.4)


class MusicSolo(Dataset):
    """One item per (audio second, frame folder) pair of a video:

    - ``audio``: float32 (1, 201, 64) log-mel of that second;
    - ``pos_image``: a random one of the frames of that second, (3, S, S);
    - ``neg_image``: a random frame of a random pair of a DIFFERENT video id (the category may
      be the same, as in the original: docs/method.md, 'negatives of any other scene');
    - ``pos_label`` / ``neg_label``: category index (position in the sorted label-JSON
      categories; -1 for a multi-source video or when no labels are given);
    - ``frame_path`` / ``neg_frame_path`` / ``audio_path``: the files used (str).

    ``train=True``: flip/brightness/saturation augmentation -> Resize(256/224 * S) -> RandomCrop(S)
    -> normalise (docs/method.md §1.2); ``train=False``: the shared :func:`preprocess_frame`.
    Randomness comes from torch's global RNG (seeded per DataLoader worker); with ``seed`` set,
    item ``i`` is the same every time it is drawn.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        index: str | os.PathLike | Sequence[str] | None = None,
        labels: str | os.PathLike | MusicLabels | None = None,
        image_size: int = 224,
        train: bool = False,
        resize_size: int | None = None,
        seed: int | None = None,
    ):
        self.root = Path(root)
        if index is None:
            stems = None
        elif isinstance(index, (str, os.PathLike)):
            stems = read_index(index)
        else:
            stems = list(index)
        self.pairs = scan_pairs(self.root, stems)
        self.labels = load_labels(labels) if isinstance(labels, (str, os.PathLike)) else labels
        self.categories: tuple[str, ...] = self.labels.categories if self.labels else ()
        if self.labels is not None:
            missing = sorted({p.video_id for p in self.pairs} - set(self.labels.videos))
            if missing:
                raise MusicError(f"video id(s) {missing[:5]} have no category in the label JSON "
                                 f"({len(missing)} missing)")
        # contiguous block of each video id in the sorted pair list, for drawing negatives
        self._block: list[tuple[int, int]] = []
        start = 0
        for i in range(1, len(self.pairs) + 1):
            if i == len(self.pairs) or self.pairs[i].video_id != self.pairs[start].video_id:
                self._block.extend([(start, i)] * (i - start))
                start = i
        if self._block[0] == (0, len(self.pairs)):
            raise MusicError(f"{self.root}: negatives need at least two different videos, found only "
                             f"{self.pairs[0].video_id!r}")
        self.image_size = int(image_size)
        self.resize_size = int(resize_size) if resize_size else round(self.image_size * 256 / 224)
        self.train = bool(train)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def label(self, pair: MusicPair) -> int:
        return self.labels.index(pair.video_id) if self.labels is not None else -1

    def _image(self, path: Path, g: torch.Generator | None) -> torch.Tensor:
        rgb = read_jpeg(path)
        if not self.train:
            return torch.from_numpy(preprocess_frame(rgb, self.image_size))
        rgb = resize_rgb(_augment(rgb, g), self.resize_size)
        return torch.from_numpy(normalize_chw(_random_crop(rgb, self.image_size, g)))

    def __getitem__(self, index: int) -> dict[str, Any]:
        g = None
        if self.seed is not None:
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(index))
        pos = self.pairs[index]
        start, end = self._block[index]
        r = int(torch.randint(len(self.pairs) - (end - start), (1,), generator=g))
        neg = self.pairs[r if r < start else r + (end - start)]
        pos_frame = pos.frames[int(torch.randint(len(pos.frames), (1,), generator=g))]
        neg_frame = neg.frames[int(torch.randint(len(neg.frames), (1,), generator=g))]
        return {
            "audio": torch.from_numpy(load_logmel(pos.audio)).unsqueeze(0),
            "pos_image": self._image(pos_frame, g),
            "neg_image": self._image(neg_frame, g),
            "pos_label": self.label(pos),
            "neg_label": self.label(neg),
            "frame_path": str(pos_frame),
            "neg_frame_path": str(neg_frame),
            "audio_path": str(pos.audio),
        }


# --------------------------------------------------------------------------------------------
# preparation: raw videos -> processed root


def select_frames(fps: float | Fraction, n_frames: int, per_second: int = FRAMES_PER_SECOND
                  ) -> dict[int, tuple[int, ...]]:
    """Global frame indices kept for each whole second: ``floor(t * fps)`` for
    ``t = s + j * interval / fps``, ``j < per_second``, ``interval = int(fps / per_second)``.

    >>> select_frames(30, 65)
    {0: (0, 7, 14, 21), 1: (30, 37, 44, 51)}
    >>> select_frames(Fraction(30000, 1001), 95)[2]
    (59, 66, 73, 80)
    """
    fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    interval = int(fps / per_second)
    if interval < 1:
        raise MusicError(f"a {float(fps):.3f} fps video cannot give {per_second} frames per second")
    seconds = math.floor(Fraction(n_frames) / fps)
    # floor((s + j*interval/fps) * fps) = floor(s*fps) + j*interval, exactly, with Fractions
    return {s: tuple(math.floor(s * fps) + j * interval for j in range(per_second)) for s in range(seconds)}


def _logmel_seconds(waveform: np.ndarray, batch: int = 64) -> np.ndarray:
    """(n_seconds, 201, 64) log-mel of each whole second, with the model's own front end."""
    from training.model import LogMel  # the one definition of the audio front end

    n = waveform.shape[0] // SAMPLE_RATE
    segs = torch.from_numpy(np.ascontiguousarray(waveform[: n * SAMPLE_RATE], np.float32)).view(n, SAMPLE_RATE)
    front = LogMel().eval()
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            out.append(front(segs[i : i + batch])[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, *LOGMEL_SHAPE), np.float32)


@dataclass(frozen=True)
class PreparedVideo:
    stem: str
    fps: float
    audio_seconds: int
    frame_seconds: int
    skipped: bool = False  # already prepared, left as is


def prepare_video(video: str | os.PathLike, out: str | os.PathLike, per_second: int = FRAMES_PER_SECOND,
                  overwrite: bool = False) -> PreparedVideo:
    """Cut one video into ``audio_frames/<stem>/`` and ``video_frames/<stem>/`` under ``out``.

    Both folders are written under temporary names and renamed at the end, so an interrupted run
    never leaves a half-prepared video; an already prepared stem is skipped unless ``overwrite``.
    """
    import av

    video, out = Path(video), Path(out)
    stem = video.stem
    adir, vdir = out / AUDIO_DIR / stem, out / VIDEO_DIR / stem
    if adir.is_dir() and vdir.is_dir() and not overwrite:
        return PreparedVideo(stem, 0.0, len(list(adir.glob("*.npy"))), len(list(vdir.glob("frame_*"))), True)
    info = probe(video)  # MediaError names the file when it is unreadable
    if not info.has_audio:
        raise MediaError(f"{video}: has no audio track (MUSIC preparation needs the sound)")
    waveform = read_audio_track(video, SAMPLE_RATE)
    mels = _logmel_seconds(waveform)

    tmp_a = out / AUDIO_DIR / f".{stem}.partial"
    tmp_v = out / VIDEO_DIR / f".{stem}.partial"
    for t in (tmp_a, tmp_v):
        shutil.rmtree(t, ignore_errors=True)
        t.mkdir(parents=True)
    try:
        for s, mel in enumerate(mels):
            np.save(tmp_a / f"{s:03d}.npy", mel.astype(np.float32))
        try:
            with av.open(str(video)) as c:
                stream = c.streams.video[0]
                fps = Fraction(stream.average_rate or stream.guessed_rate or 0)
                if fps <= 0:
                    raise MediaError(f"{video}: the video stream has no frame rate")
                plan = select_frames(fps, info.frames, per_second)
                wanted = {k: s for s, ks in plan.items() for k in ks}
                last = max(wanted, default=-1)
                for k, frame in enumerate(c.decode(video=0)):
                    if k > last:
                        break
                    s = wanted.get(k)
                    if s is None:
                        continue
                    folder = tmp_v / f"frame_{s:03d}"
                    folder.mkdir(exist_ok=True)
                    bgr = frame.to_ndarray(format="bgr24")
                    if not cv2.imwrite(str(folder / f"{k:05d}.jpg"), bgr):
                        raise MusicError(f"{folder / f'{k:05d}.jpg'}: could not write the frame")
        except av.FFmpegError as exc:
            raise MediaError(f"{video}: unreadable video ({exc})") from exc
        # a second whose frames could not all be decoded is dropped, never half-kept
        complete = 0
        for s in plan:
            folder = tmp_v / f"frame_{s:03d}"
            if folder.is_dir() and len(list(folder.glob("*.jpg"))) == per_second:
                complete += 1
            else:
                shutil.rmtree(folder, ignore_errors=True)
        for tmp, final in ((tmp_a, adir), (tmp_v, vdir)):
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp_a, ignore_errors=True)
        shutil.rmtree(tmp_v, ignore_errors=True)
    return PreparedVideo(stem, float(fps), len(mels), complete)


def find_videos(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Video files named directly or found (non-recursively) in the given folders, sorted."""
    videos: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise MusicError(f"{p}: no video file ({', '.join(VIDEO_SUFFIXES)}) in this folder")
            videos.extend(found)
        elif p.is_file():
            videos.append(p)
        else:
            raise MusicError(f"{p}: no such video file or folder")
    stems: dict[str, Path] = {}
    for v in videos:
        if v.stem in stems and stems[v.stem] != v:
            raise MusicError(f"{v}: same stem {v.stem!r} as {stems[v.stem]} (stems name the output folders)")
        stems[v.stem] = v
    return list(stems.values())


def prepare(videos: Sequence[str | os.PathLike], out: str | os.PathLike, per_second: int = FRAMES_PER_SECOND,
            index_name: str = "index.txt", overwrite: bool = False, skip_bad: bool = False,
            progress: bool = True) -> list[PreparedVideo]:
    """Prepare every video and write ``<out>/<index_name>`` listing the prepared stems."""
    from tqdm import tqdm

    files = find_videos(videos)
    out = Path(out)
    done: list[PreparedVideo] = []
    failed: list[str] = []
    bar = tqdm(files, desc="prepare MUSIC", unit="video", disable=not progress)
    for f in bar:
        bar.set_postfix_str(f.name)
        try:
            done.append(prepare_video(f, out, per_second, overwrite))
        except (MediaError, MusicError) as exc:
            if not skip_bad:
                raise
            failed.append(str(exc))
            tqdm.write(f"skipped: {exc}", file=sys.stderr)
    if not done:
        raise MusicError(f"no video could be prepared ({len(failed)} failed)")
    write_index(out / index_name, sorted(p.stem for p in done))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.music", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="raw videos with sound -> audio_frames/ + video_frames/ + index")
    p.add_argument("--videos", nargs="+", required=True, help="video files and/or folders of videos")
    p.add_argument("--out", required=True, help="processed data root")
    p.add_argument("--fps-out", type=int, default=FRAMES_PER_SECOND, help="frames kept per second (4)")
    p.add_argument("--index", default="index.txt", help="index file name written under --out")
    p.add_argument("--overwrite", action="store_true", help="re-prepare videos already in --out")
    p.add_argument("--skip-bad", action="store_true", help="report unreadable videos and go on")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        done = prepare(args.videos, args.out, args.fps_out, args.index, args.overwrite, args.skip_bad,
                       progress=not args.quiet)
    except (MediaError, MusicError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_new = sum(not d.skipped for d in done)
    print(f"{len(done)} video(s) in {args.out} ({n_new} prepared now); index: {Path(args.out) / args.index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
