"""Timing of repeated runs: the one latency statistic (median, p90, max in milliseconds) of the
benchmarks, the live loop's stages and its end-of-run summary."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Median, 90th percentile and maximum of ``runs`` durations, in milliseconds (NaN for none)."""
    median_ms: float
    p90_ms: float
    max_ms: float
    runs: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.median_ms:.1f}/{self.p90_ms:.1f} ms" if self.runs else "-"


def summary(ms: Sequence[float]) -> Timing:
    """The :class:`Timing` of millisecond samples (rounded to microseconds): the one latency
    statistic of benchmarks, the live loop's stages and its end-of-run summary."""
    a = np.asarray(ms, np.float64)
    if a.size == 0:
        return Timing(float("nan"), float("nan"), float("nan"), 0)
    med, p90 = np.percentile(a, [50, 90])
    return Timing(round(float(med), 3), round(float(p90), 3), round(float(a.max()), 3), int(a.size))


def measure(fn: Callable[[], object], warmup: int = 3, runs: int = 20) -> Timing:
    """Time ``fn()`` over ``runs`` calls after ``warmup`` untimed ones (wall clock, perf_counter).

    >>> measure(lambda: sum(range(1000)), warmup=1, runs=5).runs
    5
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got {runs}, {warmup}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return summary(samples)
