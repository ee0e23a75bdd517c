"""Warm-run timing: median and p90 in milliseconds (no torch: the edge benchmarks use it too)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], warmup: int = 3, runs: int = 20) -> Timing:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    a = np.asarray(samples)
    return Timing(float(np.median(a)), float(np.percentile(a, 90)), runs)
