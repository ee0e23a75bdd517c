"""What :meth:`avsl_edge.Localizer.localize` returns: one frame's answer, typed and JSON-ready.

    r = avsl_edge.localize(frame_bgr, audio, 48000)
    r.sounding                 # ('guitar',): classes sounding in view
    r.scores["guitar"]         # 0.91: the audio class distribution, by class name
    r.boxes[0]                 # Box(label='guitar', score=0.91, x=212.0, y=80.0, w=190.0, h=260.0)
    r.class_map("guitar")      # (H, W) float32 at frame resolution, upsampled on first use
    r.av_map                   # (H, W) class-agnostic audio-visual map, likewise
    cv2.imwrite("out.png", r.plot())   # the overlay, in the colour order of the input frame
    r.to_json()                # boxes, classes, scores, decisions, timings (maps with maps=True)
    r.speed                    # {'audio': 21.3, 'preprocess': 0.4, 'image': 9.8, 'head': 0.1, 'postprocess': 0.6} (ms)

Decisions (see :class:`avsl_edge.localizer.Rules`): ``gate_open`` (the audio is loud enough),
``in_view`` (gate open and the in-view score, ``av_score``, ``presence``, ``heard_av``,
``heard_class`` or the calibrated ``combined`` score, >= the calibrated threshold), ``sounding`` (the classes named, empty unless ``in_view``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .boxes import WORKING_RESOLUTION, heard_maps_at, upsample_map, working_size
from .overlay import draw
from .rules import plain_rule_values


@dataclass(frozen=True)
class Box:
    """One sounding class's box in frame pixels (x, y = top-left corner)."""

    label: str
    score: float   # the class's audio probability
    x: float
    y: float
    w: float
    h: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def iou(self, other: Box | tuple[float, float, float, float]) -> float:
        """Intersection over union with another Box or an (x, y, w, h) tuple."""
        x, y, w, h = (other.x, other.y, other.w, other.h) if isinstance(other, Box) else other
        ix = max(0.0, min(self.x + self.w, x + w) - max(self.x, x))
        iy = max(0.0, min(self.y + self.h, y + h) - max(self.y, y))
        inter = ix * iy
        union = self.w * self.h + w * h - inter
        return inter / union if union > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 6), "x": round(self.x, 2), "y": round(self.y, 2),
                "w": round(self.w, 2), "h": round(self.h, 2)}


