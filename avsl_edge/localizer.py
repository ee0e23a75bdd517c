"""The Localizer: frames and audio as users have them -> :class:`~avsl_edge.result.Result`.

    loc = avsl_edge.load("runs/cpu/bundle")                  # or load() for the default bundle
    r = loc.localize(frame_bgr, audio_int16_48k, sample_rate=48000)
    r = loc.localize(pil_image, audio)                       # PIL images are RGB
    r = loc.localize(frame_rgb, audio, rgb=True)

    state = loc.encode_audio(window, sample_rate=48000)      # streaming: one audio embedding ...
    for frame in frames_of_the_next_250_ms:
        r = loc.localize_frame(frame, state)                 # ... serves many frames

Inputs
  frame   (H, W, 3) uint8, OpenCV's BGR order by default (``rgb=True`` for RGB), or a PIL image
          in mode "RGB"; any size (it is stretched to the model's square input, as in training).
          Grey, 4-channel, non-uint8 or empty frames are an :class:`InputError`.
  audio   1-D or (samples, channels) array (at most 8 channels, more samples than channels;
          other shapes, e.g. (channels, samples), are refused, not guessed) of int8/16/32 or
          uint8/16/32 PCM (scaled by the format's full scale) or floats in [-1, 1], or a list of
          numbers (integers are int16 PCM), at any ``sample_rate``; channels averaged, resampled
          to 16 kHz with soxr. The LAST 1 s is used; a shorter clip is zero-padded at its start
          (the past), so the newest sound stays at the end of the window, as in a live ring
          buffer. Empty, NaN/inf, int64/uint64 (no PCM format: cast to the samples' own) or
          ambiguously shaped audio is an :class:`~avsl_edge.audio.AudioError`.

Decisions (:class:`Rules`, from the bundle manifest's ``postprocessing``; each can be overridden):
  1. audio gate: the window's RMS level >= ``audio_gate_db`` dBFS, else nothing is sounding
     (a silent room lights nothing);
  2. in view: gate open and the in-view score >= ``in_view_threshold``, else nothing is sounding
     in view (an off-screen sound lights nothing). ``in_view_score`` says which score:
     ``"av_score"``, the max of the av map; ``"presence"``, how much the frame shows an object
     of the heard cluster (:func:`class_presence`: the largest cosine between a position's v_fea
     and the dictionary key of the audio's most probable cluster); or ``"heard_av"``, the max of
     the av map where the frame shows the heard classes (:func:`heard_av_score`: the av map times
     the class maps weighted by the audio's class probabilities); ``"heard_class"``, the peak of
     the class map of the class the audio hears most (:func:`heard_class_score`: whether any part
     of the frame looks like it); or ``"combined"``, a calibrated logistic combination of the first
     three (:func:`avsl_edge.rules.combined_score`, weights in ``in_view_combination``). The export
     calibrates all five on SynthMUSIC scenes and keeps the one
     that separates best (see :mod:`avsl_edge.calibrate`); bundles from before the choice use av_score;
  3. classes: when in view, every class whose audio probability (summed over its clusters) is
     >= ``class_threshold``; the most probable class when none reaches it.
  One box per named class (:func:`avsl_edge.boxes.sounding_boxes`): the av map says where the
  sound comes from, the class maps (the class softmax of the gated class-aware maps, summed over
  the class's clusters: the maps the evaluation's CIoU scores) which of the named classes each
  place belongs to; a class's box bounds the largest component of its part of the frame where the
  av map is above ``box_tau`` x its max there (``box_method`` "map"), or the object that GrabCut
  finds on the frame from those seeds (``box_method`` "grabcut"); both calibrated at export.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UserError
from .audio import (CLIP_SAMPLES, FLOAT_PEAK_LIMIT, SAMPLE_RATE, AudioError, as_audio_array, check_layout, fit_clip,
                    resample, rms_db, to_mono_float32)
from .backends import Backend
from .boxes import WORKING_RESOLUTION, sounding_boxes
from .bundle import Bundle
from .preprocess import normalize_chw, resize_rgb
from .result import Box, Result
from .rules import COMBINED_SCORES, IN_VIEW_SCORES, RuleError, Rules, combined_score  # noqa: F401 - also avsl_edge.localizer's, as before

MAX_SAMPLE_RATE = 768_000


class InputError(UserError, ValueError):
    """A frame (or other argument) that the localizer cannot use; the message says how to fix it."""


# The per-frame products below use np.einsum (its own loop, never BLAS), not matmul: numpy's OpenBLAS
# runs even these small products on every core and leaves its threads spinning afterwards, which takes
# the cores from ONNX Runtime's next run (docs/performance.md, "What was fixed on the way"). The
# einsums cost < 0.5 ms a frame.
def class_presence(v_fea: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """(B, 512, h, w) visual features, (K, 512) dictionary -> (B, K): per cluster, the largest
    cosine between its key and the feature vector of any position, floored at 0. It says how much
    the frame shows an object of that cluster, whether or not it sounds."""
    v = np.asarray(v_fea, np.float32)
    d = np.asarray(dictionary, np.float32)
    if v.ndim != 4 or d.ndim != 2 or v.shape[1] != d.shape[1]:
        raise ValueError(f"class_presence: v_fea (B, C, h, w) and dictionary (K, C), got {v.shape} and {d.shape}")
    v = v.reshape(v.shape[0], v.shape[1], -1)  # (B, C, P)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    norms = np.sqrt(np.einsum("bcp,bcp->bp", v, v))  # divide the (K, P) products, not the (C, P) features
    cos = np.einsum("kc,bcp->bkp", d, v) / np.maximum(norms, 1e-12)[:, None, :]
    return np.maximum(cos.max(axis=2), 0.0)


def heard_av_score(av_map: np.ndarray, class_maps: np.ndarray, class_probs: np.ndarray) -> np.ndarray:
    """(B, h, w) av maps, (B, C, h, w) class maps, (B, C) audio class probabilities -> (B,): the
    max over positions of av_map x sum_c p_c class_map_c, i.e. how strongly the av map fires where
    the frame shows what the audio says it hears. An off-screen sound can still fire the av map on
    some visible instrument, but there the heard class's map is low."""
    av = np.asarray(av_map, np.float32)
    maps = np.asarray(class_maps, np.float32)
    p = np.asarray(class_probs, np.float32)
    if av.ndim != 3 or maps.ndim != 4 or p.ndim != 2 or maps.shape[2:] != av.shape[1:] \
            or maps.shape[:2] != p.shape or av.shape[0] != p.shape[0]:
        raise ValueError(f"heard_av_score: av_map (B, h, w), class_maps (B, C, h, w) and class_probs (B, C); got "
                         f"{av.shape}, {maps.shape} and {p.shape}")
    heard = np.einsum("bc,bchw->bhw", p, maps)
    return (av * heard).reshape(av.shape[0], -1).max(axis=1)


