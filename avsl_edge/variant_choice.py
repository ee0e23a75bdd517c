"""``variant="auto"``: the fastest precision variant of a bundle on this machine among those that
keep the export's accuracy bound.

A variant is eligible when the export scored it on its test split and it stayed within
``ACCURACY_POINTS`` of fp32 on every headline metric (the manifest's ``delta_vs_fp32``); fp32 always
is. The eligible ones are then timed here, on this machine's CPU or GPU (image and audio graph,
batch 1, median of a few warm runs), because which one is fastest depends on the ISA: INT8 pays
3.3x on an AVX-512 VNNI host and far less on an AVX2-only one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .audio import CLIP_SAMPLES
from .timing import measure
from .bundle import Bundle

if TYPE_CHECKING:
    from .backends import Backend

AUTO_VARIANT = "auto"
ACCURACY_POINTS = 2.0  # the most a variant may lose against fp32 on any headline metric
HEADLINE = ("mosaic_ciou@0.3", "duet_ciou@0.3", "solo_iou@0.5")  # the metrics that bound it


@dataclass(frozen=True)
class VariantChoice:
    """Which variant ``auto`` picked and why: the probe's milliseconds (image + audio graph, batch 1)
    per timed variant, and why each other variant was left out."""
    variant: str
    ms: Mapping[str, float]
    excluded: Mapping[str, str] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        """The chosen variant's speed as a multiple of fp32's, when both were timed."""
        base, ms = self.ms.get("fp32"), self.ms.get(self.variant)
        return base / ms if base and ms else None

    @property
    def short(self) -> str:
        """A few words for the live HUD: "auto, 2.6x fp32" or "auto, the only one within 2 points"."""
        if not self.ms:
            return f"auto, the only one within {ACCURACY_POINTS:g} points"
        return f"auto, {self.speedup:.1f}x fp32" if self.speedup and self.variant != "fp32" else "auto, fastest here"

    def to_dict(self) -> dict[str, object]:
        return {"variant": self.variant, "ms": dict(self.ms), "excluded": dict(self.excluded), "reason": self.reason}

    @property
    def reason(self) -> str:
        if not self.ms:
            left = "; ".join(f"{v}: {why}" for v, why in self.excluded.items())
            return f"the only variant within {ACCURACY_POINTS:g} points of fp32, not timed" + (
                f"; left out: {left}" if left else "")
        speed = f", {self.speedup:.1f}x fp32" if self.speedup and self.variant != "fp32" else ""
        timed = ", ".join(f"{v} {ms:.1f} ms" for v, ms in self.ms.items())
        left = "; ".join(f"{v}: {why}" for v, why in self.excluded.items())
        return f"fastest here within {ACCURACY_POINTS:g} points of fp32{speed} (timed: {timed})" + (
            f"; left out: {left}" if left else "")


def accuracy_exclusions(bundle: Bundle) -> dict[str, str]:
    """Variant -> why it is not eligible (no test-split scores recorded, or a headline metric more
    than ACCURACY_POINTS below fp32's); fp32 is never excluded."""
    out = {}
    for v, variant in bundle.manifest.variants.items():
        if v == "fp32":
            continue
        delta = ((variant.report or {}).get("eval") or {}).get("delta_vs_fp32") or {}
        missing = [k for k in HEADLINE if k not in delta]
        if missing:
            out[v] = "the export recorded no test-split score against fp32"
            continue
        worst = min(HEADLINE, key=lambda k: delta[k])
        if delta[worst] < -ACCURACY_POINTS:
            out[v] = f"{worst} {delta[worst]:+.1f} points vs fp32"
    return out


def fastest(ms: Mapping[str, float]) -> str:
    """The variant with the fewest milliseconds; fp32 on a tie (the reference numerics)."""
    return min(ms, key=lambda v: (ms[v], v != "fp32"))


def choose_variant(bundle: Bundle, make_backend: Callable[[str], Backend],
                   runs: int = 5) -> tuple[VariantChoice, Backend]:
    """Time every eligible variant with a backend from ``make_backend(variant)``; returns the choice
    and the chosen variant's backend (the others are closed). A single eligible variant is not timed."""
    excluded = accuracy_exclusions(bundle)
    eligible = [v for v in bundle.manifest.variants if v not in excluded]
    if len(eligible) == 1:
        return VariantChoice(eligible[0], {}, excluded), make_backend(eligible[0])
    size = bundle.manifest.preprocessing.image_size
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    wave = (0.1 * rng.standard_normal((1, CLIP_SAMPLES))).astype(np.float32)
    backends: dict[str, Backend] = {}
    ms: dict[str, float] = {}
    try:
        for v in eligible:
            be = backends[v] = make_backend(v)
            ms[v] = measure(lambda be=be: (be.image(image), be.audio(wave)), warmup=2, runs=runs).median_ms
        chosen = fastest(ms)
    except BaseException:
        for be in backends.values():
            be.close()
        raise
    for v, be in backends.items():
        if v != chosen:
            be.close()
    return VariantChoice(chosen, ms, excluded), backends[chosen]