@dataclass
class Result:
    """One frame + audio window, localized. Maps are stored at the model's feature resolution and
    upsampled to the frame's size on first access (then cached)."""

    classes: tuple[str, ...]
    class_probs: np.ndarray          # (C,) the audio's class distribution, aligned to ``classes``
    sounding: tuple[str, ...]        # classes sounding in view (subset of classes)
    boxes: list[Box]                 # one per sounding class
    av_score: float                  # max of the av map
    presence: float | None           # the heard cluster's presence (localizer.class_presence), if computed
    heard_av: float                  # the av map where the heard classes are seen (localizer.heard_av_score)
    heard_class: float               # the heard class's map peak (localizer.heard_class_score)
    in_view: bool                    # gate open and rules.in_view_score >= rules.in_view_threshold
    gate_open: bool                  # audio level >= rules.audio_gate_db
    audio_db: float                  # RMS level of the audio window, dBFS
    frame_size: tuple[int, int]      # (height, width)
    av_map_lowres: np.ndarray        # (h, w) in [0, 1]
    class_maps_lowres: np.ndarray    # (C, h, w): per class, the class softmax summed over its clusters
                                     # (the evaluation's class maps; with the av map: boxes, heat maps)
    rules: dict[str, Any] = field(default_factory=dict)
    combined: float | None = None    # the calibrated combination of the three scores (rules.combined_score), if any
    speed: dict[str, float] = field(default_factory=dict)   # milliseconds per stage
    held: tuple[str, ...] = ()       # of ``sounding``, the classes a stream's DecisionHold kept from earlier frames
    image: np.ndarray | None = field(default=None, repr=False)  # the input frame (for plot)
    rgb: bool = False                # colour order of ``image``
    _cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    # ---- scores and maps
    @property
    def scores(self) -> dict[str, float]:
        """Per-class sounding scores: the audio class distribution by class name."""
        return {c: float(p) for c, p in zip(self.classes, self.class_probs)}

    def _index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            raise KeyError(f"unknown class {name!r}; the classes are {list(self.classes)}") from None

    @property
    def av_map(self) -> np.ndarray:
        """(H, W) class-agnostic audio-visual map at frame resolution."""
        if "av" not in self._cache:
            self._cache["av"] = upsample_map(self.av_map_lowres, *self.frame_size)
        return self._cache["av"]

    def class_map(self, name: str) -> np.ndarray:
        """(H, W) map of one class at frame resolution (the class's share of the class softmax)."""
        i = self._index(name)
        if i not in self._cache:
            self._cache[i] = upsample_map(self.class_maps_lowres[i], *self.frame_size)
        return self._cache[i]

    def heard_map(self, name: str) -> np.ndarray:
        """(H, W) where a sounding class is heard: the av map where this class's map is the
        largest of the sounding classes' (:func:`avsl_edge.boxes.heard_maps`; what its box bounds
        and the overlay paints), split at the boxes' working size, then upsampled to the frame."""
        if name not in self.sounding:
            raise KeyError(f"{name!r} is not sounding in view; sounding: {list(self.sounding)}")
        key = ("heard", name)
        if key not in self._cache:
            small = heard_maps_at(self.av_map_lowres, self.class_maps_lowres[[self._index(c) for c in self.sounding]],
                                  working_size(self.frame_size, WORKING_RESOLUTION))
            for c, m in zip(self.sounding, small):
                self._cache[("heard", c)] = upsample_map(m, *self.frame_size)
        return self._cache[key]

    @property
    def class_maps(self) -> np.ndarray:
        """(C, H, W) every class map at frame resolution (C x H x W float32: large at 1080p)."""
        return np.stack([self.class_map(c) for c in self.classes])

    # ---- drawing
    def plot(self, image: np.ndarray | None = None, **options: Any) -> np.ndarray:
        """The overlay (see :func:`avsl_edge.overlay.draw` for ``options``) on ``image`` (default:
        the input frame), in the colour order of the input; its time goes to ``speed['overlay']``."""
        base = self.image if image is None else image
        if base is None:
            raise ValueError("this Result keeps no frame (keep_image=False); pass image=")
        t0 = time.perf_counter()
        out = draw(base, self, rgb=self.rgb, **options)
        self.speed["overlay"] = (time.perf_counter() - t0) * 1000.0
        return out

    # ---- serialisation
    def to_dict(self, maps: bool = False) -> dict[str, Any]:
        """JSON-ready summary; ``maps=True`` adds the low-resolution av and class maps as lists."""
        d: dict[str, Any] = {
            "classes": list(self.classes),
            "scores": {c: round(float(p), 6) for c, p in zip(self.classes, self.class_probs)},
            "sounding": list(self.sounding),
            "held": list(self.held),
            "boxes": [b.to_dict() for b in self.boxes],
            "av_score": round(float(self.av_score), 6),
            "presence": None if self.presence is None else round(float(self.presence), 6),
            "heard_av": round(float(self.heard_av), 6),
            "heard_class": round(float(self.heard_class), 6),
            "combined": None if self.combined is None else round(float(self.combined), 6),
            "in_view": bool(self.in_view),
            "gate_open": bool(self.gate_open),
            "audio_db": round(float(self.audio_db), 2) if math.isfinite(self.audio_db) else None,
            "frame_size": {"height": int(self.frame_size[0]), "width": int(self.frame_size[1])},
            "rules": plain_rule_values(self.rules),
            "speed": {k: round(float(v), 3) for k, v in self.speed.items()},
        }
        if maps:
            d["av_map"] = np.round(self.av_map_lowres.astype(float), 5).tolist()
            d["class_maps"] = {c: np.round(self.class_maps_lowres[i].astype(float), 5).tolist()
                               for i, c in enumerate(self.classes)}
        return d

    def to_json(self, maps: bool = False, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(maps), **kwargs)

    def __str__(self) -> str:
        if not self.gate_open:
            what = f"silence ({self.audio_db:.0f} dBFS)"
        elif not self.sounding:
            what = f"nothing sounding in view (av score {self.av_score:.2f})"
        else:
            what = ", ".join(f"{b.label} {b.score:.2f}" for b in self.boxes)
        ms = sum(v for k, v in self.speed.items() if k != "overlay")
        return f"{self.frame_size[1]}x{self.frame_size[0]}: {what} ({ms:.1f} ms)"