def heard_class_score(class_maps: np.ndarray, class_probs: np.ndarray) -> np.ndarray:
    """(B, C, h, w) class maps, (B, C) audio class probabilities -> (B,): the max over positions of
    the class map of each row's most probable class, i.e. whether some part of the frame looks like
    what the audio hears, wherever the av map fires. The class maps come from the head's softmax
    (its scale saturates them): calibrated thresholds sit close to 1."""
    maps = np.asarray(class_maps, np.float32)
    p = np.asarray(class_probs, np.float32)
    if maps.ndim != 4 or p.ndim != 2 or maps.shape[:2] != p.shape:
        raise ValueError(f"heard_class_score: class_maps (B, C, h, w) and class_probs (B, C); got {maps.shape} and {p.shape}")
    heard = np.argmax(p, axis=1)
    return maps[np.arange(len(p)), heard].reshape(len(p), -1).max(axis=1)


@dataclass(frozen=True)
class AudioState:
    """One encoded audio window (from :meth:`Localizer.encode_audio`), reusable for many frames."""

    a_emb: np.ndarray         # (1, E) audio embedding, the head's input
    cluster_probs: np.ndarray  # (K,) distribution over the model's clusters (the audio graph's audio_probs)
    class_probs: np.ndarray    # (C,) the same summed per class
    audio_db: float           # RMS level of the window (the samples given, not the padding), dBFS
    gate_open: bool
    ms: float                 # resampling + audio graph time


