"""Metrics log: one JSON object per line (``metrics.jsonl``), optionally mirrored to TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: Path | None, tensorboard: bool = False):
        self.path = path
        self._fh = None  # opened at the first record: a run that stops before it leaves no empty log
        self._tb = None
        if tensorboard and path is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is an optional extra
                raise RuntimeError("TensorBoard logging needs `pip install tensorboard`") from exc
            self._tb = SummaryWriter(str(Path(path).parent / "tensorboard"))
        self._step: dict[str, int] = {}

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
        record = {"time": round(time.time(), 3), **record}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            phase = str(record.get("phase", "log"))
            step = self._step[phase] = self._step.get(phase, -1) + 1
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("time", "epoch", "step", "round"):
                    self._tb.add_scalar(f"{phase}/{k}", v, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()


def read_log(path: Path) -> list[dict]:
    """All records of a metrics log (a truncated last line from a crash is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
