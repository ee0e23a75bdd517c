"""The decision rules of the :class:`~avsl_edge.localizer.Localizer` (its module docstring,
"Decisions"): their values, their ranges, and how a bundle manifest's ``postprocessing`` sets them.
Below the bundle format, which checks a manifest's rules with them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .boxes import BOX_METHODS
from .errors import UserError

if TYPE_CHECKING:
    from .bundle import Postprocessing

IN_VIEW_SCORES: tuple[str, ...] = ("av_score", "presence", "heard_av")
TEXT_RULES: tuple[str, ...] = ("in_view_score", "box_method")  # the Rules that are names, not numbers


class RuleError(UserError, ValueError):
    """A decision rule (threshold, score, box method) outside what it can be."""


class UnknownRuleError(UserError, TypeError):
    """A rule override that names no rule (a TypeError, as an unknown keyword argument is)."""


@dataclass(frozen=True)
class Rules:
    """The decision thresholds (module docstring, "Decisions")."""

    in_view_threshold: float = 0.5
    audio_gate_db: float = -50.0
    class_threshold: float = 0.25
    box_tau: float = 0.5
    in_view_score: str = "av_score"  # which score in_view_threshold applies to (IN_VIEW_SCORES)
    box_method: str = "map"          # how boxes are cut (avsl_edge.boxes.BOX_METHODS)

    def __post_init__(self) -> None:
        if self.in_view_score not in IN_VIEW_SCORES:
            raise RuleError(f"Rules.in_view_score must be one of {', '.join(IN_VIEW_SCORES)}, "
                             f"got {self.in_view_score!r}")
        if self.box_method not in BOX_METHODS:
            raise RuleError(f"Rules.box_method must be one of {', '.join(BOX_METHODS)}, got {self.box_method!r}")
        for name in ("in_view_threshold", "class_threshold", "box_tau"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise RuleError(f"Rules.{name} must be a number in [0, 1], got {v!r}")
        if not (isinstance(self.audio_gate_db, (int, float)) and -200.0 <= self.audio_gate_db <= 0.0):
            raise RuleError(f"Rules.audio_gate_db must be a level in dBFS in [-200, 0], got {self.audio_gate_db!r}")

    @classmethod
    def from_postprocessing(cls, p: Postprocessing, **overrides: float | str | None) -> Rules:
        """The manifest's values (a bundle without calibration: ``sounding_threshold`` and defaults)."""
        values: dict[str, Any] = {
            "in_view_threshold": p.in_view_threshold if p.in_view_threshold is not None else p.sounding_threshold,
            "audio_gate_db": p.audio_gate_db, "class_threshold": p.class_threshold, "box_tau": p.box_tau,
            "in_view_score": p.in_view_score or "av_score", "box_method": p.box_method or "map",
        }
        unknown = sorted(set(overrides) - set(values))
        if unknown:
            raise UnknownRuleError(f"unknown rule overrides {unknown}; the rules are {sorted(values)}")
        values.update({k: (v if k in TEXT_RULES else float(v)) for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict[str, float | str]:
        return {k: (v if isinstance(v, str) else float(v)) for k, v in asdict(self).items()}