def as_frame(frame: Any, rgb: bool = False) -> tuple[np.ndarray, bool]:
    """Validate a frame as users have it; returns (the (H, W, 3) uint8 array, whether it is RGB)."""
    if not isinstance(rgb, (bool, np.bool_)):
        raise InputError(f"rgb must be True or False, got {rgb!r}")
    if not isinstance(frame, np.ndarray) and all(hasattr(frame, a) for a in ("mode", "size", "convert")):
        if frame.mode != "RGB":
            raise InputError(f"PIL image in mode {frame.mode!r}; pass image.convert('RGB')")
        return np.asarray(frame), True
    if not isinstance(frame, np.ndarray):
        raise InputError(f"frame must be an (H, W, 3) uint8 numpy array (OpenCV BGR, or RGB with rgb=True) or a "
                         f"PIL image, got {type(frame).__name__}")
    a = frame
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1):
        raise InputError(f"grey frame of shape {a.shape}; convert it: cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)")
    if a.ndim == 3 and a.shape[2] == 4:
        raise InputError(f"4-channel frame of shape {a.shape} (BGRA/RGBA); drop the alpha channel: "
                         "cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR) or frame[..., :3]")
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputError(f"frame must be (H, W, 3), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"frame has an empty side: shape {a.shape}")
    if a.dtype != np.uint8:
        hint = (" (floats in [0, 1]: (frame * 255).round().astype(np.uint8))"
                if np.issubdtype(a.dtype, np.floating) else "")
        raise InputError(f"frame must be uint8 (0-255), got dtype {a.dtype}{hint}")
    return a, bool(rgb)


def check_sample_rate(sample_rate: Any) -> int:
    if isinstance(sample_rate, (bool, np.bool_)) or not isinstance(sample_rate, (int, np.integer, float)):
        raise AudioError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if not (math.isfinite(float(sample_rate)) and float(sample_rate) == int(sample_rate)):
        raise AudioError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}")
    rate = int(sample_rate)
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"sample_rate {rate} Hz is outside 1..{MAX_SAMPLE_RATE}")
    return rate


