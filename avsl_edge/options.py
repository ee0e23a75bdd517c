"""argparse types that bound numeric options at parse time, so an absurd value is a usage error
(exit 2) instead of minutes of work or an out-of-memory crash.

    p.add_argument("--threads", type=thread_count, default=0)
    p.add_argument("--runs", type=int_in(1, 100_000), default=50)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


MAX_HOP_S = 60.0  # --hop: the audio is re-encoded at least once a minute (its window is 1 s)


def max_threads() -> int:
    """The most threads any option may ask for: a few per core, at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))


def int_in(lo: int, hi: int, what: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in ``lo..hi``."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be {lo}..{hi}{what}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def thread_count(text: str) -> int:
    """``--threads``: 0 (the library's default) to :func:`max_threads`."""
    return int_in(0, max_threads(), " (0: the default; at most 4 per core, at least 8)")(text)


thread_count.__name__ = "integer"