def audio_window(audio: Any, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """Audio as users have it -> (the model's 1 s clip at 16 kHz, the RMS level in dBFS of the
    samples it holds: the last second of ``audio``, padding excluded). The sample format and the
    layout follow :func:`avsl_edge.audio.as_audio_array` and :func:`avsl_edge.audio.check_layout`."""
    rate = check_sample_rate(sample_rate)
    audio = as_audio_array(audio)
    check_layout(audio.shape)  # on the whole input: the shape the user passed decides its layout
    n_in = int(math.ceil(rate * CLIP_SAMPLES / SAMPLE_RATE))
    lead = 0 if rate == SAMPLE_RATE else max(64, rate // 20)  # resampler run-in, cut after resampling
    tail = audio[-(n_in + lead):] if audio.shape[0] > n_in + lead else audio
    if tail.dtype.kind == "f" and tail.size:
        peak = float(np.max(np.abs(tail)))  # NaN and inf are left to to_mono_float32's message
        if math.isfinite(peak) and peak > FLOAT_PEAK_LIMIT:
            raise AudioError(f"float audio must be in [-1, 1] but peaks at {peak:.4g}; integer samples stored as "
                             "floats need scaling (e.g. divide int16 values by 32768)")
    mono = to_mono_float32(tail, layout_known=True)
    held = min(mono.shape[0], n_in)  # input samples inside the last second
    x = resample(mono, rate, SAMPLE_RATE)
    n_out = min(CLIP_SAMPLES, max(1, int(round(held * SAMPLE_RATE / rate))))
    recent = x[-n_out:]
    return fit_clip(recent), rms_db(recent)


class Localizer:
    """A bundle on a backend, with the decision :class:`Rules`. Build it with :func:`avsl_edge.load`."""

    def __init__(self, bundle: Bundle, backend: Backend, rules: Rules | None = None, keep_image: bool = True,
                 box_resolution: int = WORKING_RESOLUTION):
        self.bundle, self.backend = bundle, backend
        self.rules = rules or Rules.from_postprocessing(bundle.manifest.postprocessing)
        self.classes: tuple[str, ...] = tuple(bundle.classes)
        self.image_size = int(bundle.image_size)
        self.keep_image = keep_image
        self.box_resolution = int(box_resolution)
        match = bundle.cluster_match()
        self.assignment = match.assignment_matrix().astype(np.float32)  # (C, K)
        self.dictionary = np.asarray(bundle.dictionary, np.float32)

    # ---- configuration
    def with_rules(self, **overrides: float | str) -> Localizer:
        """A Localizer sharing this one's backend, with some rules replaced; a new ``in_view_score``
        without an ``in_view_threshold`` takes that score's calibrated threshold, where the bundle has one."""
        return Localizer(self.bundle, self.backend,
                         self.rules.replaced(self.bundle.manifest.postprocessing.calibration, **overrides),
                         self.keep_image, self.box_resolution)

    def info(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle.root), "classes": list(self.classes), "image_size": self.image_size,
                "variant": self.backend.variant, "backend": self.backend.info(), "rules": self.rules.to_dict()}

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Localizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Localizer({self.bundle.root}, {self.backend.description}, {len(self.classes)} classes)"

    # ---- pieces
    def class_probs(self, cluster_probs: np.ndarray) -> np.ndarray:
        """(..., K) cluster distribution -> (..., C) class distribution (sum over each class's clusters)."""
        return np.einsum("...k,ck->...c", np.asarray(cluster_probs, np.float32), self.assignment)

    def class_maps(self, cluster_maps: np.ndarray) -> np.ndarray:
        """(K, h, w) class softmax -> (C, h, w) per-class maps (the evaluation's class maps)."""
        k, h, w = cluster_maps.shape
        return np.einsum("ck,kp->cp", self.assignment, cluster_maps.reshape(k, h * w)).reshape(-1, h, w)

    def preprocess(self, frame: Any, rgb: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
        """-> ((1, 3, S, S) model input, the frame array, whether it is RGB). Byte-identical to
        :func:`avsl_edge.preprocess.preprocess_frame` on the RGB frame (the resize is per channel)."""
        a, is_rgb = as_frame(frame, rgb)
        small = resize_rgb(a, self.image_size)  # per channel: the same pixels in BGR or RGB order
        return normalize_chw(small, bgr=not is_rgb)[None], a, is_rgb

    # ---- the API
    def encode_audio(self, window: Any, sample_rate: int = SAMPLE_RATE) -> AudioState:
        """Resample + fit the audio, run the audio graph once: an :class:`AudioState` for
        :meth:`localize_frame` (streaming: reuse it for every frame until the next audio hop)."""
        t0 = time.perf_counter()
        clip, level = audio_window(window, sample_rate)
        out = self.backend.audio(clip[None])
        probs = out["audio_probs"][0].astype(np.float32)
        return AudioState(a_emb=out["a_emb"][:1].astype(np.float32), cluster_probs=probs,
                          class_probs=self.class_probs(probs), audio_db=level,
                          gate_open=level >= self.rules.audio_gate_db, ms=(time.perf_counter() - t0) * 1000.0)

    def localize_frame(self, frame: Any, audio_state: AudioState, rgb: bool = False) -> Result:
        """Localize one frame with an encoded audio window (see :meth:`encode_audio`)."""
        if not isinstance(audio_state, AudioState):
            raise InputError(f"audio_state must be the AudioState from encode_audio(), got {type(audio_state).__name__}")
        speed: dict[str, float] = {"audio": audio_state.ms}
        t0 = time.perf_counter()
        x, a, is_rgb = self.preprocess(frame, rgb)
        speed["preprocess"] = (time.perf_counter() - t0) * 1000.0
        needs_v_fea = self.needs_presence
        out = self.backend.frame(x, audio_state.a_emb, timings=speed, features=needs_v_fea)
        t1 = time.perf_counter()
        result = self._decide(out, audio_state, a, speed)
        result.image = a if self.keep_image else None
        result.rgb = is_rgb
        speed["postprocess"] = (time.perf_counter() - t1) * 1000.0
        return result

    def localize(self, frame: Any, audio: Any, sample_rate: int = SAMPLE_RATE, rgb: bool = False) -> Result:
        """One frame and the audio heard with it (its last second is used)."""
        return self.localize_frame(frame, self.encode_audio(audio, sample_rate), rgb)

    __call__ = localize

    # ---- decisions
    @property
    def needs_presence(self) -> bool:
        """Whether the in-view rule reads the presence score (which needs the visual features)."""
        r = self.rules
        return r.in_view_score == "presence" or (r.in_view_score == "combined" and r.in_view_combination is not None
                                                 and r.in_view_combination["presence"] != 0.0)

    def presence(self, v_fea: np.ndarray, cluster_probs: np.ndarray) -> np.ndarray:
        """(B,) :func:`class_presence` of each row's heard cluster (the most probable one of its
        (B, K) ``cluster_probs``)."""
        p = class_presence(v_fea, self.dictionary)
        heard = np.argmax(np.asarray(cluster_probs).reshape(p.shape[0], -1), axis=1)
        return p[np.arange(p.shape[0]), heard]

    def named_classes(self, class_probs: np.ndarray) -> list[int]:
        """Rule 3: classes with probability >= class_threshold, else the most probable one."""
        idx = [int(i) for i in np.argsort(-class_probs) if class_probs[i] >= self.rules.class_threshold]
        return idx or [int(np.argmax(class_probs))]

    def _decide(self, out: dict[str, np.ndarray], state: AudioState, image: np.ndarray,
                speed: dict[str, float]) -> Result:
        frame_hw = image.shape[:2]
        av = out["av_map"][0, 0].astype(np.float32)
        av_score = float(out["av_score"][0])
        cmaps = self.class_maps(out["class_probs"][0].astype(np.float32))
        presence = float(self.presence(out["v_fea"], state.cluster_probs)[0]) if "v_fea" in out else None
        heard_av = float(heard_av_score(av[None], cmaps[None], state.class_probs[None])[0])
        heard_class = float(heard_class_score(cmaps[None], state.class_probs[None])[0])
        scores = {"av_score": av_score, "presence": presence, "heard_av": heard_av, "heard_class": heard_class}
        weights = self.rules.in_view_combination  # computed when its scores are (presence only when the rule needs it)
        combined = (float(combined_score(weights, **{k: scores[k] for k in COMBINED_SCORES}))
                    if weights is not None and (presence is not None or weights["presence"] == 0.0) else None)
        score = combined if self.rules.in_view_score == "combined" else scores[self.rules.in_view_score]
        in_view = bool(state.gate_open and score is not None and score >= self.rules.in_view_threshold)
        named = self.named_classes(state.class_probs) if in_view else []
        result = Result(classes=self.classes, class_probs=state.class_probs, sounding=tuple(self.classes[i] for i in named),
                        boxes=[], av_score=av_score, presence=presence, heard_av=heard_av, heard_class=heard_class,
                        combined=combined,
                        in_view=in_view,
                        gate_open=bool(state.gate_open),
                        audio_db=state.audio_db, frame_size=(int(frame_hw[0]), int(frame_hw[1])), av_map_lowres=av,
                        class_maps_lowres=cmaps, rules=self.rules.to_dict(), speed=speed)
        for i, box in zip(named, self.boxes(av, cmaps[named], image)):
            if box is not None:
                result.boxes.append(Box(self.classes[i], float(state.class_probs[i]), *box))
        return result

    def boxes(self, av_map: np.ndarray, class_maps: np.ndarray, image: np.ndarray, tau: float | None = None,
              method: str | None = None) -> list[tuple[float, float, float, float] | None]:
        """One (x, y, w, h) box in pixels of the frame ``image`` (H, W, 3), or None, per row of
        ``class_maps`` (the named classes' low-resolution maps): :func:`avsl_edge.boxes.sounding_boxes`
        with ``method`` and ``tau`` (default ``rules.box_method``, ``rules.box_tau``), worked out at a
        size whose long side is at most ``box_resolution`` (GrabCut: at most
        :data:`avsl_edge.boxes.GRABCUT_RESOLUTION`)."""
        return sounding_boxes(av_map, class_maps, image.shape[:2], self.rules.box_tau if tau is None else tau,
                              self.box_resolution, method or self.rules.box_method, image)
